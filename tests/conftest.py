"""Test set-up: 8 fake CPU devices (set before JAX starts) and the location of the real data."""

import os
import pathlib

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def shared_data_dir() -> pathlib.Path | None:
    """The real medical data: $MEDTL_SHARED_DATA, else ../shared/data beside the repo, else None."""
    env = os.environ.get("MEDTL_SHARED_DATA")
    path = pathlib.Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def medmnist_dir() -> pathlib.Path:
    """Folder of real MedMNIST .npz files; skips the test where it is absent."""
    root = shared_data_dir()
    if root is None or not (root / "medmnist").is_dir():
        pytest.skip("real MedMNIST files not found: set MEDTL_SHARED_DATA to the shared data folder "
                    "(the one holding medmnist/pneumoniamnist.npz)")
    return root / "medmnist"
