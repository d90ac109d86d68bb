"""Classification head over any backbone that returns a dict of feature maps.

The backbone is a dataclass field, so flax names its variables ``'backbone'`` and the head's ``'head'``:
``{'params': {'backbone': ..., 'head': {'kernel', 'bias'}}, 'batch_stats': {'backbone': ...}}``. That
split is what lets ImageNet weights be loaded under a fresh head (``merge_pretrained(skip=('head',))``)
and lets transfer modes freeze or re-scale the backbone alone. The CORAL ordinal head
(``head_type='coral'``, see ``medtl_jax.tasks.classification.ordinal``) keeps the name and the ``kernel``/``bias`` keys,
only with a one-column kernel, so all of that applies to it unchanged.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

BN_MODES = ("train", "frozen")
HEAD_TYPES = ("dense", "coral")


def _uniform_coral_bias(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """Biases b_k = log((K-1-k) / (k+1)): strictly decreasing, and uniform class probabilities at w.h = 0."""
    del key
    k = jnp.arange(shape[0], dtype=jnp.float32)
    return jnp.log((shape[0] - k) / (k + 1.0)).astype(dtype)


class CoralHead(nn.Module):
    """CORAL output layer: K-1 cumulative logits ``x @ kernel + bias`` sharing one weight column.

    ``kernel`` is [D, 1] and ``bias`` [K-1] (``num_outputs`` = K-1). Sharing the weights is what makes
    the K-1 "y > k" predictions rank-consistent (Cao et al. 2020); the biases start ordered.
    """

    num_outputs: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], 1), self.param_dtype)
        bias = self.param("bias", _uniform_coral_bias, (self.num_outputs,), self.param_dtype)
        score = jnp.dot(x.astype(self.dtype), kernel.astype(self.dtype))
        return score + bias.astype(self.dtype)[None, :]


class Classifier(nn.Module):
    """Backbone -> global average pool of its last feature map -> dropout -> ``Dense(num_outputs)``.

    Attributes:
      backbone: module whose ``__call__(x, train)`` returns an ordered dict of NHWC feature maps.
      num_outputs: number of logits (1000 for the ImageNet classifier, 1 for a binary task ...).
      dropout_rate: dropout before the dense layer, active only when ``train`` (uses the 'dropout' rng).
      dtype: compute dtype of the dense layer; logits are always returned as float32.
      backbone_bn: 'train' normalises with batch statistics and updates the running ones while training;
        'frozen' runs the backbone in inference mode (running statistics, untouched; its internal dropout
        off), which is what a linear probe or a frozen-statistics fine-tune needs.
      head_type: 'dense' (``nn.Dense(num_outputs)``) or 'coral' (``CoralHead``: one shared weight column
        and ``num_outputs`` = K-1 biases, for a K-grade ordinal task). Either is named 'head'.
    """

    backbone: nn.Module
    num_outputs: int
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    backbone_bn: str = "train"
    head_type: str = "dense"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if self.backbone_bn not in BN_MODES:
            raise ValueError(f"backbone_bn={self.backbone_bn!r}; expected one of {BN_MODES}")
        if self.head_type not in HEAD_TYPES:
            raise ValueError(f"head_type={self.head_type!r}; expected one of {HEAD_TYPES}")
        features = self.backbone(x, train=train and self.backbone_bn == "train")
        last = list(features.values())[-1]
        pooled = jnp.mean(last.astype(jnp.float32), axis=(1, 2))
        pooled = nn.Dropout(self.dropout_rate, deterministic=not train)(pooled)
        if self.head_type == "coral":
            head = CoralHead(self.num_outputs, dtype=self.dtype, param_dtype=jnp.float32, name="head")
        else:
            head = nn.Dense(self.num_outputs, dtype=self.dtype, param_dtype=jnp.float32, name="head")
        logits = head(pooled)
        return logits.astype(jnp.float32)
