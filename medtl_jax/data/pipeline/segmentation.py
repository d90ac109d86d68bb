"""Segmentation input pipeline: random training patches with joint augmentation, full-size evaluation.

Training (same guarantees as `pipeline.train_batches`): one epoch visits every image
`patches_per_image` times, in a permutation drawn from (seed, epoch); the global batch at step t is
positions [t*G, (t+1)*G) of that order (G = per-process batch x process count) and process k takes the
k-th slice. Everything random about a visit (patch location, foreground centring, flip, rotations,
brightness/contrast, gamma, channel gains, blur) comes from a Generator seeded by (seed, epoch, position), so an epoch is
reproducible, independent of sharding and threading, and `ds[k:]` resumes it exactly at step k.

A patch is a P x P window of the (optionally rescaled) image; where it reaches past the image (images
smaller than P, rotations near a border) the image is 0, the mask 0 and 'valid' 0. 'valid' is the
field of view inside the image: losses and metrics should count only valid pixels.

Geometry is identical for image, mask and fov: exact array flips / 90-degree turns, and for
`rotate_degrees` > 0 one PIL rotation of a larger window about the patch centre (image bilinear,
mask and fov nearest). Intensity (brightness/contrast, normalisation) is a per-patch 256-entry table
that `pipeline.collate` applies while writing the float32 batch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import Any

import grain
import numpy as np
import PIL.Image
import PIL.ImageFilter

from medtl_jax.data.pipeline.batches import collate, epoch_order
from medtl_jax.data.pipeline.intensity import INTENSITY_MODES, apply_intensity


@dataclasses.dataclass(frozen=True)
class SegPreprocess:
    """Deterministic part: a resize factor, per-image intensity mapping and per-channel normalisation.

    scale: the whole image (bilinear), mask and fov (nearest) are resized by this factor before
    patching and for evaluation; predictions then live on the rescaled grid.
    fov_diameter: > 0 replaces `scale` by a factor per image that makes the longer side of the field of
    view's bounding box (the whole image where there is no field of view) this many pixels. Fundus
    cameras differ in resolution and angle; at a common field-of-view size, vessels of DRIVE (45-degree
    camera, 533-px field) and CHASE_DB1 (30 degrees, 923 px) are equally wide (3.2 px mean), so a model
    sees the same geometry at every site.
    intensity: one of `intensity.INTENSITY_MODES`, applied to each whole (rescaled) image before
    patching and augmentation, identically for training, evaluation and prediction.
    mean / std: per-channel normalisation in [0, 1] units, last.
    """

    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    scale: float = 1.0
    intensity: str = "none"
    fov_diameter: int = 0

    def __post_init__(self):
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        object.__setattr__(self, "scale", float(self.scale))
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean/std need 3 values, std > 0: got {self.mean}, {self.std}")
        if not self.scale > 0:
            raise ValueError(f"scale must be > 0, got {self.scale}")
        if self.fov_diameter < 0:
            raise ValueError(f"fov_diameter must be >= 0, got {self.fov_diameter}")
        if self.intensity not in INTENSITY_MODES:
            raise ValueError(f"intensity must be one of {INTENSITY_MODES}, got {self.intensity!r}")


@dataclasses.dataclass(frozen=True)
class SegAugment:
    """Random joint transforms; False / 0 turns one off.

    flip: horizontal flip with probability 1/2. rot90: a uniform number of quarter turns (with flip:
    all 8 symmetries of the square). rotate_degrees: an extra rotation uniform in [-d, d].
    brightness / contrast: multiplicative factors uniform in [1 - v, 1 + v] (contrast about the
    patch mean); they change the image only.
    gamma: intensity exponent uniform in [1 - v, 1 + v] (x -> x ** gamma, before brightness/contrast).
    channel_gain: one multiplicative factor per colour channel, uniform in [1 - v, 1 + v] (another
    camera's white balance). blur: with probability 1/2, a Gaussian blur of sigma uniform in [0, v] pixels
    (another camera's or an out-of-focus image's sharpness). Site-robustness knobs; 0 = off.
    """

    flip: bool = True
    rot90: bool = True
    rotate_degrees: float = 0.0
    brightness: float = 0.1
    contrast: float = 0.1
    gamma: float = 0.0
    channel_gain: float = 0.0
    blur: float = 0.0


def _lut(pre: SegPreprocess, gain: float = 1.0, bias: float = 0.0, gamma: float = 1.0,
         channel_gain: np.ndarray | None = None) -> np.ndarray:
    """(256, 3) float32: uint8 v -> (clip((v/255) ** gamma * gain * g_c + bias, 0, 1) - mean) / std per
    channel c (g_c = channel_gain[c], 1 when None)."""
    if gamma == 1.0 and channel_gain is None:
        y = (np.arange(256, dtype=np.float32) * np.float32(gain / 255.0) + np.float32(bias))[:, None]
    else:
        x = np.power(np.arange(256, dtype=np.float32) / np.float32(255.0), np.float32(gamma))
        gains = np.float32(gain) * (np.ones(3, np.float32) if channel_gain is None
                                    else np.asarray(channel_gain, np.float32))
        y = x[:, None] * gains[None, :] + np.float32(bias)
    if gain != 1.0 or bias != 0.0 or gamma != 1.0 or channel_gain is not None:
        y = np.clip(y, 0.0, 1.0)
    return (y - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)


def rescale(record: dict, scale: float) -> dict:
    """Record with image (bilinear), mask and fov (nearest) resized by `scale`; same dict if 1."""
    if scale == 1.0:
        return record
    h, w = record["mask"].shape
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    out = dict(record)
    out["image"] = np.asarray(PIL.Image.fromarray(record["image"]).resize(size, PIL.Image.BILINEAR))
    for key in ("mask", "fov"):
        out[key] = np.asarray(PIL.Image.fromarray(record[key]).resize(size, PIL.Image.NEAREST))
    return out


def record_scale(record: dict, preprocess: SegPreprocess) -> float:
    """The resize factor of one record: `preprocess.scale`, or the field-of-view rule of `fov_diameter`."""
    if not preprocess.fov_diameter:
        return preprocess.scale
    fov = record.get("fov")
    if fov is None or not np.any(fov):
        return preprocess.fov_diameter / float(max(record["mask"].shape))
    inside = np.asarray(fov) > 0
    rows, cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
    return preprocess.fov_diameter / float(max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1))


def prepare_record(record: dict, preprocess: SegPreprocess) -> dict:
    """Record rescaled (`record_scale`), its image mapped by `preprocess.intensity` (uint8 still)."""
    r = rescale(record, record_scale(record, preprocess))
    return {**r, "image": apply_intensity(np.asarray(r["image"]), preprocess.intensity, r.get("fov"))}


def _window(array: np.ndarray, y0: int, x0: int, size: int) -> np.ndarray:
    """array[y0:y0+size, x0:x0+size] with zeros where the window leaves the array."""
    h, w = array.shape[:2]
    out = np.zeros((size, size, *array.shape[2:]), array.dtype)
    ys, xs = max(0, y0), max(0, x0)
    ye, xe = min(h, y0 + size), min(w, x0 + size)
    if ys < ye and xs < xe:
        out[ys - y0:ye - y0, xs - x0:xe - x0] = array[ys:ye, xs:xe]
    return out


def _rotate(array: np.ndarray, degrees: float, resample) -> np.ndarray:
    return np.asarray(PIL.Image.fromarray(array).rotate(degrees, resample=resample))


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """The uint8 image blurred by a Gaussian of standard deviation `sigma` pixels (image only)."""
    return np.asarray(PIL.Image.fromarray(np.ascontiguousarray(image)).filter(
        PIL.ImageFilter.GaussianBlur(radius=sigma)))


@dataclasses.dataclass(frozen=True)
class _Image:
    """One training image ready for patching: rescaled arrays and its foreground pixels (flat)."""

    image: np.ndarray
    mask: np.ndarray
    fov: np.ndarray
    foreground: np.ndarray | None


@dataclasses.dataclass(frozen=True)
class _PatchElement:
    """Epoch position -> {'image' uint8 PxPx3, 'lut', 'mask' int32 PxP, 'valid' float32 PxP}."""

    images: list
    order: np.ndarray  # image index at each epoch position
    patch_size: int
    preprocess: SegPreprocess
    augment: SegAugment | None
    foreground_fraction: float
    seed: tuple[int, int]

    def _corner(self, rng: np.random.Generator, item: _Image) -> tuple[int, int]:
        """Top-left of the patch: uniform, or centred on a random foreground pixel."""
        p = self.patch_size
        h, w = item.mask.shape
        lo_y, hi_y, lo_x, hi_x = min(0, h - p), max(0, h - p), min(0, w - p), max(0, w - p)
        centre = rng.random() < self.foreground_fraction
        if centre and item.foreground is not None and item.foreground.size:
            cy, cx = divmod(int(item.foreground[rng.integers(item.foreground.size)]), w)
            return (int(np.clip(cy - p // 2, lo_y, hi_y)), int(np.clip(cx - p // 2, lo_x, hi_x)))
        return int(rng.integers(lo_y, hi_y + 1)), int(rng.integers(lo_x, hi_x + 1))

    def __call__(self, pos: int) -> dict:
        pos = int(pos)
        item = self.images[int(self.order[pos])]
        rng = np.random.default_rng([*self.seed, pos])
        p, aug = self.patch_size, self.augment
        y0, x0 = self._corner(rng, item)
        valid = item.fov  # 0 outside the image comes from the zero padding of _window
        if aug is not None and aug.rotate_degrees:
            margin = math.ceil(p * (math.sqrt(2) - 1) / 2) + 1
            big = p + 2 * margin
            angle = float(rng.uniform(-aug.rotate_degrees, aug.rotate_degrees))
            crop = slice(margin, margin + p)
            image = _rotate(_window(item.image, y0 - margin, x0 - margin, big), angle,
                            PIL.Image.BILINEAR)[crop, crop]
            mask, valid = (_rotate(_window(a, y0 - margin, x0 - margin, big), angle,
                                   PIL.Image.NEAREST)[crop, crop] for a in (item.mask, valid))
        else:
            image, mask, valid = (_window(a, y0, x0, p) for a in (item.image, item.mask, valid))
        if aug is not None and aug.flip and rng.random() < 0.5:
            image, mask, valid = image[:, ::-1], mask[:, ::-1], valid[:, ::-1]
        if aug is not None and aug.rot90:
            k = int(rng.integers(4))
            image, mask, valid = (np.rot90(a, k, axes=(0, 1)) for a in (image, mask, valid))
        if aug is not None and aug.blur and rng.random() < 0.5:
            image = _blur(image, float(rng.uniform(0.0, aug.blur)))
        return {"image": np.ascontiguousarray(image), "lut": self._table(rng, image),
                "mask": mask.astype(np.int32), "valid": (valid > 0).astype(np.float32)}

    def _table(self, rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
        aug = self.augment
        if aug is None or not (aug.brightness or aug.contrast or aug.gamma or aug.channel_gain):
            return _lut(self.preprocess)
        b = rng.uniform(1 - aug.brightness, 1 + aug.brightness) if aug.brightness else 1.0
        c = rng.uniform(1 - aug.contrast, 1 + aug.contrast) if aug.contrast else 1.0
        g = rng.uniform(1 - aug.gamma, 1 + aug.gamma) if aug.gamma else 1.0
        gains = rng.uniform(1 - aug.channel_gain, 1 + aug.channel_gain, 3) if aug.channel_gain else None
        m = float(image[::4, ::4].mean()) / 255.0  # contrast pivots about the patch mean
        # y = clip((x*b - m*b) * c + m*b) = clip(x * b*c + m*b*(1-c))
        return _lut(self.preprocess, gain=b * c, bias=m * b * (1 - c), gamma=g, channel_gain=gains)


def _prepare(source, preprocess: SegPreprocess, want_foreground: bool) -> list[_Image]:
    """Every record of `source` rescaled and intensity-mapped, with foreground pixel lists when centring
    is on."""
    out = []
    for i in range(len(source)):
        r = prepare_record(source[i], preprocess)
        fg = np.flatnonzero(r["mask"]) if want_foreground else None
        out.append(_Image(np.asarray(r["image"]), np.asarray(r["mask"]), np.asarray(r["fov"]), fg))
    return out


def seg_train_batches(source, *, patch_size: int, patches_per_image: int, batch_size: int,
                      seed: int, epoch: int, preprocess: SegPreprocess,
                      augment: SegAugment | None, foreground_fraction: float = 0.0,
                      shard_index: int = 0, shard_count: int = 1) -> grain.MapDataset:
    """One training epoch of random patches for this process (see the module docstring).

    Batches: 'image' float32 [B,P,P,3] (normalised), 'mask' int32 [B,P,P] class ids, 'valid'
    float32 [B,P,P] (1 = inside image and field of view). The last incomplete global batch is
    dropped. foreground_fraction: probability that a patch is centred on a random foreground
    (mask > 0) pixel rather than placed uniformly; it helps thin structures such as vessels.
    """
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index {shard_index} not in [0, {shard_count})")
    if patch_size < 1 or patches_per_image < 1 or batch_size < 1:
        raise ValueError("patch_size, patches_per_image and batch_size must be >= 1")
    if not 0.0 <= foreground_fraction <= 1.0:
        raise ValueError(f"foreground_fraction must be in [0, 1], got {foreground_fraction}")
    visits = np.repeat(np.arange(len(source), dtype=np.int64), patches_per_image)
    order = epoch_order(visits, seed=seed, epoch=epoch)
    global_batch = batch_size * shard_count
    steps = len(order) // global_batch
    if steps == 0:
        raise ValueError(f"{len(source)} images x {patches_per_image} patches make no full global "
                         f"batch of {global_batch}")
    grid = np.arange(steps * global_batch).reshape(steps, shard_count, batch_size)
    positions = grid[:, shard_index].reshape(-1)
    element = _PatchElement(_prepare(source, preprocess, foreground_fraction > 0), order,
                            int(patch_size), preprocess, augment, float(foreground_fraction),
                            (int(seed), int(epoch)))
    ds = grain.MapDataset.source(positions).map(element)
    return ds.batch(batch_size, drop_remainder=True, batch_fn=collate)


def seg_eval_images(source, preprocess: SegPreprocess) -> Iterator[dict[str, Any]]:
    """Every image once, in source order, whole (sliding-window inference happens elsewhere).

    Yields {'image': float32 HxWx3 normalised, 'mask': int32 HxW, 'valid': float32 HxW (fov),
    'id': str, 'index': int, 'original_size': (H0, W0)}; H, W are after rescaling (`record_scale`), so
    where they differ resize predictions to original_size and compare with source[index]['mask'].
    """
    table = _lut(preprocess)
    for i in range(len(source)):
        record = source[i]
        r = prepare_record(record, preprocess)
        image = collate([{"image": r["image"], "lut": table}])["image"][0]
        yield {"image": image, "mask": np.asarray(r["mask"], np.int32),
               "valid": (np.asarray(r["fov"]) > 0).astype(np.float32),
               "id": str(record.get("id", i)), "index": int(record.get("index", i)),
               "original_size": tuple(record["mask"].shape)}
