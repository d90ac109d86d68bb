"""Depth stages of every registered backbone: which top-level backbone parameters form which stage.

Transfer modes (``medtl_jax.transfer.modes``) freeze, re-scale or re-initialise a backbone by depth. They
need one shared answer to "how deep is this parameter?", written here as a plain table per family:
an ordered list of ``(stage_name, regex)`` over the backbone's top-level submodule names, shallowest
(stem) first and deepest last. Each regex is matched in full against a name such as ``'layer2_1'``.

The rule used for every family: stage ``s`` holds the parameters that compute the backbone's feature
map ``s`` from feature map ``s - 1`` (the keys 'stem', 'stage1', ... of its feature dict), so a
downsampling layer belongs to the stage it opens (ResNet's ``layer2_0``, DenseNet's ``transition1``
belongs to stage2). VGG and AlexNet add a last 'pre_logits' stage, fc6 and fc7, which their feature
dicts end on; they and the CBR nets have no separate stem. Inception-V3's optional auxiliary
classifier (``AuxLogits``) branches off stage2's output and is grouped with stage2.

Parameters outside ``'backbone'`` (the classifier ``head``, a segmentation decoder) are one stage
deeper than the deepest backbone stage: ``stage_of`` returns ``num_stages(model)`` for them.
"""

from __future__ import annotations

import functools
import re
from typing import Sequence

Table = list[tuple[str, str]]

RESNET: Table = [
    ("stem", r"conv1|bn1"),
    ("stage1", r"layer1_\d+"),
    ("stage2", r"layer2_\d+"),
    ("stage3", r"layer3_\d+"),
    ("stage4", r"layer4_\d+"),
]

# blocks_0 gives the 'stem' feature; 'stage1'..'stage4' end at blocks_2, blocks_4, blocks_10, bn1.
EFFICIENTNET_LITE: Table = [
    ("stem", r"conv_stem|bn0|blocks_0"),
    ("stage1", r"blocks_[12]"),
    ("stage2", r"blocks_[34]"),
    ("stage3", r"blocks_([5-9]|10)"),
    ("stage4", r"blocks_1[1-9]|conv_head|bn1"),
]

# torchvision's features.<i>.<j>: 'stem' ends at features_1, then 2, 3, 5, and last_bn.
EFFICIENTNET: Table = [
    ("stem", r"stem_conv|stem_bn|features_1_\d+"),
    ("stage1", r"features_2_\d+"),
    ("stage2", r"features_3_\d+"),
    ("stage3", r"features_[45]_\d+"),
    ("stage4", r"features_[67]_\d+|last_conv|last_bn"),
]

INCEPTION: Table = [
    ("stem", r"Conv2d_\w+"),
    ("stage1", r"Mixed_5[a-z]"),
    ("stage2", r"Mixed_6[a-z]|AuxLogits"),
    ("stage3", r"Mixed_7[a-z]"),
]

VGG: Table = [
    ("stage1", r"(conv|bn)1_\d+"),
    ("stage2", r"(conv|bn)2_\d+"),
    ("stage3", r"(conv|bn)3_\d+"),
    ("stage4", r"(conv|bn)4_\d+"),
    ("stage5", r"(conv|bn)5_\d+"),
    ("pre_logits", r"fc6|fc7"),
]

ALEXNET: Table = [
    ("stage1", r"conv1"),
    ("stage2", r"conv2"),
    ("stage3", r"conv[345]"),
    ("pre_logits", r"fc6|fc7"),
]

DENSENET: Table = [
    ("stem", r"conv0|norm0"),
    ("stage1", r"denseblock1"),
    ("stage2", r"transition1|denseblock2"),
    ("stage3", r"transition2|denseblock3"),
    ("stage4", r"transition3|denseblock4|norm5"),
]

CBR4: Table = [(f"stage{i}", rf"(conv|bn){i}") for i in range(1, 5)]
CBR5: Table = [(f"stage{i}", rf"(conv|bn){i}") for i in range(1, 6)]

# Model name (as in ``medtl_jax.models.MODELS``) -> its family's table.
STAGES: dict[str, Table] = {
    **{name: RESNET for name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                                 "resnet50_keras")},
    "efficientnet_lite0": EFFICIENTNET_LITE,
    **{f"efficientnet_b{i}": EFFICIENTNET for i in range(4)},
    "inception_v3": INCEPTION,
    "inception_v3_keras": INCEPTION,
    **{f"vgg{d}{bn}": VGG for d in (11, 13, 16, 19) for bn in ("", "_bn")},
    "alexnet": ALEXNET,
    **{name: DENSENET for name in ("densenet121", "densenet169", "densenet201", "densenet121_keras")},
    "cbr_larget": CBR5,
    "cbr_largew": CBR4,
    "cbr_small": CBR4,
    "cbr_tiny": CBR4,
}


def stage_table(model_name: str) -> Table:
    """The ``(stage_name, regex)`` list of ``model_name``; ValueError naming the known models if none."""
    try:
        return STAGES[model_name]
    except KeyError:
        raise ValueError(f"no stage table for model {model_name!r}; known: {', '.join(STAGES)}") from None


@functools.lru_cache(maxsize=None)
def _compiled(model_name: str) -> tuple[re.Pattern, ...]:
    return tuple(re.compile(pattern) for _, pattern in stage_table(model_name))


def num_stages(model_name: str) -> int:
    """Number of backbone stages of ``model_name`` (head/decoder parameters sit at this index)."""
    return len(stage_table(model_name))


def stage_names(model_name: str) -> list[str]:
    """Stage names of ``model_name``, shallowest first (e.g. ['stem', 'stage1', ..., 'stage4'])."""
    return [name for name, _ in stage_table(model_name)]


def matching_stages(model_name: str, backbone_name: str) -> list[int]:
    """Indices of every stage whose regex fully matches a top-level backbone name (exactly one when
    the table is right; the tests check this for every registered model)."""
    return [i for i, pattern in enumerate(_compiled(model_name)) if pattern.fullmatch(backbone_name)]


def _path_tuple(param_path: str | Sequence) -> tuple[str, ...]:
    if isinstance(param_path, str):
        return tuple(p for p in param_path.split("/") if p)
    return tuple(str(getattr(k, "key", k)) for k in param_path)  # plain keys or jax DictKey entries


def stage_of(model_name: str, param_path: str | Sequence) -> int:
    """Depth stage of one parameter: 0 for the stem (or first block), up to ``num_stages - 1``; any
    path not under 'backbone' (head, decoder) gives ``num_stages``.

    ``param_path`` is the path below the variable collection, as a '/'-joined string
    ('backbone/layer1_0/conv1/kernel') or a sequence of keys (a ``flatten_dict`` key or a
    ``jax.tree_util`` key path). ValueError if a backbone name matches no stage or several.
    """
    path = _path_tuple(param_path)
    if not path or path[0] != "backbone":
        return num_stages(model_name)
    if len(path) < 2:
        raise ValueError(f"backbone path {'/'.join(path)!r} names no submodule")
    found = matching_stages(model_name, path[1])
    if len(found) != 1:
        raise ValueError(f"backbone parameter {'/'.join(path)!r} of {model_name!r} matches "
                         f"{len(found)} stages of {stage_names(model_name)} (stage table out of date?)")
    return found[0]
