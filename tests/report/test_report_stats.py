"""Sweep statistics: DeLong against a brute-force reference, its calibration, bootstrap AUCs, corrections."""

import numpy as np
import pytest
import scipy.stats
from sklearn.metrics import roc_auc_score

from medtl_jax.tasks.classification.metrics import auc as task_auc
from medtl_jax.report import stats


def _brute_force_delong(y, scores):
    """DeLong (1988) by definition: psi over all m*n (positive, negative) pairs, O(m*n) per scorer."""
    y = np.asarray(y).astype(bool)
    v10, v01, aucs = [], [], []
    for s in scores:
        x, z = s[y], s[~y]
        psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
        aucs.append(psi.mean())
    v10, v01 = np.array(v10), np.array(v01)
    k, m, n = len(scores), v10.shape[1], v01.shape[1]
    s10 = np.array([[np.sum((v10[a] - v10[a].mean()) * (v10[b] - v10[b].mean())) / (m - 1) for b in range(k)]
                    for a in range(k)])
    s01 = np.array([[np.sum((v01[a] - v01[a].mean()) * (v01[b] - v01[b].mean())) / (n - 1) for b in range(k)]
                    for a in range(k)])
    return np.array(aucs), s10 / m + s01 / n


def _data(rng, n=150, ties=False):
    y = rng.uniform(size=n) < 0.4
    a = y * 1.0 + rng.normal(size=n)
    b = 0.5 * a + y * 0.3 + rng.normal(size=n)
    if ties:  # coarse scores: many ties within and across classes
        a, b = np.round(a, 0), np.round(b * 2) / 2
    return y.astype(int), a, b


def test_midranks_equal_scipy_average_ranks():
    x = np.random.default_rng(0).integers(0, 6, size=40).astype(float)
    np.testing.assert_allclose(stats.midranks(x), scipy.stats.rankdata(x, method="average"))


@pytest.mark.parametrize("ties", [False, True])
def test_delong_equals_brute_force_and_sklearn(ties):
    rng = np.random.default_rng(1 + ties)
    for _ in range(5):
        y, a, b = _data(rng, ties=ties)
        aucs, cov = stats.delong_covariance(y, np.stack([a, b]))
        ref_aucs, ref_cov = _brute_force_delong(y, [a, b])
        np.testing.assert_allclose(aucs, ref_aucs, rtol=1e-12)
        np.testing.assert_allclose(aucs, [roc_auc_score(y, a), roc_auc_score(y, b)], rtol=1e-12)
        np.testing.assert_allclose(cov, ref_cov, rtol=1e-10, atol=1e-15)
        auc_a, var_a = stats.delong_variance(y, a)
        assert auc_a == pytest.approx(roc_auc_score(y, a), rel=1e-12)
        assert var_a == pytest.approx(ref_cov[0, 0], rel=1e-10)
        test = stats.delong_test(y, a, b)
        z = (ref_aucs[0] - ref_aucs[1]) / np.sqrt(ref_cov[0, 0] + ref_cov[1, 1] - 2 * ref_cov[0, 1])
        assert test["z"] == pytest.approx(z, rel=1e-9)
        assert test["p"] == pytest.approx(2 * scipy.stats.norm.sf(abs(z)), rel=1e-9)


def test_seed_mean_contrast_equals_brute_force():
    rng = np.random.default_rng(3)
    y = (rng.uniform(size=120) < 0.5).astype(int)
    runs = [y * mu + rng.normal(size=120) for mu in (1.0, 1.2, 0.4, 0.5)]
    out = stats.delong_seed_mean_test(y, runs[:2], runs[2:])
    aucs, cov = _brute_force_delong(y, runs)
    c = np.array([0.5, 0.5, -0.5, -0.5])
    assert out["estimate"] == pytest.approx(c @ aucs, rel=1e-12)
    assert out["se"] == pytest.approx(np.sqrt(c @ cov @ c), rel=1e-10)


def test_identical_scorers_give_p_one():
    y, a, _ = _data(np.random.default_rng(4))
    assert stats.delong_test(y, a, a)["p"] == 1.0


def test_delong_refuses_one_class():
    with pytest.raises(ValueError, match="both classes.*0 positives"):
        stats.delong_variance(np.zeros(5), np.arange(5.0))


def test_delong_is_calibrated_under_the_null():
    """Two scorers of the same quality (correlated through the shared signal): about 5% rejections."""
    rng = np.random.default_rng(5)
    rejections, sims = 0, 400
    for _ in range(sims):
        y = (rng.uniform(size=100) < 0.5).astype(int)
        shared = y + rng.normal(size=100)
        a, b = shared + rng.normal(size=100), shared + rng.normal(size=100)
        rejections += stats.delong_test(y, a, b)["p"] < 0.05
    assert 0.02 <= rejections / sims <= 0.09, rejections


def test_delong_detects_a_better_scorer():
    rng = np.random.default_rng(6)
    y = (rng.uniform(size=300) < 0.5).astype(int)
    assert stats.delong_test(y, 2.0 * y + rng.normal(size=300), 0.5 * y + rng.normal(size=300))["p"] < 1e-6


@pytest.mark.parametrize("ties", [False, True])
def test_weighted_auc_of_bootstrap_counts_equals_sklearn_on_the_resample(ties):
    rng = np.random.default_rng(7)
    y, a, _ = _data(rng, n=60, ties=ties)
    idx = rng.integers(0, 60, size=(20, 60))
    got = stats.weighted_auc(y, a, stats.resample_counts(idx, 60))
    want = [roc_auc_score(y[i], a[i]) if len(set(y[i])) == 2 else np.nan for i in idx]
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("kind", ["multiclass", "multilabel"])
def test_weighted_macro_auc_equals_task_auc_on_the_resample(kind):
    rng = np.random.default_rng(8)
    n, c = 50, 4
    if kind == "multiclass":
        y = rng.integers(0, c, size=n)
        s = rng.dirichlet(np.ones(c), size=n) + 0.3 * np.eye(c)[y]
    else:
        y = (rng.uniform(size=(n, c)) < 0.3).astype(int)
        s = rng.uniform(size=(n, c)) + 0.4 * y
    idx = rng.integers(0, n, size=(10, n))
    got = stats.weighted_macro_auc(kind, y, s, stats.resample_counts(idx, n))
    np.testing.assert_allclose(got, [task_auc(kind, y[i], s[i]) for i in idx], rtol=1e-12)


def test_seed_mean_ci_covers_the_seed_mean_and_shares_resamples():
    rng = np.random.default_rng(9)
    y = (rng.uniform(size=200) < 0.5).astype(int)
    runs = [y + rng.normal(size=200) for _ in range(3)]
    lo, hi = stats.bootstrap_seed_mean_auc_ci("binary", [y] * 3, runs, num_samples=300, seed=0)
    mean = np.mean([roc_auc_score(y, s) for s in runs])
    assert lo < mean < hi and hi - lo < 0.2
    # replicate by replicate, the seed-mean of per-seed AUCs on one shared resample
    idx = np.random.default_rng(0).integers(0, 200, size=(300, 200))
    reps = [np.mean([roc_auc_score(y[i], s[i]) for s in runs]) for i in idx]
    assert (lo, hi) == pytest.approx(tuple(np.quantile(reps, [0.025, 0.975])), rel=1e-12)


def test_paired_bootstrap_finds_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(10)
    y = rng.integers(0, 3, size=300)
    good = [rng.dirichlet(np.ones(3), size=300) + 0.8 * np.eye(3)[y] for _ in range(2)]
    bad = [rng.dirichlet(np.ones(3), size=300) + 0.1 * np.eye(3)[y] for _ in range(2)]
    out = stats.paired_bootstrap_test("multiclass", y, good, bad, num_samples=300)
    want = np.mean([task_auc("multiclass", y, s) for s in good]) - np.mean([task_auc("multiclass", y, s) for s in bad])
    assert out["estimate"] == pytest.approx(want) and out["p"] < 0.01
    assert stats.paired_bootstrap_test("multiclass", y, good, good, num_samples=100)["p"] == 1.0


def test_holm_equals_hand_computation():
    # sorted p: 0.01 (x4 = 0.04), 0.02 (x3 = 0.06), 0.03 (x2 = 0.06), 0.5 (x1 = 0.5), in input order
    np.testing.assert_allclose(stats.holm([0.03, 0.5, 0.01, 0.02]), [0.06, 0.5, 0.04, 0.06])
    # running maximum: 0.04 x 3 = 0.12 is carried over 0.045 x 2 = 0.09; capped at 1
    np.testing.assert_allclose(stats.holm([0.045, 0.04, 0.9]), [0.12, 0.12, 0.9])
    np.testing.assert_allclose(stats.holm([0.6, 0.7]), [1.0, 1.0])


def test_bh_equals_scipy_and_nan_is_left_out():
    p = np.random.default_rng(11).uniform(size=12) ** 2
    np.testing.assert_allclose(stats.adjust(p, "bh"), scipy.stats.false_discovery_control(p, method="bh"))
    out = stats.adjust([0.01, np.nan, 0.04], "holm")
    np.testing.assert_allclose(out, [0.02, np.nan, 0.04])
    with pytest.raises(ValueError, match="unknown correction 'bonf'"):
        stats.adjust([0.1], "bonf")


def test_mean_std_is_sample_std():
    assert stats.mean_std([0.8, 0.9, None]) == pytest.approx((0.85, np.std([0.8, 0.9], ddof=1)))
    mean, std = stats.mean_std([0.7])
    assert mean == 0.7 and np.isnan(std)
