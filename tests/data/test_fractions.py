"""Training subsets: nested stratified seeded fractions, site restriction, and their wiring into the trainer."""

import math
import types
from fractions import Fraction

import numpy as np
import pytest

from medtl_jax.data.subsets.fractions import nested_fraction_indices, strata
from medtl_jax.data.registry import DataBundle, DataInfo
from medtl_jax.data.subsets.sites import values_by_index
from medtl_jax.data.subsets.training_subset import SubsetSource, select_training_data

FRACTIONS = (0.01, 0.05, 0.1, 0.2, 0.5, 1.0)


def _labels(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    return rng.choice(4, size=n, p=[0.6, 0.3, 0.09, 0.01])


def _expected_count(f, n_c):
    """Exact ceil(f * n_c) (decimal f), at least 1."""
    return max(1, math.ceil(Fraction(str(f)) * n_c))


def test_fractions_are_stratified_nested_sorted_and_seeded():
    labels = _labels()
    previous = set()
    for f in FRACTIONS:
        idx = nested_fraction_indices(labels, f, seed=3)
        assert np.all(np.diff(idx) > 0)  # sorted, no repeats
        for c in range(4):
            assert np.sum(labels[idx] == c) == _expected_count(f, np.sum(labels == c)), (f, c)
        assert previous <= set(idx.tolist())  # the smaller set is inside the larger one
        previous = set(idx.tolist())
    assert len(previous) == len(labels)  # 1.0 is everything
    np.testing.assert_array_equal(nested_fraction_indices(labels, 0.1, seed=3),
                                  nested_fraction_indices(labels.copy(), 0.1, seed=3))  # deterministic
    assert not np.array_equal(nested_fraction_indices(labels, 0.1, seed=3),
                              nested_fraction_indices(labels, 0.1, seed=4))  # the seed picks the subset


def test_exact_ceil_and_at_least_one_per_class():
    labels = np.array([0] * 30 + [1] * 3)
    idx = nested_fraction_indices(labels[:, None], 0.1, seed=0)  # [N, 1] labels are single-label
    assert np.sum(labels[idx] == 0) == 3 and np.sum(labels[idx] == 1) == 1  # 0.1 * 30 = 3, not 4


def test_multilabel_strata_are_the_rarest_positive_label():
    rng = np.random.default_rng(1)
    labels = (rng.uniform(size=(500, 5)) < np.array([0.4, 0.2, 0.05, 0.02, 0.3])).astype(np.int32)
    counts = labels.sum(0)
    expected = []
    for row in labels:  # brute force: the positive label with the smallest count, else "none" (= 5)
        pos = [j for j in range(5) if row[j]]
        expected.append(min(pos, key=lambda j: (counts[j], j)) if pos else 5)
    np.testing.assert_array_equal(strata(labels), expected)
    idx = nested_fraction_indices(labels, 0.05, seed=0)
    assert np.all(labels[idx].sum(0) > 0)  # every label keeps a carrier, even the rarest


def test_unlabelled_images_and_bad_fractions():
    idx = nested_fraction_indices(None, 0.25, seed=0, n=20)
    assert len(idx) == 5 and set(idx) <= set(range(20))
    assert set(nested_fraction_indices(None, 0.1, seed=0, n=20)) <= set(idx)
    for bad in (0.0, 1.5, "half"):
        with pytest.raises(ValueError, match=r"config\.data\.train_fraction="):
            nested_fraction_indices(np.zeros(4), bad, seed=0)


# ---------------------------------------------------------------------------------------------------
# select_training_data on a small in-memory dataset with sites.
# ---------------------------------------------------------------------------------------------------

class _Source(list):
    """A list of records that names its sites like a TFDS source (dataset_info.features['site'].names)."""
    dataset_info = types.SimpleNamespace(features={"site": types.SimpleNamespace(names=["A", "B"])})


def _bundle(attributes=("site",)):
    rng = np.random.default_rng(0)
    sources = {}
    for split, n in (("train", 300), ("validation", 80), ("test", 90)):
        order = rng.permutation(n)  # records are stored out of index order, as TFDS does
        sources[split] = _Source({"image": np.zeros((4, 4, 1), np.uint8), "label": int(i % 5 == 0), "index": int(i),
                           "site": int(i % 3 == 0)} for i in order)
    info = DataInfo(name="fake", task="binary", num_classes=2, label_names=("a", "b"), channels=1, image_size=4,
                    splits={k: len(v) for k, v in sources.items()}, attributes=attributes)
    return DataBundle(info=info, sources=sources)


class _Data(dict):
    """config.data stand-in."""
    __getattr__ = dict.get


def test_sites_restrict_train_and_validation_then_fraction_nests_within():
    bundle = _bundle()
    by_name = select_training_data(_Data(train_sites=("B",)), bundle)
    for split in ("train", "validation"):
        src, full = by_name.sources[split], bundle.sources[split]
        assert {r["site"] for r in (src[i] for i in range(len(src)))} == {1}
        assert len(src) == sum(r["site"] == 1 for r in full)
    assert by_name.sources["test"] is bundle.sources["test"]  # test stays whole
    by_id = select_training_data(_Data(train_sites=(1,)), bundle)
    assert list(by_id.sources["train"].positions) == list(by_name.sources["train"].positions)

    both = select_training_data(_Data(train_sites=("1",), train_fraction=0.2, fraction_seed=5), bundle)
    train = both.sources["train"]
    assert isinstance(train, SubsetSource) and train.source is bundle.sources["train"]  # a view of the original
    site_b = [r for r in bundle.sources["train"] if r["site"] == 1]
    labels_b = np.array([r["label"] for r in site_b])
    picked = [site_b[i] for i in nested_fraction_indices(labels_b, 0.2, seed=5)]
    assert [train[i]["index"] for i in range(len(train))] == [r["index"] for r in picked]
    assert len(both.sources["validation"]) == len(by_name.sources["validation"])  # no fraction on validation


def test_site_errors_name_the_config_key():
    with pytest.raises(ValueError, match=r"config\.data\.train_sites=\('C',\): unknown site 'C' in dataset 'fake'"):
        select_training_data(_Data(train_sites=("C",)), _bundle())
    with pytest.raises(ValueError, match=r"config\.data\.train_sites=\(7,\): site id 7 is not in dataset 'fake'"):
        select_training_data(_Data(train_sites=(7,)), _bundle())
    with pytest.raises(ValueError, match=r"config\.data\.train_sites=\('A',\), but dataset 'fake' has no sites"):
        select_training_data(_Data(train_sites=("A",)), _bundle(attributes=()))


def test_values_by_index_follows_the_predictions_order():
    source = _bundle().sources["test"]
    index = np.arange(90)
    np.testing.assert_array_equal(values_by_index(source, "site", index), (index % 3 == 0).astype(int))


# ---------------------------------------------------------------------------------------------------
# The trainer's view (tiny synthetic set).
# ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def test_train_fraction_shrinks_the_epoch_and_keeps_the_subset_labels(data_dir):
    from medtl_jax.train import trainer as train
    from medtl_jax.train.classification_run import train_labels
    from medtl_jax.data import load_data
    from tests.helpers.tiny_recipe import tiny_config

    over = {"model.name": "cbr_tiny", "model.stem": "imagenet", "data.train_fraction": 0.3,
            "data.fraction_seed": 2}
    full = load_data(tiny_config(data_dir).data).sources["train"]
    full_labels = train_labels(full)
    s0 = train.make_setup(tiny_config(data_dir, **over))
    s1 = train.make_setup(_with_seed(tiny_config(data_dir, **over), 1))
    sub = s0.data.sources["train"]
    expected = nested_fraction_indices(full_labels, 0.3, seed=2)
    np.testing.assert_array_equal(sub.positions, expected)
    np.testing.assert_array_equal(s1.data.sources["train"].positions, expected)  # the run seed does not move it
    np.testing.assert_array_equal(train_labels(sub), full_labels[expected])
    assert s0.steps_per_epoch == len(expected) // 16 < len(full) // 16
    assert len(s0.data.sources["validation"]) == len(load_data(tiny_config(data_dir).data).sources["validation"])


def _with_seed(config, seed):
    config.seed = seed
    return config
