"""ResNet backbones (He et al. 2016) laid out exactly like torchvision's, so its ImageNet weights port 1:1.

Matching torchvision matters for numerics, not just names: convolutions pad symmetrically (stem pad 3,
3x3 convs pad 1, max-pool pad 1) where flax ``'SAME'`` would pad asymmetrically at stride 2; BatchNorm
uses eps 1e-5 and torch momentum 0.1 (= flax momentum 0.9); the bottleneck is "v1.5" (stride on the 3x3
conv). Submodules are named after torchvision's (``conv1``, ``bn1``, ``layer2_0/downsample_conv`` ...)
so the weight name map in ``medtl_jax.weights.torchvision_resnet`` reads line by line.

``variant='keras'`` expresses Keras's ``keras.applications.ResNet50`` instead (the layout of the
RadImageNet and Keras ImageNet files): "v1" bottlenecks (stride on the first 1x1 conv and on the shortcut),
convolutions with biases, BatchNorm eps 1.001e-5 (set by ``resnet50_keras``). Its ZeroPadding2D(3) +
'valid' stem and ZeroPadding2D(1) before the max-pool equal the symmetric pads here (the pool's input is
post-ReLU, so zero and -inf padding agree). Keras's 'caffe' input is BGR: ``input_bgr=True`` reverses the
channel axis first, so the pipeline's per-channel normalisation ('caffe' in ``NORMALIZATION``) stays RGB.

The backbone returns a dict of feature maps (``stem``, ``stage1`` .. ``stage4``), not logits; a head
(``medtl_jax.models.layers.heads``) or a decoder consumes them.
"""

from __future__ import annotations

import collections
import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from medtl_jax.models.layers.conv import Conv2D
from medtl_jax.models.spec import ModelSpec, StageTable, WeightSource, keras_weights, torchvision_weights

STEMS = ("imagenet", "cifar")
VARIANTS = ("torchvision", "keras")

# torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu") -> N(0, 2 / (k*k*out)), not truncated.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _pad(p: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Symmetric spatial padding as torch's ``padding=p``."""
    return ((p, p), (p, p))


def conv(features: int, kernel: int, stride: int, pad: int, dtype: Any, name: str,
         use_bias: bool = False) -> Conv2D:
    """A conv (bias-free unless ``use_bias``: Keras's ResNets have biases) with torch-style symmetric
    padding (call inside a compact method). `Conv2D` keeps nn.Conv's parameters and takes the im2col
    path on maps smaller than the kernel (the last stage at 64 px), where XLA:CPU is very slow."""
    return Conv2D(features, kernel, stride, padding=_pad(pad), use_bias=use_bias, kernel_init=conv_init,
                  dtype=dtype, name=name)


def batch_norm(train: bool, momentum: float, epsilon: float, dtype: Any, name: str) -> nn.BatchNorm:
    """BatchNorm with scale 1, bias 0 and running statistics in 'batch_stats'."""
    return nn.BatchNorm(use_running_average=not train, momentum=momentum, epsilon=epsilon,
                        dtype=dtype, param_dtype=jnp.float32, name=name)


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34); ``downsample`` adds a 1x1 strided projection on the shortcut."""

    features: int
    stride: int = 1
    downsample: bool = False
    dtype: Any = jnp.float32
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    expansion = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        bn = functools.partial(batch_norm, train, self.bn_momentum, self.bn_epsilon, self.dtype)
        y = conv(self.features, 3, self.stride, 1, self.dtype, "conv1")(x)
        y = nn.relu(bn("bn1")(y))
        y = conv(self.features, 3, 1, 1, self.dtype, "conv2")(y)
        y = bn("bn2")(y)
        if self.downsample:
            x = conv(self.features, 1, self.stride, 0, self.dtype, "downsample_conv")(x)
            x = bn("downsample_bn")(x)
        return nn.relu(y + x)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand x4 (ResNet-50/101/152). The stride sits on the 3x3 for
    ``variant='torchvision'`` (v1.5) and on the first 1x1 for ``variant='keras'`` (v1, convs with bias)."""

    features: int
    stride: int = 1
    downsample: bool = False
    dtype: Any = jnp.float32
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    variant: str = "torchvision"
    expansion = 4

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        bn = functools.partial(batch_norm, train, self.bn_momentum, self.bn_epsilon, self.dtype)
        keras = self.variant == "keras"
        c = functools.partial(conv, dtype=self.dtype, use_bias=keras)
        y = c(self.features, 1, self.stride if keras else 1, 0, name="conv1")(x)
        y = nn.relu(bn("bn1")(y))
        y = c(self.features, 3, 1 if keras else self.stride, 1, name="conv2")(y)
        y = nn.relu(bn("bn2")(y))
        y = c(self.features * 4, 1, 1, 0, name="conv3")(y)
        y = bn("bn3")(y)
        if self.downsample:
            x = c(self.features * 4, 1, self.stride, 0, name="downsample_conv")(x)
            x = bn("downsample_bn")(x)
        return nn.relu(y + x)


BLOCK_TYPES = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nn.Module):
    """A torchvision-compatible ResNet trunk returning multi-scale features.

    Attributes:
      stage_sizes: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
      block: 'basic' or 'bottleneck'.
      stem: 'imagenet' (7x7/2 conv pad 3 + BN + ReLU + 3x3/2 max-pool pad 1; feature strides 2,4,8,16,32)
        or 'cifar' (3x3/1 conv pad 1 + BN + ReLU, no pool; strides 1,1,2,4,8) as in the MedMNIST "(28)"
        baselines.
      dtype: compute dtype; parameters stay float32.
      bn_momentum, bn_epsilon: flax BatchNorm constants (torch momentum 0.1 == flax 0.9).
      variant: 'torchvision' (v1.5, bias-free convs) or 'keras' (v1 bottlenecks, convs with bias;
        bottleneck nets only, as Keras has no ResNet-18/34).
      input_bgr: reverse the channel axis first (RGB -> BGR, what Keras's 'caffe' weights expect).

    Returns from ``__call__``: a ``collections.OrderedDict`` (jax keeps its order through ``jit``,
    where a plain dict comes back key-sorted) of 'stem' (after the stem ReLU, before the max-pool)
    and 'stage1' .. 'stage4' (outputs of layer1 .. layer4).
    """

    stage_sizes: Sequence[int]
    block: str
    stem: str = "imagenet"
    dtype: Any = jnp.float32
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    variant: str = "torchvision"
    input_bgr: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> dict[str, jax.Array]:
        if self.stem not in STEMS:
            raise ValueError(f"unknown ResNet stem {self.stem!r}; expected one of {STEMS}")
        if self.block not in BLOCK_TYPES:
            raise ValueError(f"unknown ResNet block {self.block!r}; expected one of {tuple(BLOCK_TYPES)}")
        if len(self.stage_sizes) != 4:
            raise ValueError(f"ResNet needs 4 stage sizes, got {tuple(self.stage_sizes)}")
        if self.variant not in VARIANTS or (self.variant == "keras" and self.block != "bottleneck"):
            raise ValueError(f"unknown ResNet variant {self.variant!r} for {self.block!r} blocks; expected "
                             f"one of {VARIANTS} ('keras' only with bottlenecks)")
        x = jnp.asarray(x, self.dtype)
        if self.input_bgr:
            x = x[..., ::-1]
        keras = self.variant == "keras"
        if self.stem == "imagenet":
            x = conv(64, 7, 2, 3, self.dtype, "conv1", use_bias=keras)(x)
        else:
            x = conv(64, 3, 1, 1, self.dtype, "conv1", use_bias=keras)(x)
        x = batch_norm(train, self.bn_momentum, self.bn_epsilon, self.dtype, "bn1")(x)
        x = nn.relu(x)
        features = collections.OrderedDict(stem=x)  # OrderedDict: jax keeps its order through jit
        if self.stem == "imagenet":
            x = nn.max_pool(x, (3, 3), (2, 2), padding=_pad(1))

        block_cls = BLOCK_TYPES[self.block]
        in_features = 64
        for i, num_blocks in enumerate(self.stage_sizes):
            width = 64 * 2**i
            for j in range(num_blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                downsample = j == 0 and (stride != 1 or in_features != width * block_cls.expansion)
                variant = {"variant": self.variant} if self.block == "bottleneck" else {}
                x = block_cls(width, stride, downsample, self.dtype, self.bn_momentum, self.bn_epsilon,
                              **variant, name=f"layer{i + 1}_{j}")(x, train)
                in_features = width * block_cls.expansion
            features[f"stage{i + 1}"] = x
        return features


# Architecture by name: name -> (stage_sizes, block). The weight converters read it too.
ARCHS: dict[str, tuple[tuple[int, ...], str]] = {
    "resnet18": ((2, 2, 2, 2), "basic"),
    "resnet34": ((3, 4, 6, 3), "basic"),
    "resnet50": ((3, 4, 6, 3), "bottleneck"),
    "resnet101": ((3, 4, 23, 3), "bottleneck"),
    "resnet152": ((3, 8, 36, 3), "bottleneck"),
}


def resnet18(**kwargs) -> ResNet:
    """ResNet-18 backbone (basic blocks 2-2-2-2); kwargs (stem, dtype, ...) go to ``ResNet``."""
    return ResNet(*ARCHS["resnet18"], **kwargs)


def resnet34(**kwargs) -> ResNet:
    """ResNet-34 backbone (basic blocks 3-4-6-3); kwargs go to ``ResNet``."""
    return ResNet(*ARCHS["resnet34"], **kwargs)


def resnet50(**kwargs) -> ResNet:
    """ResNet-50 backbone (bottlenecks 3-4-6-3); kwargs go to ``ResNet``."""
    return ResNet(*ARCHS["resnet50"], **kwargs)


def resnet101(**kwargs) -> ResNet:
    """ResNet-101 backbone (bottlenecks 3-4-23-3); kwargs go to ``ResNet``."""
    return ResNet(*ARCHS["resnet101"], **kwargs)


def resnet152(**kwargs) -> ResNet:
    """ResNet-152 backbone (bottlenecks 3-8-36-3); kwargs go to ``ResNet``."""
    return ResNet(*ARCHS["resnet152"], **kwargs)


def resnet50_keras(**kwargs) -> ResNet:
    """Keras's ResNet50 (v1 bottlenecks, conv biases, BN eps 1.001e-5, BGR 'caffe' input): the layout of
    Keras's ImageNet and RadImageNet files. kwargs (stem, dtype, ...) go to ``ResNet``."""
    kwargs = {"variant": "keras", "bn_epsilon": 1.001e-5, "input_bgr": True, **kwargs}
    return ResNet(*ARCHS["resnet50"], **kwargs)


# Depth stages (medtl_jax.models.stages): the stem is conv1 + bn1, stage s is layer<s> (its first block,
# which downsamples, included).
DEPTH_STAGES: StageTable = (
    ("stem", r"conv1|bn1"),
    ("stage1", r"layer1_\d+"),
    ("stage2", r"layer2_\d+"),
    ("stage3", r"layer3_\d+"),
    ("stage4", r"layer4_\d+"),
)


def _spec(constructor: Callable[..., ResNet], filename: str = "", *, keras: WeightSource | None = None,
          input_norm: str = "imagenet") -> ModelSpec:
    """224 input, no head dropout, both stems; torchvision's checkpoint ``filename``, or ``keras``'s."""
    weights = keras or torchvision_weights(filename, "torchvision_resnet", arch=constructor.__name__)
    return ModelSpec(constructor, input_norm=input_norm, default_input_size=224, dropout_rate=0.0,
                     stages=DEPTH_STAGES, stems=STEMS, stem_kernel="backbone/conv1",
                     stem_offset="batch_stats/backbone/bn1/mean", weights=weights)


SPECS: dict[str, ModelSpec] = {
    # torchvision IMAGENET1K_V1 weights (the original ResNet recipe, the literature's usual baseline).
    "resnet18": _spec(resnet18, "resnet18-f37072fd.pth"),
    "resnet34": _spec(resnet34, "resnet34-b627a593.pth"),
    "resnet50": _spec(resnet50, "resnet50-0676ba61.pth"),
    "resnet101": _spec(resnet101, "resnet101-63fe2227.pth"),
    "resnet152": _spec(resnet152, "resnet152-394f9c45.pth"),
    # keras.applications' ResNet50 (Keras ImageNet or RadImageNet .h5 files; read by
    # medtl_jax.weights.keras_applications), BGR 'caffe' input.
    "resnet50_keras": _spec(resnet50_keras, keras=keras_weights(
        "resnet/resnet50_weights_tf_dim_ordering_tf_kernels.h5", "keras_resnet50"), input_norm="caffe"),
}
