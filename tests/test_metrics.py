"""Metrics agree with scikit-learn's own definitions and the bootstrap CI behaves like one."""

import numpy as np
import pytest
from sklearn import metrics as skm

from medtl_jax import metrics


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_binary_auc_accuracy_equal_sklearn(rng):
    y = rng.integers(0, 2, 300)
    s = np.clip(0.3 * y + rng.random(300) * 0.8, 0, 1)
    assert metrics.auc("binary", y, s) == pytest.approx(skm.roc_auc_score(y, s))
    assert metrics.accuracy("binary", y, s) == pytest.approx(skm.accuracy_score(y, s >= 0.5))
    assert metrics.balanced_accuracy("binary", y, s, threshold=0.4) == pytest.approx(
        skm.balanced_accuracy_score(y, s >= 0.4))
    rates = metrics.binary_rates(y, s)
    assert rates["sensitivity"] == pytest.approx(skm.recall_score(y, s >= 0.5))
    assert rates["specificity"] == pytest.approx(skm.recall_score(1 - y, s < 0.5))


def test_multiclass_auc_is_macro_one_vs_rest(rng):
    y = rng.integers(0, 5, 400)
    logits = rng.normal(size=(400, 5)) + 1.5 * np.eye(5)[y]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    expected = skm.roc_auc_score(y, p, multi_class="ovr", average="macro")
    assert metrics.auc("multiclass", y, p) == pytest.approx(expected)
    assert metrics.auc("ordinal", y, p) == pytest.approx(expected)
    assert metrics.accuracy("multiclass", y, p) == pytest.approx(skm.accuracy_score(y, p.argmax(1)))


def test_multilabel_auc_and_accuracy(rng):
    y = rng.integers(0, 2, (200, 4))
    s = np.clip(0.4 * y + rng.random((200, 4)) * 0.7, 0, 1)
    assert metrics.auc("multilabel", y, s) == pytest.approx(skm.roc_auc_score(y, s, average="macro"))
    assert metrics.accuracy("multilabel", y, s) == pytest.approx(np.mean((s >= 0.5) == y))


def test_auc_undefined_with_one_class_is_nan():
    assert np.isnan(metrics.auc("binary", np.zeros(10), np.linspace(0, 1, 10)))


def test_bootstrap_ci_brackets_estimate_and_shrinks_with_n(rng):
    def make(n):
        y = rng.integers(0, 2, n)
        return y, np.clip(0.25 * y + rng.random(n) * 0.8, 0, 1)

    y, s = make(200)
    point = metrics.auc("binary", y, s)
    lo, hi = metrics.bootstrap_ci(lambda a, b: metrics.auc("binary", a, b), y, s, num_samples=300)
    assert lo < point < hi
    y2, s2 = make(3000)
    lo2, hi2 = metrics.bootstrap_ci(lambda a, b: metrics.auc("binary", a, b), y2, s2, num_samples=300)
    assert hi2 - lo2 < (hi - lo) * 0.6
    again = metrics.bootstrap_ci(lambda a, b: metrics.auc("binary", a, b), y, s, num_samples=300)
    assert again == (lo, hi)  # seeded


def test_classification_report_fields(rng):
    y = rng.integers(0, 2, 100)
    s = rng.random(100)
    r = metrics.classification_report("binary", y, s, bootstrap_samples=50)
    assert set(r) >= {"auc", "accuracy", "balanced_accuracy", "auc_ci95", "sensitivity", "specificity"}
    assert r["num_examples"] == 100
