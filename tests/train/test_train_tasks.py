"""The trainer with the task, loss, transfer and segmentation options of the config."""

import json
import os
import subprocess
import sys

import numpy as np
import jax
import pytest

from medtl_jax.runtime import parallel

from medtl_jax.train import trainer as train
from medtl_jax.inference.cross_evaluate import evaluate_on
from medtl_jax.models.stages import stage_of
from tests.helpers.paths import REPO_ROOT
from tests.helpers.segmentation_folders import write_seg_folder
from tests.helpers.tiny_recipe import first_batches, tiny_config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def _steps(config, n, same_batch=False):
    s = train.make_setup(config)
    state0 = jax.device_get(train.create_state(config, s))
    state = jax.device_put(state0, parallel.replicated(s.mesh))
    step = train.make_train_step(s)
    losses = []
    batches = first_batches(config, s, 1) * n if same_batch else first_batches(config, s, n)
    for b in batches:
        state, m = step(state, parallel.to_global(b, s.mesh))
        losses.append(float(m["loss"]))
    return s, state0, jax.device_get(state), losses


def test_balanced_sampling_lengthens_the_epoch_and_weighted_losses_learn(data_dir):
    plain = train.make_setup(tiny_config(data_dir))
    balanced = train.make_setup(tiny_config(data_dir, **{"loss.imbalance": "balanced_sampling"}))
    labels = np.array([plain.data.sources["train"][i]["label"] for i in range(len(plain.data.sources["train"]))])
    counts = np.bincount(labels, minlength=2)
    assert plain.steps_per_epoch == len(labels) // 16
    assert balanced.steps_per_epoch == 2 * counts.max() // 16  # every class up to the majority count
    for strategy in ("class_weighted", "focal"):
        *_, losses = _steps(tiny_config(data_dir, **{"loss.imbalance": strategy}), 8, same_batch=True)
        assert np.all(np.isfinite(losses)) and losses[-1] < 0.5 * losses[0], (strategy, losses)


def test_linear_probe_keeps_the_backbone_bit_identical_in_the_trainer(data_dir):
    config = tiny_config(data_dir, **{"transfer.mode": "linear_probe", "optimizer.weight_decay": 0.1})
    s, before, after, _ = _steps(config, 3)
    assert s.model.backbone_bn == "frozen"
    for tree in ("params", "batch_stats"):
        flat_before = jax.tree_util.tree_leaves_with_path(getattr(before, tree)["backbone"])
        for (path, a), b in zip(flat_before, jax.tree_util.tree_leaves(getattr(after, tree)["backbone"])):
            assert np.array_equal(a, b), (tree, path)
    assert not np.array_equal(before.params["head"]["kernel"], after.params["head"]["kernel"])


def test_mean_var_init_keeps_moments_not_values(data_dir):
    config = tiny_config(data_dir, **{"model.init": "mean_var", "model.name": "efficientnet_lite0",
                                      "model.stem": "imagenet"})
    s = train.make_setup(config)
    state = jax.device_get(train.create_state(config, s))
    imagenet = jax.device_get(train.create_state(tiny_config(data_dir, **{
        "model.init": "imagenet", "model.name": "efficientnet_lite0", "model.stem": "imagenet"}), s))
    w_mv = state.params["backbone"]["conv_head"]["kernel"]
    w_in = imagenet.params["backbone"]["conv_head"]["kernel"]
    assert not np.allclose(w_mv, w_in)
    assert abs(w_mv.mean() - w_in.mean()) < 0.05 * w_in.std() and abs(w_mv.std() / w_in.std() - 1) < 0.05


def test_freeze_stages_with_layer_decay_and_frozen_bn(data_dir):
    config = tiny_config(data_dir, **{"transfer.mode": "freeze_stages", "transfer.freeze_stages": 2,
                                      "transfer.bn": "frozen", "transfer.layer_decay": 0.5})
    _, before, after, _ = _steps(config, 2)
    flat_b = dict(jax.tree_util.tree_leaves_with_path(before.params))
    for path, leaf in jax.tree_util.tree_leaves_with_path(after.params):
        names = [p.key for p in path]
        frozen = stage_of("resnet18", names) < 2
        assert np.array_equal(leaf, flat_b[path]) == frozen, names


def test_segmentation_run_end_to_end(tmp_path):
    write_seg_folder(tmp_path / "seg")
    c = tiny_config(str(tmp_path / "tfds"), **{"data.name": "seg_folders", "data.manual_dir": str(tmp_path / "seg"),
                                               "model.stem": "imagenet", "model.name": "resnet18",
                                               "optimizer.name": "adam", "optimizer.lr": 3e-3,
                                               "train.epochs": 4, "train.batch_size": 8, "train.eval_batch_size": 8})
    c.segmentation.patch_size, c.segmentation.patches_per_image = 32, 8
    c.segmentation.intensity = "standardize"  # the run's preprocessing travels with it to other sites
    results = train.train_and_evaluate(c, tmp_path / "run")
    assert results["selection"]["metric"] == "dice"
    test = results["test"]
    assert test["num_images"] == 2 and len(test["per_image"]) == 2
    assert test["dice"] > 0.5, test  # bright squares on a dark background are learnt in a few steps
    assert (tmp_path / "run" / "predictions_test.npz").exists()
    # The same checkpoint scored through cross_evaluate on the same folder gives the same test Dice.
    again = evaluate_on(tmp_path / "run", {"manual_dir": str(tmp_path / "seg")}, tmp_path / "again")
    assert again["test"]["dice"] == pytest.approx(test["dice"], abs=1e-9)
    assert json.loads((tmp_path / "again" / "results.json").read_text())["test"]["dice"] == again["test"]["dice"]
    # The command on another "site": same squares, 56-px images instead of 40 (whole images, sliding windows).
    write_seg_folder(tmp_path / "site_b", counts=(4, 2, 3), size=56)
    done = subprocess.run([sys.executable, "-m", "launch.evaluate", "--workdir", str(tmp_path / "run"),
                           "--out", str(tmp_path / "on_b"), f"--config.data.manual_dir={tmp_path / 'site_b'}"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert done.returncode == 0, done.stderr[-3000:]
    on_b = json.loads((tmp_path / "on_b" / "results.json").read_text())
    assert on_b["test"]["num_images"] == 3 and on_b["test"]["dice"] > 0.5, on_b["test"]
    assert on_b["source"]["data_overrides"] == {"manual_dir": str(tmp_path / "site_b")}
    assert f"test dice {on_b['test']['dice']:.4f} (3 scored)" in done.stdout
    with np.load(tmp_path / "on_b" / "predictions_test.npz") as maps:
        assert maps["probs_0"].shape == (56, 56, 1)
    assert "evaluated on 'seg_folders/site_b'" in (tmp_path / "on_b" / "report.md").read_text()
