"""CORAL ordinal regression (Cao, Mirjalili & Raschka 2020) for ordered labels 0 < 1 < ... < K-1.

Why CORAL: an ordinal grade (e.g. diabetic-retinopathy severity, MedMNIST's RetinaMNIST) is not a set of
unrelated classes; a softmax head ignores the order and a regression head ignores that grades are
discrete. CORAL splits the problem into K-1 binary tasks "is y > k?" whose logits share ONE weight
vector and differ only in their biases (`medtl_jax.models.layers.heads.CoralHead`), so
logit_k = w . h + b_k. With shared weights the cumulative probabilities P(y > k) = sigmoid(logit_k) are
ordered whenever the biases are (b_0 >= b_1 >= ...), which the paper shows the optimum of the loss
satisfies: the predictions are rank-consistent (never P(y > 2) > P(y > 1)). It still yields class
probabilities (`coral_probs`), so MedMNIST's multi-class AUC / ACC are computed from them exactly as
from a softmax, and the predicted grade is the number of thresholds passed (`coral_predict`).

Layout: logits [B, K-1], integer labels [B] (or [B, 1]); losses are per-example float32 [B].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax


def coral_levels(labels: jax.Array, num_classes: int) -> jax.Array:
    """Binary targets [B, K-1] of the K-1 CORAL tasks: level k is 1 where label > k (extended binary)."""
    labels = jnp.asarray(labels).reshape(-1).astype(jnp.int32)
    return (labels[:, None] > jnp.arange(num_classes - 1)[None, :]).astype(jnp.float32)


def coral_loss(logits: jax.Array, labels: jax.Array, num_classes: int,
               importance: jax.Array | np.ndarray | None = None) -> jax.Array:
    """CORAL loss per example [B]: sum over k of importance_k * BCE(logit_k, [label > k]).

    As in Cao et al. the K-1 binary cross-entropies are summed (not averaged); `importance` [K-1]
    re-weights the tasks (the paper's lambda_k; None means ones), e.g. to emphasise rare thresholds.
    """
    logits = logits.astype(jnp.float32)
    if logits.ndim != 2 or logits.shape[-1] != num_classes - 1:
        raise ValueError(f"CORAL logits for {num_classes} classes must be [B, {num_classes - 1}], "
                         f"got {logits.shape}")
    bce = optax.sigmoid_binary_cross_entropy(logits, coral_levels(labels, num_classes))
    if importance is not None:
        bce = bce * jnp.asarray(importance, jnp.float32)
    return bce.sum(axis=-1)


def coral_probs(logits: jax.Array) -> jax.Array:
    """Class probabilities [B, K] from the cumulative ones P(y > k) = sigmoid(logit_k).

    P(y=0) = 1 - P(y>0), P(y=k) = P(y>k-1) - P(y>k), P(y=K-1) = P(y>K-2); these telescope to 1.
    Negative differences (only possible if the cumulative probabilities are not decreasing) are clipped
    to 0 and the row renormalised; with ordered biases, i.e. rank consistency, that step is a no-op.
    """
    p_gt = jax.nn.sigmoid(logits.astype(jnp.float32))
    probs = jnp.concatenate([1.0 - p_gt[:, :1], p_gt[:, :-1] - p_gt[:, 1:], p_gt[:, -1:]], axis=-1)
    probs = jnp.maximum(probs, 0.0)
    return probs / probs.sum(axis=-1, keepdims=True)


def coral_predict(logits: jax.Array) -> jax.Array:
    """Predicted grade [B] int32: the number of tasks with P(y > k) > 0.5, i.e. with logit_k > 0."""
    return (logits > 0).sum(axis=-1).astype(jnp.int32)
