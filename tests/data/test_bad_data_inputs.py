"""Bad input never leaves a dataset folder wrong: leakage/label errors in prepare_data are refused in
one readable line (or warned and listed with --on-conflict=warn); MedMNIST names every folder it
looked in and refuses a built copy that came from another manual_dir."""

import csv
import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest

from medtl_jax.data.sources import builder_base, medmnist, npz_files

from medtl_jax.data.ingest import input_conflicts, manifest
from medtl_jax.data.sources.custom_dataset import dataset_dir
from medtl_jax.data.sources.medmnist_info import MEDMNIST_2D
from medtl_jax.data.ingest.prepare_custom import PrepareOptions, prepare_custom
from tests.helpers.paths import REPO_ROOT


def _png(path: pathlib.Path, value: int) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(np.full((8, 8), value, np.uint8)).save(path)
    return path


def _csv(path: pathlib.Path, header, rows) -> pathlib.Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _images(root: pathlib.Path, n=6) -> pathlib.Path:
    for i in range(n):
        _png(root / "img" / f"{i}.png", 20 * i)
    return root


def _cli(tmp_path, *args) -> tuple[int, str]:
    """Runs `python -m launch.prepare_data` as a user would; (exit code, stdout + stderr)."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-m", "launch.prepare_data", "--name", "ds",
                           "--data_dir", str(tmp_path / "tfds"), *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout + done.stderr


def _assert_refused(tmp_path, code: int, out: str, *names: str) -> str:
    """Non-zero exit, one 'error:' line naming `names` and the flag, no traceback, no files."""
    assert code != 0, out
    assert "Traceback" not in out
    errors = [line for line in out.splitlines() if "error:" in line]
    assert len(errors) == 1, out
    for name in (*names, "--on-conflict=warn"):
        assert name in errors[0], errors[0]
    assert not (tmp_path / "tfds").exists()  # refused before any folder was created
    return errors[0]


# --- prepare_data: refused by default -----------------------------------------------------------

def test_cli_refuses_file_listed_twice(tmp_path):
    root = _images(tmp_path / "src")
    source = _csv(root / "m.csv", ["path", "label"],
                  [["img/0.png", "a"], ["img/1.png", "b"], ["img/2.png", "a"], ["img/3.png", "b"],
                   ["img/0.png", "a"]])
    line = _assert_refused(tmp_path, *_cli(tmp_path, "--source", str(source)),
                           str(root / "img" / "0.png"), "listed twice", "m.csv row 1", "m.csv row 5")
    assert "remove the repeated rows" in line


def test_cli_refuses_file_with_two_labels(tmp_path):
    root = _images(tmp_path / "src")
    source = _csv(root / "m.csv", ["path", "label"],
                  [["img/0.png", "a"], ["img/1.png", "b"], ["img/2.png", "a"], ["img/3.png", "b"],
                   ["img/0.png", "b"]])
    _assert_refused(tmp_path, *_cli(tmp_path, "--source", str(source)),
                    str(root / "img" / "0.png"), "two labels", "'a' (m.csv row 1", "'b' (m.csv row 5")


def test_cli_refuses_patient_in_two_given_splits(tmp_path):
    root = _images(tmp_path / "src")
    source = _csv(root / "m.csv", ["path", "label", "patient_id", "split"],
                  [["img/0.png", "a", "P1", "train"], ["img/1.png", "b", "P2", "train"],
                   ["img/2.png", "a", "P3", "val"], ["img/3.png", "b", "P1", "test"]])
    _assert_refused(tmp_path, *_cli(tmp_path, "--source", str(source)),
                    "patient 'P1'", "train (m.csv row 1", "test (m.csv row 4")


def test_cli_refuses_empty_class_folder(tmp_path):
    root = tmp_path / "folder"
    for i in range(3):
        _png(root / "benign" / f"{i}.png", 10 * i)
        _png(root / "malignant" / f"{i}.png", 100 + 10 * i)
    (root / "normal").mkdir()
    (root / "normal" / "notes.txt").write_text("no images here")
    _assert_refused(tmp_path, *_cli(tmp_path, "--source", str(root)),
                    str(root / "normal"), "2 classes instead of 3")


# --- prepare_data: --on-conflict=warn -----------------------------------------------------------

def test_cli_warn_keeps_first_drops_two_labels_lists_all(tmp_path):
    root = _images(tmp_path / "src")
    os.symlink(root / "img" / "1.png", root / "link1.png")  # the same file under a second name
    source = _csv(root / "m.csv", ["path", "label", "patient_id", "split"],
                  [["img/0.png", "a", "P1", "train"], ["img/1.png", "b", "P2", "train"],
                   ["img/2.png", "a", "P3", "validation"], ["img/3.png", "b", "P1", "test"],
                   ["img/0.png", "a", "P1", "train"], ["img/4.png", "a", "P4", "train"],
                   ["img/5.png", "b", "P5", "test"], ["link1.png", "a", "P2", "train"]])
    code, out = _cli(tmp_path, "--source", str(source), "--on_conflict", "warn")
    assert code == 0, out
    warnings = [line for line in out.splitlines() if line.startswith("prepare_data: warning:")]
    assert len(warnings) == 3, out
    summary = json.loads((dataset_dir(tmp_path / "tfds", "ds") / "summary.json").read_text())
    kinds = [p["kind"] for p in summary["input_problems"]]
    assert kinds == ["duplicate_file", "conflicting_labels", "patient_in_several_splits"]
    assert "P1" not in json.dumps(summary)  # patient ids stay out of the summary
    assert "link1.png" in summary["input_problems"][1]["problem"]
    with open(dataset_dir(tmp_path / "tfds", "ds") / "splits.csv", newline="") as f:
        paths = [r["path"] for r in csv.DictReader(f)]
    assert paths == ["img/0.png", "img/2.png", "img/3.png", "img/4.png", "img/5.png"]
    assert "input problems kept with --on-conflict=warn: 3" in \
        (dataset_dir(tmp_path / "tfds", "ds") / "summary.md").read_text()


def test_warn_leaves_empty_folder_out_and_refusal_keeps_old_dataset(tmp_path, capsys):
    root = tmp_path / "folder"
    for i in range(3):
        _png(root / "a" / f"{i}.png", 10 * i)
        _png(root / "b" / f"{i}.png", 100 + 10 * i)
    (root / "c").mkdir()
    data_dir = tmp_path / "tfds"
    summary = prepare_custom(PrepareOptions(source=str(root), name="f", data_dir=str(data_dir),
                                            on_conflict="warn"))
    assert summary["label_names"] == ["a", "b"]
    assert summary["input_problems"][0]["kind"] == "empty_class_folder"
    assert f"class folder {root / 'c'} holds no images" in capsys.readouterr().err
    built = sorted(p.name for p in dataset_dir(data_dir, "f").iterdir())
    with pytest.raises(ValueError, match=r"holds no images.*--on-conflict=warn"):
        prepare_custom(PrepareOptions(source=str(root), name="f", data_dir=str(data_dir),
                                      overwrite=True))
    assert sorted(p.name for p in dataset_dir(data_dir, "f").iterdir()) == built  # not deleted


def test_frames_of_one_file_are_not_duplicates():
    m = manifest.Manifest(rows=[], label_names=("a", "b"), multilabel=False, root="/", source="csv")
    rows = [manifest.Row(path="/x/a.dcm", label=(0,), frame=0, origin="row 1"),
            manifest.Row(path="/x/a.dcm", label=(1,), frame=1, origin="row 2"),
            manifest.Row(path="/x/../x/a.dcm", label=(0,), frame=1, origin="row 3")]
    problems, drop = input_conflicts.file_problems(rows[:2], m)
    assert problems == [] and drop == set()
    problems, drop = input_conflicts.file_problems(rows, m)  # row 3 is frame 1 of the same file
    assert [p.kind for p in problems] == ["conflicting_labels"] and drop == {0, 1, 2}


# --- MedMNIST -----------------------------------------------------------------------------------

SMALL = {"train": 12, "val": 4, "test": 5}


@pytest.fixture
def small_breast(tmp_path, monkeypatch):
    """Offline (no cache, no network) and a shrunken breastmnist, so a build takes a moment."""
    monkeypatch.setenv("MEDTL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MEDTL_MEDMNIST_DIR", raising=False)
    monkeypatch.setattr(npz_files, "source_url", lambda subset, size: "http://127.0.0.1:9/x.npz")
    monkeypatch.setitem(MEDMNIST_2D, "breastmnist",
                        dataclasses.replace(MEDMNIST_2D["breastmnist"], splits=SMALL))


def _npz(folder: pathlib.Path, seed: int) -> pathlib.Path:
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in SMALL.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 2, (n, 1), dtype=np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / "breastmnist.npz", **arrays)
    return folder / "breastmnist.npz"


def _build(tmp_path, manual_dir, data_dir="tfds"):
    return medmnist.build_medmnist("breastmnist", 28, data_dir=str(tmp_path / data_dir),
                                   manual_dir=None if manual_dir is None else str(manual_dir))


def test_offline_error_lists_empty_and_other_manual_dir(tmp_path, small_breast):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RuntimeError) as err:
        _build(tmp_path, tmp_path / "empty")
    assert f"looked in: config.data.manual_dir {tmp_path / 'empty'} (empty)" in str(err.value)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "pathmnist.npz").write_bytes(b"")
    with pytest.raises(RuntimeError, match=r"other \(no breastmnist\.npz in it\)"):
        _build(tmp_path, tmp_path / "other")
    with pytest.raises(ValueError, match=r"manual_dir '.*missing' does not exist"):
        _build(tmp_path, tmp_path / "missing")
    with pytest.raises(RuntimeError, match=r"manual_dir \S*missing \(does not exist\)"):
        npz_files.locate("breastmnist", 28, manual_dir=tmp_path / "missing")


def test_built_dataset_refuses_another_manual_dir(tmp_path, small_breast):
    _npz(tmp_path / "A", seed=0)
    built = pathlib.Path(_build(tmp_path, tmp_path / "A").data_dir)
    record = json.loads((built / builder_base.SOURCE_FILE).read_text())
    assert record["file"] == str((tmp_path / "A" / "breastmnist.npz").resolve())
    _npz(tmp_path / "B", seed=1)
    with pytest.raises(ValueError) as err:
        _build(tmp_path, tmp_path / "B")
    msg = str(err.value)
    assert str(tmp_path / "A") in msg and str(tmp_path / "B") in msg and f"delete {built}" in msg
    assert "config.data.data_dir" in msg
    (tmp_path / "C").mkdir()
    with pytest.raises(ValueError, match=r"holds no breastmnist\.npz"):
        _build(tmp_path, tmp_path / "C")
    _build(tmp_path, tmp_path / "A")  # same folder, same file
    _build(tmp_path, None)  # no manual_dir: the built copy is what is wanted
    shutil.copy(tmp_path / "A" / "breastmnist.npz", tmp_path / "C" / "breastmnist.npz")
    _build(tmp_path, tmp_path / "C")  # byte-identical copy: fine, and remembered
    record = json.loads((built / builder_base.SOURCE_FILE).read_text())
    assert [c["file"] for c in record["identical_copies"]] == \
        [str((tmp_path / "C" / "breastmnist.npz").resolve())]
    _npz(tmp_path / "A", seed=2)  # the source itself replaced
    with pytest.raises(ValueError, match="has changed since the build"):
        _build(tmp_path, tmp_path / "A")
