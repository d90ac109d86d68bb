"""The small "CBR" nets of Raghu et al. 2019 ("Transfusion"), the scratch-trained baselines that matched
ImageNet-transferred ResNet-50/Inception-v3 on retinal and chest X-ray tasks.

Each net is a stack of blocks conv-BatchNorm-ReLU followed by a 3x3 stride-2 max-pool, then global
average pooling and a dense layer (here the ``Classifier``'s pool and ``head``):

  CBR-LargeT  7x7 convs, 32, 64, 128, 256, 512 channels (five blocks: "tall")
  CBR-LargeW  7x7 convs, 64, 128, 256, 512 channels ("wide")
  CBR-Small   7x7 convs, 32, 64, 128, 256 channels
  CBR-Tiny    5x5 convs, 64, 128, 256, 512 channels

What the paper leaves unspecified, and what we chose:
  - conv stride 1 and no conv bias (the BatchNorm that follows makes a bias redundant);
  - padding: symmetric ``k // 2`` for the convs (3 for 7x7, 2 for 5x5) and 1 for the 3x3/2 max-pool,
    i.e. 'SAME'-sized outputs written torch-style (flax ``'SAME'`` pads asymmetrically at stride 2), so
    every block halves the side rounding up: 224 -> 112 -> 56 -> 28 -> 14 -> 7;
  - BatchNorm eps 1e-5, torch momentum 0.1 (flax 0.9), as the other backbones here;
  - He-normal (fan_out) conv init, as torchvision's ResNets; no dropout before the head.
There are no pretrained weights: these nets exist to be trained from scratch.

Feature dict (a ``collections.OrderedDict``): 'stage1' .. 'stageN', the output of each block AFTER its
max-pool (strides 2, 4, 8, 16[, 32]), so the ``Classifier`` pools exactly what the paper's head pools.
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from medtl_jax.models.resnet import batch_norm, conv
from medtl_jax.models.spec import ModelSpec, StageTable


class CBR(nn.Module):
    """A Transfusion CBR net: per block conv(k x k)-BN-ReLU-maxpool(3x3/2), widths ``widths``.

    Attributes:
      widths: output channels of each block's conv.
      kernel: conv kernel side (7 or 5).
      dtype: compute dtype; parameters stay float32.
      bn_momentum, bn_epsilon: flax BatchNorm constants.
    """

    widths: Sequence[int]
    kernel: int
    dtype: Any = jnp.float32
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> dict[str, jax.Array]:
        x = jnp.asarray(x, self.dtype)
        features = collections.OrderedDict()  # OrderedDict: jax keeps its order through jit
        for i, width in enumerate(self.widths, start=1):
            x = conv(width, self.kernel, 1, self.kernel // 2, self.dtype, f"conv{i}")(x)
            x = nn.relu(batch_norm(train, self.bn_momentum, self.bn_epsilon, self.dtype, f"bn{i}")(x))
            x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
            features[f"stage{i}"] = x
        return features


# Architecture by name: name -> (widths, kernel), from the paper's description.
ARCHS: dict[str, tuple[tuple[int, ...], int]] = {
    "cbr_larget": ((32, 64, 128, 256, 512), 7),
    "cbr_largew": ((64, 128, 256, 512), 7),
    "cbr_small": ((32, 64, 128, 256), 7),
    "cbr_tiny": ((64, 128, 256, 512), 5),
}


def cbr_larget(**kwargs) -> CBR:
    """CBR-LargeT: five 7x7 blocks, 32 .. 512 channels; kwargs (dtype, ...) go to ``CBR``."""
    return CBR(*ARCHS["cbr_larget"], **kwargs)


def cbr_largew(**kwargs) -> CBR:
    """CBR-LargeW: four 7x7 blocks, 64 .. 512 channels; kwargs go to ``CBR``."""
    return CBR(*ARCHS["cbr_largew"], **kwargs)


def cbr_small(**kwargs) -> CBR:
    """CBR-Small: four 7x7 blocks, 32 .. 256 channels; kwargs go to ``CBR``."""
    return CBR(*ARCHS["cbr_small"], **kwargs)


def cbr_tiny(**kwargs) -> CBR:
    """CBR-Tiny: four 5x5 blocks, 64 .. 512 channels; kwargs go to ``CBR``."""
    return CBR(*ARCHS["cbr_tiny"], **kwargs)


# Depth stages (medtl_jax.models.stages): one per conv block, no separate stem.
def depth_stages(num_blocks: int) -> StageTable:
    """Stage i is block i's conv and BatchNorm."""
    return tuple((f"stage{i}", rf"(conv|bn){i}") for i in range(1, num_blocks + 1))


def _spec(constructor: Callable[..., CBR]) -> ModelSpec:
    """A small net trained from scratch (Transfusion's CBR family): no ImageNet weights, no stem to fold."""
    widths, _ = ARCHS[constructor.__name__]
    return ModelSpec(constructor, input_norm="imagenet", default_input_size=224, dropout_rate=0.0,
                     stages=depth_stages(len(widths)))


SPECS: dict[str, ModelSpec] = {
    "cbr_larget": _spec(cbr_larget),
    "cbr_largew": _spec(cbr_largew),
    "cbr_small": _spec(cbr_small),
    "cbr_tiny": _spec(cbr_tiny),
}
