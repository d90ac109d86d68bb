"""Statistics of a sweep: seed summaries, bootstrap CIs, DeLong's paired AUC test, multiple-testing corrections.

Choices (stated again in the report):

* mean ± std over seeds uses the sample standard deviation (ddof=1; undefined for one seed).
* The 95% CI of a group's test AUC is a percentile bootstrap of the *seed-mean* AUC: each replicate
  resamples the test examples with replacement (one resample shared by all seeds when they score the same
  test set), recomputes every seed's AUC on it and averages them. It reflects test-set sampling given the
  trained models, not the spread between seeds (that is the ± std).
* A paired comparison of two groups uses the seeds both have, on the same test examples. Binary tasks:
  DeLong et al. (1988) test of the difference of seed-mean AUCs, i.e. the contrast
  mean_s AUC(a, s) - mean_s AUC(b, s) with the full DeLong covariance of all 2S correlated AUCs (the fast
  midrank algorithm of Sun & Xu 2014). Multi-class / multi-label tasks (macro one-vs-rest AUC, for which
  DeLong is not standard): a paired bootstrap of the same difference, two-sided percentile p-value.
  Both are conditional on the trained models (test-set uncertainty only).
* Multiple comparisons: Holm (1979) step-down by default (family-wise error), or Benjamini–Hochberg
  (false discovery rate, scipy.stats.false_discovery_control), over all comparisons of a report.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats as sps

from medtl_jax.tasks.classification.metrics import MULTICLASS_KINDS, auc

CHUNK_ELEMENTS = 4_000_000  # bootstrap weights are built in blocks of at most this many entries


# ---------------------------------------------------------------------------------------------------
# Seed summaries.
# ---------------------------------------------------------------------------------------------------

def mean_std(values) -> tuple[float, float]:
    """Mean and sample std (ddof=1) of the finite values; std is NaN with fewer than two."""
    v = np.asarray([x for x in values if x is not None], dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan")


# ---------------------------------------------------------------------------------------------------
# DeLong (1988) with the midrank algorithm of Sun & Xu (2014).
# ---------------------------------------------------------------------------------------------------

def midranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of `x` where tied values share the mean of the ranks they occupy (midranks)."""
    x = np.asarray(x)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    n = len(xs)
    # runs of equal sorted values: [start, end) each; a run over sorted positions i..j-1 has midrank (i+j+1)/2
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]]) if n else np.zeros(0, int)
    ends = np.r_[starts[1:], n]
    run_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(n, dtype=float)
    ranks[order] = np.repeat(run_rank, ends - starts)
    return ranks


def delong_components(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUCs and DeLong's structural components of k scorers on one binary test set.

    labels [n] (1 = positive), scores [k, n] or [n]. Returns (auc [k], v10 [k, m], v01 [k, n_neg]) where
    m / n_neg count positives / negatives. With T_z the midranks in the pooled sample and T_x, T_y those
    within positives / negatives (Sun & Xu 2014): v10_i = (T_z(x_i) - T_x(x_i)) / n_neg,
    v01_j = 1 - (T_z(y_j) - T_y(y_j)) / m, and AUC = mean(v10) = mean(v01).
    """
    y = np.asarray(labels).astype(bool).reshape(-1)
    s = np.atleast_2d(np.asarray(scores, dtype=float))
    if s.shape[1] != len(y):
        raise ValueError(f"scores have {s.shape[1]} examples but labels {len(y)}")
    m, n = int(y.sum()), int((~y).sum())
    if m == 0 or n == 0:
        raise ValueError(f"DeLong needs both classes in the test set: {m} positives, {n} negatives")
    k = s.shape[0]
    v10, v01 = np.empty((k, m)), np.empty((k, n))
    for r in range(k):
        tz = midranks(s[r])
        tx, ty = midranks(s[r, y]), midranks(s[r, ~y])
        v10[r] = (tz[y] - tx) / n
        v01[r] = 1.0 - (tz[~y] - ty) / m
    return v10.mean(axis=1), v10, v01


def delong_covariance(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(auc [k], covariance [k, k]) of k correlated AUCs: S10 / m + S01 / n (sample covariances)."""
    aucs, v10, v01 = delong_components(labels, scores)
    m, n = v10.shape[1], v01.shape[1]
    s10 = np.atleast_2d(np.cov(v10)) if m > 1 else np.zeros((len(aucs), len(aucs)))
    s01 = np.atleast_2d(np.cov(v01)) if n > 1 else np.zeros((len(aucs), len(aucs)))
    return aucs, s10 / m + s01 / n


def delong_variance(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(AUC, DeLong variance of the AUC) of one scorer."""
    aucs, cov = delong_covariance(labels, np.asarray(scores).reshape(1, -1))
    return float(aucs[0]), float(cov[0, 0])


def delong_contrast(labels: np.ndarray, scores: np.ndarray, contrast) -> dict:
    """z-test of the linear combination `contrast · AUC` of k correlated AUCs (DeLong 1988) against 0.

    Returns estimate, se, z and the two-sided normal p-value (1.0 when the variance is 0, e.g. identical
    scorers)."""
    c = np.asarray(contrast, dtype=float)
    aucs, cov = delong_covariance(labels, scores)
    if c.shape != aucs.shape:
        raise ValueError(f"contrast has {c.shape} entries for {aucs.shape} scorers")
    est, var = float(c @ aucs), float(c @ cov @ c)
    if not var > 1e-300:
        return {"estimate": est, "se": 0.0, "z": 0.0, "p": 1.0}
    z = est / np.sqrt(var)
    return {"estimate": est, "se": float(np.sqrt(var)), "z": float(z), "p": float(2.0 * sps.norm.sf(abs(z)))}


def delong_test(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray) -> dict:
    """DeLong's paired test of AUC(a) - AUC(b) on the same examples; adds auc_a and auc_b."""
    stacked = np.stack([np.asarray(scores_a, float), np.asarray(scores_b, float)])
    out = delong_contrast(labels, stacked, [1.0, -1.0])
    aucs, _, _ = delong_components(labels, stacked)
    return {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]), **out}


def delong_seed_mean_test(labels: np.ndarray, scores_a: list, scores_b: list) -> dict:
    """DeLong test of mean_s AUC(a_s) - mean_s AUC(b_s), seeds paired, all on the same examples."""
    if len(scores_a) != len(scores_b) or not scores_a:
        raise ValueError(f"need the same, non-zero number of seeds: {len(scores_a)} vs {len(scores_b)}")
    k = len(scores_a)
    contrast = np.r_[np.full(k, 1.0 / k), np.full(k, -1.0 / k)]
    return delong_contrast(labels, np.stack([*scores_a, *scores_b]).astype(float), contrast)


# ---------------------------------------------------------------------------------------------------
# Bootstrap: AUCs of many resamples at once (resamples as example weights).
# ---------------------------------------------------------------------------------------------------

def resample_counts(idx: np.ndarray, n: int) -> np.ndarray:
    """[B, n] counts of how often each example is drawn in each row of resample indices `idx` [B, n']."""
    idx = np.asarray(idx)
    offsets = (np.arange(idx.shape[0]) * n)[:, None]
    return np.bincount((idx + offsets).ravel(), minlength=idx.shape[0] * n).reshape(idx.shape[0], n)


def weighted_auc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Binary AUC under each row of example weights [B, n] (ties count 1/2); NaN without both classes.

    A row of bootstrap counts gives exactly the AUC of that resample."""
    y = np.asarray(labels).astype(bool)
    order = np.argsort(np.asarray(scores, float), kind="mergesort")
    s_sorted, y_sorted = np.asarray(scores, float)[order], y[order]
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
    w = np.asarray(weights, float)[:, order]
    pos = np.add.reduceat(w * y_sorted, starts, axis=1)
    neg = np.add.reduceat(w * ~y_sorted, starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    num = (pos * (below + 0.5 * neg)).sum(axis=1)
    den = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _columns(kind: str, labels: np.ndarray, scores: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(binary labels, scores) per AUC column: one for binary, one-vs-rest per class or per label."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    if kind == "binary":
        return [(labels.reshape(-1), scores.reshape(-1))]
    if kind in MULTICLASS_KINDS:
        return [(labels == c, scores[:, c]) for c in range(scores.shape[1])]
    if kind == "multilabel":
        return [(labels[:, j], scores[:, j]) for j in range(scores.shape[1])]
    raise ValueError(f"unknown task kind {kind!r}")


def weighted_macro_auc(kind: str, labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The task's AUC (medtl_jax.tasks.classification.metrics.auc: macro over classes present) under each row of weights."""
    cols = np.stack([weighted_auc(y, s, weights) for y, s in _columns(kind, labels, scores)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN replicate (no class has both labels)
        return np.nanmean(cols, axis=0)


def _blocks(num_samples: int, n: int):
    per = max(1, CHUNK_ELEMENTS // max(n, 1))
    for start in range(0, num_samples, per):
        yield min(per, num_samples - start)


def _seed_mean_replicates(kind, labels_per_seed, scores_per_seed, num_samples, rng, paired_with=None):
    """[B] seed-mean AUC per bootstrap replicate; seeds with the same labels share one resample."""
    shared = all(np.array_equal(labels_per_seed[0], y) for y in labels_per_seed)
    out = []
    for b in _blocks(num_samples, len(labels_per_seed[0])):
        n0 = len(labels_per_seed[0])
        w_shared = resample_counts(rng.integers(0, n0, (b, n0)), n0) if shared else None
        aucs = []
        for y, s in zip(labels_per_seed, scores_per_seed):
            w = w_shared if shared else resample_counts(rng.integers(0, len(y), (b, len(y))), len(y))
            aucs.append(weighted_macro_auc(kind, y, s, w))
        out.append(np.mean(aucs, axis=0))
    return np.concatenate(out)


def bootstrap_seed_mean_auc_ci(kind: str, labels_per_seed: list, scores_per_seed: list, *,
                               num_samples: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the seed-mean test AUC (see the module docstring); NaN replicates dropped."""
    if not labels_per_seed or num_samples <= 0:
        return float("nan"), float("nan")
    reps = _seed_mean_replicates(kind, labels_per_seed, scores_per_seed, num_samples, np.random.default_rng(seed))
    reps = reps[np.isfinite(reps)]
    if len(reps) == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(reps, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def paired_bootstrap_test(kind: str, labels: np.ndarray, scores_a: list, scores_b: list, *,
                          num_samples: int = 1000, seed: int = 0) -> dict:
    """Paired bootstrap of mean_s AUC(a_s) - mean_s AUC(b_s) on one test set (one resample for all runs).

    p = two-sided percentile p-value, min(1, 2 min((1 + #{d_b <= 0}) / (B + 1), (1 + #{d_b >= 0}) / (B + 1)));
    se = std of the replicate differences."""
    if len(scores_a) != len(scores_b) or not scores_a:
        raise ValueError(f"need the same, non-zero number of seeds: {len(scores_a)} vs {len(scores_b)}")
    rng, n = np.random.default_rng(seed), len(labels)
    est = float(np.mean([auc(kind, labels, s) for s in scores_a]) - np.mean([auc(kind, labels, s) for s in scores_b]))
    diffs = []
    for b in _blocks(num_samples, n):
        w = resample_counts(rng.integers(0, n, (b, n)), n)
        a = np.mean([weighted_macro_auc(kind, labels, s, w) for s in scores_a], axis=0)
        c = np.mean([weighted_macro_auc(kind, labels, s, w) for s in scores_b], axis=0)
        diffs.append(a - c)
    d = np.concatenate(diffs)
    d = d[np.isfinite(d)]
    big = len(d) + 1
    p = min(1.0, 2.0 * min((1 + np.sum(d <= 0)) / big, (1 + np.sum(d >= 0)) / big))
    return {"estimate": est, "se": float(d.std(ddof=1)) if len(d) > 1 else float("nan"),
            "z": float(est / d.std(ddof=1)) if len(d) > 1 and d.std() > 0 else 0.0, "p": float(p)}


# ---------------------------------------------------------------------------------------------------
# Multiple comparisons.
# ---------------------------------------------------------------------------------------------------

def holm(pvalues) -> np.ndarray:
    """Holm (1979) step-down adjusted p-values: sorted p_(i) times (m - i + 1), running max, capped at 1."""
    p = np.asarray(pvalues, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="mergesort")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out


def benjamini_hochberg(pvalues) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (scipy.stats.false_discovery_control, method 'bh')."""
    p = np.asarray(pvalues, dtype=float)
    return np.asarray(sps.false_discovery_control(p, method="bh")) if len(p) else p


CORRECTIONS = {"holm": holm, "bh": benjamini_hochberg}
CORRECTION_NAMES = {"holm": "Holm–Bonferroni (family-wise error)",
                    "bh": "Benjamini–Hochberg (false discovery rate)"}


def adjust(pvalues, method: str = "holm") -> np.ndarray:
    """Adjusted p-values by `method` ('holm' | 'bh'); NaN entries stay NaN and do not count."""
    if method not in CORRECTIONS:
        raise ValueError(f"unknown correction {method!r}; choose one of {sorted(CORRECTIONS)}")
    p = np.asarray(pvalues, dtype=float)
    out = np.full(len(p), np.nan)
    ok = np.isfinite(p)
    out[ok] = CORRECTIONS[method](p[ok])
    return out
