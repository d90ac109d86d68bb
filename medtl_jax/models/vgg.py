"""VGG-11/13/16/19 (Simonyan & Zisserman 2015), with and without BatchNorm, laid out like torchvision's.

Torchvision's layout: blocks of 3x3 convs (pad 1, with bias, even before BatchNorm) each followed by
ReLU (BN + ReLU in the ``_bn`` variants), a 2x2/2 max-pool after every block, then
``AdaptiveAvgPool2d(7, 7)``, ``fc6`` (25088 -> 4096), ReLU, Dropout(0.5), ``fc7`` (4096 -> 4096), ReLU,
Dropout(0.5) and ``fc8`` (4096 -> 1000). Submodules are named as in the paper's Caffe release:
``conv{block}_{i}`` (and ``bn{block}_{i}``), ``fc6``, ``fc7``; ``fc8`` is the ``Classifier``'s ``head``.
The map to torchvision's ``features.N`` indices is in ``medtl_jax.weights.torchvision_vgg``.

Feature dict (a ``collections.OrderedDict``, so its order survives ``jit``):
  'stage1' .. 'stage5'  output of each conv block BEFORE its max-pool: strides 1, 2, 4, 8, 16 and
                        64, 128, 256, 512, 512 channels (what a U-Net decoder wants as skips).
  'pre_logits'          fc7's output after ReLU and dropout, shaped [B, 1, 1, 4096].
Ending on 'pre_logits' makes the ``Classifier``'s global average pool the identity and its ``head``
exactly fc8, so fine-tuning keeps the pretrained fc6/fc7, as VGG transfer in the literature does.
Inputs need a side of at least 32 (five halvings); maps smaller than 7x7 are stretched by the
torch-exact adaptive pool (``medtl_jax.models.layers.pooling``).
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from medtl_jax.models.layers.pooling import adaptive_avg_pool
from medtl_jax.models.resnet import batch_norm, conv_init
from medtl_jax.models.spec import ModelSpec, StageTable, torchvision_weights

WIDTHS = (64, 128, 256, 512, 512)
POOLED_SIZE = (7, 7)
# torchvision: Linear weights N(0, 0.01), biases 0.
dense_init = nn.initializers.normal(0.01)


class VGG(nn.Module):
    """A torchvision-compatible VGG returning per-block features and fc7's output.

    Attributes:
      convs_per_block: 3x3 convs in each of the five blocks, e.g. (2, 2, 3, 3, 3) for VGG-16.
      batch_norm: BatchNorm after every conv (the ``_bn`` variants).
      dropout_rate: dropout after fc6 and after fc7, active when ``train`` (uses the 'dropout' rng).
      dtype: compute dtype; parameters stay float32.
      bn_momentum, bn_epsilon: flax BatchNorm constants (torch momentum 0.1 == flax 0.9).
    """

    convs_per_block: Sequence[int]
    batch_norm: bool = False
    dropout_rate: float = 0.5
    dtype: Any = jnp.float32
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> dict[str, jax.Array]:
        if len(self.convs_per_block) != len(WIDTHS):
            raise ValueError(f"VGG needs {len(WIDTHS)} blocks, got {tuple(self.convs_per_block)}")
        x = jnp.asarray(x, self.dtype)
        features = collections.OrderedDict()  # OrderedDict: jax keeps its order through jit
        for b, (num_convs, width) in enumerate(zip(self.convs_per_block, WIDTHS), start=1):
            if b > 1:
                x = nn.max_pool(x, (2, 2), (2, 2), padding="VALID")
            for i in range(1, num_convs + 1):
                x = nn.Conv(width, (3, 3), padding=((1, 1), (1, 1)), kernel_init=conv_init,
                            dtype=self.dtype, param_dtype=jnp.float32, name=f"conv{b}_{i}")(x)
                if self.batch_norm:
                    x = batch_norm(train, self.bn_momentum, self.bn_epsilon, self.dtype, f"bn{b}_{i}")(x)
                x = nn.relu(x)
            features[f"stage{b}"] = x
        x = nn.max_pool(x, (2, 2), (2, 2), padding="VALID")
        x = adaptive_avg_pool(x, POOLED_SIZE)
        x = x.reshape(x.shape[0], -1)  # NHWC flatten: (h, w, c) order; the weight port permutes fc6
        for name in ("fc6", "fc7"):
            x = nn.Dense(4096, kernel_init=dense_init, dtype=self.dtype, param_dtype=jnp.float32,
                         name=name)(x)
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(nn.relu(x))
        features["pre_logits"] = x[:, None, None, :]
        return features


# Architecture by name: name -> (convs per block, batch_norm). The weight converters read it too.
ARCHS: dict[str, tuple[tuple[int, ...], bool]] = {
    "vgg11": ((1, 1, 2, 2, 2), False),
    "vgg11_bn": ((1, 1, 2, 2, 2), True),
    "vgg13": ((2, 2, 2, 2, 2), False),
    "vgg13_bn": ((2, 2, 2, 2, 2), True),
    "vgg16": ((2, 2, 3, 3, 3), False),
    "vgg16_bn": ((2, 2, 3, 3, 3), True),
    "vgg19": ((2, 2, 4, 4, 4), False),
    "vgg19_bn": ((2, 2, 4, 4, 4), True),
}


def vgg11(**kwargs) -> VGG:
    """VGG-11 ("A": 1-1-2-2-2 convs); kwargs (dtype, dropout_rate, ...) go to ``VGG``."""
    return VGG(*ARCHS["vgg11"], **kwargs)


def vgg11_bn(**kwargs) -> VGG:
    """VGG-11 with BatchNorm; kwargs go to ``VGG``."""
    return VGG(*ARCHS["vgg11_bn"], **kwargs)


def vgg13(**kwargs) -> VGG:
    """VGG-13 ("B": 2-2-2-2-2 convs); kwargs go to ``VGG``."""
    return VGG(*ARCHS["vgg13"], **kwargs)


def vgg13_bn(**kwargs) -> VGG:
    """VGG-13 with BatchNorm; kwargs go to ``VGG``."""
    return VGG(*ARCHS["vgg13_bn"], **kwargs)


def vgg16(**kwargs) -> VGG:
    """VGG-16 ("D": 2-2-3-3-3 convs), the literature's usual VGG; kwargs go to ``VGG``."""
    return VGG(*ARCHS["vgg16"], **kwargs)


def vgg16_bn(**kwargs) -> VGG:
    """VGG-16 with BatchNorm; kwargs go to ``VGG``."""
    return VGG(*ARCHS["vgg16_bn"], **kwargs)


def vgg19(**kwargs) -> VGG:
    """VGG-19 ("E": 2-2-4-4-4 convs); kwargs go to ``VGG``."""
    return VGG(*ARCHS["vgg19"], **kwargs)


def vgg19_bn(**kwargs) -> VGG:
    """VGG-19 with BatchNorm; kwargs go to ``VGG``."""
    return VGG(*ARCHS["vgg19_bn"], **kwargs)


# Depth stages (medtl_jax.models.stages): no separate stem; a last 'pre_logits' stage, fc6 and fc7, which
# the feature dict ends on.
DEPTH_STAGES: StageTable = (
    ("stage1", r"(conv|bn)1_\d+"),
    ("stage2", r"(conv|bn)2_\d+"),
    ("stage3", r"(conv|bn)3_\d+"),
    ("stage4", r"(conv|bn)4_\d+"),
    ("stage5", r"(conv|bn)5_\d+"),
    ("pre_logits", r"fc6|fc7"),
)


def _spec(constructor: Callable[..., VGG], filename: str) -> ModelSpec:
    """ImageNet normalisation, 224 input, no extra dropout at the head (VGG keeps its own around fc6/fc7),
    torchvision's IMAGENET1K_V1 weights; the stem conv has a bias to take a fold's offset."""
    return ModelSpec(constructor, input_norm="imagenet", default_input_size=224, dropout_rate=0.0,
                     stages=DEPTH_STAGES, stem_kernel="backbone/conv1_1",
                     stem_offset="params/backbone/conv1_1/bias",
                     weights=torchvision_weights(filename, "torchvision_vgg", arch=constructor.__name__))


SPECS: dict[str, ModelSpec] = {
    "vgg11": _spec(vgg11, "vgg11-8a719046.pth"),
    "vgg11_bn": _spec(vgg11_bn, "vgg11_bn-6002323d.pth"),
    "vgg13": _spec(vgg13, "vgg13-19584684.pth"),
    "vgg13_bn": _spec(vgg13_bn, "vgg13_bn-abd245e5.pth"),
    "vgg16": _spec(vgg16, "vgg16-397923af.pth"),
    "vgg16_bn": _spec(vgg16_bn, "vgg16_bn-6c64b313.pth"),
    "vgg19": _spec(vgg19, "vgg19-dcbb9e9d.pth"),
    "vgg19_bn": _spec(vgg19_bn, "vgg19_bn-c79401a0.pth"),
}
