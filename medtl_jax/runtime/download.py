"""Downloads that never leave half a file: stream to a temp name, check the hash, then rename."""

from __future__ import annotations

import hashlib
import os
import pathlib
import tempfile
import urllib.request


def file_digest(path: str | os.PathLike, algorithm: str) -> str:
    """Hex digest of a file ('md5', 'sha256', ...), read in 1 MiB blocks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_verified(url: str, dest: pathlib.Path, *, algorithm: str, expected: str | None,
                      timeout: float) -> pathlib.Path:
    """Fetches `url` to `dest`; the file's `algorithm` digest must start with `expected` (None: unchecked).

    Network, disk and hash failures propagate as exceptions (the caller adds how to work offline);
    `dest` only ever appears complete and verified.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    digest = hashlib.new(algorithm)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
                digest.update(block)
        if expected is not None and not digest.hexdigest().startswith(expected):
            raise RuntimeError(f"{algorithm.upper()} mismatch for {url}: got {digest.hexdigest()}, expected {expected}; "
                               "the partial file was deleted, try again")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dest
