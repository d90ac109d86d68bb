"""Schedules put the learning-rate changes at the configured epochs."""

import pytest

from configs.base import base_config
from medtl_jax.transfer.optimizer import make_optimizer, make_schedule


def test_multistep_decays_at_milestone_epochs():
    c = base_config()
    c.optimizer.lr = 1e-3
    c.schedule.name = "multistep"
    c.schedule.warmup_epochs = 0.0
    c.schedule.milestones_epochs = (50, 75)
    sched = make_schedule(c, steps_per_epoch=10, total_steps=1000)
    assert float(sched(499)) == pytest.approx(1e-3)
    assert float(sched(500)) == pytest.approx(1e-4)
    assert float(sched(749)) == pytest.approx(1e-4)
    assert float(sched(750)) == pytest.approx(1e-5)


def test_warmup_cosine_peaks_after_warmup_and_ends_low():
    c = base_config()
    c.optimizer.lr = 0.1
    c.schedule.name = "warmup_cosine"
    c.schedule.warmup_epochs = 2.0
    sched = make_schedule(c, steps_per_epoch=5, total_steps=100)
    assert float(sched(0)) == pytest.approx(0.0)
    assert float(sched(10)) == pytest.approx(0.1)
    assert float(sched(5)) == pytest.approx(0.05)
    assert float(sched(100)) == pytest.approx(0.0, abs=1e-7)


def test_unknown_optimizer_names_the_field():
    c = base_config()
    c.optimizer.name = "adamm"
    with pytest.raises(ValueError, match="config.optimizer.name"):
        make_optimizer(c, 10, 100)
