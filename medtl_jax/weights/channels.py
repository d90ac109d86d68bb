"""Pretrained RGB stems for inputs with other channel counts (X-ray, CT, MRI), without tripling the image.

A gray image copied to three channels costs 3x the input memory and stem FLOPs to compute what one
channel can: a conv is linear in its input, so ``conv(W, [g, g, g]) == conv(sum_c W_c, g)``.
``fold_input_channels`` rewrites the stem kernel that way; the model is then built and fed with
``in_channels`` channels (flax convs size their kernels from the input at ``init``).

When the fold is exact -- and what the code does otherwise:
  - Plain fold (``input_norm=None``): exact whenever the three channels the weights would have seen carry
    the SAME normalised values, i.e. the gray image is normalised once (one mean, one std) and copied, or
    the model's per-channel constants are equal ('minus_one_one', Inception after its transform).
  - Per-channel constants that differ (ImageNet's mean/std): copying the raw gray image and normalising
    each copy with its own (mean_c, std_c) gives three different channels, (p - mean_c) / std_c. Pass
    ``input_norm=(mean, std)`` and feed the one channel normalised with ``gray_normalization(mean, std)``
    = (m, s), the channel averages. Since (p - mean_c) / std_c = (s * x + m - mean_c) / std_c, the fold
    is ``sum_c W_c * s / std_c`` plus a constant per output channel,
    ``delta = sum_{taps, c} W_c * (m - mean_c) / std_c``, which goes where the stem can absorb it:
    added to the stem conv's bias, or subtracted from the running mean of the BatchNorm right after it
    (``offset_path``; each model's ``ModelSpec.stem_offset`` names it; in training the batch mean absorbs it
    anyway).
    This is exact everywhere the conv window lies inside the image. Where the window reaches into the
    conv's zero padding (the outer ``pad / stride`` output rows and columns: 2 on each side for ResNet's
    7x7/2 pad 3), it is not, and cannot be: padding is 0 in normalised units, i.e. pixel value
    ``mean_c`` in channel c -- three different pixel values no single channel can reproduce. At the
    stem the error is confined to that border (deeper layers spread it); unpadded stems (Inception's)
    stay exact everywhere.
  - Other channel counts (2, 4, ...: stacked MRI sequences or slices, which carry no colour): every
    channel gets the same gray kernel ``sum_c W_c * scale_c / C``. Then C identical channels give exactly
    the 3-copy response (as for C = 1), and each channel's share of the activation is 3/C of an RGB
    channel's, so activations keep their scale. ``in_channels == 3`` leaves the weights unchanged.

Inception-V3: its ``transform_input`` needs 3 channels. For gray input build it with
``transform_input=False``, normalise the gray image to [-1, 1] and use the plain fold: exact, since the
transform maps the three copies of a gray image to the same (p - 0.5) / 0.5.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from flax import traverse_util
from flax.core import unfreeze

def gray_normalization(mean: Sequence[float], std: Sequence[float]) -> tuple[float, float]:
    """(mean, std) to normalise a gray image with for a stem folded with ``input_norm=(mean, std)``:
    the averages of the per-channel constants (ImageNet: 0.449, 0.226)."""
    return float(np.mean(mean)), float(np.mean(std))


def fold_input_channels(variables: dict, stem_kernel_path: str, in_channels: int, *,
                        input_norm: tuple[Sequence[float], Sequence[float]] | None = None,
                        offset_path: str | None = None) -> dict:
    """``variables`` with the RGB stem kernel at ``params/<stem_kernel_path>/kernel`` rewritten for
    ``in_channels`` input channels (see the module docstring for the rule and when it is exact).

    Args:
      variables: nested ``{'params': ..., 'batch_stats': ...}`` (numpy or jax leaves); not modified.
      stem_kernel_path: the stem conv below 'params', e.g. ``MODELS['resnet18'].stem_kernel``.
      in_channels: channels of the new input (1 for gray); 3 returns the variables unchanged.
      input_norm: per-channel (mean, std) the weights were trained with, when the new input is normalised
        with ``gray_normalization(mean, std)`` instead of per channel; None for the plain fold.
      offset_path: full path ('params/.../bias' or 'batch_stats/.../mean') taking the constant offset the
        fold leaves when ``input_norm``'s means differ; required then, e.g. ``MODELS[name].stem_offset``.

    Returns a new nested dict (untouched leaves are shared); changed leaves are numpy arrays of the
    original dtype.
    """
    flat = traverse_util.flatten_dict(unfreeze(variables), sep="/")
    kernel_key = "/".join(part for part in ("params", stem_kernel_path.strip("/"), "kernel") if part)
    if kernel_key not in flat:
        raise KeyError(f"no stem kernel {kernel_key!r} in the variables")
    kernel = np.asarray(flat[kernel_key])
    if kernel.ndim != 4 or kernel.shape[2] != 3:
        raise ValueError(f"{kernel_key}: expected an HWIO kernel with 3 input channels, got {kernel.shape}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be positive, got {in_channels}")
    if in_channels == 3:
        return traverse_util.unflatten_dict(flat, sep="/")

    weights = kernel.astype(np.float64)
    scale = np.ones(3)
    offset = np.zeros(kernel.shape[-1])
    if input_norm is not None:
        mean, std = (np.asarray(v, np.float64) for v in input_norm)
        gray_mean, gray_std = gray_normalization(mean, std)
        scale = gray_std / std
        offset = np.einsum("hwco,c->o", weights, (gray_mean - mean) / std)
    gray = np.einsum("hwco,c->hwo", weights, scale)[:, :, None, :] / in_channels
    flat[kernel_key] = np.repeat(gray, in_channels, axis=2).astype(kernel.dtype)

    if np.any(offset != 0):
        if offset_path is None:
            raise ValueError("input_norm has different per-channel means, so the fold leaves a constant "
                             "offset per output channel: pass offset_path (the stem conv's bias or the "
                             "running mean of the BatchNorm after it, e.g. ModelSpec.stem_offset)")
        target = np.asarray(flat.get(offset_path)) if offset_path in flat else None
        if target is None or target.shape != offset.shape:
            raise ValueError(f"offset_path {offset_path!r} must name a vector of {offset.size} values in "
                             f"the variables, got {None if target is None else target.shape}")
        if offset_path.startswith("params/") and offset_path.endswith("/bias"):
            flat[offset_path] = (target + offset).astype(target.dtype)  # conv(x) + b + delta
        elif offset_path.startswith("batch_stats/") and offset_path.endswith("/mean"):
            flat[offset_path] = (target - offset).astype(target.dtype)  # BN(y + delta - mu)
        else:
            raise ValueError(f"offset_path must be 'params/.../bias' or 'batch_stats/.../mean', "
                             f"got {offset_path!r}")
    return traverse_util.unflatten_dict(flat, sep="/")
