"""Accelerator readiness in one short run: train-step img/s on whatever devices JAX sees, next to PyTorch.

    python benchmarks/accelerator.py                      # ResNet-50 @224, global batch 256, bf16 and fp32
    python benchmarks/accelerator.py --model cbr_tiny --size 32 --batch 16 --repeats 2   # CPU smoke test

Flax: the trainer's own jit step (`medtl_jax.train.trainer.make_train_step`), data parallel over every
device, on a device-resident synthetic batch (so the input pipeline cannot starve it), in float32 and in
bfloat16 compute (float32 parameters). PyTorch (only where CUDA is present): the same network and step
as a PyTorch user runs it, channels_last and automatic mixed precision (bf16), one GPU. The input
pipeline (grain, synthetic images resized to the same size, augmenting) is timed on the host alone, to
compare with the step rate. One table; on a GPU the default case takes a few minutes.

Install JAX for the accelerator first: `pip install -U "jax[cuda13]"` (NVIDIA, CUDA 13; `jax[cuda12]`
for CUDA 12) or `pip install -U "jax[tpu]"` (Cloud TPU VM); the project's pinned jax==0.10.2 has both.
"""

from __future__ import annotations

import argparse
import time

import jax
from timing import median_seconds
from train_step import flax_step, pipeline_rate


def torch_cuda_step(name: str, size: int, batch: int, repeats: int) -> float | None:
    """img/s of the PyTorch step on one CUDA GPU (channels_last, bf16 autocast), None without CUDA (or for a
    model torchvision does not have)."""
    import torch
    import torchvision
    if not torch.cuda.is_available() or not hasattr(torchvision.models, name):
        return None
    model = getattr(torchvision.models, name)(weights=None, num_classes=2)
    model = model.cuda().to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, size, size, device="cuda").to(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (batch,), device="cuda")

    def run():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        torch.cuda.synchronize()

    return batch / median_seconds(run, repeats)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=256, help="global batch, split over the devices")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--pipeline_steps", type=int, default=20)
    args = parser.parse_args(argv)
    devices = jax.devices()
    t0 = time.perf_counter()
    print(f"jax {jax.__version__}: {len(devices)} x {devices[0].device_kind} ({devices[0].platform}); "
          f"{args.model} @{args.size}, global batch {args.batch}, median of {args.repeats} steps")
    rows = [(f"flax {dtype} ({len(devices)} device(s))",
             *flax_step(args.model, "imagenet", args.size, args.batch, dtype, args.repeats, num_devices=0))
            for dtype in ("float32", "bfloat16")]
    torch_ips = torch_cuda_step(args.model, args.size, args.batch, args.repeats)
    rows.append(("torch bf16 autocast, channels_last (1 GPU)", torch_ips, None))
    rows.append(("input pipeline (host, grain)", pipeline_rate(args.size, min(args.batch, 64), args.pipeline_steps),
                 None))
    print("| what | img/s | compile s |\n|---|---|---|")
    for what, ips, compile_s in rows:
        shown = "n/a" if ips is None else f"{ips:.1f}"
        print(f"| {what} | {shown} | {'' if compile_s is None else f'{compile_s:.1f}'} |")
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
