"""Which weights are tested: EMA next to the trained weights, the best-so-far rule, early stopping, and
recipes given in optimizer steps."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medtl_jax.train import selection
from medtl_jax.train import trainer as train
from medtl_jax.transfer.optimizer import total_epochs, warmup_steps
from tests.helpers.tiny_recipe import tiny_config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def _tiny(data_dir, **overrides):
    """cbr_tiny on the synthetic 'tiny' set: 8 steps an epoch, fast enough for several short runs."""
    c = tiny_config(data_dir, **{"model.name": "cbr_tiny", "model.stem": "imagenet", **overrides})
    c.eval.bootstrap_samples = 0
    return c


def test_the_better_of_raw_and_ema_is_the_candidate_and_nan_never_wins():
    assert selection.best_candidate({"raw": {"auc": 0.7}, "ema": {"auc": 0.8}}, "auc") == ("ema", 0.8)
    assert selection.best_candidate({"raw": {"auc": 0.8}, "ema": {"auc": 0.8}}, "auc") == ("raw", 0.8)
    assert selection.best_candidate({"raw": {"auc": float("nan")}, "ema": {"auc": 0.1}}, "auc") == ("ema", 0.1)
    assert selection.best_candidate({"raw": {}}, "auc") == ("raw", float("-inf"))


def test_best_so_far_and_patience():
    record = {"epoch": 0, "best_score": float("-inf"), "best_epoch": -1}
    for epoch, score in enumerate([0.6, 0.7, 0.7, 0.65, 0.69], start=1):
        record["epoch"] = epoch
        selection.update_best(record, "raw", score, epoch, epoch * 10)
        stop = selection.stop_reason(record, patience=3)
        assert stop == (None if epoch < 5 else "early_stopping"), epoch
    assert (record["best_epoch"], record["best_step"], record["best_score"]) == (2, 20, 0.7)  # a tie is no gain
    assert selection.stop_reason(record, patience=0) is None  # 0 = off
    record["stopped"] = {"reason": "early_stopping", "step": 50}
    assert selection.stopping_summary(record, 80, 3) == {"reason": "early_stopping", "patience": 3, "epoch": 5,
                                                          "step": 50, "planned_steps": 80}


def test_a_recipe_in_steps_gets_epochs_from_the_dataset_size(data_dir):
    c = _tiny(data_dir)
    assert total_epochs(c, 8) == 2  # train.epochs
    c.train.steps = 500
    assert (total_epochs(c, 17), total_epochs(c, 3125), total_epochs(c, 500)) == (30, 1, 1)  # ceil(steps / spe)
    c.schedule.warmup_epochs = 2.0
    assert warmup_steps(c, 17) == 34
    c.schedule.warmup_steps = 100
    assert warmup_steps(c, 17) == 100
    s = train.make_setup(_tiny(data_dir, **{"train.steps": 20}))
    assert (s.steps_per_epoch, s.epochs, s.total_steps) == (8, 3, 24)


def test_moving_average_follows_the_ramped_decay():
    ema = {"params": {"w": jnp.zeros(2)}, "batch_stats": {"m": jnp.ones(1)}}
    out = train.moving_average(ema, {"w": jnp.full(2, 10.0)}, {"m": jnp.full(1, 3.0)}, jnp.asarray(0), 0.99)
    rate = 1 / 10  # min(0.99, (1 + 0) / (10 + 0)): the first average is nearly the new weights
    np.testing.assert_allclose(out["params"]["w"], (1 - rate) * 10.0, rtol=1e-6)
    np.testing.assert_allclose(out["batch_stats"]["m"], rate * 1.0 + (1 - rate) * 3.0, rtol=1e-6)
    late = train.moving_average(ema, {"w": jnp.full(2, 10.0)}, {"m": jnp.full(1, 3.0)}, jnp.asarray(10_000), 0.99)
    np.testing.assert_allclose(late["params"]["w"], 0.01 * 10.0, rtol=1e-5)
    assert train.moving_average(None, {}, {}, 0, 0.99) is None


def test_early_stopping_stops_records_why_and_stays_stopped(data_dir, tmp_path):
    # lr 0: the weights never change, so the first validation is never beaten and patience 1 stops after
    # epoch 2 of 5.
    c = _tiny(data_dir, **{"train.epochs": 5, "train.patience": 1, "optimizer.lr": 1e-12})
    results = train.train_and_evaluate(c, tmp_path / "run")
    assert results["stopping"] == {"reason": "early_stopping", "patience": 1, "epoch": 2, "step": 16,
                                   "planned_steps": 40}
    assert results["timing"]["steps"] == 16 and results["selection"]["best_epoch"] == 1
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in logged if r["split"] == "train") == 16
    assert "stopped early after epoch 2 (step 16 of 40)" in (tmp_path / "run" / "report.md").read_text()
    again = train.train_and_evaluate(c, tmp_path / "run")  # the same command: nothing more to train
    assert again["stopping"] == results["stopping"] and again["test"]["auc"] == results["test"]["auc"]


def test_ema_is_validated_beside_the_trained_weights_and_the_better_is_tested(data_dir, tmp_path):
    c = _tiny(data_dir, **{"train.epochs": 3, "train.ema_decay": 0.9})
    results = train.train_and_evaluate(c, tmp_path / "run")
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    raw = [r["auc"] for r in logged if r["split"] == "val"]
    ema = [r["auc"] for r in logged if r["split"] == "val_ema"]
    assert len(raw) == len(ema) == 3 and raw != ema
    best = max(max(a, b) for a, b in zip(raw, ema))
    assert results["selection"]["val_score"] == pytest.approx(best)
    epoch = results["selection"]["best_epoch"]
    expected = "ema" if ema[epoch - 1] > raw[epoch - 1] else "raw"
    assert results["selection"]["weights"] == expected
    assert results["val"]["auc"] == pytest.approx(best)  # the tested checkpoint holds the chosen weights
    assert f"tested: {expected} weights" in (tmp_path / "run" / "report.md").read_text()
