"""torchvision ResNet state dict -> flax variables of ``Classifier(ResNet(...), 1000)``.

The name map is built by enumerating the architecture (stem, every block of every stage, fc), so each
row can be read against ``medtl_jax.models.resnet``: torch ``layer2.0.downsample.0.weight`` is flax
``params/backbone/layer2_0/downsample_conv/kernel``. BatchNorm ``weight``/``bias`` go to params
``scale``/``bias``, ``running_mean``/``running_var`` to batch_stats ``mean``/``var``;
``num_batches_tracked`` is dropped on purpose (flax keeps no counter).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from medtl_jax.models.resnet import ARCHS
from medtl_jax.weights import NameMap, apply_name_map, bn_rows, conv_rows


def resnet_name_map(stage_sizes: Sequence[int], block: str) -> NameMap:
    """Rows ``(torch key, flax path, transform)`` for every tensor of a torchvision ResNet + fc head."""
    convs_per_block = {"basic": 2, "bottleneck": 3}[block]
    rows = conv_rows("conv1", ("backbone", "conv1")) + bn_rows("bn1", ("backbone", "bn1"))
    for i, num_blocks in enumerate(stage_sizes):
        for j in range(num_blocks):
            torch_block, flax_block = f"layer{i + 1}.{j}", ("backbone", f"layer{i + 1}_{j}")
            for c in range(1, convs_per_block + 1):
                rows += conv_rows(f"{torch_block}.conv{c}", (*flax_block, f"conv{c}"))
                rows += bn_rows(f"{torch_block}.bn{c}", (*flax_block, f"bn{c}"))
            # torchvision projects the shortcut in the first block of every stage but the first
            # stage of basic-block nets (where width and stride already match).
            if j == 0 and (i > 0 or block == "bottleneck"):
                rows += conv_rows(f"{torch_block}.downsample.0", (*flax_block, "downsample_conv"))
                rows += bn_rows(f"{torch_block}.downsample.1", (*flax_block, "downsample_bn"))
    rows += [
        ("fc.weight", ("params", "head", "kernel"), "dense"),
        ("fc.bias", ("params", "head", "bias"), "copy"),
    ]
    return rows


def convert_resnet(state_dict: dict[str, np.ndarray], arch: str) -> dict:
    """Flax variables ``{'params', 'batch_stats'}`` (nested dicts of float32 numpy) from a torchvision
    ResNet state dict; ``arch`` is 'resnet18' .. 'resnet152'. Unused or missing keys raise ValueError."""
    if arch not in ARCHS:
        raise ValueError(f"unknown ResNet arch {arch!r}; expected one of {sorted(ARCHS)}")
    return apply_name_map(state_dict, resnet_name_map(*ARCHS[arch]), arch)
