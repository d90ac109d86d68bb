"""What every medtl-jax TFDS builder shares: a TF-free base class, the data folder, PNG encoding.

TFDS 4.9.10 locates a builder's source file through `importlib_resources`, a back-port that Python
3.11 does not need and that is not installed here; for a builder defined inside a package this fails
with `ModuleNotFoundError: importlib_resources` during `download_and_prepare`. `Builder.code_path`
answers the question directly from `inspect`, so our builders need neither that package nor TF.
"""

from __future__ import annotations

import inspect
import io
import os
import pathlib

import numpy as np
import PIL.Image
import tensorflow_datasets as tfds
from etils import epath


class Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of our builders: array_record files, no GCS look-up, no `importlib_resources`."""

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path | None:  # pylint: disable=no-self-argument
        try:
            return epath.Path(inspect.getfile(cls))
        except (TypeError, OSError):
            return None


def default_data_dir() -> str:
    """TFDS folder used when a config gives none: $MEDTL_DATA_DIR, else ~/.cache/medtl_jax/tfds."""
    env = os.environ.get("MEDTL_DATA_DIR")
    return env if env else str(pathlib.Path.home() / ".cache" / "medtl_jax" / "tfds")


def prepare(builder: tfds.core.DatasetBuilder, manual_dir: str | None = None) -> None:
    """Writes the builder's files once (later calls reuse them); never asks GCS for a copy."""
    config = tfds.download.DownloadConfig(manual_dir=manual_dir, try_download_gcs=False)
    builder.download_and_prepare(download_config=config)


def png_bytes(image: np.ndarray) -> bytes:
    """Encodes a uint8 HxW, HxWx1 or HxWx3 array as PNG (TFDS's own numpy path needs TensorFlow)."""
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    buf = io.BytesIO()
    PIL.Image.fromarray(np.ascontiguousarray(image)).save(buf, format="png", compress_level=1)
    return buf.getvalue()
