"""What to do with files that cannot be read: stop at the first one, or skip and list them.

`on_error='fail'` (the default of prepare_data) raises UnreadableImageError naming the file, its
manifest row and the reason; `'skip'` records (path, reason) and `write_csv` lists them in
`skipped_files.csv` beside the dataset.
"""

from __future__ import annotations

import csv
import io
import os

from medtl_jax.runtime.atomic_io import write_text_atomic
from medtl_jax.data.ingest.dicom import UnreadableImageError

ON_ERROR = ("fail", "skip")


class Unreadable:
    """Collects unreadable files under an on-error policy ('fail' raises at once, 'skip' lists)."""

    def __init__(self, on_error: str = "fail"):
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.on_error = on_error
        self.items: list[tuple[str, str]] = []

    def report(self, path, reason: str, origin: str = "") -> None:
        """Raises (fail) or records (skip) that `path` (from manifest `origin`) cannot be read."""
        reason = f"{reason} ({origin})" if origin else reason
        if self.on_error == "fail":
            raise UnreadableImageError(path, f"{reason}; pass --on-error=skip to leave such files out")
        self.items.append((str(path), reason))

    def report_error(self, error: UnreadableImageError, origin: str = "") -> None:
        """`report` for an UnreadableImageError raised by a reader."""
        self.report(error.path, error.reason, origin)

    def write_csv(self, path: str | os.PathLike) -> None:
        """Writes the skipped files as CSV (columns path, reason)."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["path", "reason"])
        writer.writerows(self.items)
        write_text_atomic(path, buf.getvalue())
