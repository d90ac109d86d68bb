"""torchvision DenseNet state dict -> flax variables of ``Classifier(DenseNet(...), 1000)``.

The name map enumerates the architecture (stem, every layer of every dense block, transitions, norm5,
classifier), so each row reads against ``medtl_jax.models.densenet``: torch
``features.denseblock2.denselayer3.conv1.weight`` is flax
``params/backbone/denseblock2/denselayer3/conv1/kernel``.

Two key styles exist for the dense layers' tensors. Current torchvision modules say ``norm1``/``conv1``;
the published ImageNet files (``densenet121-a639ec97.pth`` ...) predate that and say ``norm.1``/``conv.1``
(torchvision renames them with a regex in its loader). ``convert_densenet`` accepts either style:
``densenet_name_map(..., legacy=True)`` spells the rows the old way, and which one applies is decided
by looking for a ``denselayerN.norm.1.`` key. A dict mixing both styles fails with the unused keys named.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from medtl_jax.models.densenet import ARCHS
from medtl_jax.weights import NameMap, apply_name_map, bn_rows, conv_rows

LEGACY_KEY = re.compile(r"denselayer\d+\.(?:norm|conv)\.[12]\.")


def _layer_part(name: str, number: int, legacy: bool) -> str:
    """A dense layer's submodule key: 'norm1' (current) or 'norm.1' (legacy published files)."""
    return f"{name}.{number}" if legacy else f"{name}{number}"


def densenet_name_map(block_config: Sequence[int], *, legacy: bool = False) -> NameMap:
    """Rows ``(torch key, flax path, transform)`` for every tensor of a torchvision DenseNet + classifier.

    ``legacy=True`` spells the dense layers' keys ``norm.1``/``conv.1``, as torchvision's published .pth
    files do. Keys do not depend on widths (growth rate), only on the layers per block.
    """
    rows = conv_rows("features.conv0", ("backbone", "conv0"))
    rows += bn_rows("features.norm0", ("backbone", "norm0"))
    for i, num_layers in enumerate(block_config, start=1):
        for j in range(1, num_layers + 1):
            torch_layer = f"features.denseblock{i}.denselayer{j}"
            flax_layer = ("backbone", f"denseblock{i}", f"denselayer{j}")
            for n in (1, 2):
                norm, conv = _layer_part("norm", n, legacy), _layer_part("conv", n, legacy)
                rows += bn_rows(f"{torch_layer}.{norm}", (*flax_layer, f"norm{n}"))
                rows += conv_rows(f"{torch_layer}.{conv}", (*flax_layer, f"conv{n}"))
        if i < len(block_config):
            rows += bn_rows(f"features.transition{i}.norm", ("backbone", f"transition{i}", "norm"))
            rows += conv_rows(f"features.transition{i}.conv", ("backbone", f"transition{i}", "conv"))
    rows += bn_rows("features.norm5", ("backbone", "norm5"))
    rows += [
        ("classifier.weight", ("params", "head", "kernel"), "dense"),
        ("classifier.bias", ("params", "head", "bias"), "copy"),
    ]
    return rows


def uses_legacy_keys(state_dict: dict[str, np.ndarray]) -> bool:
    """Whether the dense layers are keyed the old way (``denselayer1.norm.1.weight``)."""
    return any(LEGACY_KEY.search(key) for key in state_dict)


def convert_densenet(state_dict: dict[str, np.ndarray], arch: str) -> dict:
    """Flax variables ``{'params', 'batch_stats'}`` (nested float32 numpy) from a torchvision DenseNet
    state dict in either key style; ``arch`` is 'densenet121', 'densenet169' or 'densenet201'.
    Unused or missing keys raise ValueError."""
    if arch not in ARCHS:
        raise ValueError(f"unknown DenseNet arch {arch!r}; expected one of {sorted(ARCHS)}")
    legacy = uses_legacy_keys(state_dict)
    what = f"{arch} ({'legacy norm.1/conv.1' if legacy else 'norm1/conv1'} keys)"
    return apply_name_map(state_dict, densenet_name_map(ARCHS[arch], legacy=legacy), what)
