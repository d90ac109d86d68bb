"""Retinal-vessel / EM-membrane segmentation: a U-Net over an ImageNet (or scratch) encoder.

Arguments (comma-separated key=value after the file name):
    dataset  drive | chase_db1 | isbi2012 | seg_folders (default drive)
    model    any backbone of medtl_jax.models.MODELS (default efficientnet_lite0, whose ImageNet weights
             install offline; torchvision ones are downloaded once into the weight store)
    init     imagenet | scratch | mean_var (default imagenet)
    decoder  unet | fcn (default unet)
    epochs   (default 30)

Recipe: random 96x96 patches (16 per image per epoch, half centred on a vessel pixel), flips and
quarter turns, Dice + cross-entropy inside the field of view, AdamW 1e-3 with 1-epoch warm-up and cosine
decay, batch 16; whole-image sliding-window inference (192-px windows, 50% overlap, Gaussian weights);
checkpoint chosen by validation Dice (DRIVE: official training images 37-40 held out).

Run (the data folder as in ../shared/data/README.md; $MEDTL_SHARED_DATA finds it too):
    python -m launch.train --workdir runs/drive_lite0 \
        --config configs/segmentation.py:dataset=drive \
        --config.data.manual_dir=../shared/data/retina_vessels/DRIVE

Expected (2-core CPU, measured with the shorter --config.segmentation.patch_size=64
--config.train.epochs=8 --config.segmentation.window=128, 3.3 min of training): DRIVE test Dice 0.746,
IoU 0.596, HD95 17.8 px with the ImageNet Lite0 encoder; the same recipe from scratch did not converge
(Dice 0.23). Published U-Nets reach 0.80-0.83 with far longer training.
"""

from configs.base import base_config
from medtl_jax.config.arguments import parse_args

DEFAULTS = {"dataset": "drive", "model": "efficientnet_lite0", "init": "imagenet", "decoder": "unet", "epochs": 30}


def get_config(arg: str | None = None):
    """Segmentation config from 'dataset=...,model=...,init=...,decoder=...,epochs=...'."""
    a = parse_args(arg, DEFAULTS)
    c = base_config()
    c.data.name = a["dataset"]
    c.model.name = a["model"]
    c.model.init = a["init"]
    c.segmentation.decoder = a["decoder"]
    c.segmentation.patch_size = 96
    c.segmentation.patches_per_image = 16
    c.segmentation.foreground_fraction = 0.5
    c.segmentation.window = 192
    c.segmentation.overlap = 0.5
    c.loss.segmentation = "dice_ce"
    c.augment.enabled = True
    c.augment.flip = True
    c.augment.rotate_degrees = 0.0
    c.augment.brightness = 0.1
    c.augment.contrast = 0.1
    c.optimizer.name = "adamw"
    c.optimizer.lr = 1e-3
    c.optimizer.weight_decay = 0.01
    c.schedule.name = "warmup_cosine"
    c.schedule.warmup_epochs = 1.0
    c.train.epochs = a["epochs"]
    c.train.batch_size = 16
    c.train.eval_batch_size = 16
    c.train.log_every_steps = 8
    c.eval.bootstrap_samples = 0
    return c
