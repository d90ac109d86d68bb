"""Class-imbalance-aware per-example losses for the three logit layouts of `ClassificationTask`.

Layouts (the same as `ClassificationTask.loss`):
  binary      logits [B, 1] (one logit, sigmoid), labels [B] in {0, 1};
  multiclass  logits [B, C] (softmax), integer labels [B] ('ordinal' with a dense head uses this too;
              the CORAL ordinal loss lives in `medtl_jax.tasks.classification.ordinal`);
  multilabel  logits [B, L] (a sigmoid per label), 0/1 labels [B, L]; per-example losses are the mean
              over labels, as in `ClassificationTask.loss`.
Every loss returns a per-example float32 vector [B], so the trainer's (masked) mean applies unchanged.

Weights are per class for binary ([w_neg, w_pos]) and multiclass ([C]); for multilabel they are
per-label *positive* weights [L] (a negative always has weight 1), i.e. BCE's `pos_weight`.

References: Cui et al. 2019 (class-balanced loss, effective number of samples), Lin et al. 2017 (focal
loss), Menon et al. 2021 (logit adjustment).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

LOSS_KINDS = ("binary", "multiclass", "ordinal", "multilabel")
WEIGHT_SCHEMES = ("none", "inverse", "effective_number")

IMBALANCE_STRATEGIES: dict[str, str] = {
    "none": "Plain cross-entropy; use when classes are roughly balanced or as the baseline.",
    "class_weighted": "CE weighted by inverse class frequency (sklearn 'balanced'); a simple first fix "
                      "for moderate imbalance.",
    "focal": "Focal loss (Lin et al. 2017) that down-weights easy examples; use when many easy majority "
             "examples swamp the gradient.",
    "class_balanced": "CE weighted by the inverse effective number of samples (Cui et al. 2019); use for "
                      "heavy long-tailed imbalance where plain inverse weights over-correct.",
    "logit_adjustment": "CE on logits shifted by tau*log prior (Menon et al. 2021); use when balanced "
                        "error / per-class recall matters, with raw logits at test time.",
    "balanced_sampling": "Plain CE with class-balanced over-sampling of the training epoch "
                         "(medtl_jax.data.pipeline.sampling); use when the loss must stay unweighted.",
}

LossFn = Callable[[jax.Array, jax.Array], jax.Array]


def _check_kind(kind: str) -> None:
    if kind not in LOSS_KINDS:
        raise ValueError(f"unknown task kind {kind!r}; expected one of {LOSS_KINDS}")


def class_counts(kind: str, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Training-label counts that the weights and priors are built from.

    binary: [n_neg, n_pos]; multiclass/ordinal: examples per class [C]; multilabel: positives per label
    [L] (labels [N, L]). Integer labels may come as [N] or [N, 1] (the MedMNIST layout).
    """
    _check_kind(kind)
    labels = np.asarray(labels)
    if kind == "multilabel":
        if labels.ndim != 2 or labels.shape[1] != num_classes:
            raise ValueError(f"multilabel labels must be [N, {num_classes}], got {labels.shape}")
        return (labels > 0).sum(axis=0).astype(np.int64)
    labels = labels.reshape(-1).astype(np.int64)
    n = 2 if kind == "binary" else num_classes
    if labels.size and (labels.min() < 0 or labels.max() >= n):
        raise ValueError(f"{kind} labels must lie in [0, {n}), got range [{labels.min()}, {labels.max()}]")
    return np.bincount(labels, minlength=n).astype(np.int64)


def _effective_number(counts: np.ndarray, beta: float) -> np.ndarray:
    """(1 - beta^n) / (1 - beta): Cui et al.'s expected number of distinct samples among n draws."""
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must lie in [0, 1), got {beta}")
    return -np.expm1(counts * np.log(beta)) / (1.0 - beta) if beta > 0 else np.minimum(counts, 1.0)


def class_weights(counts: np.ndarray, scheme: str, beta: float = 0.999, *,
                  num_examples: int | None = None) -> np.ndarray:
    """Loss weights from label counts, so rare classes are not drowned out by frequent ones.

    Per class (binary/multiclass; `num_examples` None): 'none' -> ones; 'inverse' -> N / (C * n_c)
    (sklearn's 'balanced', training-set mean weight exactly 1); 'effective_number' ->
    (1 - beta) / (1 - beta^n_c) normalised to sum to the number of classes present (Cui et al. 2019).
    A class with no examples gets weight 0 (it is never indexed by a training label).

    Per label (multilabel; pass `num_examples` = N and positives per label as `counts`): positive
    weights for BCE. 'inverse' -> n_neg / n_pos; 'effective_number' -> E(n_neg) / E(n_pos) with
    E(n) = (1 - beta^n) / (1 - beta), which tends to n_neg / n_pos as beta -> 1 and to 1 as beta -> 0,
    the same interpolation Cui et al. make between no re-weighting and inverse frequency. A label that
    is never (or always) positive gets the neutral weight 1.
    """
    if scheme not in WEIGHT_SCHEMES:
        raise ValueError(f"unknown weight scheme {scheme!r}; expected one of {WEIGHT_SCHEMES}")
    counts = np.asarray(counts, dtype=np.float64)
    if np.any(counts < 0):
        raise ValueError(f"counts must be non-negative, got {counts}")
    if scheme == "none":
        return np.ones(counts.shape, np.float32)
    if num_examples is not None:  # multilabel positive weights
        neg = num_examples - counts
        if np.any(neg < 0):
            raise ValueError(f"positive counts {counts} exceed num_examples={num_examples}")
        if scheme == "inverse":
            ratio = neg / np.maximum(counts, 1.0)
        else:
            ratio = _effective_number(neg, beta) / np.maximum(_effective_number(counts, beta), 1e-12)
        degenerate = (counts == 0) | (neg == 0)
        return np.where(degenerate, 1.0, ratio).astype(np.float32)
    present = counts > 0
    if scheme == "inverse":
        weights = counts.sum() / (counts.size * np.maximum(counts, 1.0))
    else:
        raw = 1.0 / np.maximum(_effective_number(counts, beta), 1e-12)
        raw = np.where(present, raw, 0.0)
        weights = raw * present.sum() / raw.sum()
    return np.where(present, weights, 0.0).astype(np.float32)


def log_prior(kind: str, counts: np.ndarray, *, num_examples: int | None = None) -> np.ndarray:
    """Log class priors for `logit_adjusted_cross_entropy`, from `class_counts` output.

    binary: [log p_neg, log p_pos]; multiclass: log(n_c / N) [C]; multilabel: log positive rate per
    label [L] (needs `num_examples`). Empty classes are floored at a tiny prior to stay finite.
    """
    _check_kind(kind)
    counts = np.asarray(counts, dtype=np.float64)
    if kind == "multilabel":
        if num_examples is None:
            raise ValueError("multilabel log priors need num_examples (counts are positives per label)")
        prior = counts / num_examples
    else:
        prior = counts / counts.sum()
    return np.log(np.clip(prior, 1e-8, 1.0 - 1e-8)).astype(np.float32)


def _per_class(weights: jax.Array, labels: jax.Array) -> jax.Array:
    """Weight of each example's class: weights[labels] for integer labels [B]."""
    return jnp.take(jnp.asarray(weights, jnp.float32), labels.astype(jnp.int32), axis=0)


def _binary_parts(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    z = logits.astype(jnp.float32).reshape(logits.shape[0], -1)[:, 0]
    return z, labels.astype(jnp.float32).reshape(z.shape)


def plain_cross_entropy(kind: str, logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Unweighted per-example cross-entropy (the 'none' / 'balanced_sampling' loss), [B] float32."""
    return weighted_cross_entropy(kind, logits, labels, None)


def weighted_cross_entropy(kind: str, logits: jax.Array, labels: jax.Array,
                           weights: jax.Array | np.ndarray | None) -> jax.Array:
    """Class-weighted cross-entropy per example [B]: each example's CE times its class weight.

    binary/multiclass: `weights` per class ([2] / [C]), example i gets weights[y_i]; multilabel: per-label
    positive weights [L] (PyTorch BCE's pos_weight), averaged over labels. None means all ones. The
    trainer's mean divides by B, not by the summed weights ('inverse' weights already average to 1).
    """
    _check_kind(kind)
    if kind == "binary":
        z, y = _binary_parts(logits, labels)
        loss = optax.sigmoid_binary_cross_entropy(z, y)
        if weights is None:
            return loss
        w = jnp.asarray(weights, jnp.float32)
        return loss * (w[0] * (1.0 - y) + w[1] * y)
    logits = logits.astype(jnp.float32)
    if kind == "multilabel":
        y = labels.astype(jnp.float32)
        pos_w = 1.0 if weights is None else jnp.asarray(weights, jnp.float32)
        loss = -(pos_w * y * jax.nn.log_sigmoid(logits) + (1.0 - y) * jax.nn.log_sigmoid(-logits))
        return loss.mean(axis=-1)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels.astype(jnp.int32))
    return loss if weights is None else loss * _per_class(weights, labels)


def focal_loss(kind: str, logits: jax.Array, labels: jax.Array, gamma: float = 2.0,
               alpha: jax.Array | np.ndarray | None = None) -> jax.Array:
    """Focal loss per example [B] (Lin et al. 2017): -alpha_t (1 - p_t)^gamma log p_t.

    The (1 - p_t)^gamma factor shrinks the loss of well-classified examples, so the many easy majority
    examples stop dominating. gamma = 0 is plain cross-entropy. `alpha` takes the same per-class (or,
    multilabel, per-label positive) weights as `weighted_cross_entropy`; None means no weighting, and
    gamma = 0 with alpha = w equals weighted_cross_entropy(..., w). (1 - p_t) is formed in log space
    from the other classes' logits, so gradients stay finite when p_t saturates at 1.
    """
    _check_kind(kind)
    if kind in ("binary", "multilabel"):
        if kind == "binary":
            z, y = _binary_parts(logits, labels)
        else:
            z, y = logits.astype(jnp.float32), labels.astype(jnp.float32)
        loss = optax.sigmoid_focal_loss(z, y, gamma=gamma)
        if alpha is not None:
            a = jnp.asarray(alpha, jnp.float32)
            loss = loss * (a[0] * (1.0 - y) + a[1] * y if kind == "binary" else a * y + (1.0 - y))
        return loss if kind == "binary" else loss.mean(axis=-1)
    logits = logits.astype(jnp.float32)
    labels = labels.astype(jnp.int32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    is_target = jax.nn.one_hot(labels, logits.shape[-1], dtype=bool)
    others = jnp.where(is_target, -jnp.inf, logits)
    log_one_minus_pt = jax.nn.logsumexp(others, axis=-1) - jax.nn.logsumexp(logits, axis=-1)
    loss = jnp.exp(gamma * log_one_minus_pt) * ce
    return loss if alpha is None else loss * _per_class(alpha, labels)


def logit_adjusted_cross_entropy(kind: str, logits: jax.Array, labels: jax.Array,
                                 log_prior: jax.Array | np.ndarray, tau: float = 1.0) -> jax.Array:
    """Logit-adjusted cross-entropy per example [B] (Menon et al. 2021), a training-time loss.

    Multiclass: CE of softmax(logits + tau * log_prior); binary and multilabel: BCE of
    logit + tau * log(p / (1 - p)), the two-class version of the same shift (binary `log_prior` is
    [log p_neg, log p_pos], multilabel the log positive rate per label). Fitting the shifted logits
    leaves the raw logits calibrated to a class-balanced prior, so predict with the raw logits.
    """
    _check_kind(kind)
    lp = jnp.asarray(log_prior, jnp.float32)
    if kind == "multiclass" or kind == "ordinal":
        return optax.softmax_cross_entropy_with_integer_labels(
            logits.astype(jnp.float32) + tau * lp, labels.astype(jnp.int32))
    if kind == "binary":
        z, y = _binary_parts(logits, labels)
        return optax.sigmoid_binary_cross_entropy(z + tau * (lp[1] - lp[0]), y)
    log_odds = lp - jnp.log(-jnp.expm1(lp))  # log p - log(1 - p)
    shifted = logits.astype(jnp.float32) + tau * log_odds
    return optax.sigmoid_binary_cross_entropy(shifted, labels.astype(jnp.float32)).mean(axis=-1)


def make_loss(kind: str, strategy: str, counts: np.ndarray, *, focal_gamma: float = 2.0,
              cb_beta: float = 0.999, la_tau: float = 1.0, focal_alpha: str = "none",
              num_examples: int | None = None) -> LossFn:
    """Per-example loss `(logits, labels) -> [B] float32` of an imbalance strategy (config.loss.imbalance).

    'none' and 'balanced_sampling' -> plain CE (the sampler does the balancing); 'class_weighted' -> CE
    with 'inverse' weights; 'class_balanced' -> CE with 'effective_number' weights (beta = cb_beta);
    'focal' -> focal loss with gamma = focal_gamma and, unless focal_alpha is 'none', alpha from that
    weight scheme; 'logit_adjustment' -> logit-adjusted CE with tau = la_tau. `counts` is
    `class_counts(kind, train_labels, C)`; multilabel also needs `num_examples` (training set size).
    """
    _check_kind(kind)
    if strategy not in IMBALANCE_STRATEGIES:
        raise ValueError(f"unknown imbalance strategy {strategy!r} (config.loss.imbalance); expected one "
                         f"of {', '.join(repr(s) for s in IMBALANCE_STRATEGIES)}")
    if focal_alpha not in WEIGHT_SCHEMES:
        raise ValueError(f"unknown focal_alpha scheme {focal_alpha!r}; expected one of {WEIGHT_SCHEMES}")
    uses_counts = strategy in ("class_weighted", "class_balanced", "logit_adjustment") or (
        strategy == "focal" and focal_alpha != "none")
    if kind == "multilabel" and uses_counts and num_examples is None:
        raise ValueError(f"multilabel strategy {strategy!r} needs num_examples "
                         "(counts are positives per label)")

    def weights(scheme: str) -> jax.Array:
        n = num_examples if kind == "multilabel" else None
        return jnp.asarray(class_weights(counts, scheme, cb_beta, num_examples=n), jnp.float32)

    if strategy in ("none", "balanced_sampling"):
        return lambda logits, labels: plain_cross_entropy(kind, logits, labels)
    if strategy in ("class_weighted", "class_balanced"):
        w = weights("inverse" if strategy == "class_weighted" else "effective_number")
        return lambda logits, labels: weighted_cross_entropy(kind, logits, labels, w)
    if strategy == "focal":
        alpha = None if focal_alpha == "none" else weights(focal_alpha)
        return lambda logits, labels: focal_loss(kind, logits, labels, focal_gamma, alpha)
    lp = jnp.asarray(log_prior(kind, counts, num_examples=num_examples), jnp.float32)
    return lambda logits, labels: logit_adjusted_cross_entropy(kind, logits, labels, lp, la_tau)
