"""Data layer: TFDS builders (MedMNIST v2, synthetic lesions), the dataset registry, grain pipelines.

    bundle = load_data(config.data)                  # DataBundle(info=DataInfo, sources={split: ...})
    ds = train_batches(bundle.sources['train'], batch_size=..., seed=..., epoch=..., preprocess=...,
                       augment=Augment())            # grain.MapDataset of batches; ds[k:] resumes
    for batch in eval_batches(bundle.sources['test'], batch_size=..., preprocess=...): ...

Modules: medmnist_info (metadata table), npz_files (find/download/check .npz), medmnist and synthetic
(TFDS builders), builder_base (what the builders share), registry (DATASETS, load_data), pipeline.
"""

from medtl_jax.data.sources.medmnist import build_medmnist
from medtl_jax.data.sources.medmnist_info import MEDMNIST_2D, SubsetInfo
from medtl_jax.data.pipeline.batches import (Augment, Preprocess, as_iterator, eval_batches,
                                     steps_per_epoch, train_batches)
from medtl_jax.data.registry import DATASETS, DataBundle, DataInfo, load_data
from medtl_jax.data.sources.synthetic import build_synthetic

__all__ = [
    "Augment", "DATASETS", "DataBundle", "DataInfo", "MEDMNIST_2D", "Preprocess", "SubsetInfo",
    "as_iterator", "build_medmnist", "build_synthetic", "eval_batches", "load_data",
    "steps_per_epoch", "train_batches",
]
