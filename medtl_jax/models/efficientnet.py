"""EfficientNet-B0..B3 (Tan & Le 2019) laid out exactly like torchvision's, so its ImageNet weights port 1:1.

Numerics follow torchvision's ``efficientnet_b0`` .. ``_b3`` (read from torchvision 0.29's source):
  - convolutions pad symmetrically, ``(k - 1) // 2`` on every side (TF 'SAME' would pad asymmetrically
    at stride 2); depthwise convs use the fast shift-and-add ``DepthwiseConv(padding=(k - 1) // 2)``;
  - BatchNorm is torch's default, eps 1e-5 and momentum 0.1 (flax 0.9). Only B5-B7 (and V2) pass
    eps 1e-3 / momentum 0.01 to ``nn.BatchNorm2d``; B0-B4 do not, and their rwightman weights were
    trained with the defaults;
  - MBConv: 1x1 expand (absent when it would not change the width) + BN + SiLU, kxk depthwise + BN + SiLU,
    squeeze-excitation (global mean, 1x1 conv to ``max(1, block_input_channels // 4)`` + SiLU, 1x1 conv
    back + sigmoid, scale), 1x1 project + BN; residual only when stride 1 and widths match;
  - stochastic depth in torchvision's 'row' mode (a whole residual branch dropped per example, survivors
    scaled by 1 / (1 - p)), with p = 0.2 * block_index / num_blocks, active only when ``train`` and drawn
    from the 'dropout' rng;
  - width and depth multipliers: channels ``make_divisible(c * width, 8)``, repeats ``ceil(n * depth)``;
    the last 1x1 conv has 4x the last block's width (1280, 1280, 1408, 1536 for B0-B3).

Submodules mirror torchvision's ``features`` indices: ``stem_conv``/``stem_bn`` are ``features.0.0``/
``.0.1``; block ``features.S.B`` is ``features_S_B`` (with ``expand_conv``, ``expand_bn``,
``depthwise_conv``, ``depthwise_bn``, ``se/fc1``, ``se/fc2``, ``project_conv``, ``project_bn``);
``last_conv``/``last_bn`` are ``features.8.0``/``.8.1``; ``classifier.1`` is the Classifier's ``head``.
The name map is ``medtl_jax.weights.torchvision_efficientnet``.

Feature dict (a ``collections.OrderedDict``, so its order survives ``jit``), the last block at each stride:
  'stem'   stride 2  -- output of features_1 (16 ch for B0-B2, 24 for B3)
  'stage1' stride 4  -- output of features_2
  'stage2' stride 8  -- output of features_3
  'stage3' stride 16 -- output of features_5
  'stage4' stride 32 -- after last_conv + last_bn + SiLU (what the Classifier pools)
Any input side works (torchvision's min_size is 1); sides are ceil-halved five times.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from medtl_jax.models.layers.depthwise import DepthwiseConv
from medtl_jax.models.resnet import batch_norm
from medtl_jax.models.spec import ModelSpec, StageTable, torchvision_weights

# torchvision: kaiming_normal_(mode="fan_out") -> N(0, 2 / fan_out). In flax's (k, k, 1, C) depthwise
# layout fan_out is k*k*C, as torch computes it for the (C, 1, k, k) weight.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
FEATURE_KEYS = {2: "stem", 4: "stage1", 8: "stage2", 16: "stage3", 32: "stage4"}


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` (at least ``divisor``), going up one
    multiple if rounding lost more than 10% -- the channel rounding of TF's and torchvision's MobileNets."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """One row of the B0 table (torchvision's ``MBConvConfig`` before scaling)."""

    expand: int
    kernel: int
    stride: int
    in_features: int
    out_features: int
    repeats: int


# EfficientNet-B0, Table 1 of the paper: expand, kernel, stride, in, out, repeats (torchvision's order).
B0_STAGES: tuple[StageSpec, ...] = (
    StageSpec(1, 3, 1, 32, 16, 1),
    StageSpec(6, 3, 2, 16, 24, 2),
    StageSpec(6, 5, 2, 24, 40, 2),
    StageSpec(6, 3, 2, 40, 80, 3),
    StageSpec(6, 5, 1, 80, 112, 3),
    StageSpec(6, 5, 2, 112, 192, 4),
    StageSpec(6, 3, 1, 192, 320, 1),
)


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One MBConv block after scaling: torchvision's ``features.{stage}.{index}``."""

    stage: int
    index: int
    kernel: int
    stride: int
    in_features: int
    hidden: int
    out_features: int

    @property
    def has_expand(self) -> bool:
        """torchvision adds the 1x1 expand conv only when it changes the width (not in stage 1)."""
        return self.hidden != self.in_features

    @property
    def has_skip(self) -> bool:
        """Residual connection (with stochastic depth) only where the shapes allow it."""
        return self.stride == 1 and self.in_features == self.out_features

    @property
    def squeeze(self) -> int:
        """Squeeze-excitation width: a quarter of the block INPUT channels, as torchvision."""
        return max(1, self.in_features // 4)


def block_specs(width: float, depth: float, stages: tuple[StageSpec, ...] = B0_STAGES) -> list[BlockSpec]:
    """The scaled blocks of an EfficientNet with width/depth multipliers, in order."""
    blocks = []
    for s, stage in enumerate(stages, start=1):
        in_features = make_divisible(stage.in_features * width)
        out_features = make_divisible(stage.out_features * width)
        for b in range(int(math.ceil(stage.repeats * depth))):
            block_in = in_features if b == 0 else out_features
            blocks.append(BlockSpec(s, b, stage.kernel, stage.stride if b == 0 else 1, block_in,
                                    make_divisible(block_in * stage.expand), out_features))
    return blocks


class SqueezeExcitation(nn.Module):
    """x * sigmoid(fc2(SiLU(fc1(mean_hw(x))))), with fc1/fc2 1x1 convs with bias (torchvision's layout)."""

    squeeze: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        fc = functools.partial(nn.Conv, kernel_size=(1, 1), kernel_init=conv_init, dtype=self.dtype,
                               param_dtype=jnp.float32)
        scale = jnp.mean(x.astype(jnp.float32), axis=(1, 2), keepdims=True).astype(x.dtype)
        scale = nn.silu(fc(self.squeeze, name="fc1")(scale))
        scale = nn.sigmoid(fc(x.shape[-1], name="fc2")(scale))
        return x * scale


class MBConv(nn.Module):
    """Inverted residual with squeeze-excitation (see the module docstring for the exact recipe)."""

    spec: BlockSpec
    stochastic_depth_rate: float = 0.0
    dtype: Any = jnp.float32
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        s = self.spec
        bn = functools.partial(batch_norm, train, self.bn_momentum, self.bn_epsilon, self.dtype)
        conv1x1 = functools.partial(nn.Conv, kernel_size=(1, 1), use_bias=False, kernel_init=conv_init,
                                    dtype=self.dtype, param_dtype=jnp.float32)
        y = x
        if s.has_expand:
            y = nn.silu(bn("expand_bn")(conv1x1(s.hidden, name="expand_conv")(y)))
        y = DepthwiseConv(s.kernel, s.stride, kernel_init=conv_init, dtype=self.dtype,
                          padding=(s.kernel - 1) // 2, name="depthwise_conv")(y)
        y = nn.silu(bn("depthwise_bn")(y))
        y = SqueezeExcitation(s.squeeze, self.dtype, name="se")(y)
        y = bn("project_bn")(conv1x1(s.out_features, name="project_conv")(y))
        if s.has_skip:
            # Stochastic depth, 'row' mode: drop the whole branch per example, scale survivors.
            y = nn.Dropout(self.stochastic_depth_rate, broadcast_dims=(1, 2, 3), deterministic=not train)(y)
            y = y + x
        return y


class EfficientNet(nn.Module):
    """A torchvision-compatible EfficientNet trunk returning multi-scale features.

    Attributes:
      width: channel multiplier (B0 1.0, B1 1.0, B2 1.1, B3 1.2).
      depth: repeat multiplier (B0 1.0, B1 1.1, B2 1.2, B3 1.4).
      stochastic_depth_rate: rate of the last block; block i uses rate * i / num_blocks ('dropout' rng).
      dtype: compute dtype; parameters stay float32.
      bn_momentum, bn_epsilon: flax BatchNorm constants (torch defaults: momentum 0.1 == flax 0.9, 1e-5).
    """

    width: float = 1.0
    depth: float = 1.0
    stochastic_depth_rate: float = 0.2
    dtype: Any = jnp.float32
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> dict[str, jax.Array]:
        bn = functools.partial(batch_norm, train, self.bn_momentum, self.bn_epsilon, self.dtype)
        blocks = block_specs(self.width, self.depth)
        x = jnp.asarray(x, self.dtype)
        x = nn.Conv(blocks[0].in_features, (3, 3), (2, 2), padding=((1, 1), (1, 1)), use_bias=False,
                    kernel_init=conv_init, dtype=self.dtype, param_dtype=jnp.float32, name="stem_conv")(x)
        x = nn.silu(bn("stem_bn")(x))
        stride = 2
        features: dict[str, jax.Array] = collections.OrderedDict()  # order survives jit
        for i, spec in enumerate(blocks):
            rate = self.stochastic_depth_rate * i / len(blocks)
            x = MBConv(spec, rate, self.dtype, self.bn_momentum, self.bn_epsilon,
                       name=f"features_{spec.stage}_{spec.index}")(x, train)
            stride *= spec.stride
            next_stride = blocks[i + 1].stride if i + 1 < len(blocks) else None
            if next_stride != 1 and stride < 32:
                features[FEATURE_KEYS[stride]] = x
        x = nn.Conv(4 * blocks[-1].out_features, (1, 1), use_bias=False, kernel_init=conv_init,
                    dtype=self.dtype, param_dtype=jnp.float32, name="last_conv")(x)
        features[FEATURE_KEYS[stride]] = nn.silu(bn("last_bn")(x))
        return features


# name -> (width, depth, head dropout), from torchvision's efficientnet_b0 .. _b3.
ARCHS: dict[str, tuple[float, float, float]] = {
    "efficientnet_b0": (1.0, 1.0, 0.2),
    "efficientnet_b1": (1.0, 1.1, 0.2),
    "efficientnet_b2": (1.1, 1.2, 0.3),
    "efficientnet_b3": (1.2, 1.4, 0.3),
}


def _build(arch: str, **kwargs) -> EfficientNet:
    width, depth, _ = ARCHS[arch]
    return EfficientNet(width, depth, **kwargs)


def efficientnet_b0(**kwargs) -> EfficientNet:
    """EfficientNet-B0 backbone (width 1.0, depth 1.0; 16 blocks); kwargs go to ``EfficientNet``."""
    return _build("efficientnet_b0", **kwargs)


def efficientnet_b1(**kwargs) -> EfficientNet:
    """EfficientNet-B1 backbone (width 1.0, depth 1.1; 23 blocks); kwargs go to ``EfficientNet``."""
    return _build("efficientnet_b1", **kwargs)


def efficientnet_b2(**kwargs) -> EfficientNet:
    """EfficientNet-B2 backbone (width 1.1, depth 1.2; 23 blocks); kwargs go to ``EfficientNet``."""
    return _build("efficientnet_b2", **kwargs)


def efficientnet_b3(**kwargs) -> EfficientNet:
    """EfficientNet-B3 backbone (width 1.2, depth 1.4; 26 blocks); kwargs go to ``EfficientNet``."""
    return _build("efficientnet_b3", **kwargs)


# Depth stages (medtl_jax.models.stages), over torchvision's features.<i>.<j>: 'stem' ends at features_1,
# then 2, 3, 5, and last_bn.
DEPTH_STAGES: StageTable = (
    ("stem", r"stem_conv|stem_bn|features_1_\d+"),
    ("stage1", r"features_2_\d+"),
    ("stage2", r"features_3_\d+"),
    ("stage3", r"features_[45]_\d+"),
    ("stage4", r"features_[67]_\d+|last_conv|last_bn"),
)


def _spec(constructor: Callable[..., EfficientNet], size: int, filename: str) -> ModelSpec:
    """ImageNet normalisation, the paper's input side, the head dropout of torchvision's config
    (``ARCHS``) and its IMAGENET1K_V1 weights (ported by torchvision from timm, rwightman's)."""
    arch = constructor.__name__
    *_, dropout = ARCHS[arch]
    return ModelSpec(constructor, input_norm="imagenet", default_input_size=size, dropout_rate=dropout,
                     stages=DEPTH_STAGES, stem_kernel="backbone/stem_conv",
                     stem_offset="batch_stats/backbone/stem_bn/mean",
                     weights=torchvision_weights(filename, "torchvision_efficientnet", arch=arch))


# The paper's resolutions (torchvision's transforms for its B2 weights crop 288 instead of 260).
SPECS: dict[str, ModelSpec] = {
    "efficientnet_b0": _spec(efficientnet_b0, 224, "efficientnet_b0_rwightman-7f5810bc.pth"),
    "efficientnet_b1": _spec(efficientnet_b1, 240, "efficientnet_b1_rwightman-bac287d4.pth"),
    "efficientnet_b2": _spec(efficientnet_b2, 260, "efficientnet_b2_rwightman-c35c1473.pth"),
    "efficientnet_b3": _spec(efficientnet_b3, 300, "efficientnet_b3_rwightman-b3899882.pth"),
}
