"""One record per backbone: how to build it, what it is fed, how deep each part is, where its stem is and
which ImageNet checkpoint fits it.

Each family module (``resnet``, ``vgg``, ...) fills a ``ModelSpec`` per registered name and exports them as
``SPECS``; ``medtl_jax.models.MODELS`` is their union. The records are plain data: ``WeightSource.layout``
names the converter family by a string key, which ``medtl_jax.weights.store.LAYOUTS`` resolves, so models/
never imports weights/.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn

# Per-channel (mean, std) in [0, 1] pixel units, applied by the data pipeline as (x - mean) / std.
NORMALIZATION: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # torchvision's ImageNet statistics
    "minus_one_one": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # x * 2 - 1, what TF-ported models expect
    # Keras 'caffe': 255 * x - mean per channel, no std. Listed in RGB order; the model (input_bgr=True)
    # then reverses the channels to the BGR its weights expect.
    "caffe": ((123.68 / 255, 116.779 / 255, 103.939 / 255), (1 / 255, 1 / 255, 1 / 255)),
}

TORCHVISION_URL = "https://download.pytorch.org/models/"
KERAS_APPLICATIONS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"

# Depth stages (``medtl_jax.models.stages``): ``(stage_name, regex)`` over the backbone's top-level
# submodule names, shallowest first.
StageTable = tuple[tuple[str, str], ...]


@dataclasses.dataclass(frozen=True)
class WeightSource:
    """Where one backbone's ImageNet checkpoint comes from and which converter reads it (data only).

    Attributes:
      filename: the checkpoint's file name (looked for in the weight store; a '-<hex>.' part is the
        expected sha256 prefix).
      layout: key of ``medtl_jax.weights.store.LAYOUTS``: the converter, reader and skipped-keys
        function of this checkpoint format (e.g. 'torchvision_resnet', 'keras_resnet50').
      url: where to download it, or None.
      package_locator: 'module:attr.path' of a zero-argument callable returning the path of a copy
        shipped inside an installed Python package, or None.
      options: keyword arguments of the converter as sorted ``(name, value)`` pairs (hashable); read
        them as a dict with ``converter_kwargs``.
    """

    filename: str
    layout: str
    url: str | None = None
    package_locator: str | None = None
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def converter_kwargs(self) -> dict[str, Any]:
        """``options`` as the keyword arguments the layout's converter is called with."""
        return dict(self.options)


def torchvision_weights(filename: str, layout: str, **options: Any) -> WeightSource:
    """A checkpoint on download.pytorch.org; ``options`` go to the converter (e.g. ``arch='resnet18'``)."""
    return WeightSource(filename, layout, url=TORCHVISION_URL + filename,
                        options=tuple(sorted(options.items())))


def keras_weights(path: str, layout: str) -> WeightSource:
    """Keras's own ImageNet ``.h5`` (with top; no hash in its name: downloads are unchecked), ``path``
    below the keras-applications bucket. Any Keras file of the same architecture -- RadImageNet's notop
    ``.h5`` included -- is read instead with ``--config.model.weights_file=/path/to/file.h5``."""
    return WeightSource(path.rpartition("/")[2], layout, url=KERAS_APPLICATIONS_URL + path)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """How to build one backbone and feed it, how deep each part is, and where its weights come from.

    Attributes:
      build_backbone: constructor taking keyword arguments (``dtype=``; ResNets also ``stem=``).
      input_norm: key of ``NORMALIZATION`` the ImageNet weights were trained with.
      default_input_size: side of the square input the weights were trained at.
      dropout_rate: dropout before the classifier head (the source recipe's).
      stages: the depth-stage table (``StageTable``; the rule is in ``medtl_jax.models.stages``).
      stems: the stems ``build_classifier(stem=...)`` accepts; the first is the default.
      stem_kernel: params path (below 'params') of the stem conv whose kernel sees the input channels,
        e.g. 'backbone/conv1'; None when gray input cannot be folded into the stem.
      stem_offset: full path where the constant offset of a stem fold goes (see
        ``medtl_jax.weights.channels``): the stem conv's own 'params/.../bias', else the
        'batch_stats/.../mean' of the BatchNorm that directly follows it; None with ``stem_kernel``.
      weights: the ImageNet checkpoint ``medtl_jax.weights.store.load_pretrained`` ports, or None
        (trained from scratch only).
      has_transform_input: the backbone has torchvision Inception's ``transform_input`` (which needs 3
        channels: it is switched off for gray input, normalised to [-1, 1] instead).
      has_aux_classifier: the backbone can grow an auxiliary classifier (``aux_logits=True``) for an
        auxiliary loss.
    """

    build_backbone: Callable[..., nn.Module]
    input_norm: str
    default_input_size: int
    dropout_rate: float
    stages: StageTable
    stems: tuple[str, ...] = ("imagenet",)
    stem_kernel: str | None = None
    stem_offset: str | None = None
    weights: WeightSource | None = None
    has_transform_input: bool = False
    has_aux_classifier: bool = False

    @property
    def pretrained(self) -> bool:
        """Whether ``medtl_jax.weights.store.load_pretrained`` has ImageNet weights for it."""
        return self.weights is not None
