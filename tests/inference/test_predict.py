"""launch.predict / medtl_jax.inference.prediction: a trained run applied to image files, CSVs, folders and masks."""

import csv
import dataclasses
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image
import pytest

from medtl_jax.tasks.classification import evaluate

from medtl_jax.runtime import parallel

from medtl_jax.train import trainer as train
from medtl_jax.runtime.checkpoint import RunCheckpoints
from medtl_jax.data import load_data
from medtl_jax.data.registry import DataInfo
from medtl_jax.weights.model_input import input_normalization
from medtl_jax.models import get_spec
from medtl_jax.transfer.optimizer import make_optimizer
from medtl_jax.inference.prediction import predict_inputs, unreadable_path
from medtl_jax.inference.prediction_inputs import list_inputs
from medtl_jax.inference.prediction_model import load_run
from medtl_jax.train.segmentation_run import segmentation_model
from medtl_jax.transfer.modes import wrap_optimizer
from tests.helpers.paths import REPO_ROOT
from tests.helpers.tiny_recipe import tiny_config


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One epoch of cbr_tiny on the synthetic 'tiny' set (32 px gray): (workdir, config, test records)."""
    root = tmp_path_factory.mktemp("predict")
    c = tiny_config(str(root / "tfds"), **{"train.epochs": 1, "model.name": "cbr_tiny", "model.stem": "imagenet"})
    c.eval.bootstrap_samples = 0
    train.train_and_evaluate(c, root / "run")
    test = load_data(c.data).sources["test"]
    return root / "run", c, [test[i] for i in range(len(test))]


@pytest.fixture(scope="module")
def loaded(tiny_run):
    """The tiny run restored once for prediction (its compiled eval step is then shared)."""
    return load_run(tiny_run[0])


def _table(path) -> dict[str, list[str]]:
    """A CSV as {column: values}, in column order; every value a string."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = list(reader)
    return {name: [row[k] for row in rows] for k, name in enumerate(header)}


def _floats(values) -> np.ndarray:
    return np.asarray(values, np.float64)


def _write_csv(path, columns, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([columns, *rows])


def _run_scores(workdir):
    npz = np.load(workdir / "predictions_test.npz")
    return dict(zip(npz["index"].tolist(), npz["scores"]))


def test_folder_prediction_equals_the_runs_own_test_scores(tiny_run, loaded, tmp_path):
    workdir, _, records = tiny_run
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    for k, r in enumerate(records):
        gray = r["image"][..., 0]
        image = np.repeat(gray[..., None], 3, axis=-1) if k % 5 == 0 else gray  # some saved as RGB
        PIL.Image.fromarray(image).save(folder / ("sub" if k % 2 else ".") / f"img_{int(r['index']):03d}.png")
    (folder / "notes.txt").write_text("not an image")
    run = loaded
    assert run.step > 0 and run.info.label_names == ("normal", "lesion")
    summary = predict_inputs(run, list_inputs(folder), tmp_path / "preds.csv", batch_size=24)
    assert (summary.predicted, summary.unreadable, summary.skipped) == (len(records), 0, 1)
    assert not unreadable_path(tmp_path / "preds.csv").exists() and summary.unreadable_csv is None
    df = _table(tmp_path / "preds.csv")
    assert list(df) == ["path", "p_normal", "p_lesion", "predicted"]
    index = [int(re.search(r"img_(\d+)\.png$", p).group(1)) for p in df["path"]]
    expected = np.array([_run_scores(workdir)[i] for i in index])
    np.testing.assert_allclose(_floats(df["p_lesion"]), expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(_floats(df["p_normal"]), 1 - expected, atol=1e-6)
    assert (np.asarray(df["predicted"]) == np.where(expected >= 0.5, "lesion", "normal")).all()
    assert sum("/sub/" in p for p in df["path"]) == len(records) // 2


def test_csv_keeps_id_columns_and_lists_unreadable_files(tiny_run, loaded, tmp_path):
    workdir, _, records = tiny_run
    (tmp_path / "scans").mkdir()
    for r in records[:3]:
        PIL.Image.fromarray(r["image"][..., 0]).save(tmp_path / "scans" / f"{int(r['index'])}.png")
    (tmp_path / "scans" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    rows = [("scans/broken.png", "P9", "007")] + [(f"scans/{int(r['index'])}.png", f"P{k}", f"00{k}")
                                                   for k, r in enumerate(records[:3])] + [("scans/gone.png", "P8", "")]
    _write_csv(tmp_path / "cohort.csv", ["path", "patient_id", "accession"], rows)
    out = tmp_path / "out" / "preds.csv"
    summary = predict_inputs(loaded, list_inputs(tmp_path / "cohort.csv"), out)
    assert (summary.predicted, summary.unreadable) == (3, 2)
    df = _table(out)
    assert list(df) == ["path", "patient_id", "accession", "p_normal", "p_lesion", "predicted"]
    assert df["patient_id"] == ["P0", "P1", "P2"] and df["accession"] == ["000", "001", "002"]
    scores = _run_scores(workdir)
    np.testing.assert_allclose(_floats(df["p_lesion"]), [scores[int(r["index"])] for r in records[:3]], atol=1e-5)
    bad = _table(summary.unreadable_csv)
    assert summary.unreadable_csv == tmp_path / "out" / "preds.unreadable.csv"
    assert bad["path"] == ["scans/broken.png", "scans/gone.png"]
    assert re.search("corrupt|truncated|not a recognised", bad["reason"][0])
    assert bad["reason"][1] == "file not found"
    # A second call with every file readable removes the stale list.
    _write_csv(tmp_path / "ok.csv", ["path", "patient_id", "accession"], rows[1:2])
    predict_inputs(loaded, list_inputs(tmp_path / "ok.csv"), out)
    assert not summary.unreadable_csv.exists()


def test_unwritable_out_fails_before_any_inference(tiny_run, loaded, tmp_path, monkeypatch):
    PIL.Image.fromarray(tiny_run[2][0]["image"][..., 0]).save(tmp_path / "a.png")
    (tmp_path / "file.txt").write_text("x")
    monkeypatch.setattr(evaluate, "predict", lambda *a, **k: pytest.fail("inference ran"))
    with pytest.raises(NotADirectoryError, match=f"cannot write {tmp_path}/file.txt/p.csv: .*is a file"):
        predict_inputs(loaded, list_inputs(tmp_path / "a.png"), tmp_path / "file.txt" / "p.csv")
    with pytest.raises(IsADirectoryError, match=f"cannot write {tmp_path}: it is a folder"):
        predict_inputs(loaded, list_inputs(tmp_path / "a.png"), tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["a.png", "file.txt"]


def test_dicom_folder_with_suffixless_files(loaded, tmp_path):
    from pydicom.data import get_testdata_file
    from medtl_jax.data.ingest.image_files import read_image
    source = pathlib.Path(get_testdata_file("CT_small.dcm"))
    (tmp_path / "series" / "s1").mkdir(parents=True)
    (tmp_path / "series" / "s1" / "IM0001").write_bytes(source.read_bytes())  # DICOM without a suffix
    (tmp_path / "series" / "ct.dcm").write_bytes(source.read_bytes())
    (tmp_path / "png").mkdir()
    PIL.Image.fromarray(read_image(source)[..., 0]).save(tmp_path / "png" / "ct.png")
    run = loaded
    summary = predict_inputs(run, list_inputs(tmp_path / "series"), tmp_path / "d.csv")
    reference = _table(predict_inputs(run, list_inputs(tmp_path / "png" / "ct.png"), tmp_path / "r.csv").out)
    df = _table(tmp_path / "d.csv")
    assert summary.predicted == 2 and [pathlib.Path(p).name for p in df["path"]] == ["ct.dcm", "IM0001"]
    np.testing.assert_allclose(_floats(df["p_lesion"]), float(reference["p_lesion"][0]), atol=1e-6)


def _cli(*args):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    return subprocess.run([sys.executable, "-m", "launch.predict", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_gradcam_writes_one_overlay_per_image_at_its_size(tiny_run, tmp_path):
    workdir, _, records = tiny_run
    folder = tmp_path / "in"
    folder.mkdir()
    PIL.Image.fromarray(records[0]["image"][..., 0]).save(folder / "a.png")
    PIL.Image.fromarray(records[1]["image"][..., 0]).resize((48, 40)).save(folder / "b.png")
    done = _cli("--workdir", str(workdir), "--input", str(folder), "--out", str(tmp_path / "p.csv"), "--gradcam")
    assert done.returncode == 0, done.stderr
    assert "predicted 2 images" in done.stdout and "0 unreadable" in done.stdout
    df = _table(tmp_path / "p.csv")
    assert df["gradcam"] == [str(tmp_path / "p_gradcam" / "a_gradcam.png"),
                                      str(tmp_path / "p_gradcam" / "b_gradcam.png")]
    sizes = [PIL.Image.open(p).size for p in df["gradcam"]]
    assert sizes == [(32, 32), (48, 40)] and sorted(os.listdir(tmp_path / "p_gradcam")) == ["a_gradcam.png",
                                                                                           "b_gradcam.png"]
    assert PIL.Image.open(df["gradcam"][0]).mode == "RGB"


def test_missing_run_parts_are_named(tiny_run, tmp_path):
    with pytest.raises(FileNotFoundError, match=f"run folder {tmp_path / 'nope'} not found"):
        load_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "empty" / "config.json")):
        load_run(tmp_path / "empty")
    (tmp_path / "nockpt").mkdir()
    for name in ("config.json", "results.json"):
        (tmp_path / "nockpt" / name).write_text((tiny_run[0] / name).read_text())
    with pytest.raises(FileNotFoundError, match="no 'best' checkpoint in .*nockpt/checkpoints/best"):
        load_run(tmp_path / "nockpt")
    with pytest.raises(ValueError, match=f"{tmp_path / 'x.csv'} has no 'path' column \\(columns: file, id\\)"):
        (tmp_path / "x.csv").write_text("file,id\na.png,1\n")
        list_inputs(tmp_path / "x.csv")
    PIL.Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "one.png")  # inputs are listed first
    done = _cli("--workdir", str(tmp_path / "empty"), "--input", str(tmp_path / "one.png"), "--out",
                str(tmp_path / "o.csv"))
    assert done.returncode != 0 and f"error: {tmp_path / 'empty' / 'config.json'} not found" in done.stderr


def _saved_segmentation_run(workdir, tfds_dir, image):
    """A segmentation run folder holding a randomly initialised cbr_tiny FCN as its 'best' checkpoint, the
    head bias shifted so that half of `image`'s pixels are foreground (config.json, results.json too)."""
    c = tiny_config(str(tfds_dir), **{"data.name": "seg_folders", "model.name": "cbr_tiny", "model.stem": "imagenet",
                                      "train.batch_size": 8, "train.eval_batch_size": 8})
    c.segmentation.patch_size, c.segmentation.decoder = 32, "fcn"
    info = DataInfo(name="seg_folders", task="segmentation", num_classes=2, label_names=("background", "fg"),
                    channels=3, image_size=32, splits={"train": 6, "validation": 2, "test": 2})
    model = segmentation_model(c, info).model
    mesh = parallel.make_mesh()
    shapes = jax.eval_shape(lambda: model.init({"params": jax.random.PRNGKey(0)}, jnp.zeros((1, 32, 32, 3)),
                                               train=False))
    tx = wrap_optimizer(make_optimizer(c, 6, 6)[0], shapes["params"], c.model.name, c.transfer)
    setup = types.SimpleNamespace(parts=types.SimpleNamespace(input_shape=(32, 32, 3)), model=model, tx=tx,
                                  mesh=mesh, ema_decay=0.0)
    state = jax.device_get(train.create_state(c, setup))
    mean, std = input_normalization(get_spec("cbr_tiny"), "cbr_tiny", 3)
    x = ((image / 255.0 - np.asarray(mean)) / np.asarray(std)).astype(np.float32)[None]
    forward = jax.jit(lambda v, im: model.apply(v, im, train=False))
    logits = forward({"params": state.params, "batch_stats": state.batch_stats}, x)
    params = jax.tree_util.tree_map(np.asarray, state.params)
    params["head"]["bias"] = params["head"]["bias"] - np.median(np.asarray(logits))
    state = state.replace(params=params)
    ckpts = RunCheckpoints(workdir)
    ckpts.save("best", 6, state, {"epoch": 1})  # host arrays: the restore places them
    ckpts.close()
    (workdir / "config.json").write_text(c.to_json_best_effort())
    (workdir / "results.json").write_text(json.dumps({"data": dataclasses.asdict(info),
                                                      "timing": {"steps_per_epoch": 6, "steps": 6}}))
    probs = jax.nn.sigmoid(forward({"params": params, "batch_stats": jax.device_get(state.batch_stats)}, x))
    return np.asarray(probs)[0, ..., 0]


def test_segmentation_run_writes_one_mask_per_image(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    (tmp_path / "run").mkdir()
    probs = _saved_segmentation_run(tmp_path / "run", tmp_path / "tfds", image)
    (tmp_path / "in").mkdir()
    PIL.Image.fromarray(image).save(tmp_path / "in" / "eye.png")
    PIL.Image.fromarray(image[..., 0]).resize((40, 36)).save(tmp_path / "in" / "gray.png")  # gray, other size
    run = load_run(tmp_path / "run")
    assert run.segmentation
    summary = predict_inputs(run, list_inputs(tmp_path / "in"), tmp_path / "seg.csv", batch_size=8)
    df = _table(tmp_path / "seg.csv")
    assert list(df) == ["path", "mask", "foreground_fraction"] and summary.predicted == 2
    assert df["mask"] == [str(tmp_path / "seg_masks" / "eye_mask.png"),
                                   str(tmp_path / "seg_masks" / "gray_mask.png")]
    # One 32-px window covers the 32-px image: the mask is the single forward pass thresholded at 0.5.
    mask = np.asarray(PIL.Image.open(df["mask"][0]))
    sure = np.abs(probs - 0.5) > 1e-5
    np.testing.assert_array_equal(mask[sure], np.where(probs >= 0.5, 255, 0)[sure])
    fraction = float(df["foreground_fraction"][0])
    assert 0.3 < fraction < 0.7
    assert fraction == pytest.approx((mask > 0).mean())
    assert np.asarray(PIL.Image.open(df["mask"][1])).shape == (36, 40)
    with pytest.raises(ValueError, match="Grad-CAM explains classifiers"):
        predict_inputs(run, list_inputs(tmp_path / "in"), tmp_path / "x.csv", gradcam_dir=tmp_path / "g")


def test_restoring_a_run_reads_only_its_weights_not_its_optimizer(tiny_run, loaded, tmp_path):
    """A run whose recorded optimizer no longer matches its checkpoint's optimizer state (another
    optimizer, no timing in results.json) restores the same weights: only params and batch_stats are read."""
    copy = tmp_path / "run"
    shutil.copytree(tiny_run[0], copy)
    config = json.loads((copy / "config.json").read_text())
    assert config["optimizer"]["name"] == "sgd"
    config["optimizer"].update(name="adamw", weight_decay=0.01)  # other optimizer state: mu, nu, count
    (copy / "config.json").write_text(json.dumps(config))
    results = json.loads((copy / "results.json").read_text())
    results.pop("timing")
    (copy / "results.json").write_text(json.dumps(results))
    again = load_run(copy)
    assert again.step == loaded.step
    for a, b in zip(jax.tree_util.tree_leaves(jax.device_get(again.state)), jax.tree_util.tree_leaves(
            jax.device_get(loaded.state))):
        np.testing.assert_array_equal(a, b)
