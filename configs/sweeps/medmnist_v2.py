"""The MedMNIST v2 benchmark protocol on one subset, next to ImageNet transfer of the same models.

Arguments (comma-separated after the file name):
    dataset  MedMNIST 2D subset, e.g. pneumoniamnist, retinamnist (default pneumoniamnist)
    quick    a few-minute CPU version (see below)

The runs use configs/medmnist.py through its own arguments (model, size, init, recipe), so its recipe
logic (CIFAR stem at 28 px, nearest-neighbour upsampling to 224, the paper's schedule) is not repeated:
  paper     ResNet-18 / ResNet-50 at 28 (CIFAR stem) and 224 (nearest upsampling from 28), from scratch,
            the paper's recipe (Adam lr 1e-3, batch 128, 100 epochs, lr x0.1 at epochs 50 and 75, best
            validation AUC), seeds 0, 1, 2: 12 runs (Yang et al. 2023 report one run per setting).
  imagenet  the same two models at 224 from ImageNet weights, with the paper's recipe (only the
            initialisation differs) and with configs/medmnist.py's 'transfer' recipe (10 epochs, AdamW,
            warm-up + cosine, flips and rotations, bilinear upsampling), seeds 0, 1, 2: 12 runs.
  Full: 24 runs. ImageNet weights for ResNets are downloaded once (torchvision); 224 px runs want a GPU.
quick: the paper part at 28 px only, seed 0, 4 epochs (lr x0.1 at epochs 2 and 3): 2 runs, ResNet-18 and
ResNet-50 from scratch (no download).

Run (from the repository root; point data.manual_dir at the folder holding <subset>.npz if the dataset
is not built yet):
    python -m launch.sweep --sweep configs/sweeps/medmnist_v2.py:dataset=pneumoniamnist,quick \
        --workdir runs/mnv2_quick --set data.manual_dir=../shared/data/medmnist

Expected (measured, quick on retinamnist, 2-core CPU): 12 min for the 2 runs (ResNet-18 2.6 min, ResNet-50
9.5 min); test AUC / ACC ResNet-18 (28) 0.741 / 0.487, ResNet-50 (28) 0.691 / 0.527 after 4 epochs, next
to the published 100-epoch 0.717 / 0.524 and 0.726 / 0.528 (RetinaMNIST's 400 test images: ±0.04 AUC is
noise). Published PneumoniaMNIST ResNet-18 (28): 0.944 / 0.854 (other rows: Table 3 of Yang et al. 2023).
"""

from medtl_jax.data.sources.medmnist_info import MEDMNIST_2D
from medtl_jax.sweep import Grid, Sweep, parse_sweep_args

DEFAULTS = {"dataset": "pneumoniamnist"}
MODELS = ["resnet18", "resnet50"]


def get_sweep(arg: str | None = None) -> Sweep:
    """The protocol for 'dataset=<subset>[,quick]'."""
    a = parse_sweep_args(arg, DEFAULTS, flags=("quick",))
    if a["dataset"] not in MEDMNIST_2D:
        raise ValueError(f"sweep argument dataset={a['dataset']!r}: expected a MedMNIST 2D subset "
                         f"({', '.join(sorted(MEDMNIST_2D))})")
    config = f"configs/medmnist.py:dataset={a['dataset']},recipe=paper,init=scratch"
    if a["quick"]:
        parts = [Grid("paper", {":model": MODELS, ":size": [28], "seed": [0]})]
        fixed = {"train.epochs": 4, "schedule.milestones_epochs": (2, 3)}
    else:
        parts = [Grid("paper", {":model": MODELS, ":size": [28, 224], "seed": [0, 1, 2]}),
                 Grid("imagenet", {":model": MODELS, ":size": [224], ":init": ["imagenet"],
                                   ":recipe": ["paper", "transfer"], "seed": [0, 1, 2]})]
        fixed = {}
    return Sweep(name=f"medmnist_v2_{a['dataset']}{'_quick' if a['quick'] else ''}", config=config, parts=parts,
                 fixed=fixed, description=f"MedMNIST v2 protocol on {a['dataset']}"
                 + ("" if a["quick"] else ", with ImageNet transfer at 224") + ".")
