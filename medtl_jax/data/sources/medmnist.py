"""TFDS builder for the MedMNIST v2 2D subsets at every published size (28, 64, 128, 224).

Configs are named `<subset>_<size>` (e.g. `pneumoniamnist_28`). The source `.npz` comes from a local
folder when there is one (manual files are checked for structure, not MD5: a re-ordered copy is
legitimate), else from Zenodo (MD5-checked); see `npz_files.locate`. Each example keeps its position
in the source split as `index`, because TFDS stores examples in hash order. The file a dataset was
built from is recorded beside it; a later manual_dir holding another file is refused, not silently
ignored (`builder_base.check_source`).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from medtl_jax.data.sources import builder_base, npz_files
from medtl_jax.data.sources.medmnist_info import MEDMNIST_2D, SubsetInfo

# TFDS split name -> MedMNIST's name inside the .npz file.
SPLITS = {"train": "train", "validation": "val", "test": "test"}

_CITATION = """@article{yang2023medmnist,
  title={MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D biomedical image classification},
  author={Yang, Jiancheng and Shi, Rui and Wei, Donglai and Liu, Zequan and Zhao, Lin and Ke, Bilian
          and Pfister, Hanspeter and Ni, Bingbing},
  journal={Scientific Data}, volume={10}, number={1}, pages={41}, year={2023}}"""


@dataclasses.dataclass
class MedMNISTConfig(tfds.core.BuilderConfig):
    """One (subset, image size) pair."""

    subset: str = "pneumoniamnist"
    size: int = 28


def _configs() -> list[MedMNISTConfig]:
    return [MedMNISTConfig(name=f"{s.name}_{size}", subset=s.name, size=size,
                           description=f"{s.name} at {size}x{size}")
            for s in MEDMNIST_2D.values() for size in s.sizes]


def subset_info(subset: str, size: int | None = None) -> SubsetInfo:
    """Metadata of `subset`; ValueError with close matches (or the valid sizes) when unknown."""
    if subset not in MEDMNIST_2D:
        close = difflib.get_close_matches(subset, list(MEDMNIST_2D), n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"unknown MedMNIST subset {subset!r}.{hint} Valid: {sorted(MEDMNIST_2D)}")
    info = MEDMNIST_2D[subset]
    if size is not None and size not in info.sizes:
        raise ValueError(f"MedMNIST subset {subset!r} has no size {size!r}; valid sizes: {info.sizes}")
    return info


def features_for(info: SubsetInfo, size: int) -> tfds.features.FeaturesDict:
    """TFDS features: png image, label (ClassLabel, or int32 vector for multi-label), int64 index."""
    if info.multi_label:
        label = tfds.features.Tensor(shape=(info.num_labels,), dtype=np.int32)
    else:
        label = tfds.features.ClassLabel(names=list(info.label_names))
    return tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(size, size, info.n_channels), encoding_format="png"),
        "label": label,
        "index": tfds.features.Scalar(dtype=np.int64),
    })


class MedMNIST(builder_base.Builder):
    """MedMNIST v2 2D subsets (configs `<subset>_<size>`), read from a local or downloaded .npz."""

    name = "medmnist"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "MedMNIST v2 / MedMNIST+ (Zenodo record 10519652)."}
    BUILDER_CONFIGS = _configs()
    requested_manual_dir: str | None = None  # set by build_medmnist, even for a missing/empty folder
    built_from: pathlib.Path | None = None  # the .npz this instance's build read
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put `<subset>.npz` (size 28) or `<subset>_<size>.npz` from "
        "https://zenodo.org/records/10519652 in a folder and pass it as manual_dir "
        "(--config.data.manual_dir=FOLDER) or set MEDTL_MEDMNIST_DIR.")

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        info = MEDMNIST_2D[cfg.subset]
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"MedMNIST v2 {cfg.subset}: {info.task}, {info.num_labels} labels, "
                        f"{info.n_channels} channel(s), {cfg.size}x{cfg.size}.",
            features=features_for(info, cfg.size),
            supervised_keys=("image", "label"),
            homepage="https://medmnist.com/",
            citation=_CITATION,
            license=info.license,
        )

    def _split_generators(self, dl_manager):
        cfg = self.builder_config
        path = npz_files.locate(cfg.subset, cfg.size, manual_dir=self._manual_dir(dl_manager),
                                extra_dirs=(pathlib.Path(dl_manager.download_dir),))
        npz_files.validate(path, MEDMNIST_2D[cfg.subset], cfg.size)
        self.built_from = path
        return {split: self._generate_examples(path, key) for split, key in SPLITS.items()}

    def _manual_dir(self, dl_manager) -> pathlib.Path | None:
        """The manual folder asked for, also when it is empty (TFDS's dl_manager.manual_dir refuses
        an empty folder, which then went missing from the "looked in" list)."""
        if self.requested_manual_dir:
            return pathlib.Path(self.requested_manual_dir)
        try:
            return pathlib.Path(dl_manager.manual_dir)
        except (AssertionError, ValueError):  # TFDS's way of saying "no manual folder"
            return None

    def _generate_examples(self, path: pathlib.Path, npz_split: str):
        info = MEDMNIST_2D[self.builder_config.subset]
        labels = npz_files.read_array(path, f"{npz_split}_labels")
        index = 0
        for chunk in npz_files.iter_rows(path, f"{npz_split}_images"):
            for image in chunk:
                label = labels[index]
                label = label.astype(np.int32) if info.multi_label else int(label.reshape(-1)[0])
                yield index, {"image": builder_base.png_bytes(image), "label": label, "index": index}
                index += 1


def build_medmnist(subset: str, size: int, *, data_dir: str,
                   manual_dir: str | None = None) -> MedMNIST:
    """Builds MedMNIST `subset` at `size` into `data_dir` (once) and returns the prepared builder.

    A dataset built earlier is re-used only when `manual_dir` is unset or holds the file it was built
    from (or a byte-identical copy); otherwise ValueError says which folders and how to proceed."""
    subset_info(subset, size)
    filename = MEDMNIST_2D[subset].filename(size)
    if manual_dir is not None and not os.path.isdir(manual_dir):
        state = "is a file, not a folder" if os.path.exists(manual_dir) else "does not exist"
        raise ValueError(f"config.data.manual_dir {manual_dir!r} {state} (it should be a folder "
                         f"holding {filename})")
    builder = MedMNIST(config=f"{subset}_{size}", data_dir=os.fspath(data_dir),
                       file_format="array_record")
    builder_base.check_source(builder, manual_dir, filename)
    builder.requested_manual_dir = manual_dir
    builder_base.prepare(builder, manual_dir=manual_dir)
    if builder.built_from is not None:
        builder_base.write_source(builder, builder.built_from, manual_dir)
    return builder
