"""Users' images -> a Manifest: one row per example (path, label(s), patient, site, split, frame).

Sources:
  folder  root/<class>/**/<file> with a suffix in IMAGE_SUFFIXES or DICOM_SUFFIXES; the class is the
          first-level sub-folder name (sorted names -> class ids); hidden files are ignored. A
          sub-folder without such files is no class: it is listed in `Manifest.empty_folders`
          (prepare_data refuses it unless --on-conflict=warn: medtl_jax.data.ingest.input_conflicts).
  dicom   the same layout (root/<class>/**), keeping only DICOM files: *.dcm, *.dicom and suffix-less
          files with the 'DICM' preamble. (DICOM listed in a CSV manifest works too: format csv.)
  csv     one row per image. Columns: `path` (or image/file/filename/image_path; relative paths are
          relative to `path_root`, default the CSV's folder), `label` (class names or integers) or
          several 0/1 label columns for multi-label (`label_columns`), and optional `patient_id`
          (or `patient`), `site`, `split` (train | val | validation | test), `frame` (DICOM frame
          index). Other columns are kept as metadata and written back to the split CSV.
Single-label class ids are the ranks of the sorted class values (numeric order when all are integers).

`probe_rows` then reads every header once: the image size, DICOM PatientID/SeriesInstanceUID (used
for grouping when the row has no patient_id) and frame counts ('expand' makes one row per frame).
"""

from __future__ import annotations

import csv
import dataclasses
import os
import pathlib

from medtl_jax.data.ingest import image_files
from medtl_jax.data.ingest.dicom import DicomOptions, UnreadableImageError
from medtl_jax.data.ingest.unreadable import Unreadable

PATH_COLUMNS = ("path", "image", "file", "filename", "image_path")
PATIENT_COLUMNS = ("patient_id", "patient")
RESERVED_COLUMNS = ("index", "group")  # written by us into split CSVs; not user metadata
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "validation", "valid": "validation",
                 "validation": "validation", "test": "test", "testing": "test"}
FORMATS = ("folder", "dicom", "csv")


@dataclasses.dataclass(frozen=True)
class Row:
    """One example: absolute path, label (class id as a 1-tuple, or a multi-hot tuple), optional
    patient/site/split/frame, the DICOM series, where it came from (e.g. 'a.csv row 3') and metadata."""

    path: str
    label: tuple[int, ...]
    patient: str | None = None
    site: str | None = None
    split: str | None = None
    frame: int | None = None
    series: str | None = None
    origin: str = ""
    extra: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass
class Manifest:
    """Rows plus what they mean: class/label names, multi-label or not, the root of relative paths."""

    rows: list[Row]
    label_names: tuple[str, ...]
    multilabel: bool
    root: str
    source: str
    extra_columns: tuple[str, ...] = ()
    empty_folders: tuple[str, ...] = ()  # class sub-folders of an image folder holding no images


def _is_wanted(path: pathlib.Path, fmt: str) -> bool:
    suffix = path.suffix.lower()
    if fmt == "dicom":
        return suffix in image_files.DICOM_SUFFIXES or (suffix == "" and image_files.is_dicom(path))
    return suffix in image_files.IMAGE_SUFFIXES + image_files.DICOM_SUFFIXES


def folder_manifest(root: str | os.PathLike, fmt: str = "folder") -> Manifest:
    """root/<class>/** -> Manifest (class = sub-folder name); fmt 'dicom' keeps DICOM files only."""
    root = pathlib.Path(root).resolve()
    if not root.is_dir():
        raise ValueError(f"image folder {root} does not exist or is not a folder")
    files_by_class: dict[str, list[pathlib.Path]] = {}
    empty: list[str] = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found = []
        for folder, dirs, names in os.walk(sub):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found += [pathlib.Path(folder) / n for n in sorted(names)
                      if not n.startswith(".") and _is_wanted(pathlib.Path(folder) / n, fmt)]
        if found:
            files_by_class[sub.name] = found
        else:
            empty.append(str(sub))
    kinds = "DICOM files" if fmt == "dicom" else \
        f"images ({', '.join(image_files.IMAGE_SUFFIXES + image_files.DICOM_SUFFIXES)})"
    if len(files_by_class) < 2:
        without = f" (without any: {', '.join(pathlib.Path(e).name for e in empty)})" if empty else ""
        raise ValueError(f"image folder {root} needs at least two class sub-folders holding {kinds} "
                         f"(layout root/<class>/<file>); found {sorted(files_by_class) or 'none'}"
                         f"{without}")
    names = tuple(files_by_class)
    rows = [Row(path=str(f), label=(k,), origin=f"class folder {name!r}")
            for k, name in enumerate(names) for f in files_by_class[name]]
    return Manifest(rows=rows, label_names=names, multilabel=False, root=str(root), source=fmt,
                    empty_folders=tuple(empty))


def _class_ids(values: list[str]) -> tuple[tuple[str, ...], dict[str, int]]:
    """Sorted distinct class values (numerically when all are integers) and value -> id."""
    distinct = set(values)
    try:
        names = tuple(sorted(distinct, key=lambda v: (int(v), v)))
    except ValueError:
        names = tuple(sorted(distinct))
    return names, {name: k for k, name in enumerate(names)}


def _binary(value: str, where: str, column: str) -> int:
    text = value.strip().lower()
    if text in ("1", "1.0", "true"):
        return 1
    if text in ("0", "0.0", "false"):
        return 0
    raise ValueError(f"{where}: multi-label column {column!r} must hold 0 or 1, got {value!r}")


def _pick(columns: list[str], wanted: str | None, candidates: tuple[str, ...], what: str,
          csv_path) -> str | None:
    if wanted:
        if wanted not in columns:
            raise ValueError(f"CSV {csv_path} has no {what} column {wanted!r}; columns: {columns}")
        return wanted
    return next((c for c in candidates if c in columns), None)


def csv_manifest(csv_path: str | os.PathLike, *, path_column: str | None = None,
                 label_columns: list[str] | tuple[str, ...] | None = None,
                 path_root: str | os.PathLike | None = None) -> Manifest:
    """A CSV manifest -> Manifest (see the module docstring for columns). Bad values are errors that
    name the CSV, the row (1 = first data row; its file line is one more) and the column."""
    csv_path = pathlib.Path(csv_path).resolve()
    if not csv_path.is_file():
        raise ValueError(f"CSV manifest {csv_path} does not exist")
    root = pathlib.Path(path_root).resolve() if path_root else csv_path.parent
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        records = [r for r in reader if any(cell.strip() for cell in r)]
    if len(set(header)) != len(header):
        raise ValueError(f"CSV {csv_path} has duplicate column names: {header}")
    path_col = _pick(header, path_column, PATH_COLUMNS, "path", csv_path)
    if path_col is None:
        raise ValueError(f"CSV {csv_path} needs a path column (one of {PATH_COLUMNS} or "
                         f"--path_column); columns: {header}")
    labels = list(label_columns) if label_columns else (["label"] if "label" in header else [])
    if not labels:
        raise ValueError(f"CSV {csv_path} needs a 'label' column or --label_columns; columns: {header}")
    for col in labels:
        _pick(header, col, (), "label", csv_path)
    multilabel = len(labels) > 1
    patient_col = _pick(header, None, PATIENT_COLUMNS, "patient", csv_path)
    used = {path_col, patient_col, "site", "split", "frame", *labels, *RESERVED_COLUMNS}
    extra_cols = tuple(c for c in header if c not in used)
    name = csv_path.name

    parsed = []
    for i, record in enumerate(records, start=1):
        if len(record) != len(header):
            raise ValueError(f"{name} row {i} (line {i + 1}): {len(record)} fields, header has "
                             f"{len(header)}")
        cells = {c: v.strip() for c, v in zip(header, record)}
        where = f"{name} row {i} (line {i + 1})"
        if not cells[path_col]:
            raise ValueError(f"{where}: empty {path_col!r}")
        for col in labels:
            if not cells[col]:
                raise ValueError(f"{where}: empty label column {col!r}")
        split = cells.get("split", "")
        if split and split.lower() not in SPLIT_ALIASES:
            raise ValueError(f"{where}: split {split!r} is not one of train/val/validation/test")
        frame = cells.get("frame", "")
        if frame and not frame.isdigit():
            raise ValueError(f"{where}: frame {frame!r} is not a non-negative integer")
        parsed.append((where, cells, SPLIT_ALIASES.get(split.lower()) if split else None,
                       int(frame) if frame else None))
    if not parsed:
        raise ValueError(f"CSV {csv_path} has no data rows")

    if multilabel:
        names = tuple(labels)
        label_of = lambda where, cells: tuple(_binary(cells[c], where, c) for c in labels)  # noqa: E731
    else:
        names, ids = _class_ids([cells[labels[0]] for _, cells, _, _ in parsed])
        if len(names) < 2:
            raise ValueError(f"CSV {csv_path}: column {labels[0]!r} has one class only ({names})")
        label_of = lambda where, cells: (ids[cells[labels[0]]],)  # noqa: E731
    rows = []
    for where, cells, split, frame in parsed:
        path = pathlib.Path(cells[path_col])
        rows.append(Row(path=str(path if path.is_absolute() else root / path),
                        label=label_of(where, cells),
                        patient=(cells.get(patient_col) or None) if patient_col else None,
                        site=cells.get("site") or None, split=split, frame=frame, origin=where,
                        extra=tuple((c, cells[c]) for c in extra_cols)))
    return Manifest(rows=rows, label_names=names, multilabel=multilabel, root=str(root),
                    source="csv", extra_columns=extra_cols)


def load_manifest(source: str | os.PathLike, fmt: str | None = None, *,
                  path_column: str | None = None, label_columns=None,
                  path_root: str | os.PathLike | None = None) -> Manifest:
    """Folder or CSV -> Manifest; `fmt` None guesses: a .csv file -> 'csv', a folder -> 'folder'.
    The column options apply to CSV manifests only."""
    fmt = fmt or ("csv" if str(source).lower().endswith(".csv") else "folder")
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {FORMATS}, got {fmt!r}")
    if fmt == "csv":
        return csv_manifest(source, path_column=path_column, label_columns=label_columns,
                            path_root=path_root)
    if path_column or label_columns or path_root:
        raise ValueError("--path_column, --label_columns and --path_root apply to CSV manifests only "
                         f"(--format csv), not to --format {fmt}")
    return folder_manifest(source, fmt)


def probe_rows(manifest: Manifest, dicom: DicomOptions, unreadable: Unreadable
               ) -> list[tuple[Row, image_files.ImageShape]]:
    """Reads every header once: (row, shape) pairs, DICOM ids filled in, frames chosen or expanded.

    Unreadable headers and missing files go to `unreadable` (raise or skip). A DICOM row keeps its
    CSV patient_id when it has one; otherwise PatientID (then SeriesInstanceUID) groups it.
    """
    out = []
    for row in manifest.rows:
        try:
            shape = image_files.probe(row.path)
            frames = [row.frame]
            if image_files.is_dicom(row.path):
                row = dataclasses.replace(row, patient=row.patient or shape.patient_id,
                                          series=shape.series_uid)
            if image_files.is_dicom(row.path) and row.frame is None:
                frames = list(range(shape.frames)) if dicom.frame == "expand" else [dicom.frame]
            for k in frames:
                if k is not None and k >= shape.frames:
                    raise UnreadableImageError(row.path, f"frame {k} requested but the file has "
                                                         f"{shape.frames} frame(s)")
        except UnreadableImageError as err:
            unreadable.report_error(err, row.origin)
            continue
        out += [(dataclasses.replace(row, frame=k), shape) for k in frames]
    return out
