"""The trainer on a tiny synthetic task: learning, device-count invariance, resume, results files."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medtl_jax.runtime import parallel

from medtl_jax.train import trainer as train
from medtl_jax.models import build_classifier
from tests.helpers.tiny_recipe import first_batches, tiny_config


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def _run_steps(config, n_steps, batches=None):
    s = train.make_setup(config)
    state = train.create_state(config, s)
    step = train.make_train_step(s)
    batches = batches or first_batches(config, s, n_steps)
    losses = []
    for b in batches[:n_steps]:
        state, m = step(state, parallel.to_global(b, s.mesh))
        losses.append(float(m["loss"]))
    return jax.device_get(state), losses, batches


def test_loss_goes_down_on_8_devices(data_dir):
    assert jax.device_count() == 8
    config = tiny_config(data_dir)
    s = train.make_setup(config)
    assert s.mesh.devices.size == 8
    batch = first_batches(config, s, 1)[0]
    _, losses, _ = _run_steps(config, 8, [batch] * 8)
    assert losses[-1] < 0.5 * losses[0], losses


def _run_steps_float64(config, batches):
    """Like _run_steps, but computing in float64, so that float32 rounding cannot hide a real difference."""
    s = train.make_setup(config)
    model = build_classifier(config.model.name, s.task.num_outputs, stem=config.model.stem, dtype=jnp.float64)
    s = dataclasses.replace(s, parts=dataclasses.replace(
        s.parts, built=dataclasses.replace(s.parts.built, model=model.clone(dropout_rate=0.0))))
    state = jax.device_get(train.create_state(config, s))
    state = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64) if a.dtype == np.float32 else a, state)
    state = jax.device_put(state, parallel.replicated(s.mesh))
    step = train.make_train_step(s)
    losses = []
    for b in batches:
        state, m = step(state, parallel.to_global({**b, "image": b["image"].astype(np.float64)}, s.mesh))
        losses.append(float(m["loss"]))
    return jax.device_get(state), losses


def test_8_devices_equal_1_device(data_dir):
    # float32: the first forward pass (global-batch BatchNorm included) agrees to rounding.
    _, losses8, batches = _run_steps(tiny_config(data_dir), 1)
    _, losses1, _ = _run_steps(tiny_config(data_dir, **{"mesh.num_devices": 1}), 1, batches)
    assert abs(losses8[0] - losses1[0]) < 1e-6
    # Several steps in float64: parameters and BatchNorm statistics agree to 1e-9. (In float32 the
    # gradients of this freshly initialised network already differ from float64 by ~4% in some conv
    # kernels, through cancellation in BatchNorm's backward pass, so any device split differs at 1e-4.)
    batches = first_batches(tiny_config(data_dir), train.make_setup(tiny_config(data_dir)), 3)
    jax.config.update("jax_enable_x64", True)
    try:
        state8, losses8 = _run_steps_float64(tiny_config(data_dir), batches)
        state1, losses1 = _run_steps_float64(tiny_config(data_dir, **{"mesh.num_devices": 1}), batches)
    finally:
        jax.config.update("jax_enable_x64", False)
    np.testing.assert_allclose(losses8, losses1, rtol=0, atol=1e-6)  # the loss is reported in float32
    for tree in ("params", "batch_stats"):
        for a, b in zip(jax.tree_util.tree_leaves(getattr(state8, tree)),
                        jax.tree_util.tree_leaves(getattr(state1, tree))):
            assert a.dtype == np.float64
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)


def test_batch_size_not_divisible_by_devices_names_the_field(data_dir):
    with pytest.raises(ValueError, match="config.train.batch_size=12 must be divisible by the 8 devices"):
        train.make_setup(tiny_config(data_dir, **{"train.batch_size": 12}))


def test_full_run_writes_results_and_resumes_after_a_crash(data_dir, tmp_path, monkeypatch):
    config = tiny_config(data_dir)
    reference = train.train_and_evaluate(config, tmp_path / "uninterrupted")

    # Crash in the middle of epoch 2 (after the epoch-1 checkpoint), then rerun the same command.
    real_make_train_step = train.make_train_step
    steps_per_epoch = 128 // 16

    def crashing_make_train_step(s):
        step_fn, calls = real_make_train_step(s), {"n": 0}

        def wrapped(state, batch):
            calls["n"] += 1
            if calls["n"] == steps_per_epoch + 3:
                raise KeyboardInterrupt("simulated crash")
            return step_fn(state, batch)
        return wrapped

    monkeypatch.setattr(train, "make_train_step", crashing_make_train_step)
    with pytest.raises(KeyboardInterrupt):
        train.train_and_evaluate(config, tmp_path / "crashed")
    assert not (tmp_path / "crashed" / "results.json").exists()
    executed = {"n": 0}

    def counting_make_train_step(s):
        step_fn = real_make_train_step(s)

        def wrapped(state, batch):
            executed["n"] += 1
            return step_fn(state, batch)
        return wrapped

    monkeypatch.setattr(train, "make_train_step", counting_make_train_step)
    resumed = train.train_and_evaluate(config, tmp_path / "crashed")
    assert executed["n"] == steps_per_epoch, "the rerun should only train the epoch that did not finish"

    log = [json.loads(line) for line in (tmp_path / "crashed" / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in log if r["split"] == "train"]
    assert train_steps == sorted(set(train_steps)), "resumed log repeats or reorders steps"
    assert resumed["selection"] == reference["selection"]
    for split in ("val", "test"):
        assert resumed[split]["auc"] == reference[split]["auc"]
        assert resumed[split]["accuracy"] == reference[split]["accuracy"]

    results = json.loads((tmp_path / "uninterrupted" / "results.json").read_text())
    assert set(results["test"]) >= {"auc", "accuracy", "balanced_accuracy", "auc_ci95"}
    assert results["test"]["num_examples"] == 64 and results["config"]["model"]["name"] == "resnet18"
    lo, hi = results["test"]["auc_ci95"]
    assert lo <= results["test"]["auc"] <= hi
    report = (tmp_path / "uninterrupted" / "report.md").read_text()
    assert "best validation auc" in report and "sgd lr 0.05" in report
    assert f"{results['test']['auc']:.4f}" in report
    preds = np.load(tmp_path / "uninterrupted" / "predictions_test.npz")
    assert sorted(preds["index"].tolist()) == list(range(64))
