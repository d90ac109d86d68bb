"""Grad-CAM overlays for a sweep report: a few test images explained by each model's best checkpoint.

One row per (model, init, ...) setting: its run at the largest labelled fraction, lowest seed. Each run
is rebuilt from its own config.json (weights from checkpoints/best, so no pretrained download), its
test split is read through the eval preprocessing, and the same test images (positives and negatives
alternating for binary tasks) are explained by every row. A run that fails is reported, not fatal.
"""

from __future__ import annotations

import pathlib

import numpy as np

from medtl_jax.report import plots
from medtl_jax.report.analysis import GroupSummary
from medtl_jax.report.collect import ordered_keys, short_key, sort_value
from medtl_jax.data import load_data
from medtl_jax.data.pipeline.batches import Transform, collate
from medtl_jax.inference.gradcam import gradcam, overlay
from medtl_jax.inference.prediction_model import load_run, run_config

MAX_SCANNED = 500  # test records read to find positives and negatives


def pick_rows(summaries: list[GroupSummary], keys: list[str], frac_key: str | None,
              segmentation: bool = False) -> list[tuple[str, object]]:
    """(row label, run) per setting without the fraction: the largest fraction's lowest-seed run; only
    segmentation groups when `segmentation`, else only classification ones."""
    best: dict[tuple, GroupSummary] = {}
    for s in summaries:
        if s.group.family.example_predictions == segmentation:
            continue
        rest = tuple(kv for kv in s.group.key if kv[0] != frac_key)
        current = best.get(rest)
        if current is None or (frac_key and sort_value(s.group.settings.get(frac_key))
                               > sort_value(current.group.settings.get(frac_key))):
            best[rest] = s
    others = [k for k in keys if k != frac_key]
    return [(s.group.label(others), s.group.runs[0]) for s in best.values()]


def _choose_indices(source, n: int, binary: bool) -> list[int]:
    """The first n test positions; binary tasks alternate positive and negative examples."""
    total = min(len(source), MAX_SCANNED)
    if not binary:
        return list(range(min(n, len(source))))
    pos, neg = [], []
    for i in range(total):
        (pos if int(np.asarray(source[i]["label"])) == 1 else neg).append(i)
        if len(pos) >= n and len(neg) >= n:
            break
    chosen = [x for pair in zip(pos, neg) for x in pair] + pos[len(neg):] + neg[len(pos):]
    return chosen[:n]


def explain_run(run_path: pathlib.Path, n: int, indices: list[int] | None = None):
    """(test positions, display images uint8, overlays uint8 RGB, captions) of a run's best checkpoint."""
    data = load_data(run_config(run_path).data)  # the test images
    run = load_run(run_path, "best", num_devices=1)  # Grad-CAM runs unsharded; any machine can rebuild it
    source = data.sources["test"]
    binary = run.info.task == "binary"
    indices = indices if indices is not None else _choose_indices(source, n, binary)
    records = [source[i] for i in indices]
    transform = Transform(run.preprocess)
    images = collate([transform(r) for r in records])["image"]
    cams = gradcam(run.model, run.host_variables(), images, class_index=None)
    shown = [transform.geometry(np.asarray(r["image"]), None) for r in records]
    overlays = [overlay(img, cam) for img, cam in zip(shown, cams)]
    names = run.info.label_names
    multilabel = run.info.task == "multilabel"
    captions = [f"#{i}" if multilabel else f"#{i} {names[int(np.asarray(r['label']))]}"
                for i, r in zip(indices, records)]
    return indices, shown, overlays, captions


def gradcam_section(summaries: list[GroupSummary], folder: pathlib.Path, n: int, rel) -> tuple[list[str], dict]:
    """Markdown lines and {'gradcam': path} of the Grad-CAM figure (rows: settings; first row: inputs)."""
    if not summaries:
        return [], {}
    keys = ordered_keys({k for s in summaries for k in s.group.settings})
    frac = next((k for k in keys if "fraction" in short_key(k)), None)
    rows, problems, indices, inputs = [], [], None, None
    for label, run in pick_rows(summaries, keys, frac):
        try:
            indices, shown, overlays, captions = explain_run(run.path, n, indices)
        except Exception as e:  # noqa: BLE001  (a failing model is reported, the report goes on)
            problems.append(f"- `{run.name}` ({label}): {type(e).__name__}: {e}")
            continue
        if inputs is None:
            inputs = ("test images", shown, captions)
        rows.append((label.replace(", ", "\n"), overlays, ["" for _ in overlays]))
    if not rows and not problems:
        return [], {}
    lines = ["## Grad-CAM", ""]
    figs = {}
    if rows:
        path = plots.image_grid_plot([inputs, *rows], folder / "gradcam.png",
                                     title="Grad-CAM of the predicted class (binary: the positive class)")
        figs["gradcam"] = path
        lines += [f"Grad-CAM (deepest feature map) of {len(indices)} test images per model: the best "
                  "checkpoint of each setting's lowest-seed run at its largest labelled fraction.", "",
                  f"![Grad-CAM]({rel(path)})", ""]
    if problems:
        lines += ["Grad-CAM could not be drawn for:", "", *problems, ""]
    return lines, figs
