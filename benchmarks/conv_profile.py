"""Where a CNN train step spends its time on this CPU: each convolution's forward, input gradient and
weight gradient, in JAX (the zoo's own conv paths) and in PyTorch, next to the machine's matmul rate.

    python benchmarks/conv_profile.py                 # ResNet-18 @64 and EfficientNet-Lite0 @64 layers
    python benchmarks/conv_profile.py --batch 32 --repeats 9

Each row is one layer shape of the named network (count = how often it occurs), timed alone after warm-up,
median of `--repeats`. Dense convolutions are reported in GFLOP/s (2 * MACs / time; the matmul line gives
the machine's ceiling), depthwise ones in milliseconds. The totals weight each row by its count, so they
show which pass (forward, input gradient, weight gradient) separates the two frameworks. Needs torch.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from medtl_jax.models.layers.conv import conv2d
from medtl_jax.models.layers.depthwise import depthwise_conv_same
from timing import median_seconds

# (label, input side, in channels, out channels, kernel, stride, padding, count) of ResNet-18 at 64 px.
RESNET18_64 = [("stem 7x7/2", 64, 3, 64, 7, 2, 3, 1), ("stage1 3x3", 16, 64, 64, 3, 1, 1, 4),
               ("stage2 3x3/2", 16, 64, 128, 3, 2, 1, 1), ("stage2 1x1/2", 16, 64, 128, 1, 2, 0, 1),
               ("stage2 3x3", 8, 128, 128, 3, 1, 1, 3), ("stage3 3x3/2", 8, 128, 256, 3, 2, 1, 1),
               ("stage3 1x1/2", 8, 128, 256, 1, 2, 0, 1), ("stage3 3x3", 4, 256, 256, 3, 1, 1, 3),
               ("stage4 3x3/2", 4, 256, 512, 3, 2, 1, 1), ("stage4 1x1/2", 4, 256, 512, 1, 2, 0, 1),
               ("stage4 3x3", 2, 512, 512, 3, 1, 1, 3)]
# (label, input side, channels, kernel, stride, count): EfficientNet-Lite0's depthwise layers at 64 px.
LITE0_64_DEPTHWISE = [("dw 3x3 32ch", 32, 32, 3, 1, 1), ("dw 3x3/2 96ch", 32, 96, 3, 2, 1),
                      ("dw 3x3 144ch", 16, 144, 3, 1, 1), ("dw 5x5/2 144ch", 16, 144, 5, 2, 1),
                      ("dw 5x5 240ch", 8, 240, 5, 1, 1), ("dw 3x3/2 240ch", 8, 240, 3, 2, 1),
                      ("dw 3x3 480ch", 4, 480, 3, 1, 2), ("dw 5x5 480ch", 4, 480, 5, 1, 1),
                      ("dw 5x5 672ch", 4, 672, 5, 1, 2), ("dw 5x5/2 672ch", 4, 672, 5, 2, 1),
                      ("dw 5x5 1152ch", 2, 1152, 5, 1, 3), ("dw 3x3 1152ch", 2, 1152, 3, 1, 1)]


def median_ms(fn, repeats: int) -> float:
    """Median milliseconds of `fn()` (benchmarks/timing.py)."""
    return 1e3 * median_seconds(fn, repeats)


def _jax_passes(fn, x, w, repeats: int) -> tuple[float, float, float]:
    """(forward, input-gradient, weight-gradient) ms of y = fn(x, w), each pass compiled on its own."""
    y, _ = jax.vjp(fn, x, w)
    dy = jnp.asarray(np.random.default_rng(1).standard_normal(y.shape, np.float32))
    fwd = jax.jit(fn)
    dx = jax.jit(lambda x, w, dy: jax.vjp(lambda a: fn(a, w), x)[1](dy)[0])
    dw = jax.jit(lambda x, w, dy: jax.vjp(lambda b: fn(x, b), w)[1](dy)[0])
    return (median_ms(lambda: fwd(x, w).block_until_ready(), repeats),
            median_ms(lambda: dx(x, w, dy).block_until_ready(), repeats),
            median_ms(lambda: dw(x, w, dy).block_until_ready(), repeats))


def _torch_passes(x, w, stride, padding, groups, repeats: int) -> tuple[float, float, float]:
    """The same three passes in PyTorch (torch.nn.grad's input and weight convolutions)."""
    import torch
    tx, tw = torch.from_numpy(x), torch.from_numpy(w)
    with torch.no_grad():
        y = torch.nn.functional.conv2d(tx, tw, stride=stride, padding=padding, groups=groups)
    dy = torch.from_numpy(np.random.default_rng(1).standard_normal(tuple(y.shape)).astype(np.float32))
    grad = torch.nn.grad

    def fwd():
        with torch.no_grad():
            torch.nn.functional.conv2d(tx, tw, stride=stride, padding=padding, groups=groups)

    return (median_ms(fwd, repeats),
            median_ms(lambda: grad.conv2d_input(tx.shape, tw, dy, stride=stride, padding=padding,
                                                groups=groups), repeats),
            median_ms(lambda: grad.conv2d_weight(tx, tw.shape, dy, stride=stride, padding=padding,
                                                 groups=groups), repeats))


def matmul_gflops(n: int = 2048, repeats: int = 9) -> float:
    """The machine's float32 matmul rate through XLA (n x n @ n x n)."""
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n), np.float32))
    mm = jax.jit(lambda a: a @ a)
    return 2 * n**3 / median_ms(lambda: mm(a).block_until_ready(), repeats) / 1e6


def dense_table(batch: int, repeats: int) -> None:
    """ResNet-18 @64 convolutions: GFLOP/s of each pass, JAX vs PyTorch."""
    rng = np.random.default_rng(0)
    print(f"\nResNet-18 @64 convolutions, batch {batch}: GFLOP/s (forward | input grad | weight grad)")
    print(f"{'layer':14} {'n':>2} {'JAX fwd':>8} {'dx':>6} {'dw':>6} {'torch fwd':>10} {'dx':>6} {'dw':>6}")
    totals = np.zeros(6)
    for label, size, cin, cout, k, stride, pad, count in RESNET18_64:
        x = rng.standard_normal((batch, size, size, cin), np.float32)
        w = (0.05 * rng.standard_normal((k, k, cin, cout))).astype(np.float32)
        out = (size + 2 * pad - k) // stride + 1
        gflop = 2 * batch * out * out * k * k * cin * cout / 1e9
        j = _jax_passes(lambda a, b: conv2d(a, b, stride, ((pad, pad), (pad, pad))), jnp.asarray(x),
                        jnp.asarray(w), repeats)
        t = _torch_passes(np.ascontiguousarray(x.transpose(0, 3, 1, 2)),
                          np.ascontiguousarray(w.transpose(3, 2, 0, 1)), stride, pad, 1, repeats)
        ms = np.array([*j, *t])
        totals += count * ms
        print(f"{label:14} {count:>2} " + " ".join(f"{gflop / m * 1e3:>{wd}.0f}" for m, wd in
                                                  zip(ms, (8, 6, 6, 10, 6, 6))))
    print(f"{'total ms':14} {'':>2} " + " ".join(f"{m:>{wd}.1f}" for m, wd in zip(totals, (8, 6, 6, 10, 6, 6))))


def depthwise_table(batch: int, repeats: int) -> None:
    """EfficientNet-Lite0 @64 depthwise convolutions: ms of each pass, JAX shift-and-add vs PyTorch."""
    rng = np.random.default_rng(0)
    print(f"\nEfficientNet-Lite0 @64 depthwise convolutions, batch {batch}: ms (forward | input grad | weight grad)")
    print(f"{'layer':15} {'n':>2} {'JAX fwd':>8} {'dx':>6} {'dw':>6} {'torch fwd':>10} {'dx':>6} {'dw':>6}")
    totals = np.zeros(6)
    for label, size, ch, k, stride, count in LITE0_64_DEPTHWISE:
        x = rng.standard_normal((batch, size, size, ch), np.float32)
        w = rng.standard_normal((k, k, 1, ch)).astype(np.float32)
        j = _jax_passes(lambda a, b: depthwise_conv_same(a, b, stride), jnp.asarray(x), jnp.asarray(w), repeats)
        # torch has no 'SAME'; symmetric (k-1)//2 padding has the same cost.
        t = _torch_passes(np.ascontiguousarray(x.transpose(0, 3, 1, 2)),
                          np.ascontiguousarray(w.transpose(3, 2, 0, 1)), stride, (k - 1) // 2, ch, repeats)
        ms = np.array([*j, *t])
        totals += count * ms
        print(f"{label:15} {count:>2} " + " ".join(f"{m:>{wd}.2f}" for m, wd in zip(ms, (8, 6, 6, 10, 6, 6))))
    print(f"{'total ms':15} {'':>2} " + " ".join(f"{m:>{wd}.1f}" for m, wd in zip(totals, (8, 6, 6, 10, 6, 6))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    import torch
    print(f"jax {jax.__version__} ({jax.default_backend()}), torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); XLA matmul 2048^3: {matmul_gflops():.0f} GFLOP/s")
    dense_table(args.batch, args.repeats)
    depthwise_table(args.batch, args.repeats)


if __name__ == "__main__":
    main()
