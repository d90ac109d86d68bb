"""Depth stages of every registered backbone: which top-level backbone parameters form which stage.

Transfer modes (``medtl_jax.transfer.modes``) freeze, re-scale or re-initialise a backbone by depth. They
need one shared answer to "how deep is this parameter?", written as a plain table per family (its
``DEPTH_STAGES``, held by each ``ModelSpec.stages``): an ordered list of ``(stage_name, regex)`` over the
backbone's top-level submodule names, shallowest (stem) first and deepest last. Each regex is matched in
full against a name such as ``'layer2_1'``.

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

from medtl_jax.models import MODELS

Table = list[tuple[str, str]]


def stage_table(model_name: str) -> Table:
    """The ``(stage_name, regex)`` list of ``model_name``; ValueError naming the known models if none."""
    try:
        spec = MODELS[model_name]
    except KeyError:
        raise ValueError(f"no stage table for model {model_name!r}; known: {', '.join(MODELS)}") from None
    return list(spec.stages)


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
