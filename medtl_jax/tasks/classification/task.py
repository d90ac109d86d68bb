"""Binary, multi-class, ordinal and multi-label classification tasks.

A task owns its loss and how logits become scores, so the trainer and evaluator never branch on kind.
Binary uses one logit with a sigmoid; multi-class a softmax over C logits; multi-label a sigmoid per label.
Ordinal grades use either the softmax layout or a CORAL head (K-1 rank-consistent cumulative logits,
`medtl_jax.tasks.classification.ordinal`); both give [N, K] class probabilities, so MedMNIST's AUC/ACC stay comparable,
and the report adds the quadratic weighted kappa. The loss can be replaced by an imbalance-aware one
(`medtl_jax.tasks.classification.losses.make_loss`, chosen by `config.loss.imbalance`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from medtl_jax.data.types import EXAMPLE_LABEL_KINDS
from medtl_jax.tasks.classification import metrics
from medtl_jax.tasks.classification import ordinal

TASK_KINDS = EXAMPLE_LABEL_KINDS
HEADS = ("dense", "coral")


@dataclasses.dataclass(frozen=True)
class ClassificationTask:
    """One classification problem: `kind` in TASK_KINDS, its number of classes (or labels), the head
    ('dense', or 'coral' for ordinal kinds) and an optional per-example loss replacing the plain one."""

    kind: str
    num_classes: int
    label_names: tuple[str, ...] = ()
    head: str = "dense"
    loss_fn: Callable[[jax.Array, jax.Array], jax.Array] | None = dataclasses.field(default=None, compare=False)

    @property
    def num_outputs(self) -> int:
        """Width of the head: 1 for binary, K-1 for a CORAL head, else one logit per class/label."""
        if self.head == "coral":
            return self.num_classes - 1
        return 1 if self.kind == "binary" else self.num_classes

    def loss(self, logits: jax.Array, labels: jax.Array) -> jax.Array:
        """Per-example loss [B] in float32."""
        logits = logits.astype(jnp.float32)
        if self.head == "coral":
            return ordinal.coral_loss(logits, labels, self.num_classes)
        if self.loss_fn is not None:
            return self.loss_fn(logits, labels).astype(jnp.float32)
        if self.kind == "binary":
            return optax.sigmoid_binary_cross_entropy(logits[:, 0], labels.astype(jnp.float32))
        if self.kind == "multilabel":
            return optax.sigmoid_binary_cross_entropy(logits, labels.astype(jnp.float32)).mean(axis=-1)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels.astype(jnp.int32))

    def batch_loss(self, logits: jax.Array, batch: dict) -> jax.Array:
        """Per-example loss of a training batch ({'image', 'label'})."""
        return self.loss(logits, batch["label"])

    def scores(self, logits: jax.Array) -> jax.Array:
        """Probabilities in the metrics module's convention ([B] for binary)."""
        logits = logits.astype(jnp.float32)
        if self.head == "coral":
            return ordinal.coral_probs(logits)
        if self.kind == "binary":
            return jax.nn.sigmoid(logits[:, 0])
        if self.kind == "multilabel":
            return jax.nn.sigmoid(logits)
        return jax.nn.softmax(logits, axis=-1)

    def evaluate(self, labels: np.ndarray, scores: np.ndarray, *, threshold: float = 0.5,
                 youden_threshold=None, bootstrap_samples: int = 1000, seed: int = 0) -> dict:
        """Headline metrics of one split (see medtl_jax.tasks.classification.metrics.classification_report)."""
        return metrics.classification_report(self.kind, labels, scores, threshold=threshold,
                                             youden_threshold=youden_threshold,
                                             bootstrap_samples=bootstrap_samples, seed=seed)

    def decision_threshold(self, labels: np.ndarray, scores: np.ndarray):
        """Youden-optimal threshold(s) on these (validation) predictions; None for argmax kinds."""
        if self.kind not in ("binary", "multilabel"):
            return None
        return metrics.youden_thresholds(self.kind, labels, scores)


def make_task(kind: str, num_classes: int, label_names: tuple[str, ...] = (), *, head: str = "dense",
              loss_fn: Callable | None = None) -> ClassificationTask:
    """Builds the task for a dataset's label kind; an unknown kind or head names the valid ones."""
    if kind not in TASK_KINDS:
        raise ValueError(f"unknown task kind {kind!r}; expected one of {TASK_KINDS}")
    if kind == "binary" and num_classes != 2:
        raise ValueError(f"a binary task needs 2 classes, got {num_classes}")
    if head not in HEADS:
        raise ValueError(f"config.task.ordinal_head={head!r} is not one of {HEADS}")
    if head == "coral" and kind != "ordinal":
        raise ValueError(f"a CORAL head needs an ordinal task, got {kind!r}")
    if head == "coral" and loss_fn is not None:
        raise ValueError("config.loss.imbalance with a CORAL head: only 'none' or 'balanced_sampling' apply "
                         "(set config.task.ordinal_head='dense' for the weighted losses)")
    return ClassificationTask(kind=kind, num_classes=num_classes, label_names=tuple(label_names), head=head,
                              loss_fn=loss_fn)
