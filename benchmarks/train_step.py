"""Training-step throughput on this machine: the trainer's Flax step vs the same step in PyTorch.

    python benchmarks/train_step.py                         # the issue's grid, fp32 Flax vs PyTorch
    python benchmarks/train_step.py --cases resnet18@64 --dtypes float32,bfloat16 --repeats 10

Each case is `model@size` (`resnet18_cifar@28` = the CIFAR-style 3x3 stem of the MedMNIST "(28)" rows).
Both sides run a full step (forward in train mode, softmax cross-entropy, backward, SGD momentum 0.9 update)
on the same random batch of `--batch` images with 2 classes, after warm-up; each figure is the median over
`--repeats` steps. The Flax side is `medtl_jax.train.trainer.make_train_step` itself (one jit-compiled,
donated step over a 1-device mesh), so what is measured is what a run gets; its compile time is printed.
The input pipeline (grain, the synthetic 'default' dataset resized to the case's size) is timed on its own,
so it can be compared with the step rates. `--plain_xla` measures the baseline without the fast convolution
paths (before/after). Needs the `port` extra (torch, torchvision, timm).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from timing import median_seconds

DEFAULT_CASES = "resnet18@64,resnet18@128,resnet50@64,resnet50@128,efficientnet_lite0@64,efficientnet_lite0@224," \
                "resnet18_cifar@28"


def _parse(case: str) -> tuple[str, str, int]:
    name, size = case.split("@")
    stem = "cifar" if name.endswith("_cifar") else "imagenet"
    return name.removesuffix("_cifar"), stem, int(size)


def flax_step(name: str, stem: str, size: int, batch: int, dtype: str, repeats: int,
              num_devices: int = 1) -> tuple[float, float]:
    """(img/s, compile seconds) of the trainer's jitted train step, data parallel over `num_devices`
    devices (0 = all), the batch already on the devices."""
    from medtl_jax.runtime import parallel
    from medtl_jax.train import trainer as train
    from medtl_jax.train.run_parts import ModelParts, RunParts
    from medtl_jax.models import build_classifier
    from medtl_jax.tasks import make_task

    task = make_task("multiclass", 2)
    model = build_classifier(name, 2, stem=stem, dtype=jnp.bfloat16 if dtype == "bfloat16" else jnp.float32)
    mesh = parallel.make_mesh(num_devices)
    schedule = optax.constant_schedule(0.01)
    tx = optax.sgd(schedule, momentum=0.9)
    parts = RunParts(ModelParts(task, model, None, (size, size, 3)), 1, None, None, "auc")
    s = train.Setup(None, parts, mesh, tx, schedule, 1, 1)
    variables = jax.jit(lambda r: model.init(r, jnp.zeros((1, size, size, 3)), train=False))(jax.random.PRNGKey(0))
    state = train.TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                             batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(variables["params"]),
                             rng=jax.random.PRNGKey(1))
    state = jax.device_put(state, parallel.replicated(mesh))
    rng = np.random.default_rng(0)
    batch_np = {"image": rng.normal(size=(batch, size, size, 3)).astype(np.float32),
                "label": rng.integers(0, 2, batch).astype(np.int32)}
    batch_dev = parallel.to_global(batch_np, mesh)
    step = train.make_train_step(s)
    holder = {"state": state}
    t = time.perf_counter()
    holder["state"], m = step(holder["state"], batch_dev)
    jax.block_until_ready(m["loss"])
    compile_s = time.perf_counter() - t

    def run():
        holder["state"], metrics = step(holder["state"], batch_dev)
        jax.block_until_ready(metrics["loss"])

    return batch / median_seconds(run, repeats), compile_s


def use_plain_xla_convolutions() -> None:
    """The 'before' baseline: every convolution through `lax.conv_general_dilated` (no im2col path for
    small maps, depthwise as a grouped convolution), as a plain Flax model would run."""
    from jax import lax
    from medtl_jax.models.layers import conv, depthwise

    def grouped(x, kernel, stride, padding):
        return lax.conv_general_dilated(x, kernel, (stride, stride), padding, feature_group_count=x.shape[-1],
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

    conv.uses_im2col = lambda *args: False
    depthwise.depthwise_conv_same = lambda x, kernel, stride: grouped(x, kernel, stride, "SAME")
    depthwise.depthwise_conv_padded = lambda x, kernel, stride, pad: grouped(x, kernel, stride, ((pad, pad),) * 2)


def torch_model(name: str, stem: str):
    """The PyTorch counterpart of a registered model with a 2-class head."""
    import timm
    import torch
    import torchvision
    if name == "efficientnet_lite0":
        return timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=2)
    model = getattr(torchvision.models, name)(weights=None, num_classes=2)
    if stem == "cifar":
        model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        model.maxpool = torch.nn.Identity()
    return model


def torch_step(name: str, stem: str, size: int, batch: int, repeats: int) -> float:
    """img/s of the same step in PyTorch (train mode, CE, backward, SGD momentum)."""
    import torch
    model = torch_model(name, stem).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 2, (batch,))

    def run():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return batch / median_seconds(run, repeats)


def pipeline_rate(size: int, batch: int, steps: int = 20) -> float:
    """img/s of the training input pipeline (augmenting) on the synthetic 'default' dataset at `size`."""
    from medtl_jax.data import load_data
    from medtl_jax.data.pipeline.batches import Augment, Preprocess, as_iterator, train_batches
    data = load_data({"name": "synthetic", "subset": "default"})
    pre = Preprocess(size, (0.5,) * 3, (0.5,) * 3)
    ds = train_batches(data.sources["train"], batch_size=batch, seed=0, epoch=0, preprocess=pre, augment=Augment())
    it = as_iterator(ds)
    next(it)
    t = time.perf_counter()
    n = 0
    for _, _ in zip(range(steps), it):
        n += batch
    return n / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=DEFAULT_CASES)
    parser.add_argument("--dtypes", default="float32", help="Flax compute dtypes, e.g. float32,bfloat16")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no_torch", action="store_true")
    parser.add_argument("--plain_xla", action="store_true",
                        help="baseline: no fast convolution paths (see use_plain_xla_convolutions)")
    args = parser.parse_args()
    if args.plain_xla:
        use_plain_xla_convolutions()
    import torch
    print(f"jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), batch {args.batch}, median of {args.repeats} steps")
    dtypes = args.dtypes.split(",")
    print("| case | " + " | ".join(f"flax {d} img/s" for d in dtypes) + " | torch img/s | flax/torch | "
          "compile s | pipeline img/s |")
    print("|---" * (len(dtypes) + 5) + "|")
    for case in args.cases.split(","):
        name, stem, size = _parse(case)
        flax = [flax_step(name, stem, size, args.batch, d, args.repeats) for d in dtypes]
        torch_ips = None if args.no_torch else torch_step(name, stem, size, args.batch, args.repeats)
        ratio = f"{flax[0][0] / torch_ips:.2f}" if torch_ips else "n/a"
        torch_txt = f"{torch_ips:.1f}" if torch_ips else "n/a"
        print(f"| {case} | " + " | ".join(f"{ips:.1f}" for ips, _ in flax)
              + f" | {torch_txt} | {ratio} | {flax[0][1]:.1f} | {pipeline_rate(size, args.batch):.0f} |", flush=True)


if __name__ == "__main__":
    main()
