"""Binary, multi-class (and ordinal, for now as multi-class) and multi-label classification tasks.

A task owns its loss and how logits become scores, so the trainer and evaluator never branch on kind.
Binary uses one logit with a sigmoid; multi-class a softmax over C logits; multi-label a sigmoid per label.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from medtl_jax import metrics

TASK_KINDS = ("binary", "multiclass", "ordinal", "multilabel")


@dataclasses.dataclass(frozen=True)
class ClassificationTask:
    """One classification problem: `kind` in TASK_KINDS and its number of classes (or labels)."""

    kind: str
    num_classes: int
    label_names: tuple[str, ...] = ()

    @property
    def num_outputs(self) -> int:
        """Width of the head: 1 for binary, else one logit per class/label."""
        return 1 if self.kind == "binary" else self.num_classes

    def loss(self, logits: jax.Array, labels: jax.Array) -> jax.Array:
        """Per-example loss [B] in float32."""
        logits = logits.astype(jnp.float32)
        if self.kind == "binary":
            return optax.sigmoid_binary_cross_entropy(logits[:, 0], labels.astype(jnp.float32))
        if self.kind == "multilabel":
            return optax.sigmoid_binary_cross_entropy(logits, labels.astype(jnp.float32)).mean(axis=-1)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels.astype(jnp.int32))

    def scores(self, logits: jax.Array) -> jax.Array:
        """Probabilities in the metrics module's convention ([B] for binary)."""
        logits = logits.astype(jnp.float32)
        if self.kind == "binary":
            return jax.nn.sigmoid(logits[:, 0])
        if self.kind == "multilabel":
            return jax.nn.sigmoid(logits)
        return jax.nn.softmax(logits, axis=-1)

    def evaluate(self, labels: np.ndarray, scores: np.ndarray, *, threshold: float = 0.5,
                 bootstrap_samples: int = 1000, seed: int = 0) -> dict:
        """Headline metrics of one split (see medtl_jax.metrics.classification_report)."""
        return metrics.classification_report(self.kind, labels, scores, threshold=threshold,
                                             bootstrap_samples=bootstrap_samples, seed=seed)


def make_task(kind: str, num_classes: int, label_names: tuple[str, ...] = ()) -> ClassificationTask:
    """Builds the task for a dataset's label kind; an unknown kind names the valid ones."""
    if kind not in TASK_KINDS:
        raise ValueError(f"unknown task kind {kind!r}; expected one of {TASK_KINDS}")
    if kind == "binary" and num_classes != 2:
        raise ValueError(f"a binary task needs 2 classes, got {num_classes}")
    return ClassificationTask(kind=kind, num_classes=num_classes, label_names=tuple(label_names))
