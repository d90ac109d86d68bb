"""Model registry: backbone name -> how to build it, what input it expects, whether ImageNet weights exist.

Add a backbone by writing ``models/<family>.py`` (a module returning a dict of feature maps) and one
``ModelSpec`` row in ``MODELS``; ``build_classifier`` then puts the standard head on it.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from medtl_jax.models import alexnet, cbr, densenet, efficientnet, efficientnet_lite, inception, resnet, vgg
from medtl_jax.models.layers.heads import Classifier

# Per-channel (mean, std) in [0, 1] pixel units, applied by the data pipeline as (x - mean) / std.
NORMALIZATION: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # torchvision's ImageNet statistics
    "minus_one_one": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # x * 2 - 1, what TF-ported models expect
    # Keras 'caffe': 255 * x - mean per channel, no std. Listed in RGB order; the model (input_bgr=True)
    # then reverses the channels to the BGR its weights expect.
    "caffe": ((123.68 / 255, 116.779 / 255, 103.939 / 255), (1 / 255, 1 / 255, 1 / 255)),
}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """How to build one backbone and feed it.

    Attributes:
      build_backbone: constructor taking keyword arguments (``dtype=``; ResNets also ``stem=``).
      input_norm: key of ``NORMALIZATION`` the ImageNet weights were trained with.
      default_input_size: side of the square input the weights were trained at.
      dropout_rate: dropout before the classifier head (the source recipe's).
      pretrained: whether ``medtl_jax.weights.store.load_pretrained`` has ImageNet weights for it.
      stems: the stems ``build_classifier(stem=...)`` accepts; the first is the default.
    """

    build_backbone: Callable[..., nn.Module]
    input_norm: str
    default_input_size: int
    dropout_rate: float
    pretrained: bool
    stems: tuple[str, ...] = ("imagenet",)


def _resnet_spec(constructor: Callable[..., nn.Module]) -> ModelSpec:
    return ModelSpec(constructor, input_norm="imagenet", default_input_size=224, dropout_rate=0.0,
                     pretrained=True, stems=resnet.STEMS)


def _imagenet_spec(constructor: Callable[..., nn.Module]) -> ModelSpec:
    """A torchvision-ported backbone: ImageNet normalisation, 224 input, no extra dropout at the head
    (VGG and AlexNet keep their own dropout inside, around fc6/fc7)."""
    return ModelSpec(constructor, input_norm="imagenet", default_input_size=224, dropout_rate=0.0,
                     pretrained=True)


def _scratch_spec(constructor: Callable[..., nn.Module]) -> ModelSpec:
    """A small net trained from scratch (Transfusion's CBR family): no ImageNet weights."""
    return ModelSpec(constructor, input_norm="imagenet", default_input_size=224, dropout_rate=0.0,
                     pretrained=False)


def _efficientnet_spec(constructor: Callable[..., nn.Module], size: int) -> ModelSpec:
    """A torchvision EfficientNet-B*: ImageNet normalisation, the paper's input side, and the head
    dropout of torchvision's config (``efficientnet.ARCHS``)."""
    *_, dropout = efficientnet.ARCHS[constructor.__name__]
    return ModelSpec(constructor, input_norm="imagenet", default_input_size=size, dropout_rate=dropout,
                     pretrained=True)


MODELS: dict[str, ModelSpec] = {
    "resnet18": _resnet_spec(resnet.resnet18),
    "resnet34": _resnet_spec(resnet.resnet34),
    "resnet50": _resnet_spec(resnet.resnet50),
    "resnet101": _resnet_spec(resnet.resnet101),
    "resnet152": _resnet_spec(resnet.resnet152),
    "efficientnet_lite0": ModelSpec(efficientnet_lite.efficientnet_lite0, input_norm="minus_one_one",
                                    default_input_size=224, dropout_rate=0.2, pretrained=True),
    # The paper's resolutions (torchvision's transforms for its B2 weights crop 288 instead of 260).
    "efficientnet_b0": _efficientnet_spec(efficientnet.efficientnet_b0, 224),
    "efficientnet_b1": _efficientnet_spec(efficientnet.efficientnet_b1, 240),
    "efficientnet_b2": _efficientnet_spec(efficientnet.efficientnet_b2, 260),
    "efficientnet_b3": _efficientnet_spec(efficientnet.efficientnet_b3, 300),
    # ImageNet-normalised input; the backbone's transform_input re-normalises it for Google's weights.
    "inception_v3": ModelSpec(inception.inception_v3, input_norm="imagenet", default_input_size=299,
                              dropout_rate=0.5, pretrained=True),
    "vgg11": _imagenet_spec(vgg.vgg11),
    "vgg11_bn": _imagenet_spec(vgg.vgg11_bn),
    "vgg13": _imagenet_spec(vgg.vgg13),
    "vgg13_bn": _imagenet_spec(vgg.vgg13_bn),
    "vgg16": _imagenet_spec(vgg.vgg16),
    "vgg16_bn": _imagenet_spec(vgg.vgg16_bn),
    "vgg19": _imagenet_spec(vgg.vgg19),
    "vgg19_bn": _imagenet_spec(vgg.vgg19_bn),
    "alexnet": _imagenet_spec(alexnet.alexnet),
    "densenet121": _imagenet_spec(densenet.densenet121),
    "densenet169": _imagenet_spec(densenet.densenet169),
    "densenet201": _imagenet_spec(densenet.densenet201),
    # keras.applications layouts (Keras ImageNet or RadImageNet .h5 files; medtl_jax.weights.keras_applications).
    "resnet50_keras": ModelSpec(resnet.resnet50_keras, input_norm="caffe", default_input_size=224,
                                dropout_rate=0.0, pretrained=True, stems=resnet.STEMS),
    "densenet121_keras": _imagenet_spec(densenet.densenet121_keras),
    "inception_v3_keras": ModelSpec(inception.inception_v3_keras, input_norm="minus_one_one",
                                    default_input_size=299, dropout_rate=0.0, pretrained=True),
    "cbr_larget": _scratch_spec(cbr.cbr_larget),
    "cbr_largew": _scratch_spec(cbr.cbr_largew),
    "cbr_small": _scratch_spec(cbr.cbr_small),
    "cbr_tiny": _scratch_spec(cbr.cbr_tiny),
}


def get_spec(name: str) -> ModelSpec:
    """The ``ModelSpec`` registered as ``name``; ValueError with close matches if there is none."""
    try:
        return MODELS[name]
    except KeyError:
        close = difflib.get_close_matches(name, MODELS, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}.{hint} Known models: {', '.join(MODELS)}.") from None


def build_classifier(name: str, num_outputs: int, *, stem: str = "imagenet",
                     dtype: Any = jnp.float32, **backbone_kwargs) -> Classifier:
    """``Classifier`` (registered backbone + pooled dense head with the spec's dropout) for ``name``.

    ``stem='cifar'`` swaps a ResNet's stride-4 ImageNet stem for the stride-1 3x3 stem used on 28x28
    MedMNIST images (the ported stem weights then no longer fit). ``dtype`` is the compute dtype.
    ``backbone_kwargs`` go to the backbone's constructor (e.g. Inception's ``aux_logits``).
    """
    spec = get_spec(name)
    if stem not in spec.stems:
        raise ValueError(f"model {name!r} has no stem {stem!r}; available: {', '.join(spec.stems)}")
    kwargs: dict[str, Any] = {"dtype": dtype, **backbone_kwargs}
    if stem != spec.stems[0]:
        kwargs["stem"] = stem
    return Classifier(spec.build_backbone(**kwargs), num_outputs, dropout_rate=spec.dropout_rate,
                      dtype=dtype)
