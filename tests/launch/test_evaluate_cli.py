"""``python -m launch.evaluate``: a finished run scored on another dataset; bad overrides stop at once with
one line naming the field (the end-to-end case, another site with other image sizes, is in
tests/train/test_train_tasks.py::test_segmentation_run_end_to_end)."""

import os
import subprocess
import sys

import pytest

from medtl_jax.config.arguments import data_overrides, split_overrides
from tests.helpers.paths import REPO_ROOT
from tests.helpers.tiny_recipe import tiny_config


def evaluate_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launch.evaluate", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})


def test_overrides_are_data_fields_typed_like_the_runs_values(tmp_path):
    config = tiny_config(str(tmp_path))
    rest, overrides = split_overrides(["prog", "--workdir=w", "--config.data.manual_dir=/x",
                                       "--config.data.source_size=64", "--config.data.train_sites=A,B"])
    assert rest == ["prog", "--workdir=w"]
    assert data_overrides(config, overrides) == {"manual_dir": "/x", "source_size": 64, "train_sites": ("A", "B")}
    with pytest.raises(ValueError, match=r"--config\.model\.name: only config\.data\.<field> can change"):
        data_overrides(config, [("model.name", "resnet50")])
    with pytest.raises(ValueError, match=r"unknown config field 'config\.data\.manual_dr'.*config\.data\.manual_dir"):
        data_overrides(config, [("data.manual_dr", "/x")])
    with pytest.raises(ValueError, match=r"config\.data\.source_size='big' must be int"):
        data_overrides(config, [("data.source_size", "big")])
    with pytest.raises(ValueError, match="give config overrides as --config.data.<field>=value"):
        split_overrides(["prog", "--config.data.name"])


def test_bad_inputs_end_with_one_error_line(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(tiny_config(str(tmp_path)).to_json_best_effort())
    cases = [
        (["--workdir", str(tmp_path / "nope"), "--out", str(tmp_path / "o")], f"{tmp_path / 'nope' / 'config.json'} not found"),
        (["--workdir", str(tmp_path / "run"), "--out", str(tmp_path / "o"), "--config.train.epochs=3"],
         "only config.data.<field> can change"),
        (["--workdir", str(tmp_path / "run"), "--out", str(tmp_path / "o"), "--config.data.manual_dir=/no/such"],
         "config.data.manual_dir='/no/such' does not exist"),
    ]
    for args, message in cases:
        done = evaluate_cli(*args)
        lines = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
        assert done.returncode == 2 and len(lines) == 1 and message in lines[0], done.stderr[-2000:]
        assert not (tmp_path / "o").exists()
