"""`launch.train` as a user meets it: one readable line for bad input, nothing created before every check
passed, a run folder that never ends up contradicting its checkpoints, Ctrl-C and a full disk handled
like a preemption. Each case runs the real command in a subprocess."""

import json
import os
import signal
import subprocess
import sys

import pytest

from medtl_jax.runtime.cli_errors import debug_requested
from tests.helpers.paths import REPO_ROOT
from tests.helpers.train_subprocess import start_and_signal


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "MEDTL_DEBUG"}
    return {**env, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=1", **extra}


def _command(data_dir, workdir, *extra, config="configs/default.py", **overrides):
    """The tiny recipe (CBR-Tiny, 32 px, 8 steps an epoch) through the real command line."""
    fields = {"data.subset": "tiny", "data.data_dir": data_dir, "data.input_size": 32, "model.name": "cbr_tiny",
              "model.init": "scratch", "optimizer.name": "sgd", "optimizer.lr": 0.05,
              "schedule.name": "constant", "schedule.warmup_epochs": 0.0, "train.epochs": 1,
              "train.batch_size": 16, "train.eval_batch_size": 32, "train.log_every_steps": 1,
              "eval.bootstrap_samples": 10, **overrides}
    return [sys.executable, "-m", "launch.train", "--config", config, "--workdir", str(workdir),
            *(f"--config.{k}={v}" for k, v in fields.items()), *extra]


def _run(cmd, **env) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO_ROOT, env=_env(**env), capture_output=True, text=True, timeout=600)


def _error_line(run: subprocess.CompletedProcess) -> str:
    """The one 'error:' line of a refused command (and no traceback anywhere)."""
    out = run.stdout + run.stderr
    assert "Traceback" not in out, out[-3000:]
    errors = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, out[-3000:]
    return errors[0]


@pytest.mark.parametrize("args, config, names", [
    ((), "configs/medmnist.py:size=abc", "config argument size='abc' must be int"),
    (("--config.train.epochs=abc",), "configs/default.py", "--config.train.epochs=abc"),
    (("stray_argument",), "configs/default.py", "unexpected argument(s) 'stray_argument'"),
    (("--config.optimizer.lr=nan",), "configs/default.py", "config.optimizer.lr=nan is not a finite number"),
    (("--config.eval.threshold=2.0",), "configs/default.py", "config.eval.threshold=2.0 is out of range"),
    (("--config.data.manual_dir=/no/such/dir",), "configs/default.py", "config.data.manual_dir='/no/such/dir'"),
    ((), "configs/no_such_file.py", "no such file 'configs/no_such_file.py'"),
])
def test_bad_input_is_one_line_and_creates_no_workdir(tmp_path, args, config, names):
    workdir = tmp_path / "run"
    run = _run([sys.executable, "-m", "launch.train", "--config", config, "--workdir", str(workdir), *args])
    assert run.returncode == 2
    assert names in _error_line(run)
    assert not workdir.exists()


def test_select_metric_the_task_lacks_is_refused_before_training(data_dir, tmp_path):
    """'qwk' on a binary task used to test epoch 1's checkpoint and write -Infinity into results.json."""
    run = _run(_command(data_dir, tmp_path / "run", **{"train.select_metric": "qwk"}))
    assert run.returncode == 2
    assert "config.train.select_metric='qwk' is not computed for a binary task" in _error_line(run)
    assert not (tmp_path / "run").exists()


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    cmd = [sys.executable, "-m", "launch.train", "--config", "configs/default.py", "--workdir", str(tmp_path / "r"),
           "--config.eval.threshold=2.0", "--debug"]
    assert "Traceback" in _run(cmd).stderr
    monkeypatch.setenv("MEDTL_DEBUG", "1")
    assert debug_requested()
    monkeypatch.setenv("MEDTL_DEBUG", "0")
    assert not debug_requested()


def test_a_changed_config_is_refused_unless_allowed_by_name(data_dir, tmp_path):
    """Before: config.json was rewritten first; another model gave 421 lines of orbax tracebacks, another
    lr on a finished run exited 0 with a report stating an lr its checkpoint was not trained with."""
    workdir = tmp_path / "run"
    first = _run(_command(data_dir, workdir))
    assert first.returncode == 0, first.stderr[-3000:]
    config_bytes, results_bytes = (workdir / "config.json").read_bytes(), (workdir / "results.json").read_bytes()

    lr = _run(_command(data_dir, workdir, **{"optimizer.lr": 0.01}))
    assert lr.returncode == 2
    assert "optimizer.lr: 0.05 -> 0.01" in _error_line(lr) and "--allow_config_change=optimizer.lr" in _error_line(lr)
    model = _run(_command(data_dir, workdir, **{"model.name": "cbr_small"}))
    assert "model.name: 'cbr_tiny' -> 'cbr_small'" in _error_line(model)
    assert (workdir / "config.json").read_bytes() == config_bytes
    assert (workdir / "results.json").read_bytes() == results_bytes

    # Allowing a change that does not fit the checkpoints: one line naming it, no stray asyncio tracebacks.
    forced = _run(_command(data_dir, workdir, "--allow_config_change=model.name", **{"model.name": "cbr_small"}))
    assert forced.returncode == 2
    assert "'latest' checkpoint at step 8" in _error_line(forced)
    assert "Event loop is closed" not in forced.stderr
    assert (workdir / "config.json").read_bytes() == config_bytes

    # Continuing on purpose: more epochs, recorded with the step where the change took effect.
    more = _run(_command(data_dir, workdir, "--allow_config_change=train.epochs", **{"train.epochs": 2}))
    assert more.returncode == 0, more.stderr[-3000:]
    results = json.loads((workdir / "results.json").read_text())
    assert results["config"]["train"]["epochs"] == 2 and results["timing"]["steps"] == 16
    assert results["config_changes"] == [{"step": 8, "changes": {"train.epochs": [1, 2]}}]
    report = (workdir / "report.md").read_text()
    assert "## Config changed on resume" in report and "from step 8: train.epochs 1 -> 2" in report


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(data_dir, tmp_path):
    workdir = tmp_path / "run"
    stopped = start_and_signal(_command(data_dir, workdir, **{"train.epochs": 3}), workdir, at_step=3,
                                sig=signal.SIGINT)
    assert stopped.returncode == 0, stopped.stdout[-3000:]
    assert "Traceback" not in stopped.stdout
    assert "Ctrl-C (SIGINT) received: stopped at step" in stopped.stdout
    assert (workdir / "checkpoints" / "latest").is_dir() and any((workdir / "checkpoints" / "latest").iterdir())


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (root only): too small for one checkpoint of the tiny run."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2M", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root and mount -t tmpfs to make a small disk")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_is_one_line_naming_the_folder_and_leaves_no_partial_checkpoint(data_dir, small_disk):
    workdir = small_disk / "run"
    run = _run(_command(data_dir, workdir))
    assert run.returncode == 2
    line = _error_line(run)
    assert "no space left" in line and str(workdir / "checkpoints") in line
    assert not list((workdir / "checkpoints").rglob("*orbax-checkpoint-tmp*"))
