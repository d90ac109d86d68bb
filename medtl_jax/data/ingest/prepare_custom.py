"""Folder / CSV manifest / DICOM folder -> TFDS dataset + splits.csv + summary + thumbnails.

Steps: manifest (medtl_jax.data.ingest.manifest) -> header probe (sizes, DICOM ids, frames) -> leakage and
label checks (files listed twice or with two labels, a patient in two given splits, empty class
folders: refused, or warned and listed with on_conflict='warn': medtl_jax.data.ingest.input_conflicts) ->
splits (the manifest's, else grouped by patient and stratified: medtl_jax.data.ingest.splits) -> TFDS build
(medtl_jax.data.sources.custom_dataset) -> files beside the dataset in <data_dir>/custom/<name>/1.0.0/:
  splits.csv         every written example: index, path, label(s), hashed patient id, site, split...
  skipped_files.csv  (path, reason) of unreadable files, with on_error='skip'
  summary.json/.md   counts per class/site/split, source sizes, intensity sample, skipped files,
                     input problems kept with on_conflict='warn'
  thumbnails.png     a few random images per class, one labelled row each
  custom_info.json   what load_custom needs (task, label names, channels, size, bits, attributes)
Images must share one size unless `image_size` is given (then all are resized, aspect ratio not
kept, to image_size x image_size); the stored size must be square. Every check runs before anything
is written: a refused input leaves no dataset folder (and --overwrite keeps the old one).
"""

from __future__ import annotations

import dataclasses
import io
import re
import secrets
import shutil
import time

import tensorflow_datasets as tfds

from medtl_jax.runtime.atomic_io import write_bytes_atomic, write_json_atomic, write_text_atomic
from medtl_jax.data.sources import builder_base, custom_dataset
from medtl_jax.data.ingest import dataset_summary, input_conflicts
from medtl_jax.data.ingest import manifest as manifest_lib
from medtl_jax.data.ingest import splits as splits_lib
from medtl_jax.data.ingest.dicom import DicomOptions
from medtl_jax.data.ingest.unreadable import Unreadable

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


@dataclasses.dataclass
class PrepareOptions:
    """The prepare_data command line as a dataclass (see launch/prepare_data.py for each flag)."""

    source: str
    name: str
    format: str | None = None
    data_dir: str | None = None
    on_error: str = "fail"
    on_conflict: str = "refuse"
    image_size: int | None = None
    window: str | None = None
    frame: int | str = 0
    bits: int = 8
    invert_monochrome1: bool = True
    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    path_column: str | None = None
    label_columns: tuple[str, ...] | None = None
    path_root: str | None = None
    keep_ids: bool = False
    salt: str | None = None
    overwrite: bool = False


def _geometry(probed, image_size: int | None) -> tuple[int, int, bool]:
    """(height, width, resized): the one shared size, or image_size; errors name example files."""
    if image_size:
        if image_size < 1:
            raise ValueError(f"--image_size must be positive, got {image_size}")
        return image_size, image_size, True
    first: dict[tuple[int, int], str] = {}
    for row, shape in probed:
        first.setdefault((shape.height, shape.width), row.path)
    if len(first) > 1:
        examples = "; ".join(f"{h}x{w} ({path})" for (h, w), path in list(first.items())[:3])
        raise ValueError(f"images have {len(first)} different sizes (HxW), e.g. {examples}; pass "
                         f"--image_size N to resize them all to NxN")
    (h, w), path = next(iter(first.items()))
    if h != w:
        raise ValueError(f"images are {h}x{w} (HxW, e.g. {path}), not square; pass --image_size N "
                         f"to resize them to NxN")
    return h, w, False


def prepare_custom(opts: PrepareOptions) -> dict:
    """Builds the dataset and its side files; returns the summary dict (also in summary.json)."""
    start = time.time()
    if not _NAME.match(opts.name or ""):
        raise ValueError(f"--name {opts.name!r} must be letters, digits, '_' or '-' (e.g. 'chest_cr')")
    if opts.on_conflict not in input_conflicts.ON_CONFLICT:
        raise ValueError(f"--on-conflict must be one of {input_conflicts.ON_CONFLICT}, got "
                         f"{opts.on_conflict!r}")
    data_dir = opts.data_dir or builder_base.default_data_dir()
    out_dir = custom_dataset.dataset_dir(data_dir, opts.name)
    if out_dir.exists() and not opts.overwrite:
        raise ValueError(f"dataset {opts.name!r} already exists at {out_dir}; pass --overwrite to "
                         f"rebuild it or choose another --name")
    manifest = manifest_lib.load_manifest(opts.source, opts.format, path_column=opts.path_column,
                                          label_columns=opts.label_columns,
                                          path_root=opts.path_root)
    dicom = DicomOptions(window=opts.window, frame=opts.frame, bits=opts.bits,
                         invert_monochrome1=opts.invert_monochrome1)
    unreadable = Unreadable(opts.on_error)
    probed = manifest_lib.probe_rows(manifest, dicom, unreadable)
    probed, problems = input_conflicts.resolve(probed, manifest, opts.on_conflict)
    if not probed:
        raise ValueError(f"no readable images in {opts.source} ({len(unreadable.items)} unreadable)")
    height, width, resized = _geometry(probed, opts.image_size)
    rows = [row for row, _ in probed]
    channels = max(shape.channels for _, shape in probed)
    split_of = splits_lib.assign_splits(rows, num_labels=len(manifest.label_names),
                                        multilabel=manifest.multilabel,
                                        val_fraction=opts.val_fraction,
                                        test_fraction=opts.test_fraction, seed=opts.seed)
    sites = tuple(sorted({r.site or "unknown" for r in rows})) if any(r.site for r in rows) else ()
    salt = opts.salt or secrets.token_hex(16)
    collector = dataset_summary.SummaryCollector(manifest.label_names, manifest.multilabel,
                                                 len(rows), seed=opts.seed)
    plan = custom_dataset.BuildPlan(
        examples=[(i, row, split) for i, (row, split) in enumerate(zip(rows, split_of))],
        label_names=manifest.label_names, multilabel=manifest.multilabel, height=height,
        width=width, channels=channels, bits=opts.bits, dicom=dicom, sites=sites, salt=salt,
        unreadable=unreadable, observe=collector.observe)
    if out_dir.exists():  # --overwrite, and every check passed
        shutil.rmtree(out_dir)
    builder = custom_dataset.CustomImages(
        plan=plan, config=tfds.core.BuilderConfig(name=opts.name, description=str(opts.source)),
        data_dir=data_dir, file_format="array_record")
    try:
        builder_base.prepare(builder)
    except AssertionError as exc:  # TFDS refuses a split that ended up empty
        raise ValueError(f"a split has no readable images left ({exc}); see the skipped files") from exc

    written = sorted(collector.written, key=lambda t: t[0])
    splits_lib.write_split_csv(out_dir / "splits.csv", [r for _, r, _ in written],
                               [s for _, _, s in written], [i for i, _, _ in written], manifest,
                               salt=salt, keep_ids=opts.keep_ids)
    if opts.on_error == "skip":
        unreadable.write_csv(out_dir / "skipped_files.csv")
    task = "multilabel" if manifest.multilabel else \
        ("binary" if len(manifest.label_names) == 2 else "multiclass")
    write_json_atomic(out_dir / custom_dataset.INFO_FILE, {
        "task": task, "num_classes": len(manifest.label_names),
        "label_names": list(manifest.label_names), "channels": channels, "image_size": height,
        "bits": opts.bits, "attributes": ["site"] if sites else []})
    shape_of = {id(row): shape for row, shape in probed}
    generated = not all(r.split for r in rows)
    summary = {
        "name": opts.name, "format": manifest.source, "task": task,
        "label_names": list(manifest.label_names), "channels": channels,
        "image_size": [height, width], "bits": opts.bits, "resized": resized,
        "dicom": {"window": opts.window or "header VOI", "frame": opts.frame,
                  "invert_monochrome1": opts.invert_monochrome1}
        if any(r.frame is not None for r in rows) else None,
        "splits_from": (f"generated: grouped by patient, stratified, seed {opts.seed}, val "
                        f"{opts.val_fraction}, test {opts.test_fraction}") if generated
        else "manifest split column",
        "counts": collector.counts(sites),
        "source_image_size": dataset_summary.size_stats(
            [(shape_of[id(r)].height, shape_of[id(r)].width) for _, r, _ in written]),
        "intensity": collector.intensity(),
        "groups": {"count": len({splits_lib.group_key(r) for _, r, _ in written}),
                   "rows_without_patient_id": sum(not r.patient for _, r, _ in written),
                   "in_several_splits": splits_lib.groups_in_several_splits(
                       [r for _, r, _ in written], [s for _, _, s in written])},
        "skipped_files": [{"path": p, "reason": why} for p, why in unreadable.items],
        "input_problems": [p.record() for p in problems],
        "dataset_dir": str(out_dir),
        "build_seconds": round(time.time() - start, 2),
    }
    write_json_atomic(out_dir / "summary.json", summary)
    write_text_atomic(out_dir / "summary.md", dataset_summary.markdown(summary))
    png = io.BytesIO()
    dataset_summary.thumbnail_grid(collector).save(png, format="png")
    write_bytes_atomic(out_dir / "thumbnails.png", png.getvalue())
    return summary
