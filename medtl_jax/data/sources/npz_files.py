"""Reading MedMNIST `.npz` files: find a local copy or download one, check it, stream its arrays.

An `.npz` file is a zip of `.npy` members. MedMNIST+ files reach 12 GB, so arrays are streamed in
chunks of rows from the zip member rather than loaded whole. Every problem with a file raises a
ValueError that names the file (and the key, where one is involved).
"""

from __future__ import annotations

import os
import pathlib
import urllib.error
import zipfile
import zlib
from collections.abc import Iterator

import numpy as np

from medtl_jax.data.sources.medmnist_info import MEDMNIST_2D, SubsetInfo
from medtl_jax.runtime.download import download_verified, file_digest

NPZ_SPLITS = ("train", "val", "test")  # MedMNIST's split names inside the files
DOWNLOAD_TIMEOUT_S = 60.0
_CHUNK_ROWS = 1024


def cache_dir() -> pathlib.Path:
    """Where downloads go: $MEDTL_CACHE_DIR/medmnist, else ~/.cache/medtl_jax/medmnist."""
    root = os.environ.get("MEDTL_CACHE_DIR")
    base = pathlib.Path(root) if root else pathlib.Path.home() / ".cache" / "medtl_jax"
    return base / "medmnist"


def source_url(subset: str, size: int) -> str:
    """Official address of a file (a function, so tests and mirrors can replace it)."""
    return MEDMNIST_2D[subset].url(size)


def md5sum(path: pathlib.Path) -> str:
    """MD5 of a file, the checksum MedMNIST publishes."""
    return file_digest(path, "md5")


def download(url: str, dest: pathlib.Path, md5: str | None) -> pathlib.Path:
    """Downloads `url` to `dest` through a temp file; checks the MD5 (when known) before keeping it."""
    return download_verified(url, dest, algorithm="md5", expected=md5, timeout=DOWNLOAD_TIMEOUT_S)


def _looked_in(label: str, folder: pathlib.Path, name: str) -> str:
    """'<label> <folder> (<why the file is not there>)' for the "looked in" list."""
    if not folder.exists():
        state = "does not exist"
    elif not folder.is_dir():
        state = "not a folder"
    elif not any(folder.iterdir()):
        state = "empty"
    else:
        state = f"no {name} in it"
    return f"{label}{' ' if label else ''}{folder} ({state})"


def locate(subset: str, size: int, *, manual_dir: str | os.PathLike | None = None,
           extra_dirs: tuple[os.PathLike, ...] = ()) -> pathlib.Path:
    """Finds the file of (subset, size), downloading it if no local copy exists.

    Order: `manual_dir`, $MEDTL_MEDMNIST_DIR, the download cache (`cache_dir()`), `extra_dirs`
    (e.g. TFDS's downloads folder), then the official URL (MD5-verified) into the cache. When all
    fail, the error lists every folder looked in and why the file was not there.
    """
    info = MEDMNIST_2D[subset]
    name = info.filename(size)
    places = [("config.data.manual_dir", manual_dir),
              ("$MEDTL_MEDMNIST_DIR", os.environ.get("MEDTL_MEDMNIST_DIR")),
              ("download cache", cache_dir()), *(("", d) for d in extra_dirs)]
    places = [(label, pathlib.Path(d)) for label, d in places if d]
    for _, folder in places:
        if (folder / name).is_file():
            return folder / name
    url = source_url(subset, size)
    try:
        return download(url, cache_dir() / name, info.md5.get(size))
    except (urllib.error.URLError, OSError) as err:
        looked = "; ".join(_looked_in(label, folder, name) for label, folder in places)
        raise RuntimeError(
            f"MedMNIST file {name} is needed and was not found locally (looked in: {looked}); "
            f"downloading {url} failed: {err}. Offline? Put {name} in a folder and pass "
            "--config.data.manual_dir=FOLDER (or set MEDTL_MEDMNIST_DIR)."
        ) from err


# ---------------------------------------------------------------------------------------------------
# Streaming .npy members out of the zip.
# ---------------------------------------------------------------------------------------------------

def _read_header(f) -> tuple[tuple[int, ...], np.dtype, bool]:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    return np.lib.format.read_array_header_2_0(f)


def array_headers(path: pathlib.Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shapes and dtypes of every array in an .npz file, without reading the data."""
    out = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for member in zf.namelist():
                if member.endswith(".npy"):
                    with zf.open(member) as f:
                        shape, _, dtype = _read_header(f)
                    out[member[:-4]] = (shape, dtype)
    except (zipfile.BadZipFile, ValueError, EOFError, OSError, zlib.error) as err:
        raise ValueError(f"{path}: not a readable .npz file (truncated or corrupt?): {err}") from err
    return out


def iter_rows(path: pathlib.Path, key: str, chunk_rows: int = _CHUNK_ROWS) -> Iterator[np.ndarray]:
    """Yields array `key` of the .npz file in chunks of rows (bounded memory for huge files)."""
    try:
        with zipfile.ZipFile(path) as zf, zf.open(key + ".npy") as f:
            shape, fortran, dtype = _read_header(f)
            if fortran or dtype.hasobject:
                raise ValueError("Fortran-ordered or object arrays are not supported")
            row_shape, row_bytes = shape[1:], int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
            for start in range(0, shape[0], chunk_rows):
                rows = min(chunk_rows, shape[0] - start)
                buf = f.read(rows * row_bytes)
                if len(buf) != rows * row_bytes:
                    raise EOFError(f"array ends after {start} + {len(buf) // max(row_bytes, 1)} rows")
                yield np.frombuffer(buf, dtype=dtype).reshape((rows, *row_shape))
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error, ValueError, KeyError) as err:
        raise ValueError(f"{path}: cannot read key '{key}': {err}") from err


def read_array(path: pathlib.Path, key: str) -> np.ndarray:
    """Reads one whole array of the .npz file (for the small label arrays)."""
    return np.concatenate(list(iter_rows(path, key)) or [np.zeros((0,))])


# ---------------------------------------------------------------------------------------------------
# Checking a file against the metadata.
# ---------------------------------------------------------------------------------------------------

def _expected_image_shapes(info: SubsetInfo, size: int, n: int) -> list[tuple[int, ...]]:
    if info.n_channels == 1:
        return [(n, size, size), (n, size, size, 1)]
    return [(n, size, size, info.n_channels)]


def validate(path: pathlib.Path, info: SubsetInfo, size: int) -> None:
    """Checks keys, image shapes and dtype, split counts and label ranges against `info`.

    Raises ValueError naming the file and the offending key. Image pixels are checked while they are
    streamed at build time (a truncated member fails there, also with a ValueError).
    """
    headers = array_headers(path)
    for split in NPZ_SPLITS:
        for kind in ("images", "labels"):
            key = f"{split}_{kind}"
            if key not in headers:
                raise ValueError(f"{path}: missing key '{key}' (found: {sorted(headers)}); a MedMNIST "
                                 f"file has {', '.join(f'{s}_images/{s}_labels' for s in NPZ_SPLITS)}")
        n = info.splits[split]
        key = f"{split}_images"
        shape, dtype = headers[key]
        wanted = _expected_image_shapes(info, size, n)
        if shape not in wanted or dtype != np.uint8:
            if shape[0] != n and shape[1:] in [w[1:] for w in wanted]:
                raise ValueError(f"{path}: key '{key}' holds {shape[0]} images, the official "
                                 f"{info.name} {split} split has {n}")
            raise ValueError(f"{path}: key '{key}' has shape {shape} dtype {dtype}, expected "
                             f"{' or '.join(map(str, wanted))} uint8 ({info.n_channels} channel(s), "
                             f"size {size})")
        key = f"{split}_labels"
        labels = read_array(path, key)
        want = (n, info.num_labels) if info.multi_label else (n, 1)
        if labels.shape != want and not (not info.multi_label and labels.shape == (n,)):
            raise ValueError(f"{path}: key '{key}' has shape {labels.shape}, expected {want}")
        top = 1 if info.multi_label else info.num_labels - 1
        if labels.size and (labels.min() < 0 or labels.max() > top):
            raise ValueError(f"{path}: key '{key}' has labels in [{labels.min()}, {labels.max()}], "
                             f"expected 0..{top} for {info.name}")
