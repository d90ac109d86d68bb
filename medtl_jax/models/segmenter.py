"""Segmentation heads (U-Net or light FCN decoder) over any registered backbone's feature maps.

The backbone is a dataclass field, as in ``Classifier``, so its variables sit under ``'backbone'``
and ImageNet weights load into it unchanged; everything new is under ``'decoder'`` (one submodule)
and ``'head'`` (the final 1x1 conv)::

    {'params': {'backbone': ..., 'decoder': ..., 'head': {'kernel', 'bias'}},
     'batch_stats': {'backbone': ..., 'decoder': ...}}   # 'decoder' stats: U-Net only

Transfer code can therefore treat ``'backbone'`` vs everything else (``merge_pretrained(skip=...)``
on 'decoder' and 'head', freezing or re-scaling the backbone alone).

Backbones return an ordered dict of NHWC maps, shallow to deep, whose sizes are not always exact
powers of two (Inception's unpadded convs, VGG's stride-1 first stage), so every upsampling resizes
(bilinear) to the exact size of the map it is fused with, and the last step to the input size.
Entries that are not spatial feature maps ('pre_logits' of VGG/AlexNet, Inception's 'aux_logits')
are ignored. VGG and AlexNet still compute (and, when ``train``, drop out) their fc6/fc7, so a
training step on them needs a 'dropout' rng; under ``jit`` the unused result is pruned.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from medtl_jax.models.layers.conv import Conv2D
from medtl_jax.models.layers.heads import BN_MODES
from medtl_jax.models import get_spec

DECODERS = ("unet", "fcn")
# Feature-dict keys that are not spatial maps of the image (vectors stored as [B, 1, 1, D]).
NON_SPATIAL_KEYS = ("pre_logits", "aux_logits")
DEFAULT_DECODER_CHANNELS = (256, 128, 64, 32, 16)

decoder_init = nn.initializers.he_normal()  # ReLU follows every decoder conv


def spatial_features(features: dict[str, jax.Array]) -> list[tuple[str, jax.Array]]:
    """The backbone's (name, map) pairs, shallow to deep, without the NON_SPATIAL_KEYS entries."""
    maps = [(k, v) for k, v in features.items() if k not in NON_SPATIAL_KEYS]
    if not maps:
        raise ValueError(f"the backbone returned no spatial feature maps (keys: {list(features)})")
    return maps


def resize_to(x: jax.Array, height: int, width: int) -> jax.Array:
    """Bilinear resize of an NHWC map to (height, width); the identity when it already has that size."""
    if x.shape[1:3] == (height, width):
        return x
    return jax.image.resize(x, (x.shape[0], height, width, x.shape[3]), method="bilinear")


class ConvBlock(nn.Module):
    """Two 3x3 conv -> BatchNorm -> ReLU layers (the U-Net decoder unit)."""
    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        for i in (1, 2):
            # Conv2D: nn.Conv's parameters, plus an im2col path for maps smaller than 3x3.
            x = Conv2D(self.features, 3, padding=((1, 1), (1, 1)), kernel_init=decoder_init,
                       dtype=self.dtype, name=f"conv{i}")(x)
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype,
                             param_dtype=jnp.float32, name=f"bn{i}")(x)
            x = nn.relu(x)
        return x


class UNetDecoder(nn.Module):
    """Deepest map, then for each shallower map: upsample to its size, concatenate, ``ConvBlock``;
    finally upsample to the input size and apply one more ``ConvBlock``.

    Block ``i`` (``block{i}``, counted from the deepest fusion up; the last one works at input
    resolution) has ``channels[i]`` filters, the last entry repeated when there are more blocks.
    """

    channels: Sequence[int]
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, maps: list[jax.Array], size: tuple[int, int], train: bool) -> jax.Array:
        def width(i: int) -> int:
            return self.channels[min(i, len(self.channels) - 1)]

        x = maps[-1].astype(self.dtype)
        for i, skip in enumerate(reversed(maps[:-1])):
            x = resize_to(x, skip.shape[1], skip.shape[2])
            x = jnp.concatenate([x, skip.astype(self.dtype)], axis=-1)
            x = ConvBlock(width(i), self.dtype, name=f"block{i}")(x, train)
        x = resize_to(x, *size)
        n = len(maps) - 1
        return ConvBlock(width(n), self.dtype, name=f"block{n}")(x, train)


class FCNDecoder(nn.Module):
    """FCN-8s-like light head: the deepest map's scores (computed by the caller's ``head``) plus
    1x1 score projections ``score_{k}`` of up to ``num_skips`` shallower maps, each added after
    upsampling the running sum to that map's size; the sum is then resized to the input size.

    The projections start at zero (as in Long et al.), so a fresh model predicts like FCN-32s.
    """

    num_outputs: int
    num_skips: int = 2
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, scores: jax.Array, skips: list[tuple[str, jax.Array]],
                 size: tuple[int, int]) -> jax.Array:
        for name, skip in skips[::-1][:self.num_skips]:
            scores = resize_to(scores, skip.shape[1], skip.shape[2])
            proj = nn.Conv(self.num_outputs, (1, 1), kernel_init=nn.initializers.zeros, dtype=self.dtype,
                           param_dtype=jnp.float32, name=f"score_{name}")(skip.astype(self.dtype))
            scores = scores + proj.astype(scores.dtype)
        return resize_to(scores, *size)


class Segmenter(nn.Module):
    """Backbone -> decoder -> per-pixel logits ``[B, H, W, num_outputs]`` (float32) at the input size.

    Attributes:
      backbone: module whose ``__call__(x, train)`` returns an ordered dict of NHWC feature maps.
      num_outputs: logits per pixel: 1 for a binary mask (sigmoid), C for C classes (softmax).
      decoder: 'unet' (skip-connected conv blocks) or 'fcn' (light FCN-8s-like score fusion).
      decoder_channels: U-Net block widths from the deepest scale up (ignored by 'fcn').
      fcn_skips: shallower maps the FCN head fuses (2 = FCN-8s; ignored by 'unet').
      dtype: compute dtype; parameters and the returned logits stay float32.
      backbone_bn: 'train' or 'frozen', as in ``Classifier``: 'frozen' runs the backbone in inference
        mode (running statistics, untouched); the decoder's BatchNorm always follows ``train``.
    """

    backbone: nn.Module
    num_outputs: int
    decoder: str = "unet"
    decoder_channels: Sequence[int] = DEFAULT_DECODER_CHANNELS
    fcn_skips: int = 2
    dtype: Any = jnp.float32
    backbone_bn: str = "train"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if self.backbone_bn not in BN_MODES:
            raise ValueError(f"backbone_bn={self.backbone_bn!r}; expected one of {BN_MODES}")
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder={self.decoder!r}; expected one of {DECODERS}")
        if not self.decoder_channels:
            raise ValueError("decoder_channels must name at least one width")
        size = (x.shape[1], x.shape[2])
        features = self.backbone(x, train=train and self.backbone_bn == "train")
        named = spatial_features(features)
        maps = [m for _, m in named]
        head = nn.Conv(self.num_outputs, (1, 1), dtype=self.dtype, param_dtype=jnp.float32, name="head")
        if self.decoder == "unet":
            y = UNetDecoder(tuple(self.decoder_channels), self.dtype, name="decoder")(maps, size, train)
            logits = head(y)
        else:
            scores = head(maps[-1].astype(self.dtype))
            logits = FCNDecoder(self.num_outputs, self.fcn_skips, self.dtype, name="decoder")(
                scores, named[:-1], size)
        return logits.astype(jnp.float32)


def build_segmenter(name: str, num_outputs: int, decoder: str = "unet", dtype: Any = jnp.float32,
                    backbone_bn: str = "train", **kwargs: Any) -> Segmenter:
    """``Segmenter`` over the registered backbone ``name`` (``models.get_spec``); extra keyword
    arguments (``decoder_channels``, ``fcn_skips``) go to ``Segmenter``."""

    backbone = get_spec(name).build_backbone(dtype=dtype)
    return Segmenter(backbone, num_outputs, decoder=decoder, dtype=dtype, backbone_bn=backbone_bn,
                     **kwargs)
