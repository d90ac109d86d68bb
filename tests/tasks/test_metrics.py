"""Metrics agree with scikit-learn's own definitions and the bootstrap CI behaves like one."""

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from medtl_jax.tasks.classification import metrics


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


def _softmax(logits):
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_quadratic_weighted_kappa_equals_sklearn_and_brute_force(rng):
    y = rng.integers(0, 5, 300)
    pred = np.clip(y + rng.integers(-1, 2, 300), 0, 4)
    kappa = metrics.quadratic_weighted_kappa(y, pred)
    assert kappa == pytest.approx(skm.cohen_kappa_score(y, pred, weights="quadratic"))
    # independent textbook formula: 1 - sum(w*O) / sum(w*E), w_ij = (i-j)^2
    observed = np.zeros((5, 5))
    np.add.at(observed, (y, pred), 1)
    expected = np.outer(observed.sum(1), observed.sum(0)) / observed.sum()
    w = (np.arange(5)[:, None] - np.arange(5)[None, :]) ** 2
    assert kappa == pytest.approx(1 - (w * observed).sum() / (w * expected).sum())
    assert metrics.quadratic_weighted_kappa(y, y) == pytest.approx(1.0)


def _brute_force_best_j(y, s):
    best = -np.inf
    for t in np.unique(s):
        p = s >= t
        best = max(best, p[y == 1].mean() + (~p[y == 0]).mean() - 1)
    return best


def test_youden_threshold_maximises_j_over_all_thresholds(rng):
    y = rng.integers(0, 2, 400)
    s = np.clip(0.3 * y + rng.random(400) * 0.8, 0, 1)
    t = metrics.youden_threshold(y, s)
    assert np.isfinite(t)
    p = s >= t
    j = p[y == 1].mean() + (~p[y == 0]).mean() - 1
    assert j == pytest.approx(_brute_force_best_j(y, s))
    assert j > 0.2


def test_youden_threshold_perfect_separation_and_degenerate_cases():
    y = np.array([0, 0, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.7, 0.9])
    t = metrics.youden_threshold(y, s)
    assert 0.3 < t <= 0.7
    assert metrics.youden_threshold(np.zeros(5), s) == 0.5
    # anti-correlated scores: best J = 0, reached at roc_curve's +inf threshold -> finite, predicts nothing
    t = metrics.youden_threshold(np.array([1, 1, 0, 0]), np.array([0.1, 0.2, 0.8, 0.9]))
    assert np.isfinite(t) and t > 0.9


def test_youden_thresholds_multilabel_per_label_with_single_class_fallback(rng):
    y = rng.integers(0, 2, (300, 3))
    y[:, 2] = 0
    s = np.clip(0.4 * y + rng.random((300, 3)) * 0.7, 0, 1)
    t = metrics.youden_thresholds("multilabel", y, s)
    assert t.shape == (3,)
    for j in range(2):
        assert t[j] == metrics.youden_threshold(y[:, j], s[:, j])
    assert t[2] == 0.5
    assert metrics.youden_thresholds("binary", y[:, 0], s[:, 0]) == t[0]
    with pytest.raises(ValueError):
        metrics.youden_thresholds("multiclass", y[:, 0], s)


def test_threshold_metrics_binary_equal_sklearn(rng):
    y = rng.integers(0, 2, 300)
    s = np.clip(0.3 * y + rng.random(300) * 0.8, 0, 1)
    r = metrics.threshold_metrics("binary", y, s, 0.45)
    p = s >= 0.45
    assert r["sensitivity"] == pytest.approx(skm.recall_score(y, p))
    assert r["specificity"] == pytest.approx(skm.recall_score(1 - y, ~p))
    assert r["precision"] == pytest.approx(skm.precision_score(y, p))
    assert r["f1"] == pytest.approx(skm.f1_score(y, p))


def test_threshold_metrics_multilabel_macro_with_per_label_threshold(rng):
    y = rng.integers(0, 2, (250, 4))
    s = np.clip(0.4 * y + rng.random((250, 4)) * 0.7, 0, 1)
    t = np.array([0.3, 0.5, 0.6, 0.4])
    r = metrics.threshold_metrics("multilabel", y, s, t)
    p = (s >= t).astype(int)
    assert r["sensitivity"] == pytest.approx(skm.recall_score(y, p, average="macro"))
    assert r["precision"] == pytest.approx(skm.precision_score(y, p, average="macro"))
    assert r["f1"] == pytest.approx(skm.f1_score(y, p, average="macro"))
    assert r["specificity"] == pytest.approx(skm.recall_score(1 - y, 1 - p, average="macro"))
    scalar = metrics.threshold_metrics("multilabel", y, s, 0.5)
    assert scalar["f1"] == pytest.approx(skm.f1_score(y, (s >= 0.5).astype(int), average="macro"))


def test_threshold_metrics_multiclass_macro_one_vs_rest(rng):
    y = rng.integers(0, 4, 300)
    p = _softmax(rng.normal(size=(300, 4)) + 1.2 * np.eye(4)[y])
    pred = p.argmax(1)
    r = metrics.threshold_metrics("multiclass", y, p)
    assert r["sensitivity"] == pytest.approx(skm.recall_score(y, pred, average="macro"))
    assert r["precision"] == pytest.approx(skm.precision_score(y, pred, average="macro"))
    assert r["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    cm = skm.confusion_matrix(y, pred)
    spec = [(cm.sum() - cm[c].sum() - cm[:, c].sum() + cm[c, c]) / (cm.sum() - cm[c].sum()) for c in range(4)]
    assert r["specificity"] == pytest.approx(np.mean(spec))
    assert metrics.threshold_metrics("ordinal", y, p) == r


def _loop_ece(correct, confidence, num_bins):
    edges = np.linspace(0, 1, num_bins + 1)
    n, total = len(confidence), 0.0
    for b in range(num_bins):
        lo, hi = edges[b], edges[b + 1]
        inside = [i for i in range(n) if (lo < confidence[i] <= hi) or (b == 0 and confidence[i] == 0)]
        if inside:
            acc = sum(correct[i] for i in inside) / len(inside)
            conf = sum(confidence[i] for i in inside) / len(inside)
            total += len(inside) / n * abs(acc - conf)
    return total


def test_ece_equals_straightforward_loop(rng):
    y = rng.integers(0, 5, 500)
    p = _softmax(rng.normal(size=(500, 5)) * 2 + 1.0 * np.eye(5)[y])
    expected = _loop_ece(p.argmax(1) == y, p.max(1), 15)
    assert metrics.expected_calibration_error("multiclass", y, p) == pytest.approx(expected)
    assert metrics.expected_calibration_error("ordinal", y, p, num_bins=7) == pytest.approx(
        _loop_ece(p.argmax(1) == y, p.max(1), 7))

    yb = rng.integers(0, 2, 400)
    sb = rng.random(400)
    predb = sb >= 0.5
    expected = _loop_ece(predb == yb, np.where(predb, sb, 1 - sb), 15)
    assert metrics.expected_calibration_error("binary", yb, sb) == pytest.approx(expected)

    ym = rng.integers(0, 2, (300, 3))
    sm = rng.random((300, 3))
    expected = np.mean([_loop_ece((sm[:, j] >= 0.5) == ym[:, j],
                                  np.maximum(sm[:, j], 1 - sm[:, j]), 10) for j in range(3)])
    assert metrics.expected_calibration_error("multilabel", ym, sm, num_bins=10) == pytest.approx(expected)


def test_ece_zero_when_perfectly_calibrated_and_known_gap_otherwise():
    # binary: 100 examples at each p; exactly p*100 of them positive -> accuracy == confidence in every bin
    ps = [0.1, 0.3, 0.6, 0.8, 0.95]
    scores = np.repeat(ps, 100)
    labels = np.concatenate([np.arange(100) < round(p * 100) for p in ps]).astype(int)
    assert metrics.expected_calibration_error("binary", labels, scores) == pytest.approx(0.0, abs=1e-12)
    # multiclass: max prob 0.7 on class 0, exactly 70% of labels are class 0
    probs = np.tile([0.7, 0.2, 0.1], (100, 1))
    y = np.where(np.arange(100) < 70, 0, 1)
    assert metrics.expected_calibration_error("multiclass", y, probs) == pytest.approx(0.0, abs=1e-12)
    # overconfident: always 0.9 positive but only half are positive -> ECE = 0.4
    assert metrics.expected_calibration_error("binary", np.arange(100) % 2, np.full(100, 0.9)) == pytest.approx(0.4)


def test_classification_report_binary_keys_values_and_json(rng):
    y = rng.integers(0, 2, 200)
    s = np.clip(0.3 * y + rng.random(200) * 0.8, 0, 1)
    t = metrics.youden_threshold(y, s)
    r = metrics.classification_report("binary", y, s, threshold=0.5, youden_threshold=t, bootstrap_samples=20)
    assert r["sensitivity"] == pytest.approx(skm.recall_score(y, s >= 0.5))
    assert r["f1"] == pytest.approx(skm.f1_score(y, s >= 0.5))
    assert r["ece"] == pytest.approx(metrics.expected_calibration_error("binary", y, s))
    at = r["at_youden"]
    assert set(at) == {"threshold", "sensitivity", "specificity", "precision", "f1", "accuracy"}
    assert at["threshold"] == t and isinstance(at["threshold"], float)
    assert at["accuracy"] == pytest.approx(skm.accuracy_score(y, s >= t))
    assert at["precision"] == pytest.approx(skm.precision_score(y, s >= t))
    assert "at_youden" not in metrics.classification_report("binary", y, s, bootstrap_samples=0)
    json.loads(json.dumps(r))


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")  # balanced accuracy, label 1
def test_classification_report_multilabel_and_ordinal(rng):
    y = rng.integers(0, 2, (150, 3))
    y[:, 1] = 1  # label 1 has one class: AUC undefined
    s = np.clip(0.4 * y + rng.random((150, 3)) * 0.7, 0, 1)
    t = metrics.youden_thresholds("multilabel", y, s)
    r = metrics.classification_report("multilabel", y, s, youden_threshold=t, bootstrap_samples=0)
    assert r["auc_per_label"][0] == pytest.approx(skm.roc_auc_score(y[:, 0], s[:, 0]))
    assert np.isnan(r["auc_per_label"][1]) and len(r["auc_per_label"]) == 3
    assert r["at_youden"]["threshold"] == pytest.approx(list(t))
    assert r["at_youden"]["accuracy"] == pytest.approx(np.mean((s >= t) == y))
    assert r["at_youden"]["f1"] == pytest.approx(skm.f1_score(y, (s >= t).astype(int), average="macro"))
    assert r["precision"] == pytest.approx(skm.precision_score(y, (s >= 0.5).astype(int), average="macro"))
    json.dumps(r)

    yo = rng.integers(0, 4, 200)
    po = _softmax(rng.normal(size=(200, 4)) + 1.5 * np.eye(4)[yo])
    ro = metrics.classification_report("ordinal", yo, po, bootstrap_samples=0)
    assert ro["qwk"] == pytest.approx(skm.cohen_kappa_score(yo, po.argmax(1), weights="quadratic"))
    assert ro["f1"] == pytest.approx(skm.f1_score(yo, po.argmax(1), average="macro"))
    assert "qwk" not in metrics.classification_report("multiclass", yo, po, bootstrap_samples=0)
    assert all(type(v) in (float, int) for v in ro.values())
