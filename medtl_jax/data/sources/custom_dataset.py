"""Users' own images as a TFDS dataset (array_record), and the trainer's loader for it.

`python -m launch.prepare_data` builds it (see medtl_jax.data.ingest.prepare_custom) into
`<data_dir>/custom/<name>/1.0.0/`; train with config.data.name='custom', config.data.subset=<name>,
config.data.data_dir=<data_dir>.

Features: image (8-bit: PNG through tfds.features.Image; 16-bit: uint16 tfds.features.Tensor, zlib
compressed, because TFDS decodes 16-bit PNG only through OpenCV), label (ClassLabel, or int32 multi-hot
Tensor for multi-label), index (int64: the row of splits.csv), patient (int64 salted hash of the
grouping unit, not the id itself) and site (ClassLabel, only when the manifest has sites; rows
without one are 'unknown'). The trainer reads 8-bit images: a 16-bit dataset is served to it as
uint8 (value / 257, rounded); read the builder directly for the 16-bit values.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Callable

import numpy as np
import PIL.Image
import tensorflow_datasets as tfds

from medtl_jax.data.sources import builder_base
from medtl_jax.data.types import DataBundle, DataInfo, config_value

from medtl_jax.data.ingest import image_files, splits as splits_lib
from medtl_jax.data.ingest.dicom import DicomOptions, UnreadableImageError
from medtl_jax.data.ingest.manifest import Row
from medtl_jax.data.ingest.unreadable import Unreadable

VERSION = "1.0.0"
INFO_FILE = "custom_info.json"  # task, label names, channels, size, bits, attributes (no PHI)
SPLITS = splits_lib.SPLITS


def dataset_dir(data_dir: str | os.PathLike, name: str) -> pathlib.Path:
    """Where the dataset `name` lives: <data_dir>/custom/<name>/<VERSION>."""
    return pathlib.Path(data_dir) / "custom" / name / VERSION


@dataclasses.dataclass
class BuildPlan:
    """Everything the builder writes: (index, row, split) examples and the output geometry."""

    examples: list[tuple[int, Row, str]]
    label_names: tuple[str, ...]
    multilabel: bool
    height: int
    width: int
    channels: int
    bits: int
    dicom: DicomOptions
    sites: tuple[str, ...]
    salt: str
    unreadable: Unreadable
    observe: Callable[[int, Row, str, np.ndarray], None] | None = None


def fit_image(image: np.ndarray, height: int, width: int, channels: int) -> np.ndarray:
    """Matches channels (grey -> repeated RGB; RGB -> luma) and resizes bilinearly to height x width."""
    if image.shape[-1] != channels:
        if channels == 3:
            image = np.repeat(image, 3, axis=-1)
        else:
            luma = image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
            image = np.round(luma).astype(image.dtype)[..., None]
    if image.shape[:2] == (height, width):
        return image
    if image.dtype == np.uint8:
        pil = PIL.Image.fromarray(image[..., 0] if channels == 1 else image)
        out = np.asarray(pil.resize((width, height), PIL.Image.BILINEAR))
        return out[..., None] if channels == 1 else out
    planes = [np.asarray(PIL.Image.fromarray(image[..., k].astype(np.float32), mode="F")
                         .resize((width, height), PIL.Image.BILINEAR)) for k in range(channels)]
    top = np.iinfo(image.dtype).max
    return np.clip(np.round(np.stack(planes, axis=-1)), 0, top).astype(image.dtype)


def features_for(plan: BuildPlan) -> tfds.features.FeaturesDict:
    """TFDS features of a custom dataset (see the module docstring)."""
    shape = (plan.height, plan.width, plan.channels)
    if plan.bits == 8:
        image = tfds.features.Image(shape=shape, encoding_format="png")
    else:
        image = tfds.features.Tensor(shape=shape, dtype=np.uint16,
                                     encoding=tfds.features.Encoding.ZLIB)
    label = (tfds.features.Tensor(shape=(len(plan.label_names),), dtype=np.int32) if plan.multilabel
             else tfds.features.ClassLabel(names=list(plan.label_names)))
    features = {"image": image, "label": label, "index": tfds.features.Scalar(dtype=np.int64),
                "patient": tfds.features.Scalar(dtype=np.int64)}
    if plan.sites:
        features["site"] = tfds.features.ClassLabel(names=list(plan.sites))
    return tfds.features.FeaturesDict(features)


class CustomImages(builder_base.Builder, skip_registration=True):
    """TFDS builder of one user dataset; the config name is the dataset name (--name)."""

    name = "custom"
    VERSION = tfds.core.Version(VERSION)
    RELEASE_NOTES = {str(VERSION): "Built by launch.prepare_data."}

    def __init__(self, *, plan: BuildPlan, **kwargs):
        self._plan = plan
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, description=__doc__,
                                     features=features_for(self._plan),
                                     supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
        del dl_manager
        present = {split for _, _, split in self._plan.examples}
        return {split: self._generate_examples(split) for split in SPLITS if split in present}

    def _generate_examples(self, split: str):
        plan = self._plan
        for index, row, row_split in plan.examples:
            if row_split != split:
                continue
            options = dataclasses.replace(plan.dicom, frame=row.frame or 0)
            try:
                image = image_files.read_image(row.path, dicom=options, bits=plan.bits)
            except UnreadableImageError as err:
                plan.unreadable.report_error(err, row.origin)
                continue
            image = fit_image(image, plan.height, plan.width, plan.channels)
            if plan.observe is not None:
                plan.observe(index, row, split, image)
            label = np.asarray(row.label, np.int32) if plan.multilabel else int(row.label[0])
            record = {"image": builder_base.png_bytes(image) if plan.bits == 8 else image,
                      "label": label, "index": index,
                      "patient": splits_lib.group_int(splits_lib.group_key(row), plan.salt)}
            if plan.sites:
                record["site"] = plan.sites.index(row.site or "unknown")
            yield index, record


class _As8Bit:
    """A 16-bit split served as uint8 (value / 257, rounded) for the 8-bit training pipeline."""

    def __init__(self, source):
        self._source = source

    def __len__(self) -> int:
        return len(self._source)

    def __getattr__(self, name):  # dataset_info etc. of the wrapped TFDS source
        return getattr(self._source, name)

    def __getitem__(self, i):
        record = dict(self._source[i])
        record["image"] = np.round(record["image"] / 257.0).astype(np.uint8)
        return record


def load_custom(config):
    """config.data for a prepare_data dataset: subset = its --name, data_dir = its --data_dir."""

    name = config_value(config, "subset")
    data_dir = config_value(config, "data_dir", builder_base.default_data_dir())
    path = dataset_dir(data_dir, str(name))
    if not (path / INFO_FILE).is_file():
        raise ValueError(f"custom dataset config.data.subset={name!r} not found at {path}; build it "
                         f"with `python -m launch.prepare_data --source SRC --name {name} "
                         f"--data_dir {data_dir}` or fix config.data.data_dir")
    meta = json.loads((path / INFO_FILE).read_text())
    builder = tfds.builder_from_directory(os.fspath(path))
    sources = {}
    for split in SPLITS:
        source = builder.as_data_source(split=split) if split in builder.info.splits else []
        sources[split] = _As8Bit(source) if meta["bits"] == 16 and len(source) else source
    info = DataInfo(
        name=f"custom/{name}", task=meta["task"], num_classes=meta["num_classes"],
        label_names=tuple(meta["label_names"]), channels=meta["channels"],
        image_size=meta["image_size"], splits={s: len(sources[s]) for s in SPLITS},
        attributes=tuple(meta["attributes"]))
    return DataBundle(info=info, sources=sources)
