"""Where things are: the repository root, and the real medical data beside it (where present)."""

import os
import pathlib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def shared_data_dir() -> pathlib.Path | None:
    """The real medical data: $MEDTL_SHARED_DATA, else ../shared/data beside the repo, else None."""
    env = os.environ.get("MEDTL_SHARED_DATA")
    path = pathlib.Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    return path if path.is_dir() else None
