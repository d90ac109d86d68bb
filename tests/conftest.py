"""Test set-up: 8 fake CPU devices (set before JAX starts), and the fixtures of tests in several folders."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

from tests.helpers.tiny_recipe import tiny_config  # noqa: E402


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    """The tiny recipe's synthetic dataset, built once per module before any subprocess reads it.

    Modules that want only an empty folder to build into define their own `data_dir`, which takes precedence."""
    from medtl_jax.data import load_data  # here: a run of only the light tests never loads the data stack
    path = str(tmp_path_factory.mktemp("tfds"))
    load_data(tiny_config(path).data)
    return path
