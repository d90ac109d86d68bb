"""Semantic segmentation task: per-pixel losses restricted to valid pixels, probabilities and masks.

Binary masks use one logit per pixel with a sigmoid; C classes a softmax over C logits. Every loss
takes a ``valid`` map ([B, H, W], 1 = counts) so pixels outside a fundus field of view, or padding
added to reach the network's input size, neither change the loss nor receive gradient: their logits
and labels are replaced by constants before any arithmetic, so even a garbage label (255) or an
infinite logit there cannot leak a NaN through the gradient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

SEGMENTATION_LOSSES = ("ce", "dice", "dice_ce", "focal")


class SegmentationTask:
    """A segmentation problem with ``num_classes`` classes (background included; 2 = binary).

    Args:
      num_classes: classes per pixel, class 0 being background (foreground for Dice is 1..C-1).
      loss: one of SEGMENTATION_LOSSES (``config.loss.segmentation``); stored as ``loss_name``
        because ``loss`` is the method computing it.
      focal_gamma: focusing exponent of the 'focal' loss.
      dice_smooth: additive smoothing of the soft Dice ratio, (2I + s) / (P + T + s).
    """

    def __init__(self, num_classes: int, loss: str = "dice_ce", focal_gamma: float = 2.0,
                 dice_smooth: float = 1.0):
        if num_classes < 2:
            raise ValueError(f"a segmentation task needs at least 2 classes, got {num_classes}")
        if loss not in SEGMENTATION_LOSSES:
            raise ValueError(f"unknown config.loss.segmentation {loss!r}; "
                             f"expected one of {', '.join(SEGMENTATION_LOSSES)}")
        self.num_classes = int(num_classes)
        self.loss_name = loss
        self.focal_gamma = float(focal_gamma)
        self.dice_smooth = float(dice_smooth)

    def _key(self) -> tuple:
        return (self.num_classes, self.loss_name, self.focal_gamma, self.dice_smooth)

    def __eq__(self, other) -> bool:
        return isinstance(other, SegmentationTask) and self._key() == other._key()

    def __hash__(self) -> int:  # hashable, so it can be a static argument of jit
        return hash(self._key())

    def __repr__(self) -> str:
        return (f"SegmentationTask(num_classes={self.num_classes}, loss={self.loss_name!r}, "
                f"focal_gamma={self.focal_gamma}, dice_smooth={self.dice_smooth})")

    @property
    def binary(self) -> bool:
        """Whether the head has one sigmoid logit (2 classes) instead of a softmax over classes."""
        return self.num_classes == 2

    @property
    def num_outputs(self) -> int:
        """Logits per pixel: 1 for binary, else one per class."""
        return 1 if self.binary else self.num_classes

    def _clean(self, logits, masks, valid):
        """float32 logits, int masks and float valid with invalid pixels set to constants (0)."""
        logits = jnp.asarray(logits, jnp.float32)
        masks = jnp.asarray(masks)
        valid = jnp.ones(masks.shape, jnp.float32) if valid is None else jnp.asarray(valid, jnp.float32)
        keep = valid > 0
        logits = jnp.where(keep[..., None], logits, 0.0)
        masks = jnp.where(keep, masks, 0).astype(jnp.int32)
        return logits, masks, keep.astype(jnp.float32)

    def pixel_ce(self, logits: jax.Array, masks: jax.Array) -> jax.Array:
        """Per-pixel cross-entropy [B, H, W]: sigmoid BCE (binary) or softmax CE (multi-class)."""
        if self.binary:
            return optax.sigmoid_binary_cross_entropy(logits[..., 0], masks.astype(jnp.float32))
        return optax.softmax_cross_entropy_with_integer_labels(logits, masks)

    def pixel_focal(self, logits: jax.Array, masks: jax.Array) -> jax.Array:
        """Per-pixel focal loss [B, H, W], -(1 - p_t)^gamma log p_t (Lin et al. 2017), no alpha."""
        if self.binary:
            return optax.sigmoid_focal_loss(logits[..., 0], masks.astype(jnp.float32), gamma=self.focal_gamma)
        log_p = jax.nn.log_softmax(logits, axis=-1)
        log_pt = jnp.take_along_axis(log_p, masks[..., None], axis=-1)[..., 0]
        return -((1.0 - jnp.exp(log_pt)) ** self.focal_gamma) * log_pt

    def dice(self, logits: jax.Array, masks: jax.Array, valid: jax.Array) -> jax.Array:
        """Soft Dice loss per image [B]: 1 - mean over foreground classes of (2I + s) / (P + T + s),
        sums over valid pixels. Written here because optax.dice_loss takes no pixel mask."""
        if self.binary:
            probs = jax.nn.sigmoid(logits[..., 0])[..., None]
            target = masks[..., None].astype(jnp.float32)
        else:
            probs = jax.nn.softmax(logits, axis=-1)[..., 1:]  # foreground classes only
            target = jax.nn.one_hot(masks, self.num_classes, dtype=jnp.float32)[..., 1:]
        probs, target = probs * valid[..., None], target * valid[..., None]
        inter = jnp.sum(probs * target, axis=(1, 2))
        denom = jnp.sum(probs, axis=(1, 2)) + jnp.sum(target, axis=(1, 2))
        coeff = (2.0 * inter + self.dice_smooth) / (denom + self.dice_smooth)
        return 1.0 - jnp.mean(coeff, axis=-1)

    def loss(self, logits: jax.Array, masks: jax.Array, valid: jax.Array | None = None) -> jax.Array:
        """Per-example loss [B] float32 from logits [B, H, W, num_outputs], integer masks [B, H, W]
        and ``valid`` [B, H, W] (0/1; None = every pixel). Pixel losses are averaged over valid pixels."""
        logits, masks, valid = self._clean(logits, masks, valid)
        count = jnp.maximum(jnp.sum(valid, axis=(1, 2)), 1.0)

        def pixel_mean(per_pixel):
            return jnp.sum(per_pixel * valid, axis=(1, 2)) / count

        if self.loss_name == "ce":
            return pixel_mean(self.pixel_ce(logits, masks))
        if self.loss_name == "focal":
            return pixel_mean(self.pixel_focal(logits, masks))
        dice = self.dice(logits, masks, valid)
        if self.loss_name == "dice":
            return dice
        return dice + pixel_mean(self.pixel_ce(logits, masks))

    def batch_loss(self, logits: jax.Array, batch: dict) -> jax.Array:
        """Per-example loss [B] of a training batch ({'image', 'mask', 'valid'})."""
        return self.loss(logits, batch["mask"], batch["valid"])

    def probabilities(self, logits: jax.Array) -> jax.Array:
        """Foreground probability [B, H, W] for binary; softmax [B, H, W, C] otherwise."""
        logits = jnp.asarray(logits, jnp.float32)
        if self.binary:
            return jax.nn.sigmoid(logits[..., 0])
        return jax.nn.softmax(logits, axis=-1)

    def predict_mask(self, probs, threshold: float = 0.5):
        """Integer class map from ``probabilities``' output (any leading shape): probs >= threshold
        for binary, argmax over classes otherwise. numpy in, numpy out (for evaluation); else jax."""
        xp = np if isinstance(probs, np.ndarray) else jnp
        if self.binary:
            return (probs >= threshold).astype(xp.int32)
        return xp.argmax(probs, axis=-1).astype(xp.int32)

