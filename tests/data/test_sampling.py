"""Class-balanced epoch over-sampling: exact balance, coverage of the majority class, determinism."""

import numpy as np
import pytest

from medtl_jax.data.pipeline import sampling


@pytest.fixture
def labels():
    """Imbalanced 4-class labels (majority 0 with 60 examples; class 3 has 3), MedMNIST [N, 1] layout."""
    y = np.repeat([0, 1, 2, 3], [60, 25, 12, 3])
    return np.random.default_rng(0).permutation(y)[:, None]


def test_classes_exactly_balanced(labels):
    idx = sampling.balanced_indices(labels, seed=0, epoch=0)
    assert idx.dtype == np.int64 and idx.shape == (4 * 60,)
    drawn = labels[idx, 0]
    np.testing.assert_array_equal(np.bincount(drawn), [60, 60, 60, 60])


def test_every_majority_example_exactly_once(labels):
    idx = sampling.balanced_indices(labels, seed=3, epoch=7)
    majority = np.flatnonzero(labels[:, 0] == 0)
    counts = np.bincount(idx, minlength=len(labels))
    np.testing.assert_array_equal(counts[majority], 1)
    assert counts[labels[:, 0] == 3].sum() == 60 and counts[labels[:, 0] == 3].max() > 1


def test_ties_for_majority_are_all_permutations():
    y = np.array([0] * 5 + [1] * 5 + [2] * 2)
    idx = sampling.balanced_indices(y, seed=1, epoch=0)
    counts = np.bincount(idx, minlength=12)
    np.testing.assert_array_equal(counts[:10], 1)
    assert counts[10:].sum() == 5


def test_deterministic_and_epoch_dependent(labels):
    a = sampling.balanced_indices(labels, seed=5, epoch=2)
    np.testing.assert_array_equal(a, sampling.balanced_indices(labels, seed=5, epoch=2))
    b = sampling.balanced_indices(labels, seed=5, epoch=3)
    c = sampling.balanced_indices(labels, seed=6, epoch=2)
    assert not np.array_equal(a, b) and not np.array_equal(a, c)
    # Different epochs repeat different minority examples (not merely a reordering).
    minority = labels[:, 0] == 1
    ca, cb = (np.bincount(i, minlength=len(labels))[minority] for i in (a, b))
    assert not np.array_equal(ca, cb)


def test_epoch_is_shuffled(labels):
    drawn = labels[sampling.balanced_indices(labels, seed=0, epoch=0), 0]
    assert not np.all(np.diff(drawn) >= 0)  # not grouped class by class


def test_absent_class_skipped_and_binary():
    y = np.array([0, 0, 0, 2])  # class 1 has no examples
    idx = sampling.balanced_indices(y, seed=0, epoch=0, kind="ordinal")
    np.testing.assert_array_equal(np.bincount(y[idx], minlength=3), [3, 0, 3])
    yb = np.array([1, 0, 0, 0, 0, 0, 0])
    idx = sampling.balanced_indices(yb, seed=0, epoch=0, kind="binary")
    np.testing.assert_array_equal(np.bincount(yb[idx]), [6, 6])
    np.testing.assert_array_equal(np.sort(idx[yb[idx] == 1]), [0] * 6)


def test_multilabel_weights_formula():
    y = np.array([[1, 0], [1, 0], [1, 1], [0, 0]])
    # label counts: 3, 1; "no finding" group: 1 -> weights max over groups of 1/n.
    raw = np.array([1 / 3, 1 / 3, 1.0, 1.0])
    np.testing.assert_allclose(sampling.multilabel_sample_weights(y), raw / raw.sum())


def test_multilabel_oversampling_boosts_rare_label():
    rng = np.random.default_rng(1)
    n = 2000
    y = np.stack([rng.random(n) < 0.5, rng.random(n) < 0.02, rng.random(n) < 0.2], axis=1).astype(int)
    idx = sampling.balanced_indices(y, seed=0, epoch=0, kind="multilabel")
    assert idx.dtype == np.int64 and idx.shape == (n,)
    np.testing.assert_array_equal(idx, sampling.balanced_indices(y, seed=0, epoch=0, kind="multilabel"))
    before, after = y.mean(axis=0), y[idx].mean(axis=0)
    assert after[1] > 5 * before[1]  # the 2% label is strongly boosted
    assert after[0] < before[0]  # the common label is diluted
    assert not np.array_equal(idx, sampling.balanced_indices(y, seed=0, epoch=1, kind="multilabel"))


def test_invalid_kind():
    with pytest.raises(ValueError, match="multilabel"):
        sampling.balanced_indices(np.array([0, 1]), seed=0, epoch=0, kind="regression")
