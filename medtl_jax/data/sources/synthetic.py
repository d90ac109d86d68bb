"""SyntheticLesions: a small, deterministic, medical-looking binary dataset (no download).

Each image is a smooth textured background with a soft, vignetted organ-shaped ellipse. About a quarter
of the images ("lesion") carry 1-3 small bright gaussian spots of varying size and contrast inside the
ellipse; the rest ("normal") may carry fainter or broader distractors. Each image also has a site: site
B (about 30%) uses a different intensity curve, lower contrast and more noise, so training on one site
and testing on the other shows a domain shift. The signal is learnable but not trivial: a local
max/top-hat feature separates the classes well above chance, while a linear model on coarse pixels does
not come close to perfect.

Every example is fully determined by (config seed, split, index): a numpy Generator is seeded per
example, so the data do not depend on generation order, machine or TFDS's shuffling.
"""

from __future__ import annotations

import dataclasses
import difflib
import os

import numpy as np
import tensorflow_datasets as tfds
from scipy import ndimage

from medtl_jax.data.sources import builder_base

SPLITS = ("train", "validation", "test")
_SPLIT_IDS = {name: i for i, name in enumerate(SPLITS)}
POSITIVE_RATE = 0.25
SITE_B_RATE = 0.30


@dataclasses.dataclass(frozen=True)
class Example:
    """One generated image (uint8 HxW) with its label (1 = lesion) and site (0 = A, 1 = B)."""

    image: np.ndarray
    label: int
    site: int


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise rescaled to unit standard deviation."""
    field = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma, mode="wrap")
    return field / (field.std() + 1e-8)


def _blob(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, sigma: float) -> np.ndarray:
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2.0 * sigma**2))


def _point_in_ellipse(rng, cy, cx, ay, ax, angle, shrink=0.7):
    """A uniform random point inside the (shrunken) ellipse."""
    r, t = np.sqrt(rng.uniform()) * shrink, rng.uniform(0.0, 2.0 * np.pi)
    dy, dx = r * ay * np.sin(t), r * ax * np.cos(t)
    c, s = np.cos(angle), np.sin(angle)
    return cy + c * dy + s * dx, cx - s * dy + c * dx


def generate_example(seed: int, split: str, index: int, size: int) -> Example:
    """Draws example `index` of `split`: the same inputs always give the same image."""
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], index])
    label = int(rng.uniform() < POSITIVE_RATE)
    site = int(rng.uniform() < SITE_B_RATE)
    scale = size / 64.0  # lesion sizes are defined at 64 pixels
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)

    # Body/organ: a soft rotated ellipse with a little jitter in place, size and orientation.
    cy, cx = size * (0.5 + rng.uniform(-0.06, 0.06)), size * (0.5 + rng.uniform(-0.06, 0.06))
    ay, ax = size * rng.uniform(0.32, 0.42), size * rng.uniform(0.26, 0.38)
    angle = rng.uniform(-0.5, 0.5)
    c, s = np.cos(angle), np.sin(angle)
    v, u = c * (yy - cy) - s * (xx - cx), s * (yy - cy) + c * (xx - cx)
    r = np.sqrt((v / ay) ** 2 + (u / ax) ** 2)
    organ = 1.0 / (1.0 + np.exp((r - 1.0) / 0.06))
    vignette = 1.0 - 0.35 * (((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / (size / 2) ** 2)

    img = 0.12 + 0.05 * _smooth_noise(rng, size, 6.0 * scale)           # background haze
    tissue = 0.42 + 0.06 * _smooth_noise(rng, size, 3.0 * scale) + 0.015 * _smooth_noise(rng, size, 1.0)
    img = img + organ * tissue
    img *= vignette

    if label:  # 1-3 small bright lesions of varying size and contrast
        for _ in range(rng.integers(1, 4)):
            py, px = _point_in_ellipse(rng, cy, cx, ay, ax, angle)
            img += rng.uniform(0.15, 0.4) * _blob(yy, xx, py, px, scale * rng.uniform(1.0, 2.4))
    else:  # faint or broad distractors on about half of the normals
        for _ in range(rng.integers(0, 3) if rng.uniform() < 0.5 else 0):
            py, px = _point_in_ellipse(rng, cy, cx, ay, ax, angle)
            if rng.uniform() < 0.5:
                img += rng.uniform(0.04, 0.09) * _blob(yy, xx, py, px, scale * rng.uniform(1.0, 2.0))
            else:
                img += rng.uniform(0.08, 0.18) * _blob(yy, xx, py, px, scale * rng.uniform(3.5, 6.0))

    if site:  # site B: other detector curve, lower contrast, more noise
        img = 0.08 + 0.8 * np.clip(img, 0.0, 1.0) ** 0.7
        noise = 0.04
    else:
        noise = 0.02
    img = img + noise * rng.standard_normal((size, size))
    img = np.clip(img, 0.0, 1.0)
    return Example(image=np.round(img * 255.0).astype(np.uint8), label=label, site=site)


@dataclasses.dataclass
class SyntheticConfig(tfds.core.BuilderConfig):
    """A variant of the synthetic set: image size, split sizes and seed."""

    size: int = 64
    split_sizes: tuple[int, int, int] = (1500, 300, 600)  # train / validation / test
    seed: int = 0


VARIANTS: dict[str, SyntheticConfig] = {
    "default": SyntheticConfig(name="default", description="64x64, 1500/300/600", size=64,
                               split_sizes=(1500, 300, 600)),
    "tiny": SyntheticConfig(name="tiny", description="32x32, 128/64/64 (tests)", size=32,
                            split_sizes=(128, 64, 64)),
}


class SyntheticLesions(builder_base.Builder):
    """TFDS builder of the synthetic lesion-detection set (configs 'default' and 'tiny')."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First version."}
    BUILDER_CONFIGS = list(VARIANTS.values())

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.size
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(size, size, 1), encoding_format="png"),
                "label": tfds.features.ClassLabel(names=["normal", "lesion"]),
                "site": tfds.features.ClassLabel(names=["A", "B"]),
                "index": tfds.features.Scalar(dtype=np.int64),
            }),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        counts = dict(zip(SPLITS, self.builder_config.split_sizes))
        return {split: self._generate_examples(split, n) for split, n in counts.items()}

    def _generate_examples(self, split: str, num_examples: int):
        cfg = self.builder_config
        for i in range(num_examples):
            ex = generate_example(cfg.seed, split, i, cfg.size)
            yield i, {"image": builder_base.png_bytes(ex.image), "label": ex.label, "site": ex.site,
                      "index": i}


def build_synthetic(variant: str, *, data_dir: str) -> SyntheticLesions:
    """Builds the synthetic set `variant` into `data_dir` (once) and returns the prepared builder."""
    if variant not in VARIANTS:
        close = difflib.get_close_matches(variant, list(VARIANTS), n=2, cutoff=0.4)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"unknown synthetic variant {variant!r}.{hint} Valid: {sorted(VARIANTS)}")
    builder = SyntheticLesions(config=variant, data_dir=os.fspath(data_dir),
                               file_format="array_record")
    builder_base.prepare(builder)
    return builder
