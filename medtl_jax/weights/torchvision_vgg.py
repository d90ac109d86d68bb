"""torchvision VGG / AlexNet state dicts -> flax variables of ``Classifier(VGG(...) | AlexNet(), 1000)``.

torchvision keeps both nets as two ``nn.Sequential``s, so its keys are positions: ``features.N`` (convs,
BatchNorms; ReLUs and pools hold no tensors but take an index) and ``classifier.N`` (Linears between
ReLU/Dropout). The maps below walk the same layer lists to name each position: VGG-16's
``features.28.weight`` is flax ``params/backbone/conv5_3/kernel``; ``classifier.0`` / ``.3`` / ``.6`` are
``fc6`` / ``fc7`` / ``head`` (AlexNet: ``classifier.1`` / ``.4`` / ``.6``).

fc6 needs more than a transpose. torch flattens the pooled NCHW map in (c, h, w) order; flax flattens the
NHWC map in (h, w, c) order. ``fc6_columns_to_hwc`` reorders the input columns of the torch weight
(4096, C*H*W) into the flax order before the usual dense transpose.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from medtl_jax.models import alexnet, vgg
from medtl_jax.weights import NameMap, apply_name_map, bn_rows, conv_bias_rows


def dense_rows(torch_prefix: str, flax_path: tuple[str, ...]) -> NameMap:
    """Name-map rows for a torch Linear: ``weight`` (out, in) -> ``kernel`` (in, out), ``bias`` as is."""
    return [
        (f"{torch_prefix}.weight", ("params", *flax_path, "kernel"), "dense"),
        (f"{torch_prefix}.bias", ("params", *flax_path, "bias"), "copy"),
    ]


def fc6_columns_to_hwc(weight: np.ndarray, channels: int, height: int, width: int) -> np.ndarray:
    """Torch Linear weight (out, C*H*W) reading a (c, h, w)-flattened map -> the same weight (out, H*W*C)
    reading the (h, w, c)-flattened NHWC map, so ``flax_flat @ result.T == torch_flat @ weight.T``.

    The result is the transposed view of a contiguous (H*W*C, out) kernel, so the name map's 'dense'
    transpose costs nothing. The copy goes tile by tile: one strided transpose of VGG's 400 MB fc6 is
    about 5x slower (cache misses).
    """
    out_features, in_features = weight.shape
    if in_features != channels * height * width:
        raise ValueError(f"fc6 weight has {in_features} inputs, expected {channels}x{height}x{width} = "
                         f"{channels * height * width}")
    per_channel = weight.reshape(out_features, channels, height, width)
    kernel = np.empty((height, width, channels, out_features), weight.dtype)
    for o in range(0, out_features, 256):
        for c in range(0, channels, 16):
            kernel[:, :, c:c + 16, o:o + 256] = per_channel[o:o + 256, c:c + 16].transpose(2, 3, 1, 0)
    return kernel.reshape(in_features, out_features).T


def vgg_name_map(convs_per_block: Sequence[int], batch_norm: bool) -> NameMap:
    """Rows ``(torch key, flax path, transform)`` for every tensor of a torchvision VGG (fc8 -> head)."""
    rows: NameMap = []
    index = 0  # position in torchvision's ``features`` Sequential
    for b, num_convs in enumerate(convs_per_block, start=1):
        for i in range(1, num_convs + 1):
            rows += conv_bias_rows(f"features.{index}", ("backbone", f"conv{b}_{i}"))
            if batch_norm:
                rows += bn_rows(f"features.{index + 1}", ("backbone", f"bn{b}_{i}"))
            index += 3 if batch_norm else 2  # conv, (BatchNorm,) ReLU
        index += 1  # the max-pool closing the block
    # classifier: 0 Linear, 1 ReLU, 2 Dropout, 3 Linear, 4 ReLU, 5 Dropout, 6 Linear
    rows += dense_rows("classifier.0", ("backbone", "fc6"))
    rows += dense_rows("classifier.3", ("backbone", "fc7"))
    rows += dense_rows("classifier.6", ("head",))
    return rows


# AlexNet's features: 0 conv1, 1 ReLU, 2 pool, 3 conv2, 4 ReLU, 5 pool, 6 conv3, 7 ReLU, 8 conv4, 9 ReLU,
# 10 conv5, 11 ReLU, 12 pool. classifier: 0 Dropout, 1 fc6, 2 ReLU, 3 Dropout, 4 fc7, 5 ReLU, 6 fc8.
ALEXNET_CONVS = {"features.0": "conv1", "features.3": "conv2", "features.6": "conv3",
                 "features.8": "conv4", "features.10": "conv5"}


def alexnet_name_map() -> NameMap:
    """Rows ``(torch key, flax path, transform)`` for every tensor of torchvision's AlexNet (fc8 -> head)."""
    rows: NameMap = []
    for torch_prefix, flax_name in ALEXNET_CONVS.items():
        rows += conv_bias_rows(torch_prefix, ("backbone", flax_name))
    rows += dense_rows("classifier.1", ("backbone", "fc6"))
    rows += dense_rows("classifier.4", ("backbone", "fc7"))
    rows += dense_rows("classifier.6", ("head",))
    return rows


def _with_hwc_fc6(state_dict: dict[str, np.ndarray], key: str, channels: int,
                  pooled: tuple[int, int]) -> dict[str, np.ndarray]:
    """A shallow copy of ``state_dict`` whose fc6 weight reads the NHWC flatten order."""
    if key not in state_dict:
        return state_dict  # apply_name_map reports the missing key
    return {**state_dict, key: fc6_columns_to_hwc(np.asarray(state_dict[key]), channels, *pooled)}


def convert_vgg(state_dict: dict[str, np.ndarray], arch: str) -> dict:
    """Flax variables ``{'params'[, 'batch_stats']}`` (nested float32 numpy) from a torchvision VGG state
    dict; ``arch`` is 'vgg11' .. 'vgg19_bn'. Unused or missing keys raise ValueError."""
    if arch not in vgg.ARCHS:
        raise ValueError(f"unknown VGG arch {arch!r}; expected one of {sorted(vgg.ARCHS)}")
    state_dict = _with_hwc_fc6(state_dict, "classifier.0.weight", vgg.WIDTHS[-1], vgg.POOLED_SIZE)
    return apply_name_map(state_dict, vgg_name_map(*vgg.ARCHS[arch]), arch)


def convert_alexnet(state_dict: dict[str, np.ndarray]) -> dict:
    """Flax variables ``{'params'}`` (nested float32 numpy) from torchvision's AlexNet state dict.
    Unused or missing keys raise ValueError."""
    channels = alexnet.CONVS[-1][1]
    state_dict = _with_hwc_fc6(state_dict, "classifier.1.weight", channels, alexnet.POOLED_SIZE)
    return apply_name_map(state_dict, alexnet_name_map(), "alexnet")
