"""Sliding-window inference: predict a large image (a whole fundus or histology tile) with a model
trained on fixed-size crops, averaging the overlapping window predictions.

Windows step by ``window * (1 - overlap)``; the last one in each axis is aligned to the image edge,
so every pixel is covered and no window hangs off the image. An image smaller than the window is
padded (zeros or reflection) up to the window and the result cropped back. Gaussian weighting (as in
nnU-Net, sigma = window / 8) trusts window centres more than their borders, where the network saw
less context; uniform weighting is a plain mean. Accumulation is in float64, so with a pointwise model
the result is exactly the single-pass prediction.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

WEIGHTINGS = ("gaussian", "uniform")
PAD_MODES = ("constant", "reflect")


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Start offsets along one axis of length ``size`` >= ``window``: every ``stride``, plus a last
    window aligned to the end when the stride does not land there."""
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def window_weights(window: tuple[int, int], weighting: str) -> np.ndarray:
    """[wh, ww] float64 weights of one window's pixels: a Gaussian bump (sigma = side / 8, peak 1,
    floored at 1e-3 so border pixels still count) or ones."""
    if weighting == "uniform":
        return np.ones(window, np.float64)
    axes = []
    for side in window:
        pos = np.arange(side, dtype=np.float64) - (side - 1) / 2
        axes.append(np.exp(-0.5 * (pos / (side / 8)) ** 2))
    return np.maximum(np.outer(*axes), 1e-3)


def sliding_window_predict(predict_fn: Callable, image: np.ndarray, *, window: int | tuple[int, int],
                           overlap: float = 0.5, batch_size: int = 8, weighting: str = "gaussian",
                           pad_mode: str = "constant") -> np.ndarray:
    """Weighted average of ``predict_fn`` over overlapping windows covering ``image``.

    Args:
      predict_fn: maps a float32 batch [N, wh, ww, C] to [N, wh, ww, K] (numpy or jax arrays). Every
        call gets exactly ``batch_size`` windows (the last batch is zero-padded), so a jitted function
        compiles once.
      image: [H, W, C] array.
      window: window side, or (height, width).
      overlap: fraction of a window shared with its neighbour, in [0, 1).
      weighting: 'gaussian' or 'uniform'.
      pad_mode: 'constant' (zeros) or 'reflect', used only where the image is smaller than the window.

    Returns:
      [H, W, K] float32.
    """
    image = np.asarray(image, np.float32)
    if image.ndim != 3:
        raise ValueError(f"image must be [H, W, C], got shape {image.shape}")
    wh, ww = (window, window) if isinstance(window, int) else tuple(window)
    if min(wh, ww) < 1 or not 0 <= overlap < 1 or batch_size < 1:
        raise ValueError(f"need window >= 1, 0 <= overlap < 1, batch_size >= 1; got window={window}, "
                         f"overlap={overlap}, batch_size={batch_size}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting={weighting!r}; expected one of {WEIGHTINGS}")
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode={pad_mode!r}; expected one of {PAD_MODES}")

    h, w, c = image.shape
    pad = ((0, max(wh - h, 0)), (0, max(ww - w, 0)), (0, 0))
    padded = np.pad(image, pad, mode=pad_mode) if h < wh or w < ww else image
    ph, pw = padded.shape[:2]
    corners = [(y, x) for y in window_starts(ph, wh, max(1, int(round(wh * (1 - overlap)))))
               for x in window_starts(pw, ww, max(1, int(round(ww * (1 - overlap)))))]
    weights = window_weights((wh, ww), weighting)[..., None]

    total = norm = None
    for first in range(0, len(corners), batch_size):
        chunk = corners[first:first + batch_size]
        batch = np.zeros((batch_size, wh, ww, c), np.float32)
        for i, (y, x) in enumerate(chunk):
            batch[i] = padded[y:y + wh, x:x + ww]
        pred = np.asarray(predict_fn(batch))
        if pred.ndim != 4 or pred.shape[:3] != (batch_size, wh, ww):
            raise ValueError(f"predict_fn must return [{batch_size}, {wh}, {ww}, K], got {pred.shape}")
        if total is None:
            total = np.zeros((ph, pw, pred.shape[3]), np.float64)
            norm = np.zeros((ph, pw, 1), np.float64)
        for i, (y, x) in enumerate(chunk):
            total[y:y + wh, x:x + ww] += weights * pred[i]
            norm[y:y + wh, x:x + ww] += weights
    return (total / norm)[:h, :w].astype(np.float32)
