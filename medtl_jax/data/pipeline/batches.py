"""Host-side input pipelines (grain + numpy/PIL): deterministic training epochs and exact evaluation.

Training: the epoch's order is a permutation drawn from (seed, epoch); the global batch at step t is
order[t*G:(t+1)*G] (G = per-process batch x process count) and process k takes the k-th slice of it,
so processes see disjoint, equal parts and the global batch does not depend on how many processes
share it. Augmentation draws from a Generator seeded by (seed, epoch, position in the epoch), so it is
deterministic and also independent of sharding. The result is a `grain.MapDataset` of batches:
`len(ds)` is the number of steps and `ds[k:]` resumes an epoch at step k.

Evaluation visits every example once in source order; the last batch is padded and carries a mask.

Images are resized (PIL; one affine resampling when augmenting), gray is repeated to 3 channels,
and pixels are normalised as (x / 255 - mean) / std (through a 256-entry table per example, which
is several times faster than float arithmetic on this machine).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterator, Sequence
from typing import Any

import grain
import numpy as np
import PIL.Image

_RESAMPLE = {"bilinear": PIL.Image.BILINEAR, "nearest": PIL.Image.NEAREST,
             "bicubic": PIL.Image.BICUBIC}
RESIZE_METHODS = tuple(_RESAMPLE)  # config.data.resize_method


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """Deterministic part: model input size, resize method and per-channel normalisation ([0,1] units)."""

    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize_method: str = "bilinear"

    def __post_init__(self):
        # Tuples of floats, whatever the config gave (ConfigDict fields may be lists).
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if self.resize_method not in _RESAMPLE:
            raise ValueError(f"resize_method {self.resize_method!r} not in {sorted(_RESAMPLE)}")
        if len(self.mean) not in (1, 3) or len(self.std) != len(self.mean) or min(self.std) <= 0:
            raise ValueError(f"mean/std need 3 values (RGB input) or 1 (gray input to a folded stem), "
                             f"std > 0: got {self.mean}, {self.std}")

    @property
    def channels(self) -> int:
        """Channels of the model input: 3, or 1 for gray images fed to a folded stem."""
        return len(self.mean)


@dataclasses.dataclass(frozen=True)
class Augment:
    """Random training transforms; 0 (or crop_scale 1.0, flip False) turns one off.

    flip: horizontal flip with probability 1/2. rotate_degrees: uniform in [-d, d].
    crop_scale: random-resized-crop minimum area fraction (aspect ratio in [3/4, 4/3]).
    brightness / contrast: multiplicative factors uniform in [1 - v, 1 + v] (contrast about the mean).
    """

    flip: bool = True
    rotate_degrees: float = 10.0
    crop_scale: float = 0.9
    brightness: float = 0.1
    contrast: float = 0.1


def steps_per_epoch(num_examples: int, global_batch: int) -> int:
    """Number of full global batches in an epoch (the remainder is dropped)."""
    return num_examples // global_batch


def epoch_order(num_or_indices: int | np.ndarray, *, seed: int, epoch: int) -> np.ndarray:
    """The epoch's permutation of example positions (of `arange(n)` or of the given indices)."""
    base = (np.arange(num_or_indices, dtype=np.int64) if np.isscalar(num_or_indices)
            else np.asarray(num_or_indices, dtype=np.int64))
    return base[np.random.default_rng([seed, epoch]).permutation(len(base))]


# ---------------------------------------------------------------------------------------------------
# Per-example transforms.
# ---------------------------------------------------------------------------------------------------

def _to_pil(image: np.ndarray) -> PIL.Image.Image:
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2 or image.shape[-1] == 3:
        return PIL.Image.fromarray(image)
    raise ValueError(f"images must have 1 or 3 channels, got shape {image.shape}")


def _affine(rng: np.random.Generator, w: int, h: int, out: int, aug: Augment) -> tuple:
    """PIL affine coefficients (output -> input) for a random crop, rotation and flip."""
    area, ratio = 1.0, 1.0
    if aug.crop_scale < 1.0:
        area = rng.uniform(aug.crop_scale, 1.0)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    cw, ch = min(w, w * math.sqrt(area * ratio)), min(h, h * math.sqrt(area / ratio))
    cx, cy = rng.uniform(cw / 2, w - cw / 2), rng.uniform(ch / 2, h - ch / 2)
    theta = math.radians(rng.uniform(-aug.rotate_degrees, aug.rotate_degrees))
    s = -1.0 if (aug.flip and rng.uniform() < 0.5) else 1.0
    cos, sin = math.cos(theta), math.sin(theta)
    a, b = cos * cw * s / out, -sin * ch / out
    d, e = sin * cw * s / out, cos * ch / out
    c = cx - 0.5 * (cos * cw * s) + 0.5 * sin * ch
    f = cy - 0.5 * (sin * cw * s) - 0.5 * cos * ch
    return a, b, c, d, e, f


def _normalise_lut(pre: Preprocess, gain: float = 1.0, bias: float = 0.0,
                   clip: bool = False) -> np.ndarray:
    """(256, C) float32 table: uint8 value v -> ((v/255 * gain + bias) - mean) / std per channel."""
    y = np.arange(256, dtype=np.float32) * np.float32(gain / 255.0) + np.float32(bias)
    if clip:
        np.clip(y, 0.0, 1.0, out=y)
    mean, std = np.asarray(pre.mean, np.float32), np.asarray(pre.std, np.float32)
    return (y[:, None] - mean) / std


@functools.lru_cache(maxsize=16)
def _plain_lut(pre: Preprocess) -> np.ndarray:
    """The table without brightness/contrast, shared by all examples (read-only)."""
    table = _normalise_lut(pre)
    table.flags.writeable = False
    return table


@dataclasses.dataclass(frozen=True)
class Transform:
    """record -> {'image': uint8 [S,S,C], 'lut': float32 [256,3], 'label': int32, ...}.

    Geometry (resize, random crop/rotate/flip) happens here on uint8; intensity (brightness/contrast
    and normalisation) is folded into a per-example lookup table that `collate` applies while writing
    the float32 batch: one pass over the pixels, which also turns 1 channel into 3.
    """

    preprocess: Preprocess
    augment: Augment | None = None

    def geometry(self, image: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
        """uint8 HxWxC -> uint8 SxSxC (resize; random crop/rotate/flip when augmenting)."""
        size, resample = self.preprocess.input_size, _RESAMPLE[self.preprocess.resize_method]
        h, w = image.shape[:2]
        if self.augment is None or rng is None:
            if (h, w) == (size, size):
                return image if image.ndim == 3 else image[..., None]
            out = _to_pil(image).resize((size, size), resample)
        else:
            pil = _to_pil(image)
            if max(h, w) > size:  # shrink first (antialiased), then one affine at the output scale
                pil, (w, h) = pil.resize((size, size), resample), (size, size)
            coeffs = _affine(rng, w, h, size, self.augment)
            out = pil.transform((size, size), PIL.Image.AFFINE, coeffs, resample=resample)
        out = np.asarray(out)
        return out[..., None] if out.ndim == 2 else out

    def lut(self, image: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
        """Normalisation table, with random brightness/contrast folded in when augmenting."""
        aug = self.augment
        if aug is None or rng is None or not (aug.brightness or aug.contrast):
            return _plain_lut(self.preprocess)
        b = rng.uniform(1 - aug.brightness, 1 + aug.brightness) if aug.brightness else 1.0
        c = rng.uniform(1 - aug.contrast, 1 + aug.contrast) if aug.contrast else 1.0
        step = max(1, image.shape[0] // 64)
        m = float(image[::step, ::step].mean()) / 255.0  # contrast pivots about the image mean
        # y = clip((x*b - m*b) * c + m*b)  =  clip(x * b*c + m*b*(1-c))
        return _normalise_lut(self.preprocess, gain=b * c, bias=m * b * (1 - c), clip=True)

    def __call__(self, record: dict[str, Any], rng: np.random.Generator | None = None) -> dict:
        image = self.geometry(np.asarray(record["image"]), rng)
        return {"image": image, "lut": self.lut(image, rng),
                "label": np.asarray(record["label"], dtype=np.int32)}


def collate(elements: Sequence[dict]) -> dict:
    """Stacks examples into a batch; 'image' becomes float32 [B,S,S,C] through each example's table
    (C = the table's columns: 3, or 1 for a folded gray stem, which needs gray images)."""
    first = elements[0]["image"]
    channels = elements[0]["lut"].shape[1]
    out = np.empty((len(elements), *first.shape[:2], channels), np.float32)
    for i, el in enumerate(elements):
        image, lut = el["image"], el["lut"]
        if channels == 1 and image.shape[-1] != 1:
            raise ValueError(f"a 1-channel model input needs gray images, got shape {image.shape}; "
                             "set config.model.in_channels=3 for colour data")
        if image.shape[-1] == 1:
            np.take(lut, image[..., 0], axis=0, out=out[i], mode="clip")
        else:
            for k in range(3):
                np.take(np.ascontiguousarray(lut[:, k]), image[..., k], out=out[i, ..., k], mode="clip")
    batch = {"image": out}
    for key in elements[0]:
        if key not in ("image", "lut"):
            batch[key] = np.stack([el[key] for el in elements])
    return batch


# ---------------------------------------------------------------------------------------------------
# Training.
# ---------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _EpochSource:
    """Random access to this process's examples of the epoch: i -> (position in epoch, record)."""

    source: Any
    positions: np.ndarray  # positions within the epoch's order
    order: np.ndarray  # source index at each epoch position

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int):
        pos = int(self.positions[i])
        return pos, self.source[int(self.order[pos])]


@dataclasses.dataclass(frozen=True)
class _TrainElement:
    transform: Transform
    aug_seed: tuple[int, int]

    def __call__(self, item) -> dict:
        pos, record = item
        rng = (np.random.default_rng([*self.aug_seed, pos]) if self.transform.augment is not None
               else None)
        return self.transform(record, rng)


def train_batches(source, *, batch_size: int, seed: int, epoch: int, preprocess: Preprocess,
                  augment: Augment | None, shard_index: int = 0, shard_count: int = 1,
                  indices: np.ndarray | None = None) -> grain.MapDataset:
    """One training epoch of this process as a MapDataset of batches (see the module docstring).

    Batches: 'image' float32 [B,S,S,3], 'label' int32 [B] (or [B,L] multi-label); B = `batch_size`
    (per process); the last incomplete global batch is dropped. `indices` restricts the epoch to
    those source positions (data-fraction studies).
    """
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index {shard_index} not in [0, {shard_count})")
    order = epoch_order(len(source) if indices is None else indices, seed=seed, epoch=epoch)
    global_batch = batch_size * shard_count
    steps = steps_per_epoch(len(order), global_batch)
    if steps == 0:
        raise ValueError(f"{len(order)} examples make no full global batch of {global_batch}")
    grid = np.arange(steps * global_batch).reshape(steps, shard_count, batch_size)
    positions = grid[:, shard_index].reshape(-1)
    element = _TrainElement(Transform(preprocess, augment), aug_seed=(seed, epoch))
    ds = grain.MapDataset.source(_EpochSource(source, positions, order)).map(element)
    return ds.batch(batch_size, drop_remainder=True, batch_fn=collate)


def as_iterator(ds: grain.MapDataset, *, num_threads: int = 2, prefetch: int = 4) -> Iterator[dict]:
    """Iterates a MapDataset with `num_threads` reader threads and `prefetch` elements in flight."""
    options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
    return iter(ds.to_iter_dataset(options))


# ---------------------------------------------------------------------------------------------------
# Evaluation.
# ---------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _EvalElement:
    """Position -> transformed example with 'mask' and 'index'; positions past the end are padding."""

    source: Any
    transform: Transform
    extra_keys: tuple[str, ...]

    def __call__(self, pos: int) -> dict:
        n = len(self.source)
        record = self.source[int(pos) if pos < n else 0]
        out = self.transform(record)
        out["index"] = np.int64(record.get("index", pos))
        out["mask"] = np.float32(1.0)
        for key in self.extra_keys:
            out[key] = np.asarray(record[key], dtype=np.int32)
        if pos >= n:  # padding: same shapes, zero content (a zero table gives a zero image)
            out = {k: np.zeros_like(v) for k, v in out.items()}
            out["index"] = np.int64(-1)
        return out


def eval_batches(source, *, batch_size: int, preprocess: Preprocess, shard_index: int = 0,
                 shard_count: int = 1, extra_keys: Sequence[str] = (), num_threads: int = 2,
                 prefetch: int = 4) -> Iterator[dict]:
    """Every example once, in source order, in batches of `batch_size` per process.

    Batches: 'image', 'label' as in training, 'mask' float32 [B] (1 real, 0 padding), 'index' int64
    [B] (the record's 'index' feature, i.e. its id in the original file, else its position; -1 for
    padding), and int32 arrays for `extra_keys` (e.g. 'site'). All processes yield the same number of
    batches (ceil(n / (batch_size * shard_count))), which keeps multi-process evaluation in step.
    """
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index {shard_index} not in [0, {shard_count})")
    n, global_batch = len(source), batch_size * shard_count
    steps = -(-n // global_batch)
    grid = np.arange(steps * global_batch).reshape(steps, shard_count, batch_size)
    positions = grid[:, shard_index].reshape(-1)
    element = _EvalElement(source, Transform(preprocess), tuple(extra_keys))
    ds = grain.MapDataset.source(positions).map(element).batch(batch_size, batch_fn=collate)
    return as_iterator(ds, num_threads=num_threads, prefetch=prefetch)
