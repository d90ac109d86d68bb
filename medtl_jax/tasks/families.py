"""The registry of task families: `DataInfo.task` kind -> the family that serves it (see tasks.base)."""

from __future__ import annotations

from medtl_jax.data.types import EXAMPLE_LABEL_KINDS, MASK_KINDS
from medtl_jax.tasks.base import TaskFamily
from medtl_jax.tasks.classification import metrics as classification_metrics
from medtl_jax.tasks.segmentation import metrics as segmentation_metrics

CLASSIFICATION = TaskFamily(
    name="classification", kinds=EXAMPLE_LABEL_KINDS, headline_metric="auc",
    selectable_metrics=classification_metrics.SELECTABLE_METRICS,
    reported_metrics=classification_metrics.REPORTED_METRICS, example_predictions=True)
SEGMENTATION = TaskFamily(
    name="segmentation", kinds=MASK_KINDS, headline_metric="dice",
    selectable_metrics={kind: segmentation_metrics.SELECTABLE_METRICS for kind in MASK_KINDS},
    reported_metrics=segmentation_metrics.REPORTED_METRICS, example_predictions=False)
FAMILIES = (CLASSIFICATION, SEGMENTATION)
# How reports name each metric (results.json keys -> column labels).
METRIC_LABELS = {"auc": "AUC", "accuracy": "ACC", "balanced_accuracy": "balanced ACC", "sensitivity": "sensitivity",
                 "specificity": "specificity", "f1": "F1", "ece": "ECE", "qwk": "QWK", "dice": "Dice", "iou": "IoU",
                 "hd95": "HD95 (px)", "sensitivity_youden": "sensitivity @Youden",
                 "specificity_youden": "specificity @Youden"}
# Every metric any kind can select a checkpoint by, in a stable order.
SELECTABLE_METRICS = tuple(dict.fromkeys(m for f in FAMILIES for ms in f.selectable_metrics.values() for m in ms))


def family_of(kind: str, default: TaskFamily | None = None) -> TaskFamily:
    """The family serving the label kind `kind`; `default` (or ValueError naming the kinds) for others,
    e.g. a report reading an old results.json without a 'data' entry."""
    for family in FAMILIES:
        if kind in family.kinds:
            return family
    if default is not None:
        return default
    raise ValueError(f"unknown task kind {kind!r}; expected one of {tuple(k for f in FAMILIES for k in f.kinds)}")
