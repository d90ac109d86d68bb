"""keras.applications ResNet50 / DenseNet121 / InceptionV3 weights -> flax variables.

What this makes usable: Keras's own ImageNet files and RadImageNet's (Keras ``.h5``, often "notop").

Reading (``read_keras_file``), all into ``{keras layer name: [arrays in layer.get_weights() order]}``:
  * legacy Keras 2 / tf.keras ``.h5`` (``save_weights`` or whole-model ``save``; Keras's ImageNet files
    and RadImageNet's), read with h5py alone: an attribute ``layer_names`` (at the root or in
    ``model_weights``); each layer group's attribute ``weight_names`` lists datasets such as
    ``conv1_conv/kernel:0`` in get_weights order. Weights are grouped by the part of the weight name
    before its last '/', so a base model saved nested inside a wrapper model (one group holding all its
    weights) is read as its own layers.
  * Keras 3 ``.weights.h5`` and ``.keras``: these do NOT keep layer names (``layers/conv2d_7/vars/0`` is
    the 8th Conv2D of ``model.layers``, a topological order that differs from the names' order), so
    they are read through Keras itself (``keras_app=`` names the ``keras.applications`` constructor for
    a ``.weights.h5``; a ``.keras`` file carries its own architecture). This needs keras with
    ``KERAS_BACKEND=jax``. A model nested inside another model is not handled there.
A live ``keras.Model`` goes through ``from_keras_model``.

Mapping: explicit tables of rows ``(keras layer, flax path, kind)``; ``kind`` says which arrays the
layer holds. Keras kernels are already HWIO and Dense kernels already (in, out), so nothing is
transposed. BatchNorm gamma/beta -> params scale/bias, moving_mean/moving_variance -> batch_stats
mean/var; InceptionV3's BatchNorm has no gamma (``scale=False``), so scale is filled with ones (its flax
model keeps a scale parameter, initialised at 1, that fine-tuning may train). A missing 'predictions'
layer (a notop file) gives variables without 'head'; any other missing or unused layer raises.
InceptionV3's layers have automatic names (``conv2d_17``, ``batch_normalization_17``), which depend on
the Keras session that built it; they are matched by creation order (their numeric suffix).
"""

from __future__ import annotations

import functools
import os
import re
import zipfile
from typing import Any, Callable

import numpy as np

from medtl_jax.models import densenet as densenet_model

KerasWeights = dict[str, list[np.ndarray]]
KerasTable = list[tuple[str, tuple[str, ...], str]]

# kind -> names of the layer's arrays in get_weights() order -> flax (collection, leaf).
KINDS: dict[str, tuple[tuple[str, str], ...]] = {
    "conv": (("params", "kernel"),),
    "conv_bias": (("params", "kernel"), ("params", "bias")),
    "bn": (("params", "scale"), ("params", "bias"), ("batch_stats", "mean"), ("batch_stats", "var")),
    "bn_noscale": (("params", "bias"), ("batch_stats", "mean"), ("batch_stats", "var")),
    "dense": (("params", "kernel"), ("params", "bias")),
}
HEAD_LAYER = "predictions"


# ---------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------

def _import_keras() -> Any:
    os.environ.setdefault("KERAS_BACKEND", "jax")
    try:
        import keras
    except ImportError as e:
        raise ImportError("Keras 3 .weights.h5/.keras files are read through keras: pip install "
                          "'medtl-jax[port]' and set KERAS_BACKEND=jax (legacy .h5 files need only h5py)") from e
    return keras


def _read_keras3(path: str, root: Any, keras_app: str | None) -> KerasWeights:
    """Keras 3 ``.weights.h5``: load it into ``keras.applications.<keras_app>`` (top included when the
    file has a Dense layer, sized from its kernel) and read the layers back by name."""
    if keras_app is None:
        raise ValueError(f"{path} is a Keras 3 .weights.h5, which keeps no layer names: pass keras_app= "
                         "(e.g. 'ResNet50'), or save the model as .keras or legacy .h5 instead")
    keras = _import_keras()
    dense = root["layers"].get("dense")
    top = {"include_top": dense is not None}
    if dense is not None:
        top.update(classes=int(dense["vars"]["0"].shape[-1]), classifier_activation=None)
    model = getattr(keras.applications, keras_app)(weights=None, **top)
    model.load_weights(path)
    return from_keras_model(model)


def _decode(name: Any) -> str:
    return name.decode("utf8") if isinstance(name, bytes) else str(name)


def _read_legacy(root: Any) -> KerasWeights:
    """Keras 2 / tf.keras ``.h5``: ``layer_names`` and per-layer ``weight_names`` attributes."""
    weights: KerasWeights = {}
    for layer in map(_decode, root.attrs["layer_names"]):
        group = root[layer]
        for weight_name in map(_decode, group.attrs.get("weight_names", [])):
            owner = weight_name.rsplit("/", 1)[0].split("/")[-1] if "/" in weight_name else layer
            weights.setdefault(owner, []).append(np.asarray(group[weight_name]))
    return weights


def _read_h5(path: str, f: Any, keras_app: str | None) -> KerasWeights:
    if "layers" in f and hasattr(f["layers"], "items"):
        return _read_keras3(path, f, keras_app)
    root = f["model_weights"] if "model_weights" in f else f
    if "layer_names" in root.attrs:
        return _read_legacy(root)
    raise ValueError("not a Keras weights file: no 'layers' group (Keras 3) and no 'layer_names' "
                     "attribute (Keras 2 .h5)")


def read_keras_file(path: str, keras_app: str | None = None) -> KerasWeights:
    """``{layer name: [arrays]}`` from a legacy Keras ``.h5`` (h5py only), a Keras 3 ``.keras`` or a
    Keras 3 ``.weights.h5`` (through keras; ``keras_app`` names its ``keras.applications`` model)."""
    if zipfile.is_zipfile(path):
        model = _import_keras().saving.load_model(path, compile=False)
        return from_keras_model(model)
    try:
        import h5py
    except ImportError as e:
        raise ImportError("reading Keras weight files needs h5py: pip install 'medtl-jax[port]'") from e
    with h5py.File(path, "r") as f:
        return _read_h5(path, f, keras_app)


def from_keras_model(model: Any) -> KerasWeights:
    """``{layer.name: layer.get_weights()}`` of a live ``keras.Model`` (layers with weights only)."""
    return {layer.name: [np.asarray(w) for w in layer.get_weights()]
            for layer in model.layers if layer.get_weights()}


# ---------------------------------------------------------------------------------------------------
# Name tables
# ---------------------------------------------------------------------------------------------------

def _bb(*path: str) -> tuple[str, ...]:
    return ("backbone", *path)


def resnet50_table() -> KerasTable:
    """Keras ResNet50 layer -> flax ``resnet50_keras`` path: ``conv{s+2}_block{j+1}_{k}_conv`` is
    ``layer{s+1}_{j}/conv{k}``, ``_0_conv``/``_0_bn`` the shortcut (``downsample_conv``/``_bn``)."""
    rows: KerasTable = [("conv1_conv", _bb("conv1"), "conv_bias"), ("conv1_bn", _bb("bn1"), "bn")]
    for s, blocks in enumerate((3, 4, 6, 3)):
        for j in range(blocks):
            keras, flax = f"conv{s + 2}_block{j + 1}", f"layer{s + 1}_{j}"
            if j == 0:
                rows += [(f"{keras}_0_conv", _bb(flax, "downsample_conv"), "conv_bias"),
                         (f"{keras}_0_bn", _bb(flax, "downsample_bn"), "bn")]
            for k in (1, 2, 3):
                rows += [(f"{keras}_{k}_conv", _bb(flax, f"conv{k}"), "conv_bias"),
                         (f"{keras}_{k}_bn", _bb(flax, f"bn{k}"), "bn")]
    return rows + [(HEAD_LAYER, ("head",), "dense")]


def densenet121_table() -> KerasTable:
    """Keras DenseNet121 layer -> flax ``densenet121_keras`` path: ``conv{b+1}_block{j}_0_bn`` /
    ``_1_conv`` / ``_1_bn`` / ``_2_conv`` are ``denseblock{b}/denselayer{j}/norm1/conv1/norm2/conv2``;
    ``pool{b+1}_bn``/``_conv`` are ``transition{b}/norm``/``conv``; ``bn`` is ``norm5``."""
    rows: KerasTable = [("conv1_conv", _bb("conv0"), "conv"), ("conv1_bn", _bb("norm0"), "bn")]
    config = densenet_model.ARCHS["densenet121"]
    for b, layers in enumerate(config, start=1):
        for j in range(1, layers + 1):
            keras, flax = f"conv{b + 1}_block{j}", (f"denseblock{b}", f"denselayer{j}")
            rows += [(f"{keras}_0_bn", _bb(*flax, "norm1"), "bn"),
                     (f"{keras}_1_conv", _bb(*flax, "conv1"), "conv"),
                     (f"{keras}_1_bn", _bb(*flax, "norm2"), "bn"),
                     (f"{keras}_2_conv", _bb(*flax, "conv2"), "conv")]
        if b < len(config):
            rows += [(f"pool{b + 1}_bn", _bb(f"transition{b}", "norm"), "bn"),
                     (f"pool{b + 1}_conv", _bb(f"transition{b}", "conv"), "conv")]
    return rows + [("bn", _bb("norm5"), "bn"), (HEAD_LAYER, ("head",), "dense")]


# InceptionV3's BasicConv2d units (flax names) in the order Keras creates its conv2d_bn layers.
_INCEPTION_BLOCK_ORDER: dict[str, tuple[str, ...]] = {
    "A": ("branch1x1", "branch5x5_1", "branch5x5_2", "branch3x3dbl_1", "branch3x3dbl_2",
          "branch3x3dbl_3", "branch_pool"),
    "B": ("branch3x3", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"),
    "C": ("branch1x1", "branch7x7_1", "branch7x7_2", "branch7x7_3", "branch7x7dbl_1", "branch7x7dbl_2",
          "branch7x7dbl_3", "branch7x7dbl_4", "branch7x7dbl_5", "branch_pool"),
    "D": ("branch3x3_1", "branch3x3_2", "branch7x7x3_1", "branch7x7x3_2", "branch7x7x3_3",
          "branch7x7x3_4"),
    "E": ("branch1x1", "branch3x3_1", "branch3x3_2a", "branch3x3_2b", "branch3x3dbl_1",
          "branch3x3dbl_2", "branch3x3dbl_3a", "branch3x3dbl_3b", "branch_pool"),
}
_INCEPTION_BLOCKS = (("Mixed_5b", "A"), ("Mixed_5c", "A"), ("Mixed_5d", "A"), ("Mixed_6a", "B"),
                     ("Mixed_6b", "C"), ("Mixed_6c", "C"), ("Mixed_6d", "C"), ("Mixed_6e", "C"),
                     ("Mixed_7a", "D"), ("Mixed_7b", "E"), ("Mixed_7c", "E"))
_INCEPTION_STEM = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3")


def inception_v3_units() -> list[tuple[str, ...]]:
    """Flax paths (below 'backbone') of InceptionV3's 94 conv+BN units, in Keras's creation order."""
    units = [(name,) for name in _INCEPTION_STEM]
    for block, kind in _INCEPTION_BLOCKS:
        units += [(block, branch) for branch in _INCEPTION_BLOCK_ORDER[kind]]
    return units


_AUTO_NAME = re.compile(r"^(conv2d|batch_normalization)(?:_(\d+))?$")


def _by_creation_order(names: list[str], base: str) -> list[str]:
    """Keras automatic names of one layer type (``base``, ``base_1``, ...) sorted by their counter."""
    matches = [(m, n) for n in names if (m := _AUTO_NAME.match(n)) and m.group(1) == base]
    return [n for m, n in sorted(matches, key=lambda mn: int(mn[0].group(2) or 0))]


def inception_v3_table(layer_names: list[str]) -> KerasTable:
    """Keras InceptionV3 layer -> flax ``inception_v3_keras`` path, matching the automatically named
    ``conv2d*``/``batch_normalization*`` layers of ``layer_names`` by creation order."""
    units = inception_v3_units()
    convs = _by_creation_order(layer_names, "conv2d")
    bns = _by_creation_order(layer_names, "batch_normalization")
    if len(convs) != len(units) or len(bns) != len(units):
        raise ValueError(f"InceptionV3 has {len(units)} conv2d and batch_normalization layers; found "
                         f"{len(convs)} and {len(bns)}")
    rows: KerasTable = []
    for unit, conv, bn in zip(units, convs, bns):
        rows += [(conv, _bb(*unit, "conv"), "conv"), (bn, _bb(*unit, "bn"), "bn_noscale")]
    return rows + [(HEAD_LAYER, ("head",), "dense")]


# ---------------------------------------------------------------------------------------------------
# Converting
# ---------------------------------------------------------------------------------------------------

def apply_keras_table(weights: KerasWeights, table: KerasTable, what: str) -> dict:
    """Nested flax variables ``{'params', 'batch_stats'}`` (float32 numpy) from ``weights`` via ``table``.

    Every layer of the table must be present (except the 'predictions' head: then no 'head') and every
    layer of ``weights`` mapped; otherwise ValueError names the missing and unused layers.
    """
    mapped = {layer for layer, _, _ in table}
    missing = [layer for layer, _, _ in table if layer not in weights and layer != HEAD_LAYER]
    unused = [layer for layer in weights if layer not in mapped]
    if missing or unused:
        raise ValueError(f"Keras weights do not fit {what}: missing layers {missing[:20]}"
                         f"{' ...' if len(missing) > 20 else ''}; unused layers {unused[:20]}"
                         f"{' ...' if len(unused) > 20 else ''}")
    variables: dict = {}
    for layer, path, kind in table:
        if layer not in weights:
            continue
        arrays, slots = weights[layer], KINDS[kind]
        if len(arrays) != len(slots):
            raise ValueError(f"{what}: Keras layer {layer!r} holds {len(arrays)} arrays, a {kind!r} "
                             f"layer {len(slots)}")
        if kind == "bn_noscale":
            arrays, slots = [np.ones_like(arrays[0]), *arrays], KINDS["bn"]
        for (collection, leaf), value in zip(slots, arrays):
            node = variables.setdefault(collection, {})
            for part in path:
                node = node.setdefault(part, {})
            node[leaf] = np.ascontiguousarray(value, dtype=np.float32)
    return variables


def convert_keras_resnet50(weights: KerasWeights) -> dict:
    """Flax variables of ``Classifier(resnet50_keras(), 1000)`` (no 'head' for a notop file)."""
    return apply_keras_table(weights, resnet50_table(), "Keras ResNet50")


def convert_keras_densenet121(weights: KerasWeights) -> dict:
    """Flax variables of ``Classifier(densenet121_keras(), 1000)`` (no 'head' for a notop file)."""
    return apply_keras_table(weights, densenet121_table(), "Keras DenseNet121")


def convert_keras_inception_v3(weights: KerasWeights) -> dict:
    """Flax variables of ``Classifier(inception_v3_keras(), 1000)`` (no 'head' for a notop file);
    BatchNorm scales (absent in Keras) are ones."""
    return apply_keras_table(weights, inception_v3_table(list(weights)), "Keras InceptionV3")


def keras_reader(keras_app: str) -> Callable[[str], KerasWeights]:
    """``read_keras_file`` for one ``keras.applications`` model (what ``store.Source.reader`` holds)."""
    return functools.partial(read_keras_file, keras_app=keras_app)


def is_keras_reader(reader: Any) -> bool:
    """Whether a ``store.Source.reader`` reads Keras files."""
    return getattr(reader, "func", None) is read_keras_file
