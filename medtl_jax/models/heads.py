"""Classification head over any backbone that returns a dict of feature maps.

The backbone is a dataclass field, so flax names its variables ``'backbone'`` and the head's ``'head'``:
``{'params': {'backbone': ..., 'head': {'kernel', 'bias'}}, 'batch_stats': {'backbone': ...}}``. That
split is what lets ImageNet weights be loaded under a fresh head (``merge_pretrained(skip=('head',))``)
and lets transfer modes freeze or re-scale the backbone alone.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class Classifier(nn.Module):
    """Backbone -> global average pool of its last feature map -> dropout -> ``Dense(num_outputs)``.

    Attributes:
      backbone: module whose ``__call__(x, train)`` returns an ordered dict of NHWC feature maps.
      num_outputs: number of logits (1000 for the ImageNet classifier, 1 for a binary task ...).
      dropout_rate: dropout before the dense layer, active only when ``train`` (uses the 'dropout' rng).
      dtype: compute dtype of the dense layer; logits are always returned as float32.
    """

    backbone: nn.Module
    num_outputs: int
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        features = self.backbone(x, train=train)
        last = list(features.values())[-1]
        pooled = jnp.mean(last.astype(jnp.float32), axis=(1, 2))
        pooled = nn.Dropout(self.dropout_rate, deterministic=not train)(pooled)
        logits = nn.Dense(self.num_outputs, dtype=self.dtype, param_dtype=jnp.float32, name="head")(pooled)
        return logits.astype(jnp.float32)
