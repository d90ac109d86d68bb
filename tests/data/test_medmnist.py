"""MedMNIST: metadata, the TFDS builder on the real files, and the errors a user can meet."""

import dataclasses
import io
import pathlib
import zipfile

import numpy as np
import pytest

from medtl_jax.data import load_data

from medtl_jax.data.sources import medmnist, npz_files
from medtl_jax.data.sources.medmnist_info import MEDMNIST_2D

# ----------------------------------------------------------------------------------------------------
# Metadata.
# ----------------------------------------------------------------------------------------------------


def test_metadata_covers_all_2d_subsets():
    assert set(MEDMNIST_2D) == {
        "pathmnist", "chestmnist", "dermamnist", "octmnist", "pneumoniamnist", "retinamnist",
        "breastmnist", "bloodmnist", "tissuemnist", "organamnist", "organcmnist", "organsmnist"}
    for info in MEDMNIST_2D.values():
        assert info.sizes == (28, 64, 128, 224)
        for size, md5 in info.md5.items():
            assert md5 is None or (len(md5) == 32 and int(md5, 16) >= 0), (info.name, size)
        assert set(info.splits) == {"train", "val", "test"}
        assert info.n_channels in (1, 3)
    assert MEDMNIST_2D["pneumoniamnist"].url(28).endswith("/pneumoniamnist.npz?download=1")
    assert MEDMNIST_2D["pneumoniamnist"].url(224).endswith("/pneumoniamnist_224.npz?download=1")


def test_metadata_tasks_and_labels():
    tasks = {name: info.task for name, info in MEDMNIST_2D.items()}
    assert tasks["pneumoniamnist"] == "binary-class"
    assert tasks["breastmnist"] == "binary-class"
    assert tasks["retinamnist"] == "ordinal-regression"
    assert tasks["chestmnist"] == "multi-label, binary-class"
    assert tasks["pathmnist"] == "multi-class"
    assert MEDMNIST_2D["pneumoniamnist"].label_names == ("normal", "pneumonia")
    assert MEDMNIST_2D["pneumoniamnist"].splits == {"train": 4708, "val": 524, "test": 624}
    assert MEDMNIST_2D["retinamnist"].splits == {"train": 1080, "val": 120, "test": 400}
    assert MEDMNIST_2D["retinamnist"].n_channels == 3 and MEDMNIST_2D["retinamnist"].num_labels == 5
    assert MEDMNIST_2D["chestmnist"].num_labels == 14


def test_unknown_subset_or_size_suggests(tmp_path):
    with pytest.raises(ValueError, match="pneumoniamnist"):
        medmnist.build_medmnist("pneumonimnist", 28, data_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"valid sizes: \(28, 64, 128, 224\)"):
        medmnist.build_medmnist("pneumoniamnist", 32, data_dir=str(tmp_path))


# ----------------------------------------------------------------------------------------------------
# The real files (skip where ../shared/data is absent).
# ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def real_builders(medmnist_dir, tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds_medmnist"))
    return {subset: medmnist.build_medmnist(subset, 28, data_dir=data_dir,
                                            manual_dir=str(medmnist_dir))
            for subset in ("pneumoniamnist", "retinamnist")}


@pytest.mark.parametrize("subset,counts", [("pneumoniamnist", (4708, 524, 624)),
                                           ("retinamnist", (1080, 120, 400))])
def test_real_split_counts(real_builders, subset, counts):
    builder = real_builders[subset]
    for split, n in zip(("train", "validation", "test"), counts):
        assert builder.info.splits[split].num_examples == n
        assert len(builder.as_data_source(split=split)) == n


def test_real_pneumonia_train_class_counts(real_builders):
    src = real_builders["pneumoniamnist"].as_data_source(split="train")
    labels = np.array([src[i]["label"] for i in range(len(src))])
    assert np.bincount(labels).tolist() == [1214, 3494]
    assert sorted(src[i]["index"] for i in range(len(src))) == list(range(4708))


@pytest.mark.parametrize("subset", ["pneumoniamnist", "retinamnist"])
def test_real_images_match_npz(real_builders, medmnist_dir, subset):
    npz = np.load(medmnist_dir / f"{subset}.npz")
    rng = np.random.default_rng(0)
    for split, key in medmnist.SPLITS.items():
        src = real_builders[subset].as_data_source(split=split)
        images, labels = npz[f"{key}_images"], npz[f"{key}_labels"]
        for pos in rng.choice(len(src), size=8, replace=False):
            record = src[int(pos)]
            i = record["index"]
            assert record["image"].dtype == np.uint8
            np.testing.assert_array_equal(record["image"], images[i].reshape(record["image"].shape))
            assert record["label"] == labels[i, 0]


def test_real_load_data_infos(real_builders, medmnist_dir):
    data_dir = str(pathlib.Path(real_builders["pneumoniamnist"].data_dir).parents[2])
    base = dict(name="medmnist", source_size=28, manual_dir=str(medmnist_dir), data_dir=data_dir)
    pneu = load_data({**base, "subset": "pneumoniamnist"}).info
    assert (pneu.task, pneu.num_classes, pneu.channels, pneu.image_size) == ("binary", 2, 1, 28)
    assert pneu.splits == {"train": 4708, "validation": 524, "test": 624}
    retina = load_data({**base, "subset": "retinamnist"}).info
    assert (retina.task, retina.num_classes, retina.channels) == ("ordinal", 5, 3)


# ----------------------------------------------------------------------------------------------------
# Generated fake files: always run, never touch the network.
# ----------------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _offline_cache(tmp_path, monkeypatch):
    """No test reads or writes the user's download cache, and no test can reach the network."""
    monkeypatch.setenv("MEDTL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MEDTL_MEDMNIST_DIR", raising=False)
    monkeypatch.setattr(npz_files, "source_url", lambda subset, size: "http://127.0.0.1:9/x.npz")


def _fake_breast(**override) -> dict[str, np.ndarray]:
    """Arrays shaped like breastmnist.npz (546/78/156 gray 28x28, labels 0/1)."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in MEDMNIST_2D["breastmnist"].splits.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 2, (n, 1), dtype=np.uint8)
    arrays.update(override)
    return {k: v for k, v in arrays.items() if v is not None}


def _write(folder: pathlib.Path, arrays: dict, name="breastmnist.npz") -> pathlib.Path:
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / name, **arrays)
    return folder / name


def _build(tmp_path, manual):
    return medmnist.build_medmnist("breastmnist", 28, data_dir=str(tmp_path / "tfds"),
                                   manual_dir=str(manual))


def test_fake_file_builds_and_round_trips(tmp_path):
    arrays = _fake_breast()
    _write(tmp_path / "manual", arrays)
    builder = _build(tmp_path, tmp_path / "manual")
    src = builder.as_data_source(split="validation")
    assert len(src) == 78
    for pos in (0, 17, 77):
        record = src[pos]
        np.testing.assert_array_equal(record["image"][..., 0], arrays["val_images"][record["index"]])
        assert record["label"] == arrays["val_labels"][record["index"], 0]


def test_env_folder_is_used(tmp_path, monkeypatch):
    _write(tmp_path / "env", _fake_breast())
    monkeypatch.setenv("MEDTL_MEDMNIST_DIR", str(tmp_path / "env"))
    builder = medmnist.build_medmnist("breastmnist", 28, data_dir=str(tmp_path / "tfds"))
    assert builder.info.splits["test"].num_examples == 156


@pytest.mark.parametrize("override,key", [
    ({"train_images": None, "train_imgs": np.zeros((546, 28, 28), np.uint8)}, "train_images"),
    ({"val_images": np.zeros((78, 28, 28, 3), np.uint8)}, "val_images"),
    ({"test_images": np.zeros((150, 28, 28), np.uint8)}, "test_images"),
    ({"train_labels": np.full((546, 1), 2, np.uint8)}, "train_labels"),
    ({"test_labels": np.zeros((156, 2), np.uint8)}, "test_labels"),
])
def test_bad_file_names_file_and_key(tmp_path, override, key):
    path = _write(tmp_path / "manual", _fake_breast(**override))
    with pytest.raises(ValueError) as err:
        _build(tmp_path, tmp_path / "manual")
    assert str(path) in str(err.value) and f"'{key}'" in str(err.value)


def test_truncated_file_names_file(tmp_path):
    path = _write(tmp_path / "manual", _fake_breast())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="breastmnist.npz"):
        _build(tmp_path, tmp_path / "manual")


def test_corrupt_member_names_file_and_key(tmp_path):
    """A member whose data is cut short (zip directory intact) fails while streaming, by key."""
    arrays = _fake_breast()
    path = tmp_path / "manual" / "breastmnist.npz"
    path.parent.mkdir()
    with zipfile.ZipFile(path, "w") as zf:
        for key, value in arrays.items():
            buf = io.BytesIO()
            np.save(buf, value)
            raw = buf.getvalue()
            zf.writestr(key + ".npy", raw[:-1000] if key == "test_images" else raw)
    with pytest.raises(ValueError) as err:
        _build(tmp_path, tmp_path / "manual")
    assert "breastmnist.npz" in str(err.value) and "'test_images'" in str(err.value)


def test_offline_without_file_explains_manual_dir(tmp_path):
    with pytest.raises(RuntimeError) as err:
        medmnist.build_medmnist("breastmnist", 28, data_dir=str(tmp_path / "tfds"))
    msg = str(err.value)
    assert "breastmnist.npz" in msg and "http://127.0.0.1:9/x.npz" in msg
    assert "manual_dir" in msg and "MEDTL_MEDMNIST_DIR" in msg
    assert not list((tmp_path / "cache").rglob("*.part"))


def test_download_checks_md5(tmp_path):
    src = _write(tmp_path / "remote", _fake_breast())
    dest = tmp_path / "cache" / "breastmnist.npz"
    with pytest.raises(RuntimeError, match="MD5 mismatch"):
        npz_files.download(src.as_uri(), dest, md5="0" * 32)
    assert not dest.exists() and not list(dest.parent.glob("*.part"))
    npz_files.download(src.as_uri(), dest, md5=npz_files.md5sum(src))
    assert dest.read_bytes() == src.read_bytes()


def test_multilabel_subset_builds_label_vectors(tmp_path, monkeypatch):
    """ChestMNIST's 14 binary labels become an int32 vector (a shrunken fake keeps it fast)."""
    small = {"train": 20, "val": 5, "test": 6}
    monkeypatch.setitem(MEDMNIST_2D, "chestmnist",
                        dataclasses.replace(MEDMNIST_2D["chestmnist"], splits=small))
    rng = np.random.default_rng(1)
    arrays = {}
    for split, n in small.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 2, (n, 14), dtype=np.uint8)
    _write(tmp_path / "manual", arrays, name="chestmnist.npz")
    bundle = load_data({"name": "medmnist", "subset": "chestmnist", "source_size": 28,
                        "manual_dir": str(tmp_path / "manual"), "data_dir": str(tmp_path / "tfds")})
    assert (bundle.info.task, bundle.info.num_classes) == ("multilabel", 14)
    src = bundle.sources["test"]
    for pos in range(len(src)):
        record = src[pos]
        assert record["label"].shape == (14,) and record["label"].dtype == np.int32
        np.testing.assert_array_equal(record["label"], arrays["test_labels"][record["index"]])
