"""Train/validation/test splits grouped by patient and stratified by label, and their CSV record.

A manifest's own `split` column is used when every row has one. Otherwise `grouped_split` assigns
whole groups (a patient; without patient id the DICOM series; else the file itself, so frames of one
file stay together) to splits, so no patient is ever in two splits. It is a seeded greedy
stratification (like scikit-learn's StratifiedGroupKFold, but with unequal target sizes): groups are
visited largest first (random order among equal sizes) and each goes to the split whose per-label
counts and size it brings closest to the targets (fraction x total, per label and overall; squared
relative errors, the size term weighted like all labels together). Then any split with a positive
fraction that got no group receives the group whose move costs least, so small sets still get one.

Privacy: the written split CSV replaces patient ids by a salted SHA-256 hash (16 hex digits) unless
keep_ids=True; the salt is not written anywhere, so the hashes cannot be reversed by guessing ids.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections.abc import Sequence

import numpy as np

from medtl_jax.runtime.atomic_io import write_text_atomic
from medtl_jax.data.ingest.manifest import Manifest, Row

SPLITS = ("train", "validation", "test")


def group_key(row: Row) -> str:
    """The unit that must not cross splits: patient id, else DICOM series, else the file."""
    if row.patient:
        return f"patient:{row.patient}"
    if row.series:
        return f"series:{row.series}"
    return f"file:{row.path}"


def hashed_id(text: str, salt: str) -> str:
    """Salted SHA-256 of `text`, 16 hex digits: stable within one build, not reversible by guessing."""
    return hashlib.sha256(f"{salt}\x00{text}".encode("utf-8")).hexdigest()[:16]


def group_int(key: str, salt: str) -> int:
    """Non-negative int64 group id for the TFDS 'patient' feature (salted hash of the group key)."""
    return int(hashed_id(key, salt), 16) & (2**63 - 1)


def label_matrix(rows: Sequence[Row], num_labels: int, multilabel: bool) -> np.ndarray:
    """[N, K] 0/1 matrix: the multi-hot labels, or one-hot class ids."""
    if multilabel:
        return np.asarray([r.label for r in rows], dtype=np.int64).reshape(len(rows), num_labels)
    out = np.zeros((len(rows), num_labels), dtype=np.int64)
    out[np.arange(len(rows)), [r.label[0] for r in rows]] = 1
    return out


def grouped_split(groups: Sequence[str], labels: np.ndarray, fractions: Sequence[float],
                  seed: int) -> np.ndarray:
    """Assigns each row a split index (0 train, 1 validation, 2 test), whole groups at a time.

    labels: [N, K] 0/1; fractions: target share of each split (sums to 1). Deterministic in `seed`.
    """
    fractions = np.asarray(fractions, dtype=np.float64)
    keys, inverse = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
    counts = np.zeros((len(keys), labels.shape[1] + 1))
    np.add.at(counts, inverse, np.c_[labels, np.ones(len(labels))])
    total = counts.sum(axis=0)
    weight = 1.0 / np.maximum(total, 1.0) ** 2
    weight[-1] *= labels.shape[1]  # split sizes count as much as all labels together
    target = fractions[:, None] * total[None, :]
    assigned = np.zeros_like(target)
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.permutation(len(keys)), -counts[:, -1]))  # largest groups first
    choice = np.zeros(len(keys), dtype=np.int64)
    for g in order:
        c = counts[g]
        # change in sum_k w_k (assigned - target)^2 when this group joins each split
        delta = ((2.0 * c * (assigned - target) + c * c) * weight).sum(axis=1)
        delta[fractions <= 0] = np.inf
        s = int(np.argmin(delta))
        choice[g] = s
        assigned[s] += c
    _fill_empty_splits(choice, counts, assigned, target, weight, fractions)
    return choice[inverse]


def _fill_empty_splits(choice, counts, assigned, target, weight, fractions) -> None:
    """Gives every split with a positive fraction at least one group (when there are enough groups):
    moves the group whose move costs least, from a split that keeps at least one group."""
    for s in np.flatnonzero(fractions > 0):
        if (choice == s).any():
            continue
        sizes = np.bincount(choice, minlength=len(fractions))
        movable = np.flatnonzero(sizes[choice] > 1)
        if not len(movable):
            return
        cost = []
        for g in movable:
            moved = assigned.copy()
            moved[choice[g]] -= counts[g]
            moved[s] += counts[g]
            cost.append((((moved - target) ** 2) * weight).sum())
        g = movable[int(np.argmin(cost))]
        assigned[choice[g]] -= counts[g]
        assigned[s] += counts[g]
        choice[g] = s


def assign_splits(rows: Sequence[Row], *, num_labels: int, multilabel: bool, val_fraction: float,
                  test_fraction: float, seed: int) -> list[str]:
    """The manifest's split column when every row has one, else a grouped stratified split."""
    given = [r.split for r in rows]
    if all(given):
        return list(given)
    if any(given):
        first = next(r for r in rows if not r.split)
        raise ValueError(f"{first.origin}: empty split while other rows have one; fill the split "
                         f"column for every row or remove it to generate splits")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"--val_fraction {val_fraction} and --test_fraction {test_fraction} must be "
                         f"in [0, 1) and sum to less than 1")
    fractions = (1.0 - val_fraction - test_fraction, val_fraction, test_fraction)
    index = grouped_split([group_key(r) for r in rows], label_matrix(rows, num_labels, multilabel),
                          fractions, seed)
    return [SPLITS[i] for i in index]


def groups_in_several_splits(rows: Sequence[Row], splits: Sequence[str]) -> int:
    """How many groups (patients) appear in more than one split: 0 means no leakage."""
    seen: dict[str, set[str]] = {}
    for row, split in zip(rows, splits):
        seen.setdefault(group_key(row), set()).add(split)
    return sum(len(s) > 1 for s in seen.values())


def _relative(path: str, root: str) -> str:
    rel = os.path.relpath(path, root)
    return path if rel.startswith("..") else rel.replace(os.sep, "/")


def write_split_csv(path: str | os.PathLike, rows: Sequence[Row], splits: Sequence[str],
                    indices: Sequence[int], manifest: Manifest, *, salt: str,
                    keep_ids: bool = False) -> None:
    """Writes the split as CSV (re-usable as a manifest with --path_root=<manifest.root>).

    Columns: index (the example's 'index' in the dataset), path (relative to manifest.root when
    inside it), label (class name) or one 0/1 column per label, patient_id (salted hash unless
    keep_ids; blank when unknown), group (salted hash of the grouping unit), site, split, frame and the
    manifest's extra columns.
    """
    labels = list(manifest.label_names) if manifest.multilabel else ["label"]
    header = ["index", "path", *labels, "patient_id", "group", "site", "split", "frame",
              *manifest.extra_columns]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for i, row, split in zip(indices, rows, splits):
        label = [str(v) for v in row.label] if manifest.multilabel else \
            [manifest.label_names[row.label[0]]]
        patient = "" if not row.patient else row.patient if keep_ids else hashed_id(row.patient, salt)
        extra = dict(row.extra)
        writer.writerow([i, _relative(row.path, manifest.root), *label, patient,
                         hashed_id(group_key(row), salt), row.site or "", split,
                         "" if row.frame is None else row.frame,
                         *(extra.get(c, "") for c in manifest.extra_columns)])
    write_text_atomic(path, buf.getvalue())
