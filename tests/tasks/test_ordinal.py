"""CORAL ordinal regression: targets, loss, probabilities, prediction and the Classifier's CORAL head."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from medtl_jax.models.layers.heads import Classifier, CoralHead
from medtl_jax.tasks.classification import ordinal


class TinyBackbone(nn.Module):
    """One conv returning a dict of feature maps, like the real backbones."""

    @nn.compact
    def __call__(self, x, train):
        y = nn.relu(nn.Conv(6, (3, 3), name="conv")(x))
        return {"conv": y}


def test_coral_levels_known_values():
    got = ordinal.coral_levels(jnp.array([[0], [2], [4], [1]]), 5)
    expected = [[0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    np.testing.assert_array_equal(np.asarray(got), expected)


def test_coral_loss_against_numpy():
    rng = np.random.default_rng(0)
    k = 5
    z = rng.normal(size=(8, k - 1)) * 2
    y = rng.integers(0, k, size=8)
    lam = np.array([1.0, 0.5, 2.0, 0.25])
    levels = (y[:, None] > np.arange(k - 1)).astype(float)
    log_sig = lambda t: -np.logaddexp(0.0, -t)  # noqa: E731
    per_task = -(levels * log_sig(z) + (1 - levels) * log_sig(-z))
    got = ordinal.coral_loss(jnp.asarray(z), jnp.asarray(y), k)
    assert got.shape == (8,) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, per_task.sum(axis=1), rtol=1e-5, atol=1e-6)
    got_w = ordinal.coral_loss(jnp.asarray(z), jnp.asarray(y), k, importance=lam)
    np.testing.assert_allclose(got_w, (per_task * lam).sum(axis=1), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"\[B, 4\]"):
        ordinal.coral_loss(jnp.zeros((8, 5)), jnp.asarray(y), k)


def test_coral_loss_gradient_is_sigmoid_residual():
    z = jnp.array([[1.0, -0.5, -2.0]])
    grad = jax.grad(lambda t: ordinal.coral_loss(t, jnp.array([2]), 4).sum())(z)
    np.testing.assert_allclose(grad[0], jax.nn.sigmoid(z[0]) - jnp.array([1.0, 1.0, 0.0]), rtol=1e-5)


def test_coral_probs_formula():
    z = np.array([[2.0, 0.5, -1.0], [3.0, 2.0, 1.0]])
    s = 1 / (1 + np.exp(-z))
    expected = np.stack([1 - s[:, 0], s[:, 0] - s[:, 1], s[:, 1] - s[:, 2], s[:, 2]], axis=1)
    got = np.asarray(ordinal.coral_probs(jnp.asarray(z)))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-6)
    two = ordinal.coral_probs(jnp.array([[0.7]]))  # K = 2 is plain logistic regression
    np.testing.assert_allclose(two[0], [1 - jax.nn.sigmoid(0.7), jax.nn.sigmoid(0.7)], rtol=1e-6)


def test_coral_probs_clips_inconsistent_ranks():
    z = jnp.array([[-1.0, 1.0]])  # P(y>1) > P(y>0): not rank-consistent
    s = 1 / (1 + np.exp(-np.array([-1.0, 1.0])))
    raw = np.array([1 - s[0], 0.0, s[1]])  # the negative middle class is clipped to 0
    np.testing.assert_allclose(ordinal.coral_probs(z)[0], raw / raw.sum(), rtol=1e-6)


def test_coral_predict():
    z = jnp.array([[2.0, 0.5, -1.0], [-0.1, -1.0, -3.0], [5.0, 4.0, 0.1], [0.0, -1.0, -2.0]])
    np.testing.assert_array_equal(np.asarray(ordinal.coral_predict(z)), [2, 0, 3, 0])
    # With ordered logits the prediction is the median class of coral_probs.
    cdf = np.cumsum(np.asarray(ordinal.coral_probs(z[:3])), axis=1)
    np.testing.assert_array_equal((cdf < 0.5).sum(axis=1), [2, 0, 3])


def _coral_classifier(k=5):
    model = Classifier(TinyBackbone(), k - 1, head_type="coral")
    x = jnp.asarray(np.random.default_rng(1).normal(size=(3, 8, 8, 2)), jnp.float32)
    variables = model.init(jax.random.key(0), x, train=False)
    return model, variables, x


def test_classifier_coral_head_shapes_and_forward():
    model, variables, x = _coral_classifier(5)
    head = variables["params"]["head"]
    assert set(head) == {"kernel", "bias"}
    assert head["kernel"].shape == (6, 1) and head["bias"].shape == (4,)
    logits = model.apply(variables, x, train=False)
    assert logits.shape == (3, 4) and logits.dtype == jnp.float32
    feats = TinyBackbone().apply({"params": variables["params"]["backbone"]}, x, train=False)["conv"]
    pooled = feats.mean(axis=(1, 2))
    np.testing.assert_allclose(logits, pooled @ head["kernel"] + head["bias"], rtol=1e-5, atol=1e-6)
    # Shared kernel + decreasing biases: cumulative probabilities decrease in k for every input.
    assert np.all(np.diff(np.asarray(logits), axis=1) < 0)


def test_coral_bias_init_gives_uniform_classes():
    head = CoralHead(4)
    params = head.init(jax.random.key(0), jnp.ones((1, 3)))
    zeroed = {"params": {"kernel": jnp.zeros((3, 1)), "bias": params["params"]["bias"]}}
    probs = ordinal.coral_probs(head.apply(zeroed, jnp.ones((2, 3))))
    np.testing.assert_allclose(probs, np.full((2, 5), 0.2), rtol=1e-5)


def test_dense_head_is_default_and_unchanged():
    x = jnp.ones((2, 8, 8, 2))
    default = Classifier(TinyBackbone(), 3)
    dense = Classifier(TinyBackbone(), 3, head_type="dense")
    v1 = default.init(jax.random.key(0), x, train=False)
    v2 = dense.init(jax.random.key(0), x, train=False)
    assert v1["params"]["head"]["kernel"].shape == (6, 3)
    jax.tree.map(np.testing.assert_array_equal, v1, v2)
    with pytest.raises(ValueError, match="head_type"):
        Classifier(TinyBackbone(), 3, head_type="ordinal").init(jax.random.key(0), x, train=False)


def test_coral_head_learns_ordinal_problem():
    """A few hundred Adam steps on a 1-D ordinal problem reach high accuracy and stay rank-consistent."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 3)).astype(np.float32)
    score = x @ np.array([1.5, -1.0, 0.5], np.float32)
    y = np.digitize(score, [-1.0, 0.0, 1.0])  # 4 grades
    head = CoralHead(3)
    params = head.init(jax.random.key(0), jnp.asarray(x))
    opt = optax.adam(0.05)
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        loss, grads = jax.value_and_grad(
            lambda p: ordinal.coral_loss(head.apply(p, jnp.asarray(x)), jnp.asarray(y), 4).mean())(params)
        updates, state = opt.update(grads, state)
        return optax.apply_updates(params, updates), state, loss

    first = None
    for _ in range(300):
        params, state, loss = step(params, state)
        first = loss if first is None else first
    assert loss < 0.5 * first
    pred = np.asarray(ordinal.coral_predict(head.apply(params, jnp.asarray(x))))
    assert (pred == y).mean() > 0.9
    bias = np.asarray(params["params"]["bias"])
    assert np.all(np.diff(bias) < 0)
