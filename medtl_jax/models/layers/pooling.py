"""Torch-exact adaptive average pooling for NHWC maps (VGG's and AlexNet's fixed-size classifier input).

``torch.nn.AdaptiveAvgPool2d(out)`` averages, for output index ``i`` along an axis of length ``n``, the
input bin ``[floor(i * n / out), ceil((i + 1) * n / out))``. Bins may overlap, and when ``n < out``
(a 64x64 image gives VGG a 2x2 map where its classifier wants 7x7) most bins hold one value, so values
repeat, while a bin that straddles two inputs averages them. Because the sizes are static, each axis is
one small averaging matrix and the pool is two contractions, which XLA runs fast on every backend.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def adaptive_bins(in_size: int, out_size: int) -> list[tuple[int, int]]:
    """``(start, end)`` of each of the ``out_size`` torch adaptive-pooling bins over ``in_size`` inputs."""
    if in_size < 1 or out_size < 1:
        raise ValueError(f"adaptive pooling needs positive sizes, got in={in_size} out={out_size}")
    return [((i * in_size) // out_size, -(-((i + 1) * in_size) // out_size)) for i in range(out_size)]


@functools.lru_cache(maxsize=None)
def averaging_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) float32 matrix whose row ``i`` averages bin ``i`` (see ``adaptive_bins``)."""
    matrix = np.zeros((out_size, in_size), np.float32)
    for i, (start, end) in enumerate(adaptive_bins(in_size, out_size)):
        matrix[i, start:end] = 1.0 / (end - start)
    matrix.setflags(write=False)
    return matrix


def adaptive_avg_pool(x: jax.Array, output_size: tuple[int, int]) -> jax.Array:
    """``AdaptiveAvgPool2d(output_size)`` of an NHWC map: [B, H, W, C] -> [B, out_h, out_w, C].

    Returns ``x`` unchanged when it already has the output size (the pool is then the identity).
    """
    out_h, out_w = output_size
    _, height, width, _ = x.shape
    if (height, width) == (out_h, out_w):
        return x
    rows = jnp.asarray(averaging_matrix(height, out_h), x.dtype)
    cols = jnp.asarray(averaging_matrix(width, out_w), x.dtype)
    return jnp.einsum("oh,bhwc,pw->bopc", rows, x, cols, precision=jax.lax.Precision.HIGHEST)
