"""Leakage and label errors in a prepared manifest: refuse them (default) or warn and carry on.

Checked after the headers are read (so DICOM frames and header patient ids are known), keyed by the
file's resolved path (a symlink or a second spelling of one file is the same file) and frame:
  conflicting_labels         one file listed with two different labels
  duplicate_file             one file listed twice with the same label
  patient_in_several_splits  the manifest's own split column puts one patient (else DICOM series,
                             else file) in two splits
  empty_class_folder         an image-folder class sub-folder without images (the class would vanish)
on_conflict='refuse' raises one ValueError line: the first problem, the count of all, how to fix it.
'warn' prints one warning line per problem and applies its remedy: a duplicate keeps its first row,
a file with two labels loses all its rows (never train on an image with two labels), splits stay
as given, an empty folder is left out. `Problem.record()` is what summary.json lists (no patient id).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Sequence

from medtl_jax.data.ingest.manifest import Manifest, Row
from medtl_jax.data.ingest.splits import SPLITS, group_key

ON_CONFLICT = ("refuse", "warn")
FLAG = "--on-conflict=warn"


@dataclasses.dataclass(frozen=True)
class Problem:
    """One input problem: what (naming the file/patient/folder), the fix, and what 'warn' does."""

    kind: str
    what: str
    fix: str
    remedy: str  # what --on-conflict=warn does about it, e.g. "keep only the first row"
    done: str  # the same, done: e.g. "kept the first row"
    private_what: str = ""  # `what` without patient ids, for summary.json

    def record(self) -> dict:
        """The summary.json entry."""
        return {"kind": self.kind, "problem": self.private_what or self.what, "action": self.done}


def _label_text(manifest: Manifest, label: tuple[int, ...]) -> str:
    if manifest.multilabel:
        return "+".join(n for n, v in zip(manifest.label_names, label) if v) or "no label"
    return manifest.label_names[label[0]]


def _as(first: Row, other: Row) -> str:
    return "" if other.path == first.path else f", as {other.path}"


def _two_labels(rows: Sequence[Row], manifest: Manifest) -> Problem:
    a = rows[0]
    b = next(r for r in rows if r.label != a.label)
    what = (f"{a.path} has two labels: {_label_text(manifest, a.label)!r} ({a.origin}) and "
            f"{_label_text(manifest, b.label)!r} ({b.origin}{_as(a, b)})")
    n = len(rows)
    return Problem("conflicting_labels", what, "give the file one label",
                   "drop every row of such files", f"dropped its {n} rows")


def _listed_twice(rows: Sequence[Row]) -> Problem:
    a, b = rows[0], rows[1]
    times = "twice" if len(rows) == 2 else f"{len(rows)} times"
    where = f"{a.origin} and {b.origin}{_as(a, b)}" + ("" if len(rows) == 2 else ", ...")
    return Problem("duplicate_file", f"{a.path} is listed {times}: {where}",
                   "remove the repeated rows", "keep only the first row of each",
                   "kept the first row")


def file_problems(rows: Sequence[Row], manifest: Manifest) -> tuple[list[Problem], set[int]]:
    """Files with two labels or listed twice (same resolved path and frame): the problems and the
    row indices that 'warn' drops (all rows of a file with two labels, the repeats of a duplicate)."""
    by_file: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_file.setdefault(os.path.realpath(row.path), []).append(i)
    problems, drop = [], set()
    for indices in by_file.values():
        by_frame: dict[int, list[int]] = {}
        for i in indices:
            by_frame.setdefault(rows[i].frame or 0, []).append(i)
        clashes = [[rows[i] for i in ix] for ix in by_frame.values() if len(ix) > 1]
        labelled = next((c for c in clashes if len({r.label for r in c}) > 1), None)
        if labelled:
            problems.append(_two_labels(labelled, manifest))
            drop.update(indices)
        elif clashes:
            problems.append(_listed_twice(clashes[0]))
            drop.update(i for ix in by_frame.values() for i in ix[1:])
    return problems, drop


def _who(key: str, row: Row, named_patients: set[str]) -> str:
    kind, _, value = key.partition(":")
    if kind == "patient":
        return f"patient {value!r}" if value in named_patients else \
            f"the patient (DICOM PatientID) of {row.path}"
    return f"the DICOM series of {row.path}" if kind == "series" else f"file {row.path}"


def split_problems(rows: Sequence[Row], named_patients: set[str]) -> list[Problem]:
    """Patients (else DICOM series, else files) that the manifest's split column puts in several
    splits; none when the splits are generated (they are grouped by patient)."""
    if not rows or not all(r.split for r in rows):
        return []
    first: dict[str, dict[str, Row]] = {}
    for row in rows:
        first.setdefault(group_key(row), {}).setdefault(row.split, row)
    problems = []
    for key, by_split in first.items():
        if len(by_split) < 2:
            continue
        places = ", ".join(f"{s} ({by_split[s].origin})" for s in SPLITS if s in by_split)
        row = next(iter(by_split.values()))
        who = _who(key, row, named_patients)
        private = "a patient" if key.startswith("patient:") else who
        problems.append(Problem(
            "patient_in_several_splits", f"{who} is in {len(by_split)} splits: {places}",
            "put all rows of a patient in one split", "keep the splits as given",
            "kept as given", private_what=f"{private} is in {len(by_split)} splits: {places}"))
    return problems


def empty_folder_problems(manifest: Manifest) -> list[Problem]:
    """Class sub-folders of an image folder that hold no images (their class would be dropped)."""
    kinds = "DICOM files" if manifest.source == "dicom" else "images"
    total = len(manifest.label_names) + len(manifest.empty_folders)
    return [Problem("empty_class_folder",
                    f"class folder {folder} holds no {kinds}, so the dataset would have "
                    f"{len(manifest.label_names)} classes instead of {total}",
                    "add its images or remove the folder", "leave such folders out",
                    "left out (not a class)")
            for folder in manifest.empty_folders]


def refusal(problems: Sequence[Problem]) -> str:
    """The one-line error for --on-conflict=refuse: the first problem, how many, how to fix it."""
    first = problems[0]
    more = f" (the first of {len(problems)} input problems)" if len(problems) > 1 else ""
    return f"{first.what}{more}; {first.fix}, or pass {FLAG} to {first.remedy}"


def _print_warning(message: str) -> None:
    print(f"prepare_data: warning: {message}", file=sys.stderr)


def resolve(probed: list, manifest: Manifest, on_conflict: str,
            warn: Callable[[str], None] = _print_warning) -> tuple[list, list[Problem]]:
    """Checks probed (row, shape) pairs; 'refuse' raises ValueError (one line) on any problem,
    'warn' warns per problem and returns the pairs left after the remedies, and the problems."""
    if on_conflict not in ON_CONFLICT:
        raise ValueError(f"--on-conflict must be one of {ON_CONFLICT}, got {on_conflict!r}")
    problems = empty_folder_problems(manifest)
    found, drop = file_problems([row for row, _ in probed], manifest)
    problems += found
    kept = [pair for i, pair in enumerate(probed) if i not in drop]
    named = {r.patient for r in manifest.rows if r.patient}
    problems += split_problems([row for row, _ in kept], named)
    if problems and on_conflict == "refuse":
        raise ValueError(refusal(problems))
    for p in problems:
        warn(f"{p.what}; {p.done} (--on-conflict=warn)")
    return kept, problems
