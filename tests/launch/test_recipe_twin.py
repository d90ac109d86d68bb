"""benchmarks/recipe_twin.py runs both sides of one recipe on the same splits and prints one row each (a
smoke run: random images, 1 epoch at 32 px; the real comparison is in the closing notes and README)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from medtl_jax.data.sources.medmnist_info import MEDMNIST_2D
from tests.helpers.paths import REPO_ROOT


@pytest.mark.slow  # two short trainings (about a minute): `pytest -m slow`
def test_recipe_twin_smoke_run(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in MEDMNIST_2D["breastmnist"].splits.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 2, (n, 1), dtype=np.uint8)
    (tmp_path / "npz").mkdir()
    np.savez(tmp_path / "npz" / "breastmnist.npz", **arrays)
    done = subprocess.run(
        [sys.executable, "benchmarks/recipe_twin.py", "--dataset", "breastmnist", "--manual_dir", str(tmp_path / "npz"),
         "--size", "32", "--epochs", "1", "--workdir", str(tmp_path / "runs"), "--tfds_dir", str(tmp_path / "tfds")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
             "MEDTL_CACHE_DIR": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [ln.split("|")[1:-1] for ln in done.stdout.splitlines() if ln.startswith("| 0 |")]
    assert [r[1].strip() for r in rows] == ["jax", "torch"]
    for row in rows:
        auc, acc = float(row[2]), float(row[3])
        assert 0.0 <= auc <= 1.0 and 0.0 <= acc <= 1.0 and row[4].strip() == "1"  # 1 epoch: best epoch 1
    assert (tmp_path / "runs" / "jax_seed0" / "results.json").is_file()
