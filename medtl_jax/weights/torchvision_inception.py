"""torchvision Inception-V3 state dict -> flax variables of ``Classifier(InceptionV3(...), 1000)``.

Every ``BasicConv2d`` is ``<prefix>.conv.weight`` plus ``<prefix>.bn.*``; the map enumerates the stem
convs, each Mixed block's branches (``BRANCHES``) and ``fc`` (the Classifier's ``head``), so torch
``Mixed_6b.branch7x7dbl_3.conv.weight`` is flax ``params/backbone/Mixed_6b/branch7x7dbl_3/conv/kernel``.

The auxiliary classifier. torchvision's published file (``inception_v3_google-0cc3c7bd.pth``) holds it
(``AuxLogits.conv0``, ``AuxLogits.conv1``, ``AuxLogits.fc``: the ``aux_key_names()`` list, 3.3 M
parameters). With ``aux_logits=True`` those keys map to ``backbone/AuxLogits/...``; with
``aux_logits=False`` (the default model) they are dropped on purpose -- and only they: any other
unmatched key is still an error. A state dict without them (a torch model built with
``aux_logits=False``) converts too, unless ``aux_logits=True`` asks for them.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from medtl_jax.weights import IGNORED_SUFFIXES, NameMap, apply_name_map, bn_rows, conv_rows

STEM = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3")
_A = ("branch1x1", "branch5x5_1", "branch5x5_2", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3",
      "branch_pool")
_B = ("branch3x3", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3")
_C = ("branch1x1", "branch7x7_1", "branch7x7_2", "branch7x7_3", "branch7x7dbl_1", "branch7x7dbl_2",
      "branch7x7dbl_3", "branch7x7dbl_4", "branch7x7dbl_5", "branch_pool")
_D = ("branch3x3_1", "branch3x3_2", "branch7x7x3_1", "branch7x7x3_2", "branch7x7x3_3", "branch7x7x3_4")
_E = ("branch1x1", "branch3x3_1", "branch3x3_2a", "branch3x3_2b", "branch3x3dbl_1", "branch3x3dbl_2",
      "branch3x3dbl_3a", "branch3x3dbl_3b", "branch_pool")
# Mixed block -> its BasicConv2d branches, in torchvision's order.
BRANCHES: dict[str, tuple[str, ...]] = {
    "Mixed_5b": _A, "Mixed_5c": _A, "Mixed_5d": _A, "Mixed_6a": _B,
    "Mixed_6b": _C, "Mixed_6c": _C, "Mixed_6d": _C, "Mixed_6e": _C,
    "Mixed_7a": _D, "Mixed_7b": _E, "Mixed_7c": _E,
}
AUX_PREFIX = "AuxLogits."


def _basic_conv_rows(torch_prefix: str, flax_path: tuple[str, ...]) -> NameMap:
    """A torchvision ``BasicConv2d``: ``.conv`` (no bias) and ``.bn``."""
    return (conv_rows(f"{torch_prefix}.conv", (*flax_path, "conv"))
            + bn_rows(f"{torch_prefix}.bn", (*flax_path, "bn")))


def aux_name_map() -> NameMap:
    """Rows for the auxiliary classifier ``AuxLogits`` -> flax ``backbone/AuxLogits``."""
    rows = _basic_conv_rows("AuxLogits.conv0", ("backbone", "AuxLogits", "conv0"))
    rows += _basic_conv_rows("AuxLogits.conv1", ("backbone", "AuxLogits", "conv1"))
    rows += [
        ("AuxLogits.fc.weight", ("params", "backbone", "AuxLogits", "fc", "kernel"), "dense"),
        ("AuxLogits.fc.bias", ("params", "backbone", "AuxLogits", "fc", "bias"), "copy"),
    ]
    return rows


def aux_key_names() -> list[str]:
    """The torch keys of the auxiliary classifier (what ``aux_logits=False`` drops), BN counters included."""
    keys = [key for key, _, _ in aux_name_map()]
    return keys + [f"AuxLogits.{conv}.bn.num_batches_tracked" for conv in ("conv0", "conv1")]


def inception_name_map(aux_logits: bool = False) -> NameMap:
    """Rows ``(torch key, flax path, transform)`` for every tensor of torchvision's Inception-V3 + fc
    (and its ``AuxLogits`` when ``aux_logits``)."""
    rows: NameMap = []
    for name in STEM:
        rows += _basic_conv_rows(name, ("backbone", name))
    for block, branches in BRANCHES.items():
        for branch in branches:
            rows += _basic_conv_rows(f"{block}.{branch}", ("backbone", block, branch))
    if aux_logits:
        rows += aux_name_map()
    rows += [
        ("fc.weight", ("params", "head", "kernel"), "dense"),
        ("fc.bias", ("params", "head", "bias"), "copy"),
    ]
    return rows


def skipped_keys(keys: Iterable[str], aux_logits: bool = False) -> list[str]:
    """The keys of ``keys`` that ``convert_inception`` drops on purpose (the aux classifier's, unless
    ``aux_logits``), BatchNorm step counters excluded."""
    if aux_logits:
        return []
    aux = set(aux_key_names())
    return [k for k in keys if k in aux and not k.endswith(IGNORED_SUFFIXES)]


def convert_inception(state_dict: dict[str, np.ndarray], aux_logits: bool = False) -> dict:
    """Flax variables ``{'params', 'batch_stats'}`` (nested float32 numpy) for
    ``Classifier(inception_v3(aux_logits=aux_logits), 1000)``. Without ``aux_logits`` the
    ``aux_key_names()`` keys are dropped; any other unused or missing key raises ValueError."""
    if not aux_logits:
        aux = set(aux_key_names())
        state_dict = {k: v for k, v in state_dict.items() if k not in aux}
    what = f"inception_v3 ({'with' if aux_logits else 'without'} AuxLogits)"
    return apply_name_map(state_dict, inception_name_map(aux_logits), what)
