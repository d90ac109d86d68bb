"""Fixtures of the data tests: the real MedMNIST files beside the repository."""

import pathlib

import pytest

from tests.helpers.paths import shared_data_dir


@pytest.fixture(scope="session")
def medmnist_dir() -> pathlib.Path:
    """Folder of real MedMNIST .npz files; skips the test where it is absent."""
    root = shared_data_dir()
    if root is None or not (root / "medmnist").is_dir():
        pytest.skip("real MedMNIST files not found: set MEDTL_SHARED_DATA to the shared data folder "
                    "(the one holding medmnist/pneumoniamnist.npz)")
    return root / "medmnist"
