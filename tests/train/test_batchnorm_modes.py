"""BatchNorm over the global batch vs per device (`config.mesh.batch_norm`), on 8 fake devices."""

import itertools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.base import base_config
from medtl_jax.runtime import parallel
from medtl_jax.train import trainer as train


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def _config(data_dir, batch_norm, num_devices=0):
    c = base_config()
    c.data.name, c.data.subset, c.data.data_dir, c.data.input_size = "synthetic", "tiny", data_dir, 32
    c.model.name, c.model.init, c.model.dropout_rate = "cbr_tiny", "scratch", 0.0
    c.optimizer.name, c.optimizer.lr, c.optimizer.weight_decay = "sgd", 0.05, 0.0
    c.schedule.name, c.schedule.warmup_epochs = "constant", 0.0
    c.augment.enabled = False
    c.train.batch_size, c.train.eval_batch_size = 16, 32
    c.mesh.batch_norm, c.mesh.num_devices = batch_norm, num_devices
    return c


_CACHE = {}


def _one_step(config):
    """Set-up, initial state, first batch, state after one step, its loss and the compiled step (cached)."""
    key = (config.mesh.batch_norm, config.mesh.num_devices)
    if key not in _CACHE:
        _CACHE[key] = _run_one_step(config)
    return _CACHE[key]


def _run_one_step(config):
    s = train.make_setup(config)
    state = train.create_state(config, s)
    batch = next(itertools.islice(s.parts.train_epoch(0, 0), 1))
    step = train.make_train_step(s)
    new_state, metrics = step(jax.tree_util.tree_map(jnp.copy, state), parallel.to_global(batch, s.mesh))
    return s, jax.device_get(state), batch, jax.device_get(new_state), float(metrics["loss"]), step


def _reference_per_group(s, state, batch, groups):
    """Each group of rows through the model on its own (train mode): mean loss, mean updated statistics."""
    losses, stats = [], []
    for rows in np.split(np.arange(len(batch["image"])), groups):
        part = {k: jnp.asarray(v[rows]) for k, v in batch.items()}
        logits, upd = s.model.apply({"params": state.params, "batch_stats": state.batch_stats}, part["image"],
                                    train=True, mutable=["batch_stats"])
        losses.append(float(s.task.batch_loss(logits, part).mean()))
        stats.append(upd["batch_stats"])
    return np.mean(losses), jax.tree_util.tree_map(lambda *x: np.mean(x, axis=0), *stats)


def test_per_device_statistics_equal_each_device_alone(data_dir):
    s, state, batch, new_state, loss, _ = _one_step(_config(data_dir, "per_device"))
    assert s.bn_groups == 8
    ref_loss, ref_stats = _reference_per_group(s, state, batch, 8)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(new_state.batch_stats), jax.tree_util.tree_leaves(ref_stats)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # ... and it is not the global statistics: those give another loss.
    global_loss, _ = _reference_per_group(s, state, batch, 1)
    assert abs(global_loss - ref_loss) > 1e-3


def test_global_statistics_need_cross_device_reductions_per_device_do_not(data_dir):
    counts = {}
    for mode in ("global", "per_device"):
        s, state, batch, _, _, step = _one_step(_config(data_dir, mode))
        hlo = step.lower(state, parallel.to_global(batch, s.mesh)).compile().as_text()
        counts[mode] = len(re.findall(r"all-reduce(?:-start)?\(", hlo))
    # Per-device BN leaves only the gradient (and loss) all-reduces; global BN adds its statistics'.
    print("all-reduce ops in the compiled step:", counts)
    assert counts["per_device"] < counts["global"], counts


def test_unknown_batch_norm_mode_names_the_field(data_dir):
    with pytest.raises(ValueError, match=r"config.mesh.batch_norm='per_host'"):
        train.make_setup(_config(data_dir, "per_host"))
