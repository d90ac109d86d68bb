"""Class-balanced over-sampling of a training epoch (the 'balanced_sampling' imbalance strategy).

`balanced_indices` returns the source positions of one epoch; pass them as `indices` to
`medtl_jax.data.pipeline.batches.train_batches`, which shuffles and batches them like any index subset. The draw
depends only on (seed, epoch), so a resumed run sees the same epochs, and its random stream is
separate from the pipeline's permutation and augmentation streams. To balance a subset `idx` of the
source, balance its labels and map back: `idx[balanced_indices(labels[idx], ...)]`.
"""

from __future__ import annotations

import numpy as np

SAMPLING_KINDS = ("binary", "multiclass", "ordinal", "multilabel")
_STREAM = 0x5A4D  # separates this generator from pipeline.epoch_order's default_rng([seed, epoch])


def _rng(seed: int, epoch: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, _STREAM])


def balanced_indices(labels: np.ndarray, *, seed: int, epoch: int, kind: str = "multiclass") -> np.ndarray:
    """Source positions (int64, shuffled) of one class-balanced epoch, drawn from (seed, epoch).

    binary / multiclass / ordinal (labels [N] or [N, 1]): with M the largest class count, every class
    present contributes exactly M positions, so all classes are equally frequent and the epoch has
    (number of classes present) * M entries. A class of M examples (the majority) is taken once each;
    a smaller class is drawn M times with replacement, so each epoch repeats different minority examples.
    Classes with no examples are skipped.

    multilabel (labels [N, L]): exact balance is impossible because labels co-occur, so N positions are
    drawn with replacement with probability proportional to a per-example weight: the largest inverse
    frequency 1 / n_l among the example's positive labels, where examples with no positive label count
    as one extra "no finding" label. Rare labels (and the rare examples carrying them) are boosted
    towards the frequency of the most common one.
    """
    if kind not in SAMPLING_KINDS:
        raise ValueError(f"unknown label kind {kind!r} for balanced sampling; "
                         f"expected one of {SAMPLING_KINDS}")
    labels = np.asarray(labels)
    rng = _rng(seed, epoch)
    if kind == "multilabel":
        return _multilabel_indices(labels, rng)
    labels = labels.reshape(-1).astype(np.int64)
    if labels.size == 0:
        raise ValueError("balanced sampling needs at least one labelled example")
    classes, counts = np.unique(labels, return_counts=True)
    target = int(counts.max())
    parts = []
    for cls, count in zip(classes, counts):
        members = np.flatnonzero(labels == cls)
        if count == target:
            parts.append(rng.permutation(members))
        else:
            parts.append(rng.choice(members, size=target, replace=True))
    order = np.concatenate(parts)
    return order[rng.permutation(order.size)].astype(np.int64)


def multilabel_sample_weights(labels: np.ndarray) -> np.ndarray:
    """Per-example sampling weights [N] for multilabel over-sampling (see `balanced_indices`), sum 1."""
    labels = np.asarray(labels) > 0
    if labels.ndim != 2 or labels.shape[0] == 0:
        raise ValueError(f"multilabel labels must be a non-empty [N, L] array, got shape {labels.shape}")
    groups = np.concatenate([labels, ~labels.any(axis=1, keepdims=True)], axis=1)  # + "no finding"
    counts = groups.sum(axis=0)
    inverse = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
    weights = (groups * inverse[None, :]).max(axis=1)
    return weights / weights.sum()


def _multilabel_indices(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    weights = multilabel_sample_weights(labels)
    return rng.choice(weights.size, size=weights.size, replace=True, p=weights).astype(np.int64)
