"""Per-image intensity preprocessing of segmentation images, before any augmentation or normalisation.

Photographs from another hospital differ in exposure, white balance and contrast; a network trained on one
camera's images reads those differences as content (a DRIVE-trained model over-segments the background of
other sites' fundus photos). These modes map every image, training and test alike, to a common intensity
scale that depends only on the image itself, so they carry over to sites nobody tuned on:

    none         the stored RGB values.
    standardize  each colour channel to zero mean and unit variance inside the field of view, stored as
                 uint8 with 0 = 3 standard deviations below the mean and 255 = 3 above (outside the field
                 of view: 0).
    clahe        contrast-limited adaptive histogram equalisation (scikit-image) of the image's brightness,
                 hue kept; tiles of 1/8 of the image side, so the rule follows the image size.
    green_clahe  the green channel (where vessels contrast most in fundus photos) equalised the same way
                 and copied to the three channels: colour casts vanish entirely.

The output is again a uint8 H x W x 3 image, so patching, augmentation and normalisation stay unchanged.
"""

from __future__ import annotations

import numpy as np
import skimage.exposure

INTENSITY_MODES = ("none", "standardize", "clahe", "green_clahe")
CLAHE_CLIP_LIMIT = 0.01  # scikit-image's default: share of a tile's pixels a histogram bin may hold
_STANDARD_RANGE = 3.0    # standard deviations mapped to each end of the uint8 range


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def _standardize(image: np.ndarray, fov: np.ndarray | None) -> np.ndarray:
    inside = np.ones(image.shape[:2], bool) if fov is None else np.asarray(fov) > 0
    if not inside.any():
        inside = np.ones(image.shape[:2], bool)
    x = image.astype(np.float32)
    values = x[inside]                                    # [N, 3]
    z = (x - values.mean(axis=0)) / np.maximum(values.std(axis=0), 1.0)
    out = _to_uint8((z / _STANDARD_RANGE + 1.0) / 2.0)
    out[~inside] = 0
    return out


def _clahe(channels: np.ndarray) -> np.ndarray:
    kernel = [max(8, s // 8) for s in channels.shape[:2]]
    return skimage.exposure.equalize_adapthist(channels, kernel_size=kernel, clip_limit=CLAHE_CLIP_LIMIT)


def apply_intensity(image: np.ndarray, mode: str, fov: np.ndarray | None = None) -> np.ndarray:
    """The uint8 H x W x 3 `image` mapped by `mode` (see the module docstring); `fov` (H x W, > 0 inside)
    limits the statistics of 'standardize'. 'none' returns the image itself."""
    if mode not in INTENSITY_MODES:
        raise ValueError(f"intensity mode must be one of {INTENSITY_MODES}, got {mode!r}")
    if mode == "none":
        return image
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"intensity preprocessing needs uint8 H x W x 3 images, got {image.dtype} {image.shape}")
    if mode == "standardize":
        return _standardize(image, fov)
    if mode == "clahe":
        return _to_uint8(_clahe(image))
    green = _to_uint8(_clahe(image[..., 1]))
    return np.repeat(green[..., None], 3, axis=-1)
