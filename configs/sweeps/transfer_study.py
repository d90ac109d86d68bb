"""The transfer-learning study on one dataset: which model, which initialisation, how much data, which
imbalance strategy, and (where the data has sites) how well a model trained at one site travels.

Arguments (comma-separated after the file name):
    dataset  'synthetic' (the offline synthetic lesions, sites A/B) or a MedMNIST 2D subset, e.g.
             pneumoniamnist (default synthetic)
    size     model input side; 0 = 224 (full) / 32 (quick)
    quick    a few-minute version for a 2-core CPU (see below)

Parts (runs whose configs coincide are merged; impossible ones are dropped by the planner):
  benchmark  model x init x data fraction x seed. Full: resnet50, vgg16, inception_v3, alexnet,
             densenet121, efficientnet_b0, cbr_small x scratch / imagenet / mean_var x fractions 0.01,
             0.05, 0.2, 1.0 x seeds 0, 1, 2. CBR nets have no ImageNet weights, so they only run from
             scratch. A fraction whose subset would hold fewer examples than one batch (32) is left out
             (synthetic: 0.01 of 1500). Epochs stay those of the recipe at every fraction, so smaller
             subsets train for fewer steps.
  imbalance  none / class_weighted / focal / balanced_sampling on resnet50 ImageNet, all data, 3 seeds.
  cross_site (synthetic only) train_sites A vs B (training and validation restricted; test whole) on
             resnet50 ImageNet, all data, 3 seeds; per-site test AUCs come from predictions_test.npz.
  Full size: 237 runs on a MedMNIST subset (228 benchmark + 9 imbalance), 186 on synthetic (no 0.01
  fraction: 171 + 9 + 6 cross-site). Recipes: configs/default.py (synthetic; 4 epochs,
  AdamW, batch 32) or configs/medmnist.py's 'transfer' recipe (10 epochs), input 224 px.

quick: efficientnet_lite0 (the one model with ImageNet weights offline) and cbr_tiny, scratch / imagenet /
mean_var, fractions 0.1 and 1.0, seeds 0 and 1, 2 epochs at 32 px; imbalance none vs class_weighted on
Lite0 ImageNet (2 seeds); cross-site A vs B on Lite0 ImageNet (seed 0). 20 runs (16 benchmark, 2 new
imbalance, 2 cross-site; 8 CBR x pretrained dropped, 2 merged); 18 on a MedMNIST subset (no sites).
Estimate on an idle 2-core CPU: 10-15 minutes (Lite0's first compilation takes 30-60 s, later runs load it
from DIR/.jax_cache; a full-data run trains 92 steps, ~0.15 s each for Lite0 and ~0.5-0.9 s for cbr_tiny at
32 px, measured on one busy core). 32 px keeps it quick but blurs the small synthetic lesions (one Lite0
ImageNet run: test AUC 0.62 after 2 epochs); `size=64`, the images' own size (configs/default.py: test AUC
0.946 in 4 epochs), costs several times more per step.

Run (from the repository root):
    python -m launch.sweep --sweep configs/sweeps/transfer_study.py:dataset=synthetic,quick --workdir runs/study_quick
    python -m launch.sweep --sweep configs/sweeps/transfer_study.py:dataset=pneumoniamnist --workdir runs/study_pneu \
        --set data.manual_dir=../shared/data/medmnist --print-commands     # 237 commands for a pod / SLURM array

Expected (measured, quick on pneumoniamnist, 2-core CPU, 2 seeds): 17 min for the 18 runs (27-102 s each)
+ 45 s for `launch.report`; test AUC (mean ± std): Lite0 ImageNet 0.949 ± 0.005 vs scratch 0.700 ± 0.077
(DeLong p < 1e-50 after Holm) and Mean-Var 0.578 ± 0.111; with 10% of the data Lite0 learns little in 2
epochs (ImageNet 0.565 ± 0.162, scratch 0.574 ± 0.218) while CBR-Tiny from scratch reaches 0.930 ± 0.017
(0.944 with all data); class_weighted 0.945 ± 0.019 vs none 0.949 (not significant), balanced ACC 0.875 vs
0.864. Quick on synthetic (20 runs incl. cross-site): 9 min 40 s; at 32 px the small lesions are blurred and
Lite0 stays near chance in 2 epochs (ImageNet 0.637 ± 0.002, so the cross-site table is uninformative: A->A
0.56, A->B 0.52) while CBR-Tiny reaches 0.930 ± 0.005; add `size=64` for a meaningful synthetic study.
"""

from medtl_jax.data.sources.medmnist_info import MEDMNIST_2D
from medtl_jax.data.sources.synthetic import VARIANTS
from medtl_jax.sweep import Grid, Sweep, parse_sweep_args

DEFAULTS = {"dataset": "synthetic", "size": 0}
FULL = {"models": ("resnet50", "vgg16", "inception_v3", "alexnet", "densenet121", "efficientnet_b0", "cbr_small"),
        "fractions": (0.01, 0.05, 0.2, 1.0), "seeds": (0, 1, 2), "imbalance": ("none", "class_weighted", "focal",
                                                                             "balanced_sampling"),
        "one_model": "resnet50", "size": 224, "epochs": None, "site_seeds": (0, 1, 2)}
QUICK = {"models": ("efficientnet_lite0", "cbr_tiny"), "fractions": (0.1, 1.0), "seeds": (0, 1),
         "imbalance": ("none", "class_weighted"), "one_model": "efficientnet_lite0", "size": 32, "epochs": 2,
         "site_seeds": (0,)}
INITS = ("scratch", "imagenet", "mean_var")
SITES = {"synthetic": ("A", "B")}  # datasets whose records carry a 'site'
BATCH = 32


def _train_count(dataset: str) -> int:
    if dataset == "synthetic":
        return VARIANTS["default"].split_sizes[0]
    return MEDMNIST_2D[dataset].splits["train"]


def get_sweep(arg: str | None = None) -> Sweep:
    """The study for 'dataset=<name>[,size=N][,quick]'."""
    a = parse_sweep_args(arg, DEFAULTS, flags=("quick",))
    dataset, p = a["dataset"], (QUICK if a["quick"] else FULL)
    if dataset != "synthetic" and dataset not in MEDMNIST_2D:
        raise ValueError(f"sweep argument dataset={dataset!r}: expected 'synthetic' or a MedMNIST 2D subset "
                         f"({', '.join(sorted(MEDMNIST_2D))})")
    size = a["size"] or p["size"]
    if dataset == "synthetic":
        config, fixed = "configs/default.py", {"data.input_size": size}
    else:
        # The config file picks ResNet-18's CIFAR stem at <= 32 px; the swept models use their ImageNet stem.
        config = f"configs/medmnist.py:dataset={dataset},recipe=transfer,size={size}"
        fixed = {"model.stem": "imagenet"}
    if p["epochs"]:
        fixed["train.epochs"] = p["epochs"]
    n = _train_count(dataset)
    fractions = [f for f in p["fractions"] if f * n >= BATCH]
    one = {"model.name": [p["one_model"]], "model.init": ["imagenet"], "data.train_fraction": [1.0]}
    parts = [Grid("benchmark", {"model.name": list(p["models"]), "model.init": list(INITS),
                                "data.train_fraction": fractions, "seed": list(p["seeds"])}),
             Grid("imbalance", {**one, "loss.imbalance": list(p["imbalance"]), "seed": list(p["seeds"])})]
    if dataset in SITES:
        parts.append(Grid("cross_site", {**one, "data.train_sites": [(s,) for s in SITES[dataset]],
                                         "seed": list(p["site_seeds"])}))
    left_out = sorted(set(p["fractions"]) - set(fractions))
    note = f" Fractions {left_out} left out (< {BATCH} of {n} training examples)." if left_out else ""
    return Sweep(name=f"transfer_study_{dataset}{'_quick' if a['quick'] else ''}", config=config, parts=parts,
                 fixed=fixed, description=f"Transfer study on {dataset}: benchmark, imbalance"
                 + (", cross-site" if dataset in SITES else "") + "." + note)
