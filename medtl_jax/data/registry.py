"""One entry point for the trainer: `load_data(config.data)` -> DataBundle (what it is + sources).

To add a dataset: write a loader `f(data_config) -> DataBundle` and add it to `DATASETS`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from medtl_jax.data.sources import builder_base, custom_dataset, medmnist, segmentation_folders, synthetic
from medtl_jax.data.types import SPLITS, DataBundle, DataInfo, config_value

# MedMNIST's task names -> ours.
MEDMNIST_TASKS = {"binary-class": "binary", "multi-class": "multiclass",
                  "ordinal-regression": "ordinal", "multi-label, binary-class": "multilabel"}


def _sources(builder) -> dict[str, Any]:
    return {split: builder.as_data_source(split=split) for split in SPLITS}


def _split_counts(builder) -> dict[str, int]:
    return {split: builder.info.splits[split].num_examples for split in SPLITS}


def load_medmnist(config) -> DataBundle:
    """MedMNIST v2: config.subset, config.source_size (28/64/128/224), manual_dir, data_dir."""
    subset, size = config_value(config, "subset", "pneumoniamnist"), int(config_value(config, "source_size", 28))
    builder = medmnist.build_medmnist(
        subset, size, data_dir=config_value(config, "data_dir", builder_base.default_data_dir()),
        manual_dir=config_value(config, "manual_dir"))
    meta = medmnist.subset_info(subset, size)
    task = MEDMNIST_TASKS[meta.task]
    info = DataInfo(name=f"medmnist/{subset}_{size}", task=task,
                    num_classes=2 if task == "binary" else meta.num_labels,
                    label_names=meta.label_names, channels=meta.n_channels, image_size=size,
                    splits=_split_counts(builder))
    return DataBundle(info=info, sources=_sources(builder))


def load_synthetic(config) -> DataBundle:
    """SyntheticLesions: config.subset is the variant ('default' or 'tiny'); source_size is ignored."""
    variant = config_value(config, "subset", "default")
    builder = synthetic.build_synthetic(
        variant, data_dir=config_value(config, "data_dir", builder_base.default_data_dir()))
    cfg = synthetic.VARIANTS[variant]
    info = DataInfo(name=f"synthetic/{variant}", task="binary", num_classes=2,
                    label_names=("normal", "lesion"), channels=1, image_size=cfg.size,
                    splits=_split_counts(builder), attributes=("site",))
    return DataBundle(info=info, sources=_sources(builder))


def load_segmentation_folders(config) -> DataBundle:
    """Image/mask folder pairs (DRIVE, CHASE_DB1, ISBI 2012, or the generic layout): see
    medtl_jax.data.sources.segmentation_folders."""
    return segmentation_folders.load_segmentation(config)


def load_custom(config) -> DataBundle:
    """A dataset built by `python -m launch.prepare_data`: config.subset = its --name, data_dir = its
    --data_dir; see medtl_jax.data.sources.custom_dataset."""
    return custom_dataset.load_custom(config)


DATASETS: dict[str, Callable[[Any], DataBundle]] = {
    "medmnist": load_medmnist,
    "synthetic": load_synthetic,
    "drive": load_segmentation_folders,
    "chase_db1": load_segmentation_folders,
    "isbi2012": load_segmentation_folders,
    "seg_folders": load_segmentation_folders,
    "custom": load_custom,
}


def load_data(data_config) -> DataBundle:
    """Builds (once) and opens the dataset that `data_config.name` names."""
    name = config_value(data_config, "name")
    if name not in DATASETS:
        close = difflib.get_close_matches(str(name), list(DATASETS), n=3, cutoff=0.4)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"config.data.name={name!r} is not a known dataset.{hint} "
                         f"Known: {sorted(DATASETS)}")
    return DATASETS[name](data_config)
