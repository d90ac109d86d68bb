"""Segmentation metrics on host-side numpy masks: Dice, IoU, HD95 and a per-split report.

Masks are boolean arrays of one image; class maps are integer arrays (0 = background). An optional
`valid` mask (field of view) restricts every metric to the pixels inside it.

Conventions (stated once, used everywhere):
* Dice = 2|P & T| / (|P| + |T|), IoU = |P & T| / |P | T|; both are 1.0 when P and T are both empty.
* HD95: the boundary of a mask is the mask minus its binary erosion (scipy.ndimage, cross-shaped
  structuring element, outside the image counts as background). The directed distances are, for each
  boundary pixel of one mask, the Euclidean distance (in `spacing` units) to the nearest boundary pixel
  of the other. HD95 is the 95th percentile (numpy's default linear interpolation) of the POOLED
  directed distances of both directions, as MedPy's `hd95` computes it (MONAI instead takes the max of
  the two directed percentiles). Both masks empty -> 0.0; exactly one empty -> NaN (undefined).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage


# Validation metrics that can pick the tested checkpoint (`config.train.select_metric`); larger is better.
SELECTABLE_METRICS = ("dice", "iou")
# Test metrics a study report tables, in this order.
REPORTED_METRICS = ("dice", "iou", "hd95", "accuracy")


def _restrict(pred: np.ndarray, true: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    pred, true = np.asarray(pred, dtype=bool), np.asarray(true, dtype=bool)
    if pred.shape != true.shape:
        raise ValueError(f"mask shapes differ: {pred.shape} vs {true.shape}")
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        pred, true = pred & valid, true & valid
    return pred, true


def dice(pred: np.ndarray, true: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Dice overlap of two boolean masks (inside `valid` if given); 1.0 when both are empty."""
    pred, true = _restrict(pred, true, valid)
    total = int(pred.sum()) + int(true.sum())
    return 1.0 if total == 0 else float(2.0 * np.logical_and(pred, true).sum() / total)


def iou(pred: np.ndarray, true: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Intersection over union (Jaccard) of two boolean masks (inside `valid`); 1.0 when both are empty."""
    pred, true = _restrict(pred, true, valid)
    union = int(np.logical_or(pred, true).sum())
    return 1.0 if union == 0 else float(np.logical_and(pred, true).sum() / union)


def boundary(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a boolean mask: the mask minus its binary erosion (image edge = background)."""
    mask = np.asarray(mask, dtype=bool)
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def hausdorff95(pred: np.ndarray, true: np.ndarray, spacing: Sequence[float] = (1.0, 1.0),
                valid: np.ndarray | None = None) -> float:
    """95th-percentile symmetric Hausdorff distance between mask boundaries (pooled; see module doc).

    Robust to a few outlier pixels, unlike the plain Hausdorff distance. 0.0 if both masks are empty,
    NaN if exactly one is. `valid` first restricts both masks to the field of view.
    """
    pred, true = _restrict(pred, true, valid)
    has_pred, has_true = bool(pred.any()), bool(true.any())
    if not has_pred and not has_true:
        return 0.0
    if has_pred != has_true:
        return float("nan")
    edge_pred, edge_true = boundary(pred), boundary(true)
    # distance_transform_edt: distance of each nonzero pixel to the nearest zero pixel (= a boundary pixel).
    to_true = ndimage.distance_transform_edt(~edge_true, sampling=spacing)[edge_pred]
    to_pred = ndimage.distance_transform_edt(~edge_pred, sampling=spacing)[edge_true]
    return float(np.percentile(np.concatenate([to_true, to_pred]), 95))


def _nanmean(values: Sequence[float]) -> float:
    values = np.asarray(values, dtype=float)
    return float(np.mean(values[np.isfinite(values)])) if np.isfinite(values).any() else float("nan")


def segmentation_report(true_masks: Sequence[np.ndarray], pred_masks: Sequence[np.ndarray], *,
                        num_classes: int = 2, valid_masks: Sequence[np.ndarray] | None = None,
                        spacing: Sequence[float] = (1.0, 1.0)) -> dict:
    """Dice, IoU, HD95 per image and averaged over a split, as plain floats/lists (json.dump-able).

    Inputs are per-image integer class maps (binary: 0/1). Per image, each metric is the mean over the
    foreground classes 1..C-1 (HD95: the NaN-skipping mean; a class absent from both maps has Dice 1,
    HD95 0). Returned keys: per_image [{dice, iou, hd95}], dice, iou (means over images), hd95 (NaN-
    skipping mean), dice_std (population std over images), accuracy (pixel accuracy pooled over all
    valid pixels), num_images, and for num_classes > 2 dice_per_class (foreground classes 1..C-1,
    each averaged over images).
    """
    if len(true_masks) != len(pred_masks):
        raise ValueError(f"{len(true_masks)} true masks but {len(pred_masks)} predictions")
    if valid_masks is not None and len(valid_masks) != len(true_masks):
        raise ValueError(f"{len(valid_masks)} valid masks for {len(true_masks)} images")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    per_image, per_class, correct, counted = [], [], 0, 0
    for i, (true, pred) in enumerate(zip(true_masks, pred_masks)):
        true, pred = np.asarray(true), np.asarray(pred)
        valid = None if valid_masks is None else np.asarray(valid_masks[i], dtype=bool)
        inside = np.ones(true.shape, bool) if valid is None else valid
        correct += int(((true == pred) & inside).sum())
        counted += int(inside.sum())
        classes = range(1, num_classes)
        d = [dice(pred == c, true == c, valid) for c in classes]
        j = [iou(pred == c, true == c, valid) for c in classes]
        h = [hausdorff95(pred == c, true == c, spacing, valid) for c in classes]
        per_class.append(d)
        per_image.append({"dice": float(np.mean(d)), "iou": float(np.mean(j)), "hd95": _nanmean(h)})
    n = len(per_image)
    nan = float("nan")
    dices = [r["dice"] for r in per_image]
    out = {
        "per_image": per_image,
        "dice": float(np.mean(dices)) if n else nan,
        "iou": float(np.mean([r["iou"] for r in per_image])) if n else nan,
        "hd95": _nanmean([r["hd95"] for r in per_image]),
        "dice_std": float(np.std(dices)) if n else nan,
        "accuracy": correct / counted if counted else nan,
        "num_images": n,
    }
    if num_classes > 2:
        out["dice_per_class"] = ([float(v) for v in np.mean(per_class, axis=0)] if n
                                 else [nan] * (num_classes - 1))
    return out
