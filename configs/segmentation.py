"""Retinal-vessel / EM-membrane segmentation: a U-Net over an ImageNet (or scratch) encoder.

Arguments (comma-separated key=value after the file name):
    dataset     drive | chase_db1 | isbi2012 | seg_folders (default drive)
    model       any backbone of medtl_jax.models.MODELS (default efficientnet_lite0, whose ImageNet weights
                install offline; torchvision ones are downloaded once into the weight store)
    init        imagenet | scratch | mean_var (default imagenet)
    decoder     unet | fcn (default unet)
    steps       optimizer steps (default 640); epochs follow from the training set's size
    preprocess  fundus | none (default: fundus for drive and chase_db1, none otherwise)

Recipe: random 96x96 patches (16 per image per epoch, half centred on a vessel pixel), flips and
quarter turns, brightness/contrast +-10%, Dice + cross-entropy inside the field of view, AdamW 1e-3 with a
warm-up of 1/30 of the steps then cosine decay, batch 16; whole-image sliding-window inference (192-px
windows, 50% overlap, Gaussian weights); checkpoint chosen by validation Dice (DRIVE: official training
images 37-40 held out; CHASE_DB1: 09L-10R).

`preprocess=fundus` is the cross-site part of the recipe, for photographs of the retina from any camera:
every image is resized so that its field of view is 544 px wide (vessels are then equally wide at DRIVE's
and CHASE_DB1's resolutions) and mapped by `segmentation.intensity` (see
medtl_jax/data/pipeline/intensity.py). A model trained this way carries both to the images it is later
evaluated on (`python -m launch.evaluate`), whatever their size and exposure.

Run (the data folder as in ../shared/data/README.md; $MEDTL_SHARED_DATA finds it too):
    python -m launch.train --workdir runs/drive_lite0 \\
        --config configs/segmentation.py:dataset=drive \\
        --config.data.manual_dir=../shared/data/retina_vessels/DRIVE
    python -m launch.evaluate --workdir runs/drive_lite0 --out runs/drive_lite0/on_chase \\
        --config.data.name=chase_db1 --config.data.manual_dir=../shared/data/retina_vessels/CHASE_DB1

Expected (2-core CPU, default arguments; about 16 minutes of training alone, 35-45 minutes measured while
other runs shared the cores): DRIVE test Dice 0.803 and 0.806 (seeds 0, 1; IoU 0.671, HD95 6.4 px), the
same models on CHASE_DB1's test split 0.729 and 0.731; trained on CHASE_DB1 (seed 0): 0.780 in-site, 0.764
on DRIVE. From scratch
(init=scratch, same recipe): DRIVE 0.729, on CHASE_DB1 0.503. Seeds 1-2 and the ablation behind the
`fundus` choices (field-of-view resize: cross-site +0.09 Dice; per-image standardisation beat CLAHE and
nothing) are in the README. Published U-Nets reach 0.80-0.83 on DRIVE.
"""

from configs.base import base_config
from medtl_jax.config.arguments import parse_args

DEFAULTS = {"dataset": "drive", "model": "efficientnet_lite0", "init": "imagenet", "decoder": "unet", "steps": 640,
            "preprocess": "auto"}
FUNDUS_DATASETS = ("drive", "chase_db1")
FUNDUS_FOV_DIAMETER = 544
FUNDUS_INTENSITY = "standardize"


def get_config(arg: str | None = None):
    """Segmentation config from 'dataset=...,model=...,init=...,decoder=...,steps=...,preprocess=...'."""
    a = parse_args(arg, DEFAULTS)
    preprocess = a["preprocess"]
    if preprocess == "auto":
        preprocess = "fundus" if a["dataset"] in FUNDUS_DATASETS else "none"
    if preprocess not in ("fundus", "none"):
        raise ValueError(f"config argument preprocess={a['preprocess']!r}: expected 'fundus' or 'none'")
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
    if preprocess == "fundus":
        c.segmentation.fov_diameter = FUNDUS_FOV_DIAMETER
        c.segmentation.intensity = FUNDUS_INTENSITY
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
    c.schedule.warmup_steps = max(1, a["steps"] // 30)
    c.train.steps = a["steps"]
    c.train.batch_size = 16
    c.train.eval_batch_size = 16
    c.train.log_every_steps = 8
    c.eval.bootstrap_samples = 0
    return c
