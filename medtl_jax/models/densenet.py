"""DenseNet-121/169/201 (Huang et al. 2017, DenseNet-BC) laid out like torchvision's (CheXNet's backbone).

Torchvision's layout: stem ``conv0`` 7x7/2 pad 3 -> 64, ``norm0``, ReLU, 3x3/2 max-pool pad 1; four
dense blocks of ``denselayer{j}`` (``norm1``-ReLU-``conv1`` 1x1 -> bn_size * growth, ``norm2``-ReLU-
``conv2`` 3x3 pad 1 -> growth; its output is concatenated to its input along channels); between blocks
a ``transition{i}`` (``norm``-ReLU-``conv`` 1x1 halving the channels, 2x2/2 average pool); ``norm5``
after the last block, and the ReLU that torchvision's ``forward`` applies before pooling. Convs have no
bias; BatchNorm eps 1e-5, torch momentum 0.1 (flax 0.9). Submodule names mirror torchvision's
(``denseblock2/denselayer3/norm1`` is ``features.denseblock2.denselayer3.norm1``), so the weight map in
``medtl_jax.weights.torchvision_densenet`` reads line by line.

Feature dict (a ``collections.OrderedDict``, so its order survives ``jit``):
  'stem'              after conv0 + norm0 + ReLU, before pool0: stride 2, 64 ch
  'stage1'..'stage3'  output of dense blocks 1..3 (before their transition): strides 4, 8, 16
  'stage4'            dense block 4 + norm5 + ReLU: stride 32 (1024 / 1664 / 1920 ch for 121/169/201)
"""

from __future__ import annotations

import collections
import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from medtl_jax.models.layers.conv import Conv2D

from medtl_jax.models.resnet import batch_norm
from medtl_jax.models.spec import ModelSpec, StageTable, WeightSource, keras_weights, torchvision_weights

# torchvision: kaiming_normal_ with its defaults (fan_in, ReLU gain) -> N(0, 2 / (k*k*in)).
conv_init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def _conv(features: int, kernel: int, stride: int, pad: int, dtype: Any, name: str) -> Conv2D:
    """A bias-free conv with torch-style symmetric padding (call inside a compact method); im2col on
    maps smaller than the kernel (the last dense block at small inputs), see models/conv.py."""
    return Conv2D(features, kernel, stride, padding=((pad, pad), (pad, pad)), kernel_init=conv_init,
                  dtype=dtype, name=name)


class DenseLayer(nn.Module):
    """BN-ReLU-conv1x1 (bottleneck to ``bn_size * growth_rate``) then BN-ReLU-conv3x3 (``growth_rate``);
    returns only the new ``growth_rate`` channels (the block concatenates them)."""

    growth_rate: int
    bn_size: int
    dtype: Any = jnp.float32
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        bn = functools.partial(batch_norm, train, self.bn_momentum, self.bn_epsilon, self.dtype)
        y = _conv(self.bn_size * self.growth_rate, 1, 1, 0, self.dtype, "conv1")(nn.relu(bn("norm1")(x)))
        return _conv(self.growth_rate, 3, 1, 1, self.dtype, "conv2")(nn.relu(bn("norm2")(y)))


class DenseBlock(nn.Module):
    """``num_layers`` dense layers, each fed the concatenation of the block input and all earlier outputs."""

    num_layers: int
    growth_rate: int
    bn_size: int
    dtype: Any = jnp.float32
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        for j in range(1, self.num_layers + 1):
            new = DenseLayer(self.growth_rate, self.bn_size, self.dtype, self.bn_momentum, self.bn_epsilon,
                             name=f"denselayer{j}")(x, train)
            x = jnp.concatenate([x, new], axis=-1)  # torch.cat(features, 1): old channels first
        return x


class Transition(nn.Module):
    """BN-ReLU-conv1x1 to ``features`` channels, then a 2x2/2 average pool (floor, as torch's)."""

    features: int
    dtype: Any = jnp.float32
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = nn.relu(batch_norm(train, self.bn_momentum, self.bn_epsilon, self.dtype, "norm")(x))
        x = _conv(self.features, 1, 1, 0, self.dtype, "conv")(x)
        return nn.avg_pool(x, (2, 2), (2, 2), padding="VALID")


class DenseNet(nn.Module):
    """A torchvision-compatible DenseNet-BC trunk returning multi-scale features.

    Attributes:
      block_config: dense layers per block, e.g. (6, 12, 24, 16) for DenseNet-121.
      growth_rate: channels each dense layer adds (32 for 121/169/201).
      bn_size: bottleneck width factor of the 1x1 conv (4).
      num_init_features: stem width (64).
      dtype: compute dtype; parameters stay float32.
      bn_momentum, bn_epsilon: flax BatchNorm constants (torch momentum 0.1 == flax 0.9).
    """

    block_config: Sequence[int]
    growth_rate: int = 32
    bn_size: int = 4
    num_init_features: int = 64
    dtype: Any = jnp.float32
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> dict[str, jax.Array]:
        bn = functools.partial(batch_norm, train, self.bn_momentum, self.bn_epsilon, self.dtype)
        bn_consts = dict(dtype=self.dtype, bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon)
        x = jnp.asarray(x, self.dtype)
        x = _conv(self.num_init_features, 7, 2, 3, self.dtype, "conv0")(x)
        x = nn.relu(bn("norm0")(x))
        features = collections.OrderedDict(stem=x)  # OrderedDict: jax keeps its order through jit
        x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))

        num_features = self.num_init_features
        last = len(self.block_config)
        for i, num_layers in enumerate(self.block_config, start=1):
            x = DenseBlock(num_layers, self.growth_rate, self.bn_size, **bn_consts,
                           name=f"denseblock{i}")(x, train)
            num_features += num_layers * self.growth_rate
            if i == last:
                x = nn.relu(bn("norm5")(x))  # torchvision: features end in norm5; forward adds the ReLU
            else:
                features[f"stage{i}"] = x
                num_features //= 2
                x = Transition(num_features, **bn_consts, name=f"transition{i}")(x, train)
        features[f"stage{last}"] = x
        return features


# Architecture by name: name -> block_config (growth 32, bn_size 4, 64 stem features for all three).
ARCHS: dict[str, tuple[int, ...]] = {
    "densenet121": (6, 12, 24, 16),
    "densenet169": (6, 12, 32, 32),
    "densenet201": (6, 12, 48, 32),
}


def densenet121(**kwargs) -> DenseNet:
    """DenseNet-121 backbone (dense blocks 6-12-24-16); kwargs (dtype, ...) go to ``DenseNet``."""
    return DenseNet(ARCHS["densenet121"], **kwargs)


def densenet169(**kwargs) -> DenseNet:
    """DenseNet-169 backbone (dense blocks 6-12-32-32); kwargs go to ``DenseNet``."""
    return DenseNet(ARCHS["densenet169"], **kwargs)


def densenet201(**kwargs) -> DenseNet:
    """DenseNet-201 backbone (dense blocks 6-12-48-32); kwargs go to ``DenseNet``."""
    return DenseNet(ARCHS["densenet201"], **kwargs)


def densenet121_keras(**kwargs) -> DenseNet:
    """Keras's DenseNet121: torchvision's layout (ZeroPadding + 'valid' = the same symmetric pads) with
    BatchNorm eps 1.001e-5; the layout of Keras's ImageNet and RadImageNet files. Its 'torch' input
    preprocessing is the 'imagenet' normalisation. kwargs go to ``DenseNet``."""
    return DenseNet(ARCHS["densenet121"], **{"bn_epsilon": 1.001e-5, **kwargs})


# Depth stages (medtl_jax.models.stages): a transition downsamples, so it opens the next stage
# (transition1 belongs to stage2).
DEPTH_STAGES: StageTable = (
    ("stem", r"conv0|norm0"),
    ("stage1", r"denseblock1"),
    ("stage2", r"transition1|denseblock2"),
    ("stage3", r"transition2|denseblock3"),
    ("stage4", r"transition3|denseblock4|norm5"),
)


def _spec(constructor: Callable[..., DenseNet], filename: str = "", *,
          keras: WeightSource | None = None) -> ModelSpec:
    """ImageNet normalisation (Keras's DenseNet 'torch' preprocessing too), 224 input, no head dropout;
    torchvision's checkpoint ``filename``, or ``keras``'s."""
    weights = keras or torchvision_weights(filename, "torchvision_densenet", arch=constructor.__name__)
    return ModelSpec(constructor, input_norm="imagenet", default_input_size=224, dropout_rate=0.0,
                     stages=DEPTH_STAGES, stem_kernel="backbone/conv0",
                     stem_offset="batch_stats/backbone/norm0/mean", weights=weights)


SPECS: dict[str, ModelSpec] = {
    # torchvision IMAGENET1K_V1 files; they use the legacy 'norm.1' keys (the converter takes both).
    "densenet121": _spec(densenet121, "densenet121-a639ec97.pth"),
    "densenet169": _spec(densenet169, "densenet169-b2777c0a.pth"),
    "densenet201": _spec(densenet201, "densenet201-c1103571.pth"),
    # keras.applications' DenseNet121 (Keras ImageNet or RadImageNet .h5 files).
    "densenet121_keras": _spec(densenet121_keras, keras=keras_weights(
        "densenet/densenet121_weights_tf_dim_ordering_tf_kernels.h5", "keras_densenet121")),
}
