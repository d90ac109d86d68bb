"""Figures of a sweep report (matplotlib, Agg backend), each written atomically as a PNG.

Every function takes already-collected data, writes one file and returns its path (None when there is
nothing to draw). Figures with many groups are split into panels by the labelled fraction.
"""

from __future__ import annotations

import io
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from medtl_jax.runtime.atomic_io import write_bytes_atomic  # noqa: E402
from medtl_jax.tasks.classification.metrics import MULTICLASS_KINDS  # noqa: E402

DPI = 110


def save_png(fig, path: pathlib.Path) -> pathlib.Path:
    """Renders `fig` to PNG in memory, writes it atomically, closes the figure."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    finally:
        plt.close(fig)
    return write_bytes_atomic(path, buf.getvalue())


def _style(ax, lines: int) -> None:
    """Up to 10 lines: matplotlib's default colours; more: 20 distinct ones (tab20)."""
    if lines > 10:
        ax.set_prop_cycle(color=plt.get_cmap("tab20")(np.arange(20) / 20.0))


def _panel_grid(n: int, width: float = 5.0, height: float = 4.0):
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()[:n]


def data_efficiency_plot(table: dict, path: pathlib.Path) -> pathlib.Path | None:
    """Test metric (mean ± std band over seeds) against the labelled fraction, log x, one line per setting."""
    if table is None or not table["lines"]:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    _style(ax, len(table["lines"]))
    for label, points in table["lines"].items():
        xs = sorted(x for x in points if isinstance(x, (int, float)))
        if not xs:
            continue
        mean = np.array([points[x][0] for x in xs], float)
        std = np.nan_to_num(np.array([points[x][1] for x in xs], float))
        ax.plot(xs, mean, marker="o", label=label)
        ax.fill_between(xs, mean - std, mean + std, alpha=0.2)
    ax.set_xscale("log")
    ax.set_xlabel(f"{table['key']} (log scale)")
    ax.set_ylabel(f"test {table['metric']} (mean ± std over seeds)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Data efficiency")
    return save_png(fig, path)


def _binary_view(kind: str, labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """(0/1 labels, scores, name) for a curve: binary as is; otherwise micro-averaged one-vs-rest."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    if kind == "binary":
        return labels.reshape(-1).astype(int), scores.reshape(-1), "binary"
    if kind in MULTICLASS_KINDS:
        onehot = np.eye(scores.shape[1], dtype=int)[labels.astype(int)]
        return onehot.ravel(), scores.ravel(), "micro one-vs-rest"
    return labels.ravel().astype(int), scores.ravel(), "micro over labels"


def roc_plot(panels: dict[str, list[tuple[str, str, object]]], path: pathlib.Path) -> pathlib.Path | None:
    """ROC curves, panels {title: [(label, kind, Predictions)]} with each group's lowest-seed run."""
    panels = {t: c for t, c in panels.items() if c}
    if not panels:
        return None
    fig, axes = _panel_grid(len(panels))
    for ax, (title, curves) in zip(axes, panels.items()):
        view = "binary"
        _style(ax, len(curves))
        for label, kind, p in curves:
            y, s, view = _binary_view(kind, p.labels, p.scores)
            if len(np.unique(y)) < 2:
                continue
            fpr, tpr, _ = roc_curve(y, s)
            ax.plot(fpr, tpr, label=label, lw=1.2)
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title(title + ("" if view == "binary" else f" ({view})"), fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
    return save_png(fig, path)


def training_curves_plot(curves: list[tuple[str, list[dict]]], select_metric: str,
                         path: pathlib.Path) -> pathlib.Path | None:
    """Train loss and validation `select_metric` against step, one line per group (its lowest seed)."""
    curves = [(label, log) for label, log in curves if log]
    if not curves:
        return None
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(12, 4.2))
    _style(ax_loss, len(curves))
    _style(ax_val, len(curves))
    for label, log in curves:
        train = [(r["step"], r["loss"]) for r in log if r.get("split") == "train" and "loss" in r]
        val = [(r["step"], r[select_metric]) for r in log if r.get("split") == "val" and select_metric in r]
        if train:
            ax_loss.plot(*zip(*train), lw=1.0, label=label)
        if val:
            ax_val.plot(*zip(*val), marker=".", lw=1.0, label=label)
    ax_loss.set_yscale("log")
    ax_loss.set(xlabel="step", ylabel="training loss", title="Training loss")
    ax_val.set(xlabel="step", ylabel=f"validation {select_metric}", title=f"Validation {select_metric}")
    for ax in (ax_loss, ax_val):
        ax.grid(True, alpha=0.3)
    ax_val.legend(fontsize=7)
    return save_png(fig, path)


def reliability(kind: str, labels: np.ndarray, scores: np.ndarray, num_bins: int = 10):
    """(mean predicted probability, observed frequency, count) per equal-width bin of a reliability diagram.

    Binary: the positive-class probability against the fraction of positives; multi-label: the same with
    every (example, label) pooled; multi-class/ordinal: top-label confidence against accuracy.
    Bin b holds (edges[b], edges[b+1]] (0 joins the first bin); empty bins give NaN."""
    labels, scores = np.asarray(labels), np.asarray(scores, float)
    if kind in MULTICLASS_KINDS:
        conf, hit = scores.max(-1), (scores.argmax(-1) == labels).astype(float)
    else:
        conf, hit = scores.ravel(), labels.ravel().astype(float)
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    bins = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, num_bins - 1)
    counts = np.bincount(bins, minlength=num_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(bins, weights=conf, minlength=num_bins) / counts
        freq = np.bincount(bins, weights=hit, minlength=num_bins) / counts
    return mean_conf, freq, counts


def reliability_plot(panels: dict[str, list[tuple[str, str, list]]], path: pathlib.Path,
                     num_bins: int = 10) -> pathlib.Path | None:
    """Reliability diagrams, panels {title: [(label, kind, [Predictions of every seed])]} (seeds pooled)."""
    panels = {t: c for t, c in panels.items() if c}
    if not panels:
        return None
    fig, axes = _panel_grid(len(panels))
    for ax, (title, curves) in zip(axes, panels.items()):
        _style(ax, len(curves))
        for label, kind, preds in curves:
            labels = np.concatenate([p.labels for p in preds])
            scores = np.concatenate([p.scores for p in preds])
            conf, acc, counts = reliability(kind, labels, scores, num_bins)
            keep = counts > 0
            ax.plot(conf[keep], acc[keep], marker="o", ms=3, lw=1.0, label=label)
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        top = any(kind in MULTICLASS_KINDS for _, kind, _ in curves)
        ax.set_xlabel("top-label confidence" if top else "predicted probability of the positive class")
        ax.set_ylabel("accuracy" if top else "observed fraction of positives")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    return save_png(fig, path)


def image_grid_plot(rows: list[tuple[str, list[np.ndarray], list[str]]], path: pathlib.Path,
                    title: str = "") -> pathlib.Path | None:
    """A grid of uint8 images: one row per (row label, images, captions)."""
    rows = [r for r in rows if r[1]]
    if not rows:
        return None
    cols = max(len(images) for _, images, _ in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.2 * cols, 2.4 * len(rows)), squeeze=False)
    for axrow, (label, images, captions) in zip(axes, rows):
        for j, ax in enumerate(axrow):
            ax.axis("off")
            if j < len(images):
                img = images[j]
                ax.imshow(img if img.ndim == 3 and img.shape[-1] == 3 else np.squeeze(img), cmap="gray")
                ax.set_title(captions[j] if j < len(captions) else "", fontsize=7)
        axrow[0].text(-0.08, 0.5, label, transform=axrow[0].transAxes, rotation=90, va="center", ha="right",
                      fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_png(fig, path)
