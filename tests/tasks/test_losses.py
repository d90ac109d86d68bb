"""Imbalance-aware losses checked against numpy formulas written here, sklearn and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.utils.class_weight import compute_class_weight

from medtl_jax.tasks.classification import losses
from medtl_jax.tasks.classification.task import make_task


def _np_log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _np_log_sigmoid(z):
    return -np.logaddexp(0.0, -z)


@pytest.fixture
def data():
    """Random logits/labels for each layout (float64 numpy copies for the reference formulas)."""
    rng = np.random.default_rng(0)
    b, c, n_lab = 16, 5, 4
    return {
        "binary": (rng.normal(size=(b, 1)) * 3, rng.integers(0, 2, size=b)),
        "multiclass": (rng.normal(size=(b, c)) * 3, rng.integers(0, c, size=b)),
        "multilabel": (rng.normal(size=(b, n_lab)) * 3, rng.integers(0, 2, size=(b, n_lab))),
    }


def _num(kind, z):
    return 2 if kind == "binary" else z.shape[1]


# ---------------------------------------------------------------------------------------- counts / weights


def test_class_counts_layouts():
    assert losses.class_counts("binary", np.array([[0], [1], [1], [1]]), 2).tolist() == [1, 3]
    assert losses.class_counts("multiclass", np.array([2, 2, 0, 3]), 5).tolist() == [1, 0, 2, 1, 0]
    ml = np.array([[1, 0, 1], [1, 0, 0], [0, 0, 1], [1, 0, 1]])
    assert losses.class_counts("multilabel", ml, 3).tolist() == [3, 0, 3]
    with pytest.raises(ValueError, match="labels must lie"):
        losses.class_counts("multiclass", np.array([0, 5]), 5)


def test_inverse_weights_equal_sklearn_balanced():
    rng = np.random.default_rng(1)
    y = rng.choice(4, size=500, p=[0.6, 0.25, 0.1, 0.05])
    counts = losses.class_counts("multiclass", y, 4)
    expected = compute_class_weight("balanced", classes=np.arange(4), y=y)
    np.testing.assert_allclose(losses.class_weights(counts, "inverse"), expected, rtol=1e-6)
    # The training-set mean of the per-example weight is exactly 1.
    assert losses.class_weights(counts, "inverse")[y].mean() == pytest.approx(1.0, rel=1e-5)


def test_effective_number_weights_formula_and_limits():
    counts = np.array([1000, 100, 10, 1])
    beta = 0.99
    raw = (1 - beta) / (1 - beta ** counts.astype(np.float64))
    expected = raw / raw.sum() * 4
    got = losses.class_weights(counts, "effective_number", beta)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert got.sum() == pytest.approx(4.0, rel=1e-5)
    assert np.all(np.diff(got) > 0)  # rarer class, larger weight
    np.testing.assert_allclose(losses.class_weights(counts, "effective_number", 0.0), np.ones(4))
    inv = 1.0 / counts
    np.testing.assert_allclose(losses.class_weights(counts, "effective_number", 1 - 1e-9),
                               inv / inv.sum() * 4, rtol=1e-4)
    np.testing.assert_array_equal(losses.class_weights(counts, "none"), np.ones(4))


def test_empty_class_gets_zero_weight():
    w = losses.class_weights(np.array([5, 0, 10]), "effective_number", 0.9)
    assert w[1] == 0 and np.all(np.isfinite(w)) and w.sum() == pytest.approx(2.0, rel=1e-5)
    assert losses.class_weights(np.array([5, 0, 10]), "inverse")[1] == 0


def test_multilabel_positive_weights():
    pos, n = np.array([10, 50, 0, 100]), 100
    inv = losses.class_weights(pos, "inverse", num_examples=n)
    np.testing.assert_allclose(inv, [9.0, 1.0, 1.0, 1.0])  # never / always positive -> neutral 1
    beta = 0.95
    eff = lambda k: (1 - beta ** k) / (1 - beta)  # noqa: E731
    got = losses.class_weights(pos, "effective_number", beta, num_examples=n)
    np.testing.assert_allclose(got[:2], [eff(90) / eff(10), eff(50) / eff(50)], rtol=1e-5, atol=1e-6)
    near_one = losses.class_weights(pos, "effective_number", 1 - 1e-9, num_examples=n)
    np.testing.assert_allclose(near_one[:2], inv[:2], rtol=1e-4)


def test_unknown_scheme_raises():
    with pytest.raises(ValueError, match="effective_number"):
        losses.class_weights(np.array([1, 2]), "sqrt")


# ---------------------------------------------------------------------------------------- the losses


@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel"])
def test_unweighted_losses_equal_task_loss(data, kind):
    """Weighted CE with no weights, focal with gamma=0 and logit adjustment with tau=0 are plain CE."""
    z, y = data[kind]
    task = make_task(kind, _num(kind, z))
    plain = np.asarray(task.loss(jnp.asarray(z, jnp.float32), jnp.asarray(y)))
    for got in (losses.weighted_cross_entropy(kind, jnp.asarray(z), jnp.asarray(y), None),
                losses.focal_loss(kind, jnp.asarray(z), jnp.asarray(y), gamma=0.0),
                losses.logit_adjusted_cross_entropy(kind, jnp.asarray(z), jnp.asarray(y),
                                                    np.log(np.full(_num(kind, z), 0.3)), tau=0.0)):
        assert got.shape == (z.shape[0],) and got.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(got), plain, rtol=1e-5, atol=1e-6)


def test_weighted_ce_against_numpy(data):
    z, y = data["multiclass"]
    w = np.array([0.5, 1.0, 2.0, 3.0, 0.1])
    expected = -w[y] * _np_log_softmax(z)[np.arange(len(y)), y]
    got = losses.weighted_cross_entropy("multiclass", jnp.asarray(z), jnp.asarray(y), w)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)

    z, y = data["binary"]
    w = np.array([0.7, 4.0])
    zz = z[:, 0]
    expected = -w[y] * (y * _np_log_sigmoid(zz) + (1 - y) * _np_log_sigmoid(-zz))
    got = losses.weighted_cross_entropy("binary", jnp.asarray(z), jnp.asarray(y), w)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)

    z, y = data["multilabel"]
    pw = np.array([1.0, 5.0, 0.5, 2.0])
    per = -(pw * y * _np_log_sigmoid(z) + (1 - y) * _np_log_sigmoid(-z))
    got = losses.weighted_cross_entropy("multilabel", jnp.asarray(z), jnp.asarray(y), pw)
    np.testing.assert_allclose(got, per.mean(axis=1), rtol=1e-5, atol=1e-6)


def test_weighted_ce_gradient_is_weighted_softmax_residual(data):
    z, y = data["multiclass"]
    w = np.array([0.5, 1.0, 2.0, 3.0, 0.1])
    grad = jax.grad(lambda lg: losses.weighted_cross_entropy("multiclass", lg, jnp.asarray(y), w).sum())(
        jnp.asarray(z, jnp.float32))
    p = np.exp(_np_log_softmax(z))
    expected = w[y][:, None] * (p - np.eye(5)[y])
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6)


def test_focal_against_numpy(data):
    gamma = 2.0
    z, y = data["multiclass"]
    alpha = np.array([0.5, 1.0, 2.0, 3.0, 0.1])
    log_pt = _np_log_softmax(z)[np.arange(len(y)), y]
    expected = -alpha[y] * (1 - np.exp(log_pt)) ** gamma * log_pt
    got = losses.focal_loss("multiclass", jnp.asarray(z), jnp.asarray(y), gamma, alpha)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7)

    z, y = data["binary"]
    p = 1 / (1 + np.exp(-z[:, 0]))
    pt = np.where(y == 1, p, 1 - p)
    expected = -(1 - pt) ** gamma * np.log(pt)
    got = losses.focal_loss("binary", jnp.asarray(z), jnp.asarray(y), gamma)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7)

    z, y = data["multilabel"]
    a = np.array([1.0, 5.0, 0.5, 2.0])
    p = 1 / (1 + np.exp(-z))
    pt = np.where(y == 1, p, 1 - p)
    per = -np.where(y == 1, a, 1.0) * (1 - pt) ** gamma * np.log(pt)
    got = losses.focal_loss("multilabel", jnp.asarray(z), jnp.asarray(y), gamma, a)
    np.testing.assert_allclose(got, per.mean(axis=1), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel"])
def test_focal_gamma0_with_alpha_is_weighted_ce(data, kind):
    z, y = data[kind]
    w = np.linspace(0.5, 3.0, 2 if kind == "binary" else z.shape[1])
    focal = losses.focal_loss(kind, jnp.asarray(z), jnp.asarray(y), 0.0, w)
    wce = losses.weighted_cross_entropy(kind, jnp.asarray(z), jnp.asarray(y), w)
    np.testing.assert_allclose(focal, wce, rtol=1e-5, atol=1e-6)


def test_focal_downweights_easy_examples_and_has_finite_gradients():
    z = jnp.array([[8.0, 0.0, 0.0], [0.5, 0.0, 0.0], [40.0, 0.0, 0.0]])  # easy, hard, saturated
    y = jnp.array([0, 0, 0])
    focal = losses.focal_loss("multiclass", z, y, 2.0)
    ce = losses.weighted_cross_entropy("multiclass", z, y, None)
    one_minus_pt = 2 / (np.exp(8.0) + 2)
    assert float(focal[0] / ce[0]) == pytest.approx(one_minus_pt ** 2, rel=1e-3)  # ~4.5e-7
    assert float(focal[1] / ce[1]) > 0.1
    for gamma in (0.0, 0.5, 2.0):
        g = jax.grad(lambda lg: losses.focal_loss("multiclass", lg, y, gamma).sum())(z)  # noqa: B023
        assert np.all(np.isfinite(np.asarray(g)))


def test_logit_adjusted_against_numpy(data):
    tau = 1.5
    z, y = data["multiclass"]
    prior = np.array([0.5, 0.2, 0.15, 0.1, 0.05])
    expected = -_np_log_softmax(z + tau * np.log(prior))[np.arange(len(y)), y]
    got = losses.logit_adjusted_cross_entropy("multiclass", jnp.asarray(z), jnp.asarray(y),
                                              np.log(prior), tau)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)

    # Binary: the same as a 2-class softmax over logits [0, z] shifted by tau * [log p_neg, log p_pos].
    z, y = data["binary"]
    prior = np.array([0.9, 0.1])
    two = np.concatenate([np.zeros_like(z), z], axis=1) + tau * np.log(prior)
    expected = -_np_log_softmax(two)[np.arange(len(y)), y]
    got = losses.logit_adjusted_cross_entropy("binary", jnp.asarray(z), jnp.asarray(y), np.log(prior), tau)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)

    z, y = data["multilabel"]
    p = np.array([0.05, 0.3, 0.5, 0.8])
    s = z + tau * np.log(p / (1 - p))
    per = -(y * _np_log_sigmoid(s) + (1 - y) * _np_log_sigmoid(-s))
    got = losses.logit_adjusted_cross_entropy("multilabel", jnp.asarray(z), jnp.asarray(y), np.log(p), tau)
    np.testing.assert_allclose(got, per.mean(axis=1), rtol=1e-5, atol=1e-6)


def test_logit_adjustment_makes_rare_class_cost_more():
    z = jnp.zeros((2, 2))
    lp = np.log([0.9, 0.1])
    la = losses.logit_adjusted_cross_entropy("multiclass", z, jnp.array([0, 1]), lp)
    assert la[1] > la[0]  # the rare class needs a larger margin
    np.testing.assert_allclose(la, [-np.log(0.9), -np.log(0.1)], rtol=1e-5, atol=1e-6)


def test_log_prior():
    np.testing.assert_allclose(losses.log_prior("binary", np.array([90, 10])), np.log([0.9, 0.1]), rtol=1e-6)
    np.testing.assert_allclose(losses.log_prior("multilabel", np.array([5, 50]), num_examples=100),
                               np.log([0.05, 0.5]), rtol=1e-6)
    assert np.isfinite(losses.log_prior("multiclass", np.array([3, 0, 7]))).all()


# ---------------------------------------------------------------------------------------- make_loss


def test_strategy_table():
    assert set(losses.IMBALANCE_STRATEGIES) == {"none", "class_weighted", "focal", "class_balanced",
                                                "logit_adjustment", "balanced_sampling"}
    assert all(isinstance(v, str) and v for v in losses.IMBALANCE_STRATEGIES.values())


def test_make_loss_unknown_strategy_names_config_key_and_choices():
    with pytest.raises(ValueError, match="config.loss.imbalance") as err:
        losses.make_loss("multiclass", "oversample", np.array([1, 2]))
    for name in losses.IMBALANCE_STRATEGIES:
        assert name in str(err.value)


@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel"])
def test_make_loss_dispatch(data, kind):
    z, y = data[kind]
    zj, yj = jnp.asarray(z, jnp.float32), jnp.asarray(y)
    n = _num(kind, z)
    rng = np.random.default_rng(3)
    counts = rng.integers(5, 50, size=n)
    wn = {"num_examples": 100} if kind == "multilabel" else {}
    plain = make_task(kind, n).loss(zj, yj)
    cases = {
        "none": plain,
        "balanced_sampling": plain,
        "class_weighted": losses.weighted_cross_entropy(
            kind, zj, yj, losses.class_weights(counts, "inverse", **wn)),
        "class_balanced": losses.weighted_cross_entropy(
            kind, zj, yj, losses.class_weights(counts, "effective_number", 0.9, **wn)),
        "focal": losses.focal_loss(kind, zj, yj, 1.0),
        "logit_adjustment": losses.logit_adjusted_cross_entropy(
            kind, zj, yj, losses.log_prior(kind, counts, **wn), 0.5),
    }
    for strategy, expected in cases.items():
        fn = losses.make_loss(kind, strategy, counts, focal_gamma=1.0, cb_beta=0.9, la_tau=0.5, **wn)
        got = jax.jit(fn)(zj, yj)
        assert got.shape == (z.shape[0],) and got.dtype == jnp.float32
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=strategy)
    # Weighted strategies really differ from plain CE on imbalanced counts.
    assert not np.allclose(cases["class_weighted"], plain)


def test_make_loss_focal_with_alpha():
    counts = np.array([80, 15, 5])
    z = jnp.asarray(np.random.default_rng(4).normal(size=(6, 3)), jnp.float32)
    y = jnp.array([0, 1, 2, 0, 1, 2])
    fn = losses.make_loss("multiclass", "focal", counts, focal_gamma=2.0, focal_alpha="inverse")
    expected = losses.focal_loss("multiclass", z, y, 2.0, losses.class_weights(counts, "inverse"))
    np.testing.assert_allclose(fn(z, y), expected, rtol=1e-6)


def test_make_loss_multilabel_needs_num_examples():
    with pytest.raises(ValueError, match="num_examples"):
        losses.make_loss("multilabel", "class_weighted", np.array([3, 4]))
