"""MedMNIST v2 (2D): the paper's recipe by default, and a transfer recipe that should beat it.

Arguments (comma-separated key=value after the file name):
    dataset  MedMNIST 2D subset, e.g. pneumoniamnist, retinamnist, dermamnist (default pneumoniamnist)
    model    resnet18 | resnet50 | efficientnet_lite0 | ... (default resnet18)
    init     scratch | imagenet (default scratch)
    size     model input size: 28 (ResNets get the CIFAR-style 3x3 stem, as the paper's "(28)" rows),
             64, 128 or 224 (28x28 images upsampled; nearest-neighbour in the paper recipe, like its
             "(224)" rows, bilinear in the transfer recipe) (default 28)
    source   stored MedMNIST image size to read: 28 (default) or 64/128/224 (MedMNIST+ files)
    recipe   paper | transfer (default paper)

The "paper" recipe is MedMNIST v2's: Adam lr 1e-3, batch 128, 100 epochs, lr x0.1 at epochs 50 and 75,
no augmentation, the checkpoint with the best validation AUC evaluated once on test; ordinal subsets
(RetinaMNIST) as plain softmax classes.

The "transfer" recipe is what we recommend for ImageNet initialisation: AdamW lr 1e-3 (wd 0.01), batch 32,
10 epochs with a 1-epoch warm-up then cosine decay, random flip and +-10 degree rotation, bilinear
upsampling, best validation AUC; ordinal subsets get the CORAL head (config.task.ordinal_head).

Run (the MedMNIST v2 baseline, then transfer; point manual_dir at a folder holding pneumoniamnist.npz):
    python -m launch.train --workdir runs/pneu_r18_28 \
        --config configs/medmnist.py:dataset=pneumoniamnist,model=resnet18,init=scratch,size=28 \
        --config.data.manual_dir=../shared/data/medmnist
    python -m launch.train --workdir runs/pneu_lite0_tl \
        --config configs/medmnist.py:dataset=pneumoniamnist,model=efficientnet_lite0,init=imagenet,size=128,recipe=transfer \
        --config.data.manual_dir=../shared/data/medmnist

Expected test AUC / ACC (published MedMNIST v2 numbers; ours are in the README):
PneumoniaMNIST ResNet-18 (28) 0.944 / 0.854; RetinaMNIST ResNet-18 (28) 0.717 / 0.524. A PyTorch
EfficientNet-Lite0 ImageNet transfer at 128 px reaches 0.969 / 0.841 on PneumoniaMNIST in 10 epochs.
Measured with this transfer recipe (efficientnet_lite0, init=imagenet, size=64, softmax head for
RetinaMNIST; 3 seeds, mean ± std, benchmarks/recipe_twin.py): PneumoniaMNIST 0.946 ± 0.008 / 0.858 ± 0.019
(the same recipe in PyTorch: 0.969 ± 0.006 / 0.890 ± 0.020); RetinaMNIST 0.729 ± 0.009 / 0.503 ± 0.003
(PyTorch 0.705 ± 0.022 / 0.498 ± 0.023). Its ACC does not beat MedMNIST v2's best ResNet rows yet.
"""

from configs.base import base_config
from medtl_jax.config.arguments import parse_args

DEFAULTS = {"dataset": "pneumoniamnist", "model": "resnet18", "init": "scratch", "size": 28,
            "source": 28, "recipe": "paper"}


def get_config(arg: str | None = None):
    """MedMNIST config from 'dataset=...,model=...,init=...,size=...,source=...,recipe=...'."""
    a = parse_args(arg, DEFAULTS)
    if a["recipe"] not in ("paper", "transfer"):
        raise ValueError(f"config argument recipe={a['recipe']!r}: expected 'paper' or 'transfer'")
    c = base_config()
    c.data.name = "medmnist"
    c.data.subset = a["dataset"]
    c.data.source_size = a["source"]
    c.data.input_size = a["size"]
    c.model.name = a["model"]
    c.model.init = a["init"]
    c.model.stem = "cifar" if (a["size"] <= 32 and a["model"].startswith("resnet")) else "imagenet"
    if a["recipe"] == "paper":
        c.data.resize_method = "nearest"
        c.task.ordinal_head = "dense"  # the paper treats RetinaMNIST's grades as 5 softmax classes
        c.augment.enabled = False
        c.optimizer.name = "adam"
        c.optimizer.lr = 1e-3
        c.optimizer.weight_decay = 0.0
        c.schedule.name = "multistep"
        c.schedule.warmup_epochs = 0.0
        c.schedule.milestones_epochs = (50, 75)
        c.schedule.decay_factor = 0.1
        c.train.epochs = 100
        c.train.batch_size = 128
    else:
        c.data.resize_method = "bilinear"
        c.augment.enabled = True
        c.augment.flip = True
        c.augment.rotate_degrees = 10.0
        c.optimizer.name = "adamw"
        c.optimizer.lr = 1e-3
        c.optimizer.weight_decay = 0.01
        c.schedule.name = "warmup_cosine"
        c.schedule.warmup_epochs = 1.0
        c.train.epochs = 10
        c.train.batch_size = 32
    return c
