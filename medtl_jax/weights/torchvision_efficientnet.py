"""torchvision EfficientNet-B0..B3 state dict -> flax variables of ``Classifier(EfficientNet(...), 1000)``.

torchvision keys are positions in nested ``nn.Sequential``s: ``features.0.0``/``.0.1`` (stem conv, BN),
``features.S.B.block.N`` for block B of stage S (S = 1..7), ``features.8.0``/``.8.1`` (last 1x1 conv,
BN) and ``classifier.1`` (the Linear after Dropout). Inside a block, ``block.N`` counts the parts that
exist: with an expand conv, 0 = expand (``.0`` conv, ``.1`` BN), 1 = depthwise, 2 = squeeze-excitation
(``fc1``, ``fc2`` with biases), 3 = project; without one (stage 1, expand ratio 1) the others move up
by one. The map below walks ``block_specs`` so each row reads against ``medtl_jax.models.efficientnet``:
torch ``features.2.1.block.1.0.weight`` is flax ``params/backbone/features_2_1/depthwise_conv/kernel``.
Depthwise kernels (C, 1, k, k) become (k, k, 1, C) with the ordinary conv transform.
"""

from __future__ import annotations

import numpy as np

from medtl_jax.models.efficientnet import ARCHS, block_specs
from medtl_jax.weights import NameMap, apply_name_map, bn_rows, conv_bias_rows, conv_rows


def _conv_bn_rows(torch_prefix: str, flax_block: tuple[str, ...], name: str) -> NameMap:
    """A torchvision ``Conv2dNormActivation`` (``.0`` conv, ``.1`` BN) -> flax ``<name>_conv``,
    ``<name>_bn``."""
    return (conv_rows(f"{torch_prefix}.0", (*flax_block, f"{name}_conv"))
            + bn_rows(f"{torch_prefix}.1", (*flax_block, f"{name}_bn")))


def efficientnet_name_map(width: float, depth: float) -> NameMap:
    """Rows ``(torch key, flax path, transform)`` for every tensor of a torchvision EfficientNet-B*."""
    rows = _conv_bn_rows("features.0", ("backbone",), "stem")
    blocks = block_specs(width, depth)
    for spec in blocks:
        torch_block = f"features.{spec.stage}.{spec.index}.block"
        flax_block = ("backbone", f"features_{spec.stage}_{spec.index}")
        parts = (["expand"] if spec.has_expand else []) + ["depthwise", "se", "project"]
        for n, part in enumerate(parts):
            if part == "se":
                for fc in ("fc1", "fc2"):
                    rows += conv_bias_rows(f"{torch_block}.{n}.{fc}", (*flax_block, "se", fc))
            else:
                rows += _conv_bn_rows(f"{torch_block}.{n}", flax_block, part)
    rows += _conv_bn_rows(f"features.{blocks[-1].stage + 1}", ("backbone",), "last")
    rows += [
        ("classifier.1.weight", ("params", "head", "kernel"), "dense"),
        ("classifier.1.bias", ("params", "head", "bias"), "copy"),
    ]
    return rows


def convert_efficientnet(state_dict: dict[str, np.ndarray], arch: str) -> dict:
    """Flax variables ``{'params', 'batch_stats'}`` (nested float32 numpy) from a torchvision EfficientNet
    state dict; ``arch`` is 'efficientnet_b0' .. 'efficientnet_b3'. Unused or missing keys raise
    ValueError."""
    if arch not in ARCHS:
        raise ValueError(f"unknown EfficientNet arch {arch!r}; expected one of {sorted(ARCHS)}")
    width, depth, _ = ARCHS[arch]
    return apply_name_map(state_dict, efficientnet_name_map(width, depth), arch)
