"""Reliability: gradient accumulation, bf16 compute, NaN guard, checkpoint mismatch, and exact resume
after SIGTERM (clean stop) and SIGKILL (hard kill) of a real training subprocess."""

import json
import pathlib
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from medtl_jax.runtime import parallel

from medtl_jax.train import trainer as train
from tests.helpers.paths import REPO_ROOT
from tests.helpers.tiny_recipe import first_batches, tiny_config
from tests.helpers.train_subprocess import start_and_signal, two_cpu_env


def _train(config, batches):
    s = train.make_setup(config)
    state = train.create_state(config, s)
    step = train.make_train_step(s)
    losses = []
    for b in batches:
        state, m = step(state, parallel.to_global(b, s.mesh))
        losses.append(float(m["loss"]))
    return jax.device_get(state), losses


def test_gradient_accumulation_equals_the_large_batch(data_dir):
    """Frozen BN statistics: 4 micro-batches of 8 give the update of one batch of 32 (float32 rounding)."""
    over = {"train.batch_size": 32, "transfer.bn": "frozen", "mesh.num_devices": 4}
    config = tiny_config(data_dir, **over)
    batches = first_batches(config, train.make_setup(config), 2)
    full, loss_full = _train(config, batches)
    accum, loss_accum = _train(tiny_config(data_dir, **over, **{"train.grad_accum_steps": 4}), batches)
    np.testing.assert_allclose(loss_accum, loss_full, rtol=1e-5)
    # After two SGD steps (lr 0.05) parameters agree to 2e-5: the micro-batch sums change float32 rounding
    # (~1e-7 relative) of the first gradient, which the second step's gradient amplifies. A wrong
    # normalisation (sum instead of mean, a dropped micro-batch) would differ by ~1e-2.
    for a, b in zip(jax.tree_util.tree_leaves(accum.params), jax.tree_util.tree_leaves(full.params)):
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-5)
    with pytest.raises(ValueError, match="config.train.grad_accum_steps=3"):
        train.make_setup(tiny_config(data_dir, **over, **{"train.grad_accum_steps": 3}))


def test_bf16_compute_keeps_float32_parameters_and_learns(data_dir):
    config = tiny_config(data_dir, **{"model.dtype": "bfloat16"})
    s = train.make_setup(config)
    batch = first_batches(config, s, 1)[0]
    state, losses = _train(config, [batch] * 8)
    assert all(leaf.dtype == np.float32 for leaf in jax.tree_util.tree_leaves(state.params))
    assert losses[-1] < 0.5 * losses[0], losses


def _saved_states_are_finite(workdir, like) -> list[int]:
    """Steps of every checkpoint in the run folder, after checking that each holds only finite numbers."""
    from medtl_jax.runtime.checkpoint import RunCheckpoints
    steps = []
    for which in ("latest", "best"):
        restored = RunCheckpoints(workdir).restore(which, like)
        if restored is not None:
            leaves = jax.tree_util.tree_leaves(jax.device_get(restored[0]))
            assert all(np.isfinite(x).all() for x in leaves if np.issubdtype(x.dtype, np.floating)), which
            steps.append(int(restored[0].step))
    return steps


def test_divergence_never_reaches_a_checkpoint(data_dir, tmp_path):
    """lr x1e30 after epoch 1 (multistep): the loss is not logged before the mid-epoch save at step 10, yet
    nothing non-finite is saved; the error names the last good checkpoint (epoch 1), which a rerun with a
    sane lr, allowed by name, continues from. Before: NaN parameters were saved and called the last good."""
    over = {"model.name": "cbr_tiny", "model.stem": "imagenet", "schedule.name": "multistep", "schedule.milestones_epochs": (1,), "schedule.decay_factor": 1e30,
            "train.log_every_steps": 100, "train.checkpoint_every_steps": 2}
    config = tiny_config(data_dir, **over)
    with pytest.raises(train.NonFiniteLossError,
                       match=r"non-finite at step 10, so nothing was saved from it; the last good checkpoint "
                             r"\(step 8\)"):
        train.train_and_evaluate(config, tmp_path / "run")
    like = train.create_state(config, train.make_setup(config))
    assert _saved_states_are_finite(tmp_path / "run", like) == [8, 8]
    assert not (tmp_path / "run" / "results.json").exists()
    sane = tiny_config(data_dir, **{**over, "schedule.decay_factor": 0.1})
    results = train.train_and_evaluate(sane, tmp_path / "run", allow_config_change=("schedule.decay_factor",))
    assert results["config_changes"] == [{"step": 8, "changes": {"schedule.decay_factor": [1e30, 0.1]}}]


def test_divergence_before_any_checkpoint_says_so(data_dir, tmp_path):
    config = tiny_config(data_dir, **{"model.name": "cbr_tiny", "model.stem": "imagenet", "optimizer.lr": 1e30,
                                      "train.log_every_steps": 1})
    with pytest.raises(train.NonFiniteLossError, match=r"at step \d+, .*no checkpoint had been saved yet"):
        train.train_and_evaluate(config, tmp_path / "run")
    assert not list((tmp_path / "run" / "checkpoints").rglob("*/[0-9]*"))


def test_resuming_with_another_model_names_the_checkpoint(data_dir, tmp_path):
    from medtl_jax.runtime.checkpoint import RunCheckpoints
    config = tiny_config(data_dir)
    s = train.make_setup(config)
    ckpts = RunCheckpoints(tmp_path)
    ckpts.save("latest", 8, train.create_state(config, s), {"epoch": 1})
    ckpts.wait()
    other = tiny_config(data_dir, **{"model.name": "resnet34"})
    like = train.create_state(other, train.make_setup(other))
    with pytest.raises(ValueError, match=r"'latest' checkpoint at step 8 .* does not fit the model"):
        RunCheckpoints(tmp_path).restore("latest", like)


# ---------------------------------------------------------------------------------------------------
# A real process, really stopped.
# ---------------------------------------------------------------------------------------------------

def _command(data_dir, workdir):
    overrides = {"data.subset": "tiny", "data.data_dir": data_dir, "data.input_size": 32,
                 "model.name": "resnet18", "model.init": "scratch", "model.stem": "cifar",
                 "optimizer.name": "sgd", "optimizer.lr": 0.05, "optimizer.weight_decay": 0.0,
                 "schedule.name": "constant", "schedule.warmup_epochs": 0.0, "train.epochs": 3,
                 "train.batch_size": 16, "train.eval_batch_size": 32, "train.log_every_steps": 1,
                 "train.checkpoint_every_steps": 2, "eval.bootstrap_samples": 20}
    return [sys.executable, "-m", "launch.train", "--config", "configs/default.py", "--workdir", str(workdir),
            *(f"--config.{k}={v}" for k, v in overrides.items())]


def _results(workdir) -> dict:
    r = json.loads((pathlib.Path(workdir) / "results.json").read_text())
    return {k: r[k] for k in ("val", "test", "selection")}


def test_sigterm_then_sigkill_resume_to_the_uninterrupted_result(data_dir, tmp_path):
    """One run is stopped with SIGTERM mid-epoch 1 (clean exit, checkpoint), resumed, killed with SIGKILL
    mid-epoch 2, resumed again: its metrics and predictions equal an uninterrupted run's exactly."""
    ref = subprocess.run(_command(data_dir, tmp_path / "ref"), cwd=REPO_ROOT, env=two_cpu_env(),
                         capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-3000:]

    victim = tmp_path / "victim"
    stopped = start_and_signal(_command(data_dir, victim), victim, at_step=3, sig=signal.SIGTERM)
    assert stopped.returncode == 0, stopped.stdout[-3000:]
    assert "SIGTERM received" in stopped.stdout and not (victim / "results.json").exists()
    killed = start_and_signal(_command(data_dir, victim), victim, at_step=13, sig=signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    final = subprocess.run(_command(data_dir, victim), cwd=REPO_ROOT, env=two_cpu_env(), capture_output=True,
                           text=True, timeout=600)
    assert final.returncode == 0, final.stderr[-3000:]

    assert _results(victim) == _results(tmp_path / "ref")
    for split in ("val", "test"):
        a, b = np.load(victim / f"predictions_{split}.npz"), np.load(tmp_path / "ref" / f"predictions_{split}.npz")
        np.testing.assert_array_equal(a["scores"], b["scores"])
    logged = [json.loads(ln) for ln in (victim / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in logged if r["split"] == "train"]
    assert train_steps == sorted(set(train_steps)) == list(range(1, 25))  # one line per step, no replays


def test_a_disk_that_fills_while_writing_leaves_no_partial_checkpoint(tmp_path, monkeypatch):
    """The path behind the free-space check: orbax/tensorstore report a full disk as RESOURCE_EXHAUSTED
    from a save (or a later wait); the unfinished folder goes and one OSError(ENOSPC) names the folder."""
    import errno
    from medtl_jax.runtime.checkpoint import RunCheckpoints
    ckpts = RunCheckpoints(tmp_path)
    manager = ckpts._managers["latest"]

    def full_disk(step, args, force):
        (tmp_path / "checkpoints" / "latest" / f"{step}.orbax-checkpoint-tmp").mkdir(parents=True)
        raise ValueError('RESOURCE_EXHAUSTED: Error writing "params.x/0": No space left on device')

    monkeypatch.setattr(manager, "save", full_disk)
    with pytest.raises(OSError, match=r"no space left on the device of .*checkpoints.*filled up") as err:
        ckpts.save("latest", 3, {"w": np.zeros(4, np.float32)}, {"epoch": 0})
    assert err.value.errno == errno.ENOSPC
    assert not list((tmp_path / "checkpoints").rglob("*orbax-checkpoint-tmp*"))
