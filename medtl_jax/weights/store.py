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

from medtl_jax.models import MODELS
from medtl_jax.models.spec import WeightSource
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


# Checkpoint layout (``WeightSource.layout`` of a model's spec) -> (converter, reader, skipped_keys or
# None): how a file of that format becomes flax variables. The spec's ``options`` go to the converter.
Layout = tuple[Callable[..., dict], Callable[[str], dict], Callable[[Iterable[str]], list[str]] | None]
LAYOUTS: dict[str, Layout] = {
    "torchvision_resnet": (convert_resnet, load_torch_state_dict, None),
    "torchvision_vgg": (convert_vgg, load_torch_state_dict, None),
    "torchvision_alexnet": (convert_alexnet, load_torch_state_dict, None),
    "torchvision_densenet": (convert_densenet, load_torch_state_dict, None),
    "torchvision_efficientnet": (convert_efficientnet, load_torch_state_dict, None),
    "torchvision_inception": (convert_inception, load_torch_state_dict, skipped_keys),
    "efficientnet_lite": (convert_efficientnet_lite0, load_torch_state_dict, None),
    "keras_resnet50": (convert_keras_resnet50, keras_reader("ResNet50"), None),
    "keras_densenet121": (convert_keras_densenet121, keras_reader("DenseNet121"), None),
    "keras_inception_v3": (convert_keras_inception_v3, keras_reader("InceptionV3"), None),
}


def source_from_spec(model_name: str, weights: WeightSource) -> Source:
    """The ``Source`` of a spec's ``WeightSource``; ValueError naming the model and the layout if
    ``LAYOUTS`` has no such layout."""
    if weights.layout not in LAYOUTS:
        raise ValueError(f"model {model_name!r}: unknown weight layout {weights.layout!r}; "
                         f"known layouts: {', '.join(LAYOUTS)}")
    converter, reader, skipped = LAYOUTS[weights.layout]
    return Source(weights.filename, functools.partial(converter, **weights.converter_kwargs), url=weights.url,
                  package_locator=weights.package_locator, skipped_keys=skipped, reader=reader)


# Model name -> its checkpoint, for every registered model with ImageNet weights (``ModelSpec.weights``).
PRETRAINED_SOURCES: dict[str, Source] = {
    name: source_from_spec(name, spec.weights) for name, spec in MODELS.items() if spec.weights is not None}


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
