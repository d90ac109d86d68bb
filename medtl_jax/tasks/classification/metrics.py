"""Classification metrics as the MedMNIST v2 benchmark defines them, plus bootstrap confidence intervals,
operating-point metrics (Youden threshold, sensitivity/specificity/precision/F1), quadratic weighted kappa
and expected calibration error.

Scores follow one convention everywhere: binary -> [N] probability of the positive class;
multiclass/ordinal -> [N, C] class probabilities; multilabel -> [N, L] per-label probabilities.
AUC and accuracies come from scikit-learn; multi-class AUC is the mean of one-vs-rest AUCs (as MedMNIST).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from sklearn import metrics as skm

from medtl_jax.data.types import EXAMPLE_LABEL_KINDS

MULTICLASS_KINDS = ("multiclass", "ordinal")


def auc(kind: str, labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC; multi-class and multi-label: the mean over classes that are present, NaN if undefined."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    if kind == "binary":
        return _safe_auc(labels, scores)
    if kind in MULTICLASS_KINDS:
        per_class = [_safe_auc(labels == c, scores[:, c]) for c in range(scores.shape[1])]
    elif kind == "multilabel":
        per_class = [_safe_auc(labels[:, j], scores[:, j]) for j in range(scores.shape[1])]
    else:
        raise ValueError(f"unknown task kind {kind!r}")
    per_class = [a for a in per_class if not np.isnan(a)]
    return float(np.mean(per_class)) if per_class else float("nan")


def _safe_auc(y: np.ndarray, s: np.ndarray) -> float:
    y = np.asarray(y).astype(int)
    if y.min(initial=0) == y.max(initial=0) or len(np.unique(y)) < 2:
        return float("nan")
    return float(skm.roc_auc_score(y, s))


def predictions(kind: str, scores: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Hard predictions: threshold for binary/multilabel, argmax for multi-class."""
    scores = np.asarray(scores)
    if kind in ("binary", "multilabel"):
        return (scores >= threshold).astype(int)
    return scores.argmax(axis=-1)


def accuracy(kind: str, labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> float:
    """Accuracy; multilabel: the mean of per-label accuracies (MedMNIST's definition)."""
    pred = predictions(kind, scores, threshold)
    if kind == "multilabel":
        return float(np.mean([skm.accuracy_score(labels[:, j], pred[:, j]) for j in range(labels.shape[1])]))
    return float(skm.accuracy_score(labels, pred))


def balanced_accuracy(kind: str, labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> float:
    """Mean per-class recall; multilabel: averaged over labels."""
    pred = predictions(kind, scores, threshold)
    if kind == "multilabel":
        return float(np.mean([skm.balanced_accuracy_score(labels[:, j], pred[:, j])
                              for j in range(labels.shape[1])]))
    return float(skm.balanced_accuracy_score(labels, pred))


def binary_rates(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Sensitivity and specificity of a binary task at `threshold`."""
    pred = (np.asarray(scores) >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(np.asarray(labels).astype(int), pred, labels=[0, 1]).ravel()
    sens = tp / (tp + fn) if tp + fn else float("nan")
    spec = tn / (tn + fp) if tn + fp else float("nan")
    return {"sensitivity": float(sens), "specificity": float(spec)}


def bootstrap_ci(metric: Callable[[np.ndarray, np.ndarray], float], labels: np.ndarray, scores: np.ndarray,
                 *, num_samples: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of `metric(labels, scores)` over resampled examples (NaN resamples dropped)."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    rng = np.random.default_rng(seed)
    n = len(labels)
    values = []
    for _ in range(num_samples):
        idx = rng.integers(0, n, size=n)
        v = metric(labels[idx], scores[idx])
        if not np.isnan(v):
            values.append(v)
    if not values:
        return (float("nan"), float("nan"))
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
    return (float(lo), float(hi))


def quadratic_weighted_kappa(labels: np.ndarray, pred_classes: np.ndarray) -> float:
    """Cohen's kappa with quadratic weights: the agreement measure for ordinal grades (e.g. retinopathy)."""
    labels, pred_classes = np.asarray(labels).astype(int), np.asarray(pred_classes).astype(int)
    if len(np.union1d(labels, pred_classes)) < 2:
        return float("nan")  # kappa is 0/0 when rater and truth use a single class
    return float(skm.cohen_kappa_score(labels, pred_classes, weights="quadratic"))


def youden_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """Binary threshold maximising Youden's J = sensitivity + specificity - 1 on the ROC curve.

    Predictions are `scores >= threshold`. Ties go to the highest threshold. roc_curve's first threshold
    (+inf, "nothing positive") is replaced by the next float above the largest score, which predicts the
    same. With one class only, J is undefined and 0.5 is returned.
    """
    labels, scores = np.asarray(labels).astype(int), np.asarray(scores, dtype=np.float64)
    if len(np.unique(labels)) < 2:
        return 0.5
    fpr, tpr, thresholds = skm.roc_curve(labels, scores, drop_intermediate=False)
    best = thresholds[int(np.argmax(tpr - fpr))]
    if not np.isfinite(best):
        best = np.nextafter(scores.max(), np.inf)
    return float(best)


def youden_thresholds(kind: str, labels: np.ndarray, scores: np.ndarray) -> float | np.ndarray:
    """Youden threshold(s) of a task: a float for binary, a per-label [L] array for multilabel.

    Meant to be chosen on the validation split and passed to `classification_report` for the test split.
    Multi-class/ordinal tasks predict by argmax and have no threshold (ValueError).
    """
    labels, scores = np.asarray(labels), np.asarray(scores)
    if kind == "binary":
        return youden_threshold(labels, scores)
    if kind == "multilabel":
        return np.array([youden_threshold(labels[:, j], scores[:, j]) for j in range(scores.shape[1])])
    raise ValueError(f"no decision threshold for task kind {kind!r} (binary or multilabel only)")


def _rates_from_confusion(tn: float, fp: float, fn: float, tp: float) -> dict[str, float]:
    nan = float("nan")
    return {"sensitivity": tp / (tp + fn) if tp + fn else nan,
            "specificity": tn / (tn + fp) if tn + fp else nan}


def threshold_metrics(kind: str, labels: np.ndarray, scores: np.ndarray,
                      threshold: float | np.ndarray = 0.5) -> dict[str, float]:
    """Sensitivity, specificity, precision and F1 of hard predictions.

    binary: at `threshold`; multilabel: macro average over labels (scalar or per-label threshold);
    multiclass/ordinal: macro one-vs-rest average of argmax predictions over all C classes.
    Precision/F1 follow scikit-learn with zero_division=0; sensitivity (specificity) of a label/class
    without positives (negatives) is undefined, NaN, and left out of the macro mean.
    """
    labels, scores = np.asarray(labels).astype(int), np.asarray(scores)
    pred = predictions(kind, scores, threshold)
    if kind == "binary":
        labels, pred = labels[:, None], pred[:, None]
    elif kind in MULTICLASS_KINDS:
        classes = np.arange(scores.shape[1])
        labels, pred = labels[:, None] == classes, pred[:, None] == classes
    elif kind != "multilabel":
        raise ValueError(f"unknown task kind {kind!r}")
    labels, pred = labels.astype(int), pred.astype(int)
    rates, prec, f1 = [], [], []
    for y, p in zip(labels.T, pred.T):  # one-vs-rest per label/class
        rates.append(_rates_from_confusion(*skm.confusion_matrix(y, p, labels=[0, 1]).ravel()))
        prec.append(skm.precision_score(y, p, zero_division=0))
        f1.append(skm.f1_score(y, p, zero_division=0))
    out = {}
    for key in ("sensitivity", "specificity"):
        values = np.array([r[key] for r in rates], dtype=float)
        out[key] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
    out["precision"] = float(np.mean(prec))
    out["f1"] = float(np.mean(f1))
    return out


def _binary_ece(correct: np.ndarray, confidence: np.ndarray, num_bins: int) -> float:
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    # bin b holds confidences in (edges[b], edges[b + 1]]; a confidence of exactly 0 joins bin 0.
    bins = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, num_bins - 1)
    gap = np.abs(np.bincount(bins, weights=correct, minlength=num_bins)
                 - np.bincount(bins, weights=confidence, minlength=num_bins))
    return float(gap.sum() / max(len(confidence), 1))


def expected_calibration_error(kind: str, labels: np.ndarray, scores: np.ndarray, num_bins: int = 15) -> float:
    """Top-label expected calibration error (Guo et al. 2017) with `num_bins` equal-width confidence bins.

    ECE = sum_b |B_b|/N * |accuracy(B_b) - confidence(B_b)|. multiclass/ordinal: confidence is the max
    probability, correctness that of the argmax; binary: confidence max(p, 1-p) of the predicted class
    (p >= 0.5 predicts positive); multilabel: the mean over labels of the binary ECE.
    """
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    if kind == "binary":
        pred = scores >= 0.5
        return _binary_ece(pred == labels.astype(bool), np.where(pred, scores, 1.0 - scores), num_bins)
    if kind == "multilabel":
        return float(np.mean([expected_calibration_error("binary", labels[:, j], scores[:, j], num_bins)
                              for j in range(scores.shape[1])]))
    if kind in MULTICLASS_KINDS:
        return _binary_ece(scores.argmax(-1) == labels, scores.max(-1), num_bins)
    raise ValueError(f"unknown task kind {kind!r}")


def _json_threshold(threshold: float | np.ndarray) -> float | list[float]:
    t = np.asarray(threshold, dtype=float)
    return float(t) if t.ndim == 0 else [float(v) for v in t]


# Validation metrics that can pick the tested checkpoint (`config.train.select_metric`), per task kind:
# each is a key of `classification_report` for that kind, larger is better.
SELECTABLE_METRICS = {kind: ("auc", "accuracy", "balanced_accuracy", "f1") + (("qwk",) if kind == "ordinal" else ())
                      for kind in EXAMPLE_LABEL_KINDS}
# Test metrics a study report tables, in this order (those a run's results carry).
REPORTED_METRICS = ("auc", "accuracy", "balanced_accuracy", "sensitivity", "specificity", "f1", "ece", "qwk")


def classification_report(kind: str, labels: np.ndarray, scores: np.ndarray, *,
                          threshold: float | np.ndarray = 0.5, youden_threshold: float | np.ndarray | None = None,
                          bootstrap_samples: int = 1000, seed: int = 0) -> dict:
    """All headline metrics of one split as plain Python floats/lists (json.dump-able).

    Always: auc (+ auc_ci95 when bootstrapping), accuracy, balanced_accuracy, ece, num_examples.
    binary/multilabel: sensitivity, specificity, precision, f1 at `threshold`, and, when the caller passes a
    `youden_threshold` chosen on the validation split, the same plus accuracy under "at_youden".
    multiclass/ordinal: macro sensitivity/specificity/precision/f1 of argmax; ordinal also qwk.
    multilabel also auc_per_label (NaN where a label has one class).
    """
    labels, scores = np.asarray(labels), np.asarray(scores)
    out: dict = {
        "auc": auc(kind, labels, scores),
        "accuracy": accuracy(kind, labels, scores, threshold),
        "balanced_accuracy": balanced_accuracy(kind, labels, scores, threshold),
        "num_examples": int(len(labels)),
        "ece": expected_calibration_error(kind, labels, scores),
    }
    out.update(threshold_metrics(kind, labels, scores, threshold))
    if kind in ("binary", "multilabel") and youden_threshold is not None:
        at = {"threshold": _json_threshold(youden_threshold)}
        at.update(threshold_metrics(kind, labels, scores, youden_threshold))
        at["accuracy"] = accuracy(kind, labels, scores, youden_threshold)
        out["at_youden"] = at
    if kind == "ordinal":
        out["qwk"] = quadratic_weighted_kappa(labels, scores.argmax(-1))
    if kind == "multilabel":
        out["auc_per_label"] = [_safe_auc(labels[:, j], scores[:, j]) for j in range(scores.shape[1])]
    if bootstrap_samples:
        out["auc_ci95"] = list(bootstrap_ci(lambda y, s: auc(kind, y, s), labels, scores,
                                            num_samples=bootstrap_samples, seed=seed))
    return out
