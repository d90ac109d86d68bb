"""What every medtl-jax TFDS builder shares: a TF-free base class, the data folder, PNG encoding.

TFDS 4.9.10 locates a builder's source file through `importlib_resources`, a back-port that Python
3.11 does not need and that is not installed here; for a builder defined inside a package this fails
with `ModuleNotFoundError: importlib_resources` during `download_and_prepare`. `Builder.code_path`
answers the question directly from `inspect`, so our builders need neither that package nor TF.

A builder built from a local file (MedMNIST's .npz) records it in `SOURCE_FILE` beside the built
dataset (resolved path, size, mtime, MD5 and the manual_dir asked for); `check_source` then refuses
to serve that copy for a different manual_dir, unless the file there is byte-identical (same MD5).
"""

from __future__ import annotations

import inspect
import io
import json
import logging
import os
import pathlib

import numpy as np
import PIL.Image
import tensorflow_datasets as tfds
from etils import epath

from medtl_jax.runtime.atomic_io import write_json_atomic
from medtl_jax.runtime.download import file_digest

SOURCE_FILE = "medtl_source.json"


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


def _stamp(path: pathlib.Path) -> dict:
    stat = path.stat()
    return {"file": str(path.resolve()), "size": stat.st_size, "mtime": stat.st_mtime}


def write_source(builder: tfds.core.DatasetBuilder, source: pathlib.Path,
                 manual_dir: str | os.PathLike | None) -> None:
    """Records beside the built dataset which file it was built from (see `check_source`)."""
    record = {**_stamp(source), "md5": file_digest(source, "md5"),
              "manual_dir": str(pathlib.Path(manual_dir).resolve()) if manual_dir else None,
              "identical_copies": []}
    write_json_atomic(pathlib.Path(builder.data_dir) / SOURCE_FILE, record)


def _refusal(built: pathlib.Path, record: dict, manual_dir, reason: str) -> ValueError:
    source = pathlib.Path(record["file"])
    return ValueError(
        f"the dataset at {built} was built from {source} (md5 {record['md5']}), but "
        f"config.data.manual_dir={os.fspath(manual_dir)!r} {reason}; to rebuild from the new folder, "
        f"delete {built} or set config.data.data_dir to a new folder; to keep the built copy, set "
        f"config.data.manual_dir={str(source.parent)!r} or leave it unset")


def check_source(builder: tfds.core.DatasetBuilder, manual_dir: str | os.PathLike | None,
                 filename: str) -> None:
    """ValueError when the built dataset came from another file than manual_dir/filename (unless
    byte-identical: same MD5, then remembered as a copy); no check without manual_dir or record."""
    built = pathlib.Path(builder.data_dir)
    path = built / SOURCE_FILE
    if manual_dir is None or not (built / "dataset_info.json").is_file():  # nothing built yet
        return
    if not path.is_file():
        logging.getLogger(__name__).warning(
            "%s has no %s (built before sources were recorded): cannot check that it was built from "
            "manual_dir %s; delete it to rebuild", built, SOURCE_FILE, manual_dir)
        return
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: unreadable record of the dataset's source file ({err}); delete "
                         f"{built} to rebuild it") from err
    wanted = pathlib.Path(manual_dir).resolve() / filename
    if not wanted.is_file():
        raise _refusal(built, record, manual_dir, f"holds no {filename}")
    known = [{k: record[k] for k in ("file", "size", "mtime")}, *record["identical_copies"]]
    if _stamp(wanted) in known:
        return
    md5 = file_digest(wanted, "md5")
    if md5 != record["md5"]:
        changed = "has changed since the build" if str(wanted) == record["file"] else "differs"
        raise _refusal(built, record, manual_dir, f"holds a {filename} that {changed} (md5 {md5})")
    record["identical_copies"].append(_stamp(wanted))
    write_json_atomic(path, record)
