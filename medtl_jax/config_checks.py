"""Config validation: every bad value or misspelt field fails before any work, naming the config key."""

from __future__ import annotations

import difflib
from typing import Iterable

import ml_collections

STEMS = ("imagenet", "cifar")
DTYPES = ("float32", "bfloat16")
SELECT_METRICS = ("auto", "auc", "accuracy", "balanced_accuracy", "f1", "qwk", "dice", "iou")
ORDINAL_HEADS = ("coral", "dense")
SEGMENTATION_LOSSES = ("ce", "dice", "dice_ce", "focal")
DECODERS = ("unet", "fcn")


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """Dotted names of every leaf field, e.g. 'optimizer.lr'."""
    keys = []
    for k, v in config.items():
        name = f"{prefix}{k}"
        keys.extend(flat_keys(v, name + ".") if isinstance(v, ml_collections.ConfigDict) else [name])
    return keys


def unknown_field_message(config: ml_collections.ConfigDict, field: str) -> str:
    """'config.<field>' does not exist: the message with the closest valid fields."""
    valid = flat_keys(config)
    close = difflib.get_close_matches(field, valid, n=3, cutoff=0.8)
    if not close:  # a typo in the group name: compare the last part within all groups
        close = difflib.get_close_matches(field.split(".")[-1], valid, n=3, cutoff=0.5)
        close = [k for k in valid if k.split(".")[-1] in close][:3]
    hint = f"; did you mean {', '.join('config.' + k for k in close)}?" if close else ""
    return f"unknown config field 'config.{field}'{hint}"


def _choice(key: str, value, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=3, cutoff=0.4)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"config.{key}={value!r} is not one of {choices}{hint}")


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the first invalid field (registries are checked by name)."""
    from medtl_jax.data import DATASETS
    from medtl_jax.models import MODELS
    from medtl_jax.optim import OPTIMIZERS, SCHEDULES
    from medtl_jax.tasks.losses import IMBALANCE_STRATEGIES
    from medtl_jax.weights.init_source import PRETRAINED_INITS, check_init

    _choice("data.name", config.data.name, DATASETS)
    _choice("data.resize_method", config.data.resize_method, ("bilinear", "nearest"))
    _choice("model.name", config.model.name, MODELS)
    _choice("model.stem", config.model.stem, STEMS)
    if config.model.stem not in MODELS[config.model.name].stems:
        raise ValueError(f"config.model.stem={config.model.stem!r} is not available for "
                         f"config.model.name={config.model.name!r}; it has {MODELS[config.model.name].stems}")
    _choice("model.dtype", config.model.dtype, DTYPES)
    _choice("optimizer.name", config.optimizer.name, OPTIMIZERS)
    _choice("schedule.name", config.schedule.name, SCHEDULES)
    _choice("train.select_metric", config.train.select_metric, SELECT_METRICS)
    _choice("task.ordinal_head", config.task.ordinal_head, ORDINAL_HEADS)
    _choice("loss.imbalance", config.loss.imbalance, IMBALANCE_STRATEGIES)
    _choice("loss.focal_alpha", config.loss.focal_alpha, ("none", "inverse", "effective_number"))
    _choice("loss.segmentation", config.loss.segmentation, SEGMENTATION_LOSSES)
    _choice("segmentation.decoder", config.segmentation.decoder, DECODERS)
    for key in ("segmentation.patch_size", "segmentation.patches_per_image"):
        group, name = key.split(".")
        if int(config[group][name]) <= 0:
            raise ValueError(f"config.{key} must be positive, got {config[group][name]}")
    for key in ("train.epochs", "train.batch_size", "train.eval_batch_size"):
        group, name = key.split(".")
        if int(config[group][name]) <= 0:
            raise ValueError(f"config.{key} must be positive, got {config[group][name]}")
    if config.optimizer.lr <= 0:
        raise ValueError(f"config.optimizer.lr must be positive, got {config.optimizer.lr}")
    if config.data.input_size < 0:
        raise ValueError(f"config.data.input_size must be >= 0 (0 = model default), got {config.data.input_size}")
    if config.model.init in PRETRAINED_INITS and not MODELS[config.model.name].pretrained:
        raise ValueError(f"config.model.init={config.model.init!r} but {config.model.name!r} has no "
                         "pretrained weights")
    if not config.model.init:
        raise ValueError("config.model.init is empty; use 'imagenet', 'scratch', 'mean_var', a weight-store "
                         "name or a file path")
    check_init(config.model.init, config.model.weights_dir)
    if config.model.aux_loss_weight < 0:
        raise ValueError(f"config.model.aux_loss_weight must be >= 0, got {config.model.aux_loss_weight}")
