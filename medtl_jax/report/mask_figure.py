"""Predicted vs true masks for a segmentation sweep report: a few validation images per setting.

One row per setting (its largest labelled fraction's lowest-seed run, as for Grad-CAM); each panel is a
validation image in gray with the true foreground in green, the predicted one in red (overlap: yellow).
Predictions come from the run's predictions_val.npz (uint8 probability maps in source order, as the
segmentation evaluator writes them); images and true masks from the run's dataset (its config.json).
"""

from __future__ import annotations

import pathlib

import numpy as np

from medtl_jax.report import plots
from medtl_jax.report.analysis import GroupSummary
from medtl_jax.report.collect import ordered_keys, short_key
from medtl_jax.report.gradcam_figure import pick_rows
from medtl_jax.inference.prediction_model import run_config
from medtl_jax.data import load_data
from medtl_jax.runtime.run_folder import RunDir


def mask_overlay(image: np.ndarray, true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """uint8 RGB: gray image dimmed, true foreground (>0) raised in green, predicted in red."""
    image = np.asarray(image)
    gray = image.mean(-1) if image.ndim == 3 else image.astype(float)
    rgb = np.repeat((0.6 * gray)[..., None], 3, axis=-1)
    rgb[..., 1] = np.where(np.asarray(true) > 0, 255.0, rgb[..., 1])
    rgb[..., 0] = np.where(np.asarray(pred) > 0, 255.0, rgb[..., 0])
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def predicted_masks(run_dir: RunDir, n: int, threshold: float) -> tuple[list[str], list[np.ndarray]]:
    """(ids, class maps) of the first n validation images of a segmentation run's predictions."""
    ids, probs = run_dir.read_probability_maps("val", n)
    return ids, [(p[..., 0] >= threshold).astype(np.int32) if p.shape[-1] == 1 else p.argmax(-1) for p in probs]


def run_masks(run, n: int):
    """(panels, captions) of the first n validation images of a segmentation run."""
    config = run_config(run.path)
    run_dir = RunDir(run.path)
    ids, preds = predicted_masks(run_dir, n, float(config.eval.threshold))
    source = load_data(config.data).sources["validation"]
    per_image = (run.results.get("val") or {}).get("per_image") or []
    panels, captions = [], []
    for i, (image_id, pred) in enumerate(zip(ids, preds)):
        record = source[i]
        if str(record.get("id", i)) != image_id:
            raise ValueError(f"{run_dir.predictions_npz('val')}: image {i} is {image_id!r} but the validation "
                             f"split's image {i} is {record.get('id')!r}")
        panels.append(mask_overlay(record["image"], record["mask"], pred))
        dice = per_image[i].get("dice") if i < len(per_image) else None
        captions.append(image_id + (f" Dice {dice:.3f}" if isinstance(dice, (int, float)) else ""))
    return panels, captions


def mask_section(summaries: list[GroupSummary], folder: pathlib.Path, n: int, rel) -> tuple[list[str], dict]:
    """Markdown lines and {'masks': path} of the predicted-vs-true mask figure."""
    keys = ordered_keys({k for s in summaries for k in s.group.settings})
    frac = next((k for k in keys if "fraction" in short_key(k)), None)
    rows, problems = [], []
    for label, run in pick_rows(summaries, keys, frac, segmentation=True):
        try:
            panels, captions = run_masks(run, n)
        except Exception as e:  # noqa: BLE001  (a failing run is reported, the report goes on)
            problems.append(f"- `{run.name}` ({label}): {type(e).__name__}: {e}")
            continue
        rows.append((label.replace(", ", "\n"), panels, captions))
    if not rows and not problems:
        return [], {}
    lines, figs = ["## Predicted vs true masks", ""], {}
    if rows:
        path = plots.image_grid_plot(rows, folder / "masks.png",
                                     title="Validation: true foreground green, predicted red, both yellow")
        figs["masks"] = path
        lines += [f"First {n} validation images per setting (lowest-seed run at its largest labelled fraction; "
                  "foreground = any class > 0).", "", f"![predicted vs true masks]({rel(path)})", ""]
    if problems:
        lines += ["Masks could not be drawn for:", "", *problems, ""]
    return lines, figs
