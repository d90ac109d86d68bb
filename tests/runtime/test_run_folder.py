"""RunDir owns every file of a run folder: names, both predictions formats, and partial restores of a
checkpoint (params and BatchNorm statistics without the optimizer state)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medtl_jax.runtime import parallel
from medtl_jax.runtime.checkpoint import ModelVariables, RunCheckpoints
from medtl_jax.runtime.run_folder import RUN_MARKERS, ClassPredictions, RunDir


def test_class_predictions_round_trip_with_attributes(tmp_path):
    run_dir = RunDir(tmp_path)
    preds = ClassPredictions(index=np.array([3, 1, 2]), labels=np.array([1, 0, 1]),
                             scores=np.array([0.9, 0.2, 0.6], np.float32), attributes={"site": np.array([0, 1, 1])})
    run_dir.write_class_predictions("test", preds)
    back = run_dir.read_class_predictions("test")
    for key in ("index", "labels", "scores"):
        np.testing.assert_array_equal(getattr(back, key), getattr(preds, key))
    np.testing.assert_array_equal(back.site, [0, 1, 1])
    assert run_dir.read_class_predictions("val") is None  # absent
    assert not list(tmp_path.glob(".*.tmp"))  # atomic: no temp file left


def test_probability_maps_round_trip_and_are_not_class_predictions(tmp_path):
    run_dir = RunDir(tmp_path)
    probs = [np.full((4, 5, 1), 0.25, np.float32), np.linspace(0, 1, 2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)]
    run_dir.write_probability_maps("val", ["a", "b"], probs)
    ids, back = run_dir.read_probability_maps("val")
    assert ids == ["a", "b"] and [p.shape for p in back] == [(4, 5, 1), (2, 3, 2)]
    for p, q in zip(probs, back):
        np.testing.assert_allclose(q, p, atol=0.5 / 255 + 1e-7)  # stored as uint8
    assert run_dir.read_probability_maps("val", 1)[0] == ["a"]
    assert run_dir.read_class_predictions("val") is None  # another format: not per-example scores


def test_bad_names_and_clashing_attributes_are_refused(tmp_path):
    run_dir = RunDir(tmp_path)
    with pytest.raises(ValueError, match=r"checkpoint='middle' is not one of \('latest', 'best'\)"):
        run_dir.checkpoint_dir("middle")
    with pytest.raises(ValueError, match="predictions split 'train' is not one of"):
        run_dir.predictions_npz("train")
    clash = ClassPredictions(np.arange(2), np.arange(2), np.zeros(2), attributes={"labels": np.arange(2)})
    with pytest.raises(ValueError, match=r"\['labels'\] clash"):
        run_dir.write_class_predictions("val", clash)
    with pytest.raises(ValueError, match="holds no segmentation probability maps"):
        run_dir.write_class_predictions("val", ClassPredictions(np.arange(2), np.arange(2), np.zeros(2)))
        run_dir.read_probability_maps("val")


def test_a_folder_is_a_run_folder_by_its_marker_files(tmp_path):
    run_dir = RunDir(tmp_path / "run")
    assert not run_dir.is_run_folder()
    run_dir.path.mkdir()
    for name in RUN_MARKERS:
        (run_dir.path / name).write_text("{}")
        assert run_dir.is_run_folder()
        (run_dir.path / name).unlink()
    (run_dir.path / "results.json").write_text("[1]")
    with pytest.raises(ValueError, match="results.json holds list, not a JSON object"):
        run_dir.read_results()
    (run_dir.path / "results.json").write_text("{oops")
    with pytest.raises(ValueError, match="results.json is not valid JSON"):
        run_dir.read_results()


def _state(seed: int, opt_width: int):
    rng = np.random.default_rng(seed)
    return {"step": jnp.int32(7),
            "params": {"dense": {"kernel": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)}},
            "batch_stats": {"bn": {"mean": jnp.asarray(rng.normal(size=(2,)), jnp.float32)}},
            "opt_state": {"mu": jnp.asarray(rng.normal(size=(opt_width,)), jnp.float32)},
            "rng": jax.random.PRNGKey(seed)}


def test_restore_variables_reads_params_and_stats_without_the_optimizer_state(tmp_path):
    state = _state(0, opt_width=5)
    ckpts = RunCheckpoints(tmp_path)
    ckpts.save("best", 7, state, {"epoch": 1})
    ckpts.close()
    mesh = parallel.make_mesh(1)
    rep = parallel.replicated(mesh)
    like = ModelVariables(
        params=jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep), state["params"]),
        batch_stats=jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep),
                                           state["batch_stats"]))
    variables, step = RunCheckpoints(tmp_path).restore_variables("best", like)
    assert step == 7
    np.testing.assert_array_equal(variables.params["dense"]["kernel"], state["params"]["dense"]["kernel"])
    np.testing.assert_array_equal(variables.batch_stats["bn"]["mean"], state["batch_stats"]["bn"]["mean"])
    # The optimizer state's layout does not matter; a model of another shape is refused by name.
    wrong = ModelVariables(params={"dense": {"kernel": jax.ShapeDtypeStruct((4, 2), jnp.float32, sharding=rep)}},
                           batch_stats=like.batch_stats)
    with pytest.raises(ValueError, match=r"params.dense.kernel: checkpoint \(3, 2\) vs model \(4, 2\)"):
        RunCheckpoints(tmp_path).restore_variables("best", wrong)
    assert RunCheckpoints(tmp_path).restore_variables("latest", like) is None
