"""Whole-or-nothing file writes: results, reports and weights never appear half-written."""

from __future__ import annotations

import json
import math
import os
import pathlib
import tempfile
from typing import Any


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> pathlib.Path:
    """Writes `data` to a temp file beside `path`, then renames it into place."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> pathlib.Path:
    """Atomic text write (UTF-8)."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> pathlib.Path:
    """Atomic JSON write, indented for humans, strict (see `strict_json`)."""
    return write_text_atomic(path, strict_json(obj, indent=2) + "\n")


def strict_json(obj: Any, **dumps_kwargs) -> str:
    """JSON text any parser accepts: NaN and +-Infinity (which json.dumps writes as bare, non-standard
    tokens) become null."""
    return json.dumps(_finite_or_none(obj), allow_nan=False, **dumps_kwargs)


def _finite_or_none(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_none(v) for v in obj]
    return obj
