"""Bring your own data: folders, CSV manifests, grouped splits, unreadable files, the prepare_data CLI."""

import csv
import json
import pathlib
import shutil

import numpy as np
import PIL.Image
import pytest

from launch import prepare_data
from medtl_jax.data import registry
from medtl_jax.data.ingest import image_files, manifest, splits
from medtl_jax.data.sources.custom_dataset import dataset_dir
from medtl_jax.data.ingest.image_files import UnreadableImageError
from medtl_jax.data.ingest.prepare_custom import PrepareOptions, prepare_custom


def _png(path: pathlib.Path, value: int, size=(16, 16), mode="L", seed=0) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = size + ((3,) if mode == "RGB" else ())
    array = np.clip(rng.integers(-20, 20, shape) + value, 0, 255).astype(np.uint8)
    PIL.Image.fromarray(array).save(path)
    return array


def _folder(root: pathlib.Path, per_class=4, classes=("benign", "malignant", "normal")):
    for k, name in enumerate(classes):
        for i in range(per_class):
            _png(root / name / f"img{i}.png", 40 + 80 * k, seed=10 * k + i)
    return root


def _read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# --- reading single files ---------------------------------------------------------------------

def test_read_image_modes_and_truncated_png(tmp_path):
    grey = _png(tmp_path / "g.png", 100)
    got = image_files.read_image(tmp_path / "g.png")
    assert got.shape == (16, 16, 1) and got.dtype == np.uint8
    np.testing.assert_array_equal(got[..., 0], grey)
    _png(tmp_path / "c.jpg", 100, mode="RGB")
    assert image_files.read_image(tmp_path / "c.jpg").shape == (16, 16, 3)
    deep = (np.arange(256, dtype=np.uint16).reshape(16, 16) * 257)
    PIL.Image.fromarray(deep).save(tmp_path / "d.png")
    np.testing.assert_array_equal(image_files.read_image(tmp_path / "d.png")[..., 0],
                                  np.arange(256).reshape(16, 16))
    np.testing.assert_array_equal(image_files.read_image(tmp_path / "d.png", bits=16)[..., 0], deep)
    data = (tmp_path / "g.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(UnreadableImageError, match=r"cannot read image .*t\.png: corrupt or truncated"):
        image_files.read_image(tmp_path / "t.png")
    (tmp_path / "x.bmp").write_text("hello")
    with pytest.raises(UnreadableImageError, match=r"x\.bmp: not a recognised image format"):
        image_files.read_image(tmp_path / "x.bmp")
    assert issubclass(UnreadableImageError, ValueError)


# --- manifests --------------------------------------------------------------------------------

def test_folder_manifest_classes_and_ignored_files(tmp_path):
    root = _folder(tmp_path / "f", per_class=2, classes=("b", "a"))
    (root / "a" / "notes.txt").write_text("x")
    (root / "a" / ".hidden.png").write_bytes(b"")
    _png(root / "a" / "sub" / "deep.png", 9)
    m = manifest.folder_manifest(root)
    assert m.label_names == ("a", "b") and not m.multilabel
    names = [(pathlib.Path(r.path).relative_to(root).as_posix(), r.label) for r in m.rows]
    assert names == [("a/img0.png", (0,)), ("a/img1.png", (0,)), ("a/sub/deep.png", (0,)),
                     ("b/img0.png", (1,)), ("b/img1.png", (1,))]
    with pytest.raises(ValueError, match="needs at least two class sub-folders"):
        manifest.folder_manifest(root / "a")


def test_csv_manifest_columns_labels_and_errors(tmp_path):
    csv_path = _write_csv(tmp_path / "m.csv", ["image", "label", "patient_id", "site", "age"],
                          [["a.png", "10", "p1", "X", "50"], ["b.png", "2", "p2", "", "61"]])
    m = manifest.csv_manifest(csv_path)
    assert m.label_names == ("2", "10")  # integers sort numerically
    assert [r.label for r in m.rows] == [(1,), (0,)]
    assert m.rows[0].path == str(tmp_path / "a.png") and m.rows[0].patient == "p1"
    assert [r.site for r in m.rows] == ["X", None] and m.extra_columns == ("age",)
    assert m.rows[1].origin == "m.csv row 2 (line 3)"

    multi = _write_csv(tmp_path / "ml.csv", ["path", "effusion", "nodule"],
                       [["a.png", "1", "0"], ["b.png", "1.0", "1"], ["c.png", "0", "yes"]])
    with pytest.raises(ValueError, match=r"ml\.csv row 3 \(line 4\): multi-label column 'nodule' "
                                         r"must hold 0 or 1, got 'yes'"):
        manifest.csv_manifest(multi, label_columns=["effusion", "nodule"])
    bad_split = _write_csv(tmp_path / "s.csv", ["path", "label", "split"],
                           [["a.png", "x", "train"], ["b.png", "y", "holdout"]])
    with pytest.raises(ValueError, match=r"s\.csv row 2 \(line 3\): split 'holdout' is not one of"):
        manifest.csv_manifest(bad_split)
    no_path = _write_csv(tmp_path / "n.csv", ["file_name", "label"], [["a.png", "x"]])
    with pytest.raises(ValueError, match=r"needs a path column .*columns: \['file_name', 'label'\]"):
        manifest.csv_manifest(no_path)


# --- splits -----------------------------------------------------------------------------------

def _patients(n_rows=600, n_patients=150, seed=1):
    rng = np.random.default_rng(seed)
    patient = rng.integers(0, n_patients, n_rows)
    cls_of_patient = rng.choice(4, n_patients, p=[0.5, 0.3, 0.15, 0.05])
    return [f"p{p}" for p in patient], np.eye(4, dtype=int)[cls_of_patient[patient]]


def test_grouped_split_no_leakage_and_stratified():
    groups, labels = _patients()
    fractions = (0.7, 0.1, 0.2)
    split = splits.grouped_split(groups, labels, fractions, seed=3)
    by_group = {}
    for g, s in zip(groups, split):
        by_group.setdefault(g, set()).add(int(s))
    assert all(len(s) == 1 for s in by_group.values())  # no patient in two splits
    overall = labels.mean(axis=0)
    for k, frac in enumerate(fractions):
        assert abs((split == k).mean() - frac) < 0.03
        assert np.abs(labels[split == k].mean(axis=0) - overall).max() < 0.04
    np.testing.assert_array_equal(split, splits.grouped_split(groups, labels, fractions, seed=3))
    assert not np.array_equal(split, splits.grouped_split(groups, labels, fractions, seed=4))
    tiny = splits.grouped_split([str(i) for i in range(12)], np.eye(3, dtype=int).repeat(4, 0),
                                fractions, seed=0)
    assert sorted(np.bincount(tiny, minlength=3)) == [1, 3, 8]  # small sets still fill validation


def test_assign_splits_uses_manifest_column_or_fails_when_partial():
    rows = [manifest.Row(path=f"{i}.png", label=(i % 2,), split="train" if i else "test",
                         origin=f"m.csv row {i + 1} (line {i + 2})") for i in range(4)]
    assert splits.assign_splits(rows, num_labels=2, multilabel=False, val_fraction=0.1,
                                test_fraction=0.2, seed=0) == ["test", "train", "train", "train"]
    rows[2] = manifest.Row(path="2.png", label=(0,), origin="m.csv row 3 (line 4)")
    with pytest.raises(ValueError, match=r"m\.csv row 3 \(line 4\): empty split"):
        splits.assign_splits(rows, num_labels=2, multilabel=False, val_fraction=0.1,
                             test_fraction=0.2, seed=0)


# --- end to end -------------------------------------------------------------------------------

def test_cli_on_folder_summary_thumbnails_registry(tmp_path, capsys):
    root = _folder(tmp_path / "imgs")
    data_dir = tmp_path / "tfds"
    code = prepare_data.main(["--source", str(root), "--name", "toy", "--data_dir", str(data_dir),
                              "--seed", "1"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "# Dataset `toy`" in printed and "| benign |" in printed
    out = dataset_dir(data_dir, "toy")
    summary = json.loads((out / "summary.json").read_text())
    counts = summary["counts"]
    assert counts["total"] == 12 and sum(counts["per_split"].values()) == 12
    assert {k: v["total"] for k, v in counts["per_class"].items()} == \
        {"benign": 4, "malignant": 4, "normal": 4}
    assert summary["source_image_size"]["height"] == {"min": 16, "median": 16.0, "max": 16}
    assert summary["skipped_files"] == [] and summary["groups"]["in_several_splits"] == 0
    assert 0 <= summary["intensity"]["min"] <= summary["intensity"]["mean"] <= 255
    thumbs = PIL.Image.open(out / "thumbnails.png")
    assert thumbs.height == 3 * (64 + 4) + 4  # one labelled row per class
    assert (out / "summary.md").read_text().startswith("# Dataset `toy`")

    bundle = registry.load_data({"name": "custom", "subset": "toy", "data_dir": str(data_dir)})
    info = bundle.info
    assert (info.task, info.num_classes, info.channels, info.image_size, info.attributes) == \
        ("multiclass", 3, 1, 16, ())
    assert info.label_names == ("benign", "malignant", "normal")
    assert info.splits == counts["per_split"]
    table = {int(r["index"]): r for r in _read_csv(out / "splits.csv")}
    for split, source in bundle.sources.items():
        for i in range(len(source)):
            record = source[i]
            row = table[int(record["index"])]
            assert row["split"] == split and info.label_names[record["label"]] == row["label"]
            np.testing.assert_array_equal(record["image"][..., 0],
                                          np.asarray(PIL.Image.open(root / row["path"])))


def test_split_csv_reused_gives_identical_splits_and_hashes_ids(tmp_path):
    root = tmp_path / "src"
    rows = []
    for i in range(24):
        patient = f"PAT-{i // 3:03d}"  # 3 images per patient
        _png(root / f"{i}.png", 30 * (i % 4), seed=i)
        rows.append([f"{i}.png", "pos" if (i // 3) % 2 else "neg", patient, "A" if i < 12 else "B"])
    source = _write_csv(root / "manifest.csv", ["path", "label", "patient_id", "site"], rows)
    data_dir = tmp_path / "tfds"
    first = prepare_custom(PrepareOptions(source=str(source), name="one", data_dir=str(data_dir),
                                          val_fraction=0.25, test_fraction=0.25, seed=5))
    assert first["groups"] == {"count": 8, "rows_without_patient_id": 0, "in_several_splits": 0}
    written = dataset_dir(data_dir, "one") / "splits.csv"
    table = _read_csv(written)
    text = written.read_text() + (dataset_dir(data_dir, "one") / "summary.json").read_text()
    assert "PAT-" not in text  # ids hashed by default
    by_patient = {}
    for r in table:
        by_patient.setdefault(r["patient_id"], set()).add(r["split"])
    assert len(by_patient) == 8 and all(len(s) == 1 for s in by_patient.values())

    again = prepare_custom(PrepareOptions(source=str(written), name="two", data_dir=str(data_dir),
                                          path_root=str(root), seed=99))
    assert again["splits_from"] == "manifest split column"
    second = _read_csv(dataset_dir(data_dir, "two") / "splits.csv")
    assert [(r["path"], r["split"], r["label"]) for r in second] == \
        [(r["path"], r["split"], r["label"]) for r in table]
    bundle = registry.load_data({"name": "custom", "subset": "two", "data_dir": str(data_dir)})
    assert bundle.info.attributes == ("site",) and bundle.info.task == "binary"
    assert bundle.info.splits == again["counts"]["per_split"]
    assert {bundle.sources["train"][0]["site"]} <= {0, 1}
    assert tuple(bundle.sources["train"].dataset_info.features["site"].names) == ("A", "B")

    kept = prepare_custom(PrepareOptions(source=str(source), name="ids", data_dir=str(data_dir),
                                         keep_ids=True, seed=5))
    assert "PAT-000" in (dataset_dir(data_dir, "ids") / "splits.csv").read_text()
    assert kept["counts"]["per_site"]["A"]["total"] == 12
    with pytest.raises(ValueError, match="already exists .* --overwrite"):
        prepare_custom(PrepareOptions(source=str(source), name="ids", data_dir=str(data_dir)))


def test_multilabel_csv_and_16_bit(tmp_path):
    root = tmp_path / "src"
    root.mkdir()
    rows = []
    for i in range(10):
        PIL.Image.fromarray(np.full((8, 8), 1000 * i + 7, np.uint16)).save(root / f"{i}.png")
        rows.append([f"{i}.png", i % 2, int(i % 3 == 0), ["train", "val", "test", "train"][i % 4]])
    source = _write_csv(root / "m.csv", ["path", "effusion", "nodule", "split"], rows)
    data_dir = tmp_path / "tfds"
    summary = prepare_custom(PrepareOptions(source=str(source), name="ml", data_dir=str(data_dir),
                                            label_columns=("effusion", "nodule"), bits=16))
    assert summary["counts"]["per_class"]["nodule"]["total"] == 4
    bundle = registry.load_data({"name": "custom", "subset": "ml", "data_dir": str(data_dir)})
    assert (bundle.info.task, bundle.info.num_classes) == ("multilabel", 2)
    assert bundle.info.splits == {"train": 5, "validation": 3, "test": 2}
    for split, source_ in bundle.sources.items():
        for j in range(len(source_)):
            record = source_[j]
            i = int(record["index"])
            np.testing.assert_array_equal(record["label"], [i % 2, int(i % 3 == 0)])
            assert record["image"].dtype == np.uint8  # served as 8-bit to the trainer
            assert int(record["image"][0, 0, 0]) == round((1000 * i + 7) / 257)
    import tensorflow_datasets as tfds
    raw = tfds.builder_from_directory(str(dataset_dir(data_dir, "ml"))).as_data_source("train")[0]
    assert raw["image"].dtype == np.uint16 and int(raw["image"][0, 0, 0]) % 1000 == 7


def test_unreadable_files_fail_or_skip(tmp_path, capsys):
    root = _folder(tmp_path / "f", per_class=3, classes=("a", "b"))
    good = (root / "a" / "img0.png").read_bytes()
    (root / "a" / "broken.png").write_bytes(good[: len(good) // 2])
    (root / "b" / "fake.dcm").write_text("not dicom")
    data_dir = tmp_path / "tfds"
    code = prepare_data.main(["--source", str(root), "--name", "bad", "--data_dir", str(data_dir)])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("prepare_data: error: cannot read image ")
    assert "fake.dcm: not a DICOM file" in err and "--on-error=skip" in err  # found by the header scan
    (root / "b" / "fake.dcm").rename(tmp_path / "fake.dcm")
    with pytest.raises(UnreadableImageError, match=r"broken\.png: corrupt or truncated image"):
        prepare_custom(PrepareOptions(source=str(root), name="bad", data_dir=str(data_dir)))
    assert not dataset_dir(data_dir, "bad").exists()  # found while writing: nothing left behind
    (tmp_path / "fake.dcm").rename(root / "b" / "fake.dcm")
    summary = prepare_custom(PrepareOptions(source=str(root), name="bad", data_dir=str(data_dir),
                                            on_error="skip"))
    skipped = _read_csv(dataset_dir(data_dir, "bad") / "skipped_files.csv")
    assert sorted(pathlib.Path(r["path"]).name for r in skipped) == ["broken.png", "fake.dcm"]
    reasons = {pathlib.Path(r["path"]).name: r["reason"] for r in skipped}
    assert reasons["fake.dcm"].startswith("not a DICOM file")
    assert "truncated" in reasons["broken.png"]
    assert summary["counts"]["total"] == 6 and len(summary["skipped_files"]) == 2

    csv_path = _write_csv(tmp_path / "m.csv", ["path", "label"],
                          [[str(root / "a" / "img0.png"), "a"], ["missing/x.png", "b"],
                           [str(root / "b" / "img0.png"), "b"], [str(root / "b" / "img1.png"), "a"]])
    with pytest.raises(UnreadableImageError, match=r"missing/x\.png: file not found \(m\.csv row 2 "
                                                   r"\(line 3\)\)"):
        prepare_custom(PrepareOptions(source=str(csv_path), name="csv", data_dir=str(data_dir)))
    prepare_custom(PrepareOptions(source=str(csv_path), name="csv", data_dir=str(data_dir),
                                  on_error="skip", overwrite=True))
    skipped = _read_csv(dataset_dir(data_dir, "csv") / "skipped_files.csv")
    assert [(pathlib.Path(r["path"]).name, r["reason"]) for r in skipped] == \
        [("x.png", "file not found (m.csv row 2 (line 3))")]


def test_sizes_must_match_unless_resized(tmp_path):
    root = _folder(tmp_path / "f", per_class=3, classes=("a", "b"))
    shutil.rmtree(root / "b")
    for i in range(3):
        _png(root / "b" / f"w{i}.png", 200, size=(24, 20), mode="RGB", seed=i)
    data_dir = tmp_path / "tfds"
    with pytest.raises(ValueError, match=r"2 different sizes .*--image_size N"):
        prepare_custom(PrepareOptions(source=str(root), name="mix", data_dir=str(data_dir)))
    summary = prepare_custom(PrepareOptions(source=str(root), name="mix", data_dir=str(data_dir),
                                            image_size=12, overwrite=True))
    assert summary["image_size"] == [12, 12] and summary["resized"] and summary["channels"] == 3
    assert summary["source_image_size"]["width"] == {"min": 16, "median": 18.0, "max": 20}
    bundle = registry.load_data({"name": "custom", "subset": "mix", "data_dir": str(data_dir)})
    record = bundle.sources["train"][0]
    assert record["image"].shape == (12, 12, 3)
    with pytest.raises(ValueError, match=r"custom dataset config.data.subset='nope' not found"):
        registry.load_data({"name": "custom", "subset": "nope", "data_dir": str(data_dir)})


def test_dicom_folder_groups_by_patient_and_expands_frames(tmp_path):
    pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file
    root = tmp_path / "dcm"
    for cls, names in {"mr": ["MR_small.dcm", "MR_small_RLE.dcm", "emri_small.dcm"],
                       "ct": ["CT_small.dcm", "693_UNCR.dcm"]}.items():
        (root / cls).mkdir(parents=True)
        for n in names:
            shutil.copy(get_testdata_file(n), root / cls / n)
    data_dir = tmp_path / "tfds"
    summary = prepare_custom(PrepareOptions(source=str(root), name="dcm", format="dicom",
                                            data_dir=str(data_dir), frame="expand", image_size=32,
                                            window="brain", val_fraction=0.2, test_fraction=0.2))
    assert summary["counts"]["total"] == 2 + 10 + 2  # emri_small has 10 frames
    table = _read_csv(dataset_dir(data_dir, "dcm") / "splits.csv")
    frames = [r for r in table if r["path"] == "mr/emri_small.dcm"]
    assert sorted(int(r["frame"]) for r in frames) == list(range(10))
    assert len({r["split"] for r in frames}) == 1  # one file never spans splits
    mr_small = [r for r in table if r["path"].startswith("mr/MR_small")]
    assert len({r["split"] for r in mr_small}) == 1 and len({r["patient_id"] for r in mr_small}) == 1
    assert summary["groups"]["in_several_splits"] == 0
    assert summary["dicom"]["window"] == "brain"
