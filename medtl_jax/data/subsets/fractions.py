"""Nested, stratified, seeded training fractions (`config.data.train_fraction`, `config.data.fraction_seed`).

`nested_fraction_indices(labels, f, seed)` keeps, in every stratum c of n_c examples, the first
ceil(f * n_c) positions (at least 1 when the stratum is not empty) of ONE permutation of that stratum
drawn from (seed, stratum). Because the permutation does not depend on f and ceil is monotone, the 5% set
contains the 1% set, the 20% set the 5% set, and so on; because it does not depend on the run's
`config.seed`, seeds vary the training (initialisation, order, augmentation) and not the subset, unless
`fraction_seed` itself is swept.

Strata: the class for binary, multi-class and ordinal labels ([N] or [N, 1]). For multi-label labels
([N, L], L > 1) the stratum of an example is its rarest positive label (by count in `labels`), or "no
positive label": every label present keeps at least one carrier and rare labels keep their share, with at
most L + 1 strata. (Stratifying on the label combination would make one stratum of almost every rare
combination, and the at-least-one rule would then blow small fractions up; the first label alone would
ignore the rare labels.) `labels=None` (segmentation images) is one stratum: a seeded random subset.
"""

from __future__ import annotations

import math

import numpy as np

_STREAM = 0x46524143  # 'FRAC': keeps this generator apart from the pipeline's and the sampler's


def strata(labels: np.ndarray | None, n: int | None = None) -> np.ndarray:
    """Stratum id (int64 [N]) of each example, as described in the module docstring."""
    if labels is None:
        if n is None:
            raise ValueError("strata(None) needs the number of examples n")
        return np.zeros(n, np.int64)
    labels = np.asarray(labels)
    if labels.ndim == 1 or (labels.ndim == 2 and labels.shape[1] == 1):
        return labels.reshape(-1).astype(np.int64)
    if labels.ndim != 2:
        raise ValueError(f"labels must be [N], [N, 1] or [N, L] (multi-label), got shape {labels.shape}")
    positive = labels > 0
    counts = positive.sum(axis=0)
    # Rarest positive label of each row (ties: the lower label index); rows without one: stratum L.
    rarity = np.where(positive, counts[None, :], np.iinfo(np.int64).max)
    rarest = rarity.argmin(axis=1).astype(np.int64)
    return np.where(positive.any(axis=1), rarest, labels.shape[1])


def check_fraction(fraction: float, key: str = "config.data.train_fraction") -> float:
    """`fraction` as a float in (0, 1]; ValueError naming `key` otherwise."""
    try:
        value = float(fraction)
    except (TypeError, ValueError):
        raise ValueError(f"{key}={fraction!r} is not a number in (0, 1]") from None
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{key}={fraction!r} must be in (0, 1] (1.0 = all training examples)")
    return value


def nested_fraction_indices(labels: np.ndarray | None, fraction: float, seed: int, *,
                            n: int | None = None) -> np.ndarray:
    """Sorted positions (int64) of the stratified fraction `fraction` of `labels`, drawn from `seed`.

    Per stratum c with n_c examples: ceil(fraction * n_c) of them (at least 1), the first of a
    permutation drawn from (seed, c), so that smaller fractions are subsets of larger ones.
    `labels=None` with `n` examples: one stratum (e.g. segmentation images).
    """
    fraction = check_fraction(fraction)
    ids = strata(labels, n)
    keep = []
    for stratum in np.unique(ids):
        members = np.flatnonzero(ids == stratum)
        rng = np.random.default_rng([int(seed), _STREAM, int(stratum)])
        count = max(1, math.ceil(fraction * members.size - 1e-9))  # 1e-9: 0.1 * 30 must give 3, not 4
        keep.append(members[rng.permutation(members.size)[:count]])
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)
