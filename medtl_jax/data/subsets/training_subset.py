"""The examples a run trains and validates on: `config.data.train_sites`, then `config.data.train_fraction`.

`select_training_data(config.data, bundle)` returns the bundle with its 'train' source (and, for sites,
its 'validation' source) replaced by index views; the test split is never touched, so per-site test
metrics can be computed from the predictions. Order of the restrictions:
  1. sites: training and validation keep only the examples of `train_sites` (names or ids);
  2. fraction: of those training examples, the nested stratified subset of
     `medtl_jax.data.subsets.fractions.nested_fraction_indices(labels, train_fraction, fraction_seed)`
     (segmentation: of the training images, unstratified).
Everything downstream (class counts, balanced sampling, steps per epoch) then sees the subset.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from medtl_jax.data.subsets.fractions import check_fraction, nested_fraction_indices
from medtl_jax.data.types import DataBundle, config_value
from medtl_jax.data.subsets.sites import SITE_KEY, record_values, resolve_sites


@dataclasses.dataclass(frozen=True)
class SubsetSource:
    """Random access to `positions` of `source` (records unchanged: their 'index' still names them)."""

    source: Any
    positions: np.ndarray

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int):
        return self.source[int(self.positions[i])]

    def __getattr__(self, name: str):  # e.g. `dataset_info` of a TFDS source
        if name in ("source", "positions"):
            raise AttributeError(name)
        return getattr(self.source, name)


def subset(source, positions: np.ndarray) -> SubsetSource:
    """A view of `positions` of `source`; a view of a view points at the original source."""
    positions = np.asarray(positions, np.int64)
    if isinstance(source, SubsetSource):
        return SubsetSource(source.source, source.positions[positions])
    return SubsetSource(source, positions)


def select_training_data(data_config, bundle: DataBundle) -> DataBundle:
    """`bundle` restricted to the configured training sites and fraction (unchanged when neither is set)."""
    fraction = check_fraction(config_value(data_config, "train_fraction", 1.0))
    sites = tuple(config_value(data_config, "train_sites", ()))
    if fraction == 1.0 and not sites:
        return bundle
    sources = dict(bundle.sources)
    labelled = bundle.info.example_labels
    keys = ([SITE_KEY] if sites and SITE_KEY in bundle.info.attributes else []) + (
        ["label"] if fraction < 1.0 and labelled else [])
    train = record_values(sources["train"], keys)
    if sites:
        ids = resolve_sites(sites, bundle.info, sources["train"], train.get(SITE_KEY, np.zeros(0)))
        for split in ("train", "validation"):
            values = train[SITE_KEY] if split == "train" else record_values(sources[split], [SITE_KEY])[SITE_KEY]
            keep = np.flatnonzero(np.isin(values.reshape(-1), ids))
            if split == "train" and keep.size == 0:
                raise ValueError(f"config.data.train_sites={sites!r} selects no training example of "
                                 f"{bundle.info.name!r}")
            sources[split] = subset(sources[split], keep)
            if split == "train":
                train = {k: v[keep] for k, v in train.items()}
    if fraction < 1.0:
        labels = train["label"] if labelled else None
        keep = nested_fraction_indices(labels, fraction, int(config_value(data_config, "fraction_seed", 0)),
                                       n=len(sources["train"]))
        sources["train"] = subset(sources["train"], keep)
    return DataBundle(info=bundle.info, sources=sources)
