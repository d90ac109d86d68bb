"""Depthwise convolution as a sum of shifted, scaled copies of the input.

XLA:CPU runs grouped convolutions with one group per channel 5-10x slower than PyTorch, and far slower
still when the kernel is larger than the feature map (5x5 on 2x2). A k x k depthwise conv is only k*k
multiply-adds per output element, which XLA fuses into one loop; taps that would read nothing but
padding are skipped. Same parameters and results as ``nn.Conv(feature_group_count=C)``.

Two paddings:
  'SAME'   TF/XLA rule (asymmetric at stride 2: the extra row/column goes after), what TF-ported
           weights (EfficientNet-Lite) expect; ``depthwise_conv_same``.
  int p    torch's ``padding=p``: p rows/columns of zeros on every side (torchvision pads (k - 1) // 2),
           output side floor((n + 2p - k) / stride) + 1; ``depthwise_conv_padded``.
"""

from __future__ import annotations

from typing import Any, Callable, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Padding = Union[str, int]


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, tuple[int, int]]:
    """Output size and (before, after) padding of TF/XLA 'SAME' along one axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, (total // 2, total - total // 2)


def symmetric_padding(size: int, kernel: int, stride: int, pad: int) -> tuple[int, tuple[int, int]]:
    """Output size and (before, after) padding of torch's ``padding=pad`` along one axis.

    ``after`` is trimmed to what the last window reads, so no unread zeros are materialised."""
    out = (size + 2 * pad - kernel) // stride + 1
    if out < 1:
        raise ValueError(f"depthwise conv: kernel {kernel} with padding {pad} does not fit an input of "
                         f"size {size}")
    return out, (pad, (out - 1) * stride + kernel - size - pad)


def _live_taps(size: int, kernel: int, stride: int, out: int, before: int) -> list[int]:
    """Kernel offsets whose strided window touches at least one real (non-padding) input element."""
    return [i for i in range(kernel)
            if any(0 <= i + o * stride - before < size for o in range(out))]


def _shift_and_add(x: jax.Array, kernel: jax.Array, stride: int,
                   rows: tuple[int, tuple[int, int]], cols: tuple[int, tuple[int, int]]) -> jax.Array:
    """Depthwise conv of NHWC ``x`` given each axis' (output size, (before, after) padding)."""
    b, h, w, c = x.shape
    k = kernel.shape[0]
    (oh, (pt, pb)), (ow, (pl, pr)) = rows, cols
    # A negative 'after' (torch drops input rows the last window does not reach) crops instead of pads.
    xp = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (pt, pb, 0), (pl, pr, 0), (0, 0, 0)))
    out = None
    for i in _live_taps(h, k, stride, oh, pt):
        for j in _live_taps(w, k, stride, ow, pl):
            window = lax.slice(xp, (0, i, j, 0), (b, i + (oh - 1) * stride + 1, j + (ow - 1) * stride + 1, c),
                               (1, stride, stride, 1))
            term = window * kernel[i, j, 0]
            out = term if out is None else out + term
    return out


def depthwise_conv_same(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """Depthwise conv of NHWC `x` with a (k, k, 1, C) kernel, stride `stride`, 'SAME' padding."""
    _, h, w, _ = x.shape
    k = kernel.shape[0]
    return _shift_and_add(x, kernel, stride, same_padding(h, k, stride), same_padding(w, k, stride))


def depthwise_conv_padded(x: jax.Array, kernel: jax.Array, stride: int, pad: int) -> jax.Array:
    """Depthwise conv of NHWC `x` with a (k, k, 1, C) kernel, stride `stride`, torch ``padding=pad``."""
    _, h, w, _ = x.shape
    k = kernel.shape[0]
    return _shift_and_add(x, kernel, stride, symmetric_padding(h, k, stride, pad),
                          symmetric_padding(w, k, stride, pad))


class DepthwiseConv(nn.Module):
    """Bias-free depthwise conv; its 'kernel' is laid out like flax's grouped conv, (k, k, 1, C).

    Attributes:
      kernel_size: side k of the square kernel.
      stride: stride along both axes.
      padding: 'SAME' (TF/XLA rule) or an int p (torch's symmetric ``padding=p``).
    """

    kernel_size: int
    stride: int = 1
    kernel_init: Callable = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
    dtype: Any = jnp.float32
    padding: Padding = "SAME"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (self.kernel_size, self.kernel_size, 1, c),
                            jnp.float32)
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        if self.padding == "SAME":
            return depthwise_conv_same(x, kernel, self.stride)
        if isinstance(self.padding, int) and not isinstance(self.padding, bool) and self.padding >= 0:
            return depthwise_conv_padded(x, kernel, self.stride, self.padding)
        raise ValueError(f"DepthwiseConv padding must be 'SAME' or a non-negative int, got {self.padding!r}")
