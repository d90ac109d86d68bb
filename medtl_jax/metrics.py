"""Classification metrics as the MedMNIST v2 benchmark defines them, plus bootstrap confidence intervals.

Scores follow one convention everywhere: binary -> [N] probability of the positive class;
multiclass/ordinal -> [N, C] class probabilities; multilabel -> [N, L] per-label probabilities.
AUC and accuracies come from scikit-learn; multi-class AUC is the mean of one-vs-rest AUCs (as MedMNIST).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from sklearn import metrics as skm

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


def classification_report(kind: str, labels: np.ndarray, scores: np.ndarray, *, threshold: float = 0.5,
                          bootstrap_samples: int = 1000, seed: int = 0) -> dict[str, float | list[float]]:
    """All headline metrics of one split: AUC (+ bootstrap 95% CI), accuracy, balanced accuracy."""
    out: dict[str, float | list[float]] = {
        "auc": auc(kind, labels, scores),
        "accuracy": accuracy(kind, labels, scores, threshold),
        "balanced_accuracy": balanced_accuracy(kind, labels, scores, threshold),
        "num_examples": int(len(labels)),
    }
    if kind == "binary":
        out.update(binary_rates(labels, scores, threshold))
    if bootstrap_samples:
        out["auc_ci95"] = list(bootstrap_ci(lambda y, s: auc(kind, y, s), labels, scores,
                                            num_samples=bootstrap_samples, seed=seed))
    return out
