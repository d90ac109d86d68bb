"""SyntheticLesions: deterministic, imbalanced, two sites, and lesions where they should be."""

import numpy as np
import pytest

from medtl_jax.data import load_data

from medtl_jax.data.sources import synthetic

SPLITS = ("train", "validation", "test")


def _records(builder, split):
    src = builder.as_data_source(split=split)
    records = [src[i] for i in range(len(src))]
    return sorted(records, key=lambda r: r["index"])


@pytest.fixture(scope="session")
def default_records(tmp_path_factory):
    builder = synthetic.build_synthetic("default", data_dir=str(tmp_path_factory.mktemp("syn")))
    return {split: _records(builder, split) for split in SPLITS}


def test_tiny_is_deterministic_across_builds(tmp_path):
    a = synthetic.build_synthetic("tiny", data_dir=str(tmp_path / "a"))
    b = synthetic.build_synthetic("tiny", data_dir=str(tmp_path / "b"))
    for split, n in zip(SPLITS, (128, 64, 64)):
        ra, rb = _records(a, split), _records(b, split)
        assert len(ra) == len(rb) == n
        assert [r["index"] for r in ra] == list(range(n))
        for x, y in zip(ra, rb):
            assert x["image"].shape == (32, 32, 1) and x["image"].dtype == np.uint8
            np.testing.assert_array_equal(x["image"], y["image"])
            assert (x["label"], x["site"]) == (y["label"], y["site"])


def test_generation_is_order_independent():
    late = synthetic.generate_example(0, "train", 7, 32)
    for i in range(7):
        synthetic.generate_example(0, "train", i, 32)
    again = synthetic.generate_example(0, "train", 7, 32)
    np.testing.assert_array_equal(late.image, again.image)
    other = synthetic.generate_example(0, "test", 7, 32)
    assert not np.array_equal(late.image, other.image)


def test_default_split_sizes(default_records):
    assert [len(default_records[s]) for s in SPLITS] == [1500, 300, 600]
    assert default_records["train"][0]["image"].shape == (64, 64, 1)


def test_class_balance_and_site_fraction(default_records):
    records = [r for s in SPLITS for r in default_records[s]]
    labels = np.array([r["label"] for r in records])
    sites = np.array([r["site"] for r in records])
    assert 0.20 <= labels.mean() <= 0.30
    assert 0.25 <= sites.mean() <= 0.35
    for split in SPLITS:  # every split has both classes and both sites
        assert {r["label"] for r in default_records[split]} == {0, 1}
        assert {r["site"] for r in default_records[split]} == {0, 1}


def test_lesions_are_brighter_spots(default_records):
    records = default_records["train"]
    labels = np.array([r["label"] for r in records])
    peak = np.array([r["image"].max() for r in records], dtype=np.float64)
    assert peak[labels == 1].mean() > peak[labels == 0].mean() + 10


def test_sites_differ_in_intensity(default_records):
    records = default_records["train"]
    sites = np.array([r["site"] for r in records])
    background = np.array([np.percentile(r["image"], 5) for r in records])
    assert background[sites == 1].mean() > background[sites == 0].mean() + 10


def test_load_data_synthetic(tmp_path):
    bundle = load_data({"name": "synthetic", "subset": "tiny", "source_size": 28,
                        "manual_dir": None, "data_dir": str(tmp_path)})
    info = bundle.info
    assert (info.task, info.num_classes, info.channels, info.image_size) == ("binary", 2, 1, 32)
    assert info.splits == {"train": 128, "validation": 64, "test": 64}
    assert info.attributes == ("site",)
    assert set(bundle.sources) == set(SPLITS)


def test_unknown_variant(tmp_path):
    with pytest.raises(ValueError, match="tiny"):
        synthetic.build_synthetic("tiyn", data_dir=str(tmp_path))
