"""Apply a finished run to new images: probabilities (or masks) per image, written as one CSV.

Classification scores go through the trainer's own evaluation path (`evaluate.predict` with the run's
`Preprocess`), so an image scored here gets exactly the score the run gave it in predictions_test.npz.
The CSV has `path`, the input CSV's other columns, `p_<label name>` per class (binary: both classes;
multi-label: per label) and `predicted` (the class, or the labels at or above the threshold joined by
';'); with Grad-CAM a `gradcam` column names each overlay PNG. Segmentation runs predict every image
whole with the run's sliding-window evaluator and write one mask PNG per image (binary 0/255, else the
class index); the CSV lists `mask` and `foreground_fraction`.

Unreadable inputs are listed in `<out stem>.unreadable.csv` (path, reason) and counted; with none, that
file does not exist (an old one is removed).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import pathlib
import tempfile

import jax.numpy as jnp
import numpy as np
import PIL.Image

from medtl_jax.tasks.classification import evaluate

from medtl_jax.inference import gradcam
from medtl_jax.runtime.atomic_io import write_bytes_atomic, write_text_atomic
from medtl_jax.data.ingest.image_files import DicomOptions, UnreadableImageError
from medtl_jax.data.pipeline.batches import Transform, collate
from medtl_jax.inference.prediction_inputs import InputItem, PredictionInputs, read_for_run
from medtl_jax.inference.prediction_model import RestoredRun
from medtl_jax.train.segmentation_run import window_predictor

CHUNK_BATCHES = 4  # images read and held at once: this many batches


@dataclasses.dataclass
class PredictionSummary:
    """What a prediction call wrote: counts and paths (unreadable_csv / outputs_dir None when absent)."""

    out: pathlib.Path
    predicted: int
    unreadable: int
    skipped: int
    unreadable_csv: pathlib.Path | None
    outputs_dir: pathlib.Path | None

    def line(self) -> str:
        """One human-readable summary line."""
        text = f"predicted {self.predicted} images -> {self.out}"
        if self.outputs_dir is not None:
            text += f" (images in {self.outputs_dir})"
        text += f"; {self.unreadable} unreadable"
        if self.unreadable_csv is not None:
            text += f" (listed in {self.unreadable_csv})"
        if self.skipped:
            text += f"; {self.skipped} non-image files in the input folder ignored"
        return text


def unreadable_path(out: pathlib.Path) -> pathlib.Path:
    """Where the unreadable inputs of `out` are listed: preds.csv -> preds.unreadable.csv."""
    return out.with_name(f"{out.stem}.unreadable.csv")


def _nearest_existing(path: pathlib.Path) -> pathlib.Path:
    """`path` itself or its closest ancestor that exists."""
    return next(p for p in (path, *path.parents) if p.exists())


def check_writable(path: str | pathlib.Path, *, folder: bool = False) -> None:
    """Fails now, naming `path`, where writing it later would fail: creates its missing parent folders
    (`folder`: the folder itself), then a temp file there (removed). IsADirectoryError for a file path
    that is a folder, NotADirectoryError where a file stands in the way, PermissionError otherwise."""
    path = pathlib.Path(path)
    target = path if folder else path.parent
    if not folder and path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a folder (give a file, e.g. {path / 'preds.csv'})")
    blocker = _nearest_existing(target)
    if not blocker.is_dir():
        raise NotADirectoryError(f"cannot write {path}: {blocker} is a file, not a folder")
    try:
        target.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=target, prefix=".write_check.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise PermissionError(f"cannot write {path}: {e.strerror or e}") from e


def csv_text(rows: list[dict], columns: list[str]) -> str:
    """`rows` as CSV text with a header of `columns` (missing values and NaN as '', floats in full)."""
    def cell(value):
        if isinstance(value, (float, np.floating)):
            return "" if math.isnan(value) else repr(float(value))
        return "" if value is None else value

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([cell(row.get(c)) for c in columns] for row in rows)
    return buf.getvalue()


def class_names(info) -> list[str]:
    """The run's class (or label) names; indices as text where the dataset gave none."""
    names = [str(n) for n in info.label_names]
    return names if len(names) == info.num_classes else [str(k) for k in range(info.num_classes)]


def probability_columns(kind: str, names: list[str], scores: np.ndarray, threshold: float) -> dict:
    """{'p_<name>': column, ..., 'predicted': labels} from task scores ([N] binary, else [N, K])."""
    scores = np.asarray(scores, np.float64)
    if kind == "binary":
        probs = np.stack([1.0 - scores, scores], axis=-1)
        predicted = [names[int(s >= threshold)] for s in scores]
    elif kind == "multilabel":
        probs = scores
        predicted = [";".join(n for n, p in zip(names, row) if p >= threshold) for row in scores]
    else:
        probs = scores
        predicted = [names[k] for k in np.argmax(scores, axis=-1)]
    columns = {f"p_{n}": probs[:, k] for k, n in enumerate(names)}
    columns["predicted"] = predicted
    return columns


def coral_grade_score(logits):
    """Grad-CAM target of a CORAL head: the sum of its cumulative logits, which grows with the grade."""
    return logits.sum(axis=-1)


def _read_chunk(items: list[InputItem], channels: int, dicom, unreadable: list[dict]):
    """(items, images) that could be read; the rest appended to `unreadable` with the reason."""
    ok, images = [], []
    for item in items:
        try:
            images.append(read_for_run(item, channels, dicom))
            ok.append(item)
        except UnreadableImageError as e:
            unreadable.append({"path": item.path, "reason": e.reason})
    return ok, images


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    PIL.Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


class _Classifier:
    """Scores (and optionally Grad-CAM overlays) for chunks of images of a classification run."""

    def __init__(self, run: RestoredRun, batch: int, gradcam_dir: pathlib.Path | None):
        self.run, self.batch, self.gradcam_dir = run, batch, gradcam_dir
        self.names = class_names(run.info)
        self.variables = run.host_variables() if gradcam_dir is not None else None
        self.columns = [f"p_{n}" for n in self.names] + ["predicted"] + (["gradcam"] if gradcam_dir else [])

    def rows(self, items: list[InputItem], images: list[np.ndarray]) -> list[dict]:
        source = [{"image": img, "label": np.int32(0), "index": np.int64(i)} for i, img in enumerate(images)]
        preds = evaluate.predict(self.run.eval_step(), self.run.state, source, global_batch=self.batch,
                                 preprocess=self.run.preprocess, mesh=self.run.mesh)
        columns = probability_columns(self.run.info.task, self.names, preds.scores,
                                      float(self.run.config.eval.threshold))
        rows = [{k: v[i] for k, v in columns.items()} for i in range(len(items))]
        if self.gradcam_dir is not None:
            for row, path in zip(rows, self._overlays(items, images, source)):
                row["gradcam"] = str(path)
        return rows

    def _overlays(self, items, images, source) -> list[pathlib.Path]:
        transform, paths = Transform(self.run.preprocess), []
        score_fn = coral_grade_score if self.run.task.head == "coral" else None
        for first in range(0, len(items), self.batch):
            part = range(first, min(first + self.batch, len(items)))
            pre = self.run.preprocess
            inputs = np.zeros((self.batch, pre.input_size, pre.input_size, pre.channels), np.float32)  # 1 compile
            inputs[:len(part)] = collate([transform(source[i]) for i in part])["image"]
            cams = gradcam.gradcam_details(self.run.model, self.variables, jnp.asarray(inputs),
                                           score_fn=score_fn).cams
            for i, cam in zip(part, cams):
                path = self.gradcam_dir / f"{items[i].name}_gradcam.png"
                gradcam.save_overlay_png(path, images[i], cam)
                paths.append(path)
        return paths


class _Segmenter:
    """Whole-image masks for chunks of images of a segmentation run (the run's sliding-window predictor)."""

    def __init__(self, run: RestoredRun, batch: int, mask_dir: pathlib.Path):
        self.run, self.mask_dir, self.threshold = run, mask_dir, float(run.config.eval.threshold)
        self.columns = ["mask", "foreground_fraction"]
        self.predictor = window_predictor(run.config, run.built, run.mesh, batch)

    def rows(self, items: list[InputItem], images: list[np.ndarray]) -> list[dict]:
        source = [{"image": img, "mask": np.zeros(img.shape[:2], np.uint8), "fov": np.ones(img.shape[:2], np.uint8),
                   "id": item.name, "index": i} for i, (item, img) in enumerate(zip(items, images))]
        rows = []
        for item, pred in zip(items, self.predictor.predict(self.run.state, source)):
            probs = pred["probs"]
            task = self.run.task
            mask = task.predict_mask(probs[..., 0] if task.binary else probs, self.threshold)
            path = self.mask_dir / f"{item.name}_mask.png"
            write_bytes_atomic(path, _png((mask * 255 if task.binary else mask).astype(np.uint8)))
            rows.append({"mask": str(path), "foreground_fraction": float(np.mean(mask > 0))})
        return rows


def predict_inputs(run: RestoredRun, inputs: PredictionInputs, out: str | pathlib.Path, *, batch_size: int = 64,
                   gradcam_dir: str | pathlib.Path | None = None,
                   dicom: DicomOptions | None = None) -> PredictionSummary:
    """Predicts every input image with `run`, writes the CSV at `out` (and masks / Grad-CAM overlays).

    batch_size is rounded up to a multiple of the device count. gradcam_dir (classification only): write
    one Grad-CAM overlay per image there, at the image's own size, explaining the predicted class
    (binary: the positive class). Where `out` (or gradcam_dir) cannot be written this fails before any
    inference (`check_writable`).
    """
    out = pathlib.Path(out)
    n_dev = run.mesh.devices.size
    batch = -(-max(1, int(batch_size)) // n_dev) * n_dev
    if run.segmentation and gradcam_dir is not None:
        raise ValueError("Grad-CAM explains classifiers; this run segments images (its masks are the output)")
    check_writable(out)
    if gradcam_dir is not None:
        check_writable(gradcam_dir, folder=True)
    if run.segmentation:
        extra_dir = out.with_name(f"{out.stem}_masks")
        worker = _Segmenter(run, batch, extra_dir)
    else:
        extra_dir = pathlib.Path(gradcam_dir) if gradcam_dir is not None else None
        worker = _Classifier(run, batch, extra_dir)
    channels = 3 if run.segmentation else run.info.channels
    rows, unreadable = [], []
    step = batch * CHUNK_BATCHES
    for first in range(0, len(inputs.items), step):
        items, images = _read_chunk(inputs.items[first:first + step], channels, dicom, unreadable)
        if items:
            for item, row in zip(items, worker.rows(items, images)):
                rows.append({"path": item.path, **item.columns, **row})
    columns = ["path", *inputs.id_columns, *[c for c in worker.columns if c not in inputs.id_columns]]
    write_text_atomic(out, csv_text(rows, columns))
    bad_csv = unreadable_path(out)
    if unreadable:
        write_text_atomic(bad_csv, csv_text(unreadable, ["path", "reason"]))
    elif bad_csv.exists():
        bad_csv.unlink()  # a list left by an earlier call would describe other inputs
    return PredictionSummary(out=out, predicted=len(rows), unreadable=len(unreadable), skipped=len(inputs.skipped),
                             unreadable_csv=bad_csv if unreadable else None,
                             outputs_dir=extra_dir if rows else None)
