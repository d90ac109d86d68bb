"""Forward (inference) throughput of every ported backbone: Flax vs the PyTorch reference, same batch.

    python benchmarks/forward_zoo.py --sizes 64,224 --batch 8 [--models resnet50,densenet121]

Prints one markdown row per (model, size): parameter count, Flax img/s, PyTorch img/s, their ratio and
the Flax compile time. Both sides run in eval mode, float32, on this machine's CPU, after one warm-up
call; each timing is the median of `--repeats` calls. Needs the `port` extra (torch, torchvision, timm).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from medtl_jax.models import MODELS, build_classifier
from timing import median_seconds

MIN_SIZE = {"inception_v3": 75}


def torch_reference(name: str):
    """The PyTorch model a backbone was ported from (random weights), or None if it has none here."""
    import timm
    import torchvision
    if name == "efficientnet_lite0":
        return timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if name == "inception_v3":
        return torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False)
    if hasattr(torchvision.models, name):
        return getattr(torchvision.models, name)(weights=None)
    return None


def flax_forward(name: str, size: int, batch: int, repeats: int) -> tuple[int, float, float]:
    """(parameter count, img/s, compile seconds) of the jit-compiled eval forward pass."""
    model = build_classifier(name, 1000)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(batch, size, size, 3)), jnp.float32)
    variables = jax.jit(lambda r: model.init(r, x[:1], train=False))(jax.random.PRNGKey(0))
    n_params = sum(p.size for p in jax.tree_util.tree_leaves(variables["params"]))
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
    t = time.perf_counter()
    jax.block_until_ready(apply(variables, x))
    compile_s = time.perf_counter() - t
    seconds = median_seconds(lambda: jax.block_until_ready(apply(variables, x)), repeats, warmup=1)
    return n_params, batch / seconds, compile_s


def torch_forward(name: str, size: int, batch: int, repeats: int) -> float | None:
    """img/s of the PyTorch reference in eval mode under no_grad, or None without a reference."""
    import torch
    model = torch_reference(name)
    if model is None:
        return None
    model.eval()
    x = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        return batch / median_seconds(lambda: model(x), repeats, warmup=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(m for m in MODELS if not m.endswith("_keras")))
    parser.add_argument("--sizes", default="64,224")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, batch {args.batch}, median of {args.repeats}")
    print("| model | params | size | flax img/s | torch img/s | flax/torch | flax compile s |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        for size in map(int, args.sizes.split(",")):
            if size < MIN_SIZE.get(name, 0):
                continue
            n_params, flax_ips, compile_s = flax_forward(name, size, args.batch, args.repeats)
            torch_ips = torch_forward(name, size, args.batch, args.repeats)
            ratio = f"{flax_ips / torch_ips:.2f}" if torch_ips else "n/a"
            torch_txt = f"{torch_ips:.1f}" if torch_ips else "n/a"
            print(f"| {name} | {n_params:,} | {size} | {flax_ips:.1f} | {torch_txt} | {ratio} | {compile_s:.1f} |",
                  flush=True)


if __name__ == "__main__":
    main()
