"""Depthwise convolution as a sum of shifted, scaled copies of the input (TF/XLA 'SAME' padding).

XLA:CPU runs grouped convolutions with one group per channel 5-10x slower than PyTorch, and far slower
still when the kernel is larger than the feature map (5x5 on 2x2). A k x k depthwise conv is only k*k
multiply-adds per output element, which XLA fuses into one loop; taps that would read nothing but
padding are skipped. Same parameters and results as `nn.Conv(feature_group_count=C, padding='SAME')`.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, tuple[int, int]]:
    """Output size and (before, after) padding of TF/XLA 'SAME' along one axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, (total // 2, total - total // 2)


def _live_taps(size: int, kernel: int, stride: int) -> list[int]:
    """Kernel offsets whose strided window touches at least one real (non-padding) input element."""
    out, (before, _) = same_padding(size, kernel, stride)
    return [i for i in range(kernel)
            if any(0 <= i + o * stride - before < size for o in range(out))]


def depthwise_conv_same(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """Depthwise conv of NHWC `x` with a (k, k, 1, C) kernel, stride `stride`, 'SAME' padding."""
    b, h, w, c = x.shape
    k = kernel.shape[0]
    oh, (pt, pb) = same_padding(h, k, stride)
    ow, (pl, pr) = same_padding(w, k, stride)
    xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    out = None
    for i in _live_taps(h, k, stride):
        for j in _live_taps(w, k, stride):
            window = lax.slice(xp, (0, i, j, 0), (b, i + (oh - 1) * stride + 1, j + (ow - 1) * stride + 1, c),
                               (1, stride, stride, 1))
            term = window * kernel[i, j, 0]
            out = term if out is None else out + term
    return out


class DepthwiseConv(nn.Module):
    """Bias-free depthwise conv with 'SAME' padding; its 'kernel' is laid out like flax's grouped conv."""

    kernel_size: int
    stride: int = 1
    kernel_init: Callable = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (self.kernel_size, self.kernel_size, 1, c), jnp.float32)
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        return depthwise_conv_same(x, kernel, self.stride)
