"""Config validation: every bad value or misspelt field fails before any work, naming the config key.

Each set of choices is a tuple owned by the module that implements it (STEMS by models.resnet, HEADS by
the classification task, DECODERS by the segmenter, ...); this pass imports them, so they cannot drift.
"""

from __future__ import annotations

import difflib
import functools
import math
import pathlib
from typing import Iterable

import ml_collections

from medtl_jax.data import DATASETS
from medtl_jax.data.pipeline.batches import RESIZE_METHODS
from medtl_jax.data.pipeline.intensity import INTENSITY_MODES
from medtl_jax.models import MODELS
from medtl_jax.models.resnet import STEMS
from medtl_jax.models.segmenter import DECODERS
from medtl_jax.runtime.parallel import BATCH_NORM_MODES
from medtl_jax.tasks.classification.losses import IMBALANCE_STRATEGIES, WEIGHT_SCHEMES
from medtl_jax.tasks.classification.task import HEADS
from medtl_jax.tasks.families import SELECTABLE_METRICS
from medtl_jax.tasks.segmentation.task import SEGMENTATION_LOSSES
from medtl_jax.transfer.modes import init_kind, validate_transfer
from medtl_jax.transfer.optimizer import OPTIMIZERS, SCHEDULES
from medtl_jax.weights.init_source import PRETRAINED_INITS, check_init

DTYPES = ("float32", "bfloat16")
SELECT_METRICS = ("auto", *SELECTABLE_METRICS)


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """Dotted names of every leaf field, e.g. 'optimizer.lr'."""
    keys = []
    for k, v in config.items():
        name = f"{prefix}{k}"
        keys.extend(flat_keys(v, name + ".") if isinstance(v, ml_collections.ConfigDict) else [name])
    return keys


def field_value(config: ml_collections.ConfigDict, key: str):
    """The value of a dotted field name, e.g. 'optimizer.lr'."""
    return functools.reduce(lambda node, part: node[part], key.split("."), config)


def unknown_field_message(config: ml_collections.ConfigDict, field: str) -> str:
    """'config.<field>' does not exist: the message with the closest valid fields."""
    valid = flat_keys(config)
    close = difflib.get_close_matches(field, valid, n=3, cutoff=0.8)
    if not close:  # a typo in the group name: compare the last part within all groups
        close = difflib.get_close_matches(field.split(".")[-1], valid, n=3, cutoff=0.5)
        close = [k for k in valid if k.split(".")[-1] in close][:3]
    hint = f"; did you mean {', '.join('config.' + k for k in close)}?" if close else ""
    return f"unknown config field 'config.{field}'{hint}"


_INF = math.inf
# Allowed interval of each numeric field: (low, high, low included, high included). Every float field of
# the config must also be finite (NaN passes any `<=` test, so it is checked first).
NUMBER_RANGES = {
    "seed": (0, _INF, True, False),
    "data.input_size": (0, _INF, True, False),  # 0 = the model's default
    "data.val_count": (-1, _INF, True, False),  # -1 = the dataset's default
    "data.train_fraction": (0, 1, False, True),
    "augment.rotate_degrees": (0, 180, True, True),
    "augment.crop_scale": (0, 1, False, True),
    "augment.brightness": (0, _INF, True, False),
    "augment.contrast": (0, _INF, True, False),
    "augment.gamma": (0, 1, True, False),
    "augment.channel_gain": (0, 1, True, False),
    "augment.blur": (0, _INF, True, False),
    "model.aux_loss_weight": (0, _INF, True, False),
    "loss.focal_gamma": (0, _INF, True, False),
    "loss.cb_beta": (0, 1, True, False),
    "loss.la_tau": (0, _INF, True, False),
    "transfer.freeze_stages": (0, _INF, True, False),
    "transfer.layer_decay": (0, 1, False, True),
    "transfer.transfusion_stages": (0, _INF, True, False),
    "segmentation.patch_size": (1, _INF, True, False),
    "segmentation.patches_per_image": (1, _INF, True, False),
    "segmentation.foreground_fraction": (0, 1, True, True),
    "segmentation.scale": (0, _INF, False, False),
    "segmentation.fov_diameter": (0, _INF, True, False),
    "segmentation.overlap": (0, 1, True, False),
    "segmentation.window": (0, _INF, True, False),  # 0 = patch_size
    "optimizer.lr": (0, _INF, False, False),
    "optimizer.weight_decay": (0, _INF, True, False),
    "optimizer.momentum": (0, 1, True, False),
    "optimizer.grad_clip_norm": (0, _INF, True, False),  # 0 = off
    "schedule.warmup_epochs": (0, _INF, True, False),
    "schedule.warmup_steps": (-1, _INF, True, False),  # -1 = warmup_epochs' worth
    "schedule.final_lr_fraction": (0, 1, True, True),
    "schedule.decay_factor": (0, _INF, False, False),
    "train.epochs": (1, _INF, True, False),
    "train.steps": (0, _INF, True, False),  # 0 = train.epochs
    "train.patience": (0, _INF, True, False),  # 0 = no early stopping
    "train.ema_decay": (0, 1, True, False),  # 0 = no EMA
    "train.batch_size": (1, _INF, True, False),
    "train.eval_batch_size": (1, _INF, True, False),
    "train.log_every_steps": (1, _INF, True, False),
    "train.grad_accum_steps": (1, _INF, True, False),
    "train.checkpoint_every_steps": (0, _INF, True, False),  # 0 = at epoch ends only
    "eval.threshold": (0, 1, True, True),
    "eval.bootstrap_samples": (0, _INF, True, False),
    "mesh.num_devices": (0, _INF, True, False),  # 0 = all devices
}
# Paths that must exist when given (None = not set).
EXISTING_PATHS = ("data.manual_dir", "model.weights_file")


def _interval(low, high, low_in, high_in) -> str:
    return f"{'[' if low_in else '('}{low}, {high}{']' if high_in else ')'}".replace("inf", "∞")


def check_numbers(config: ml_collections.ConfigDict) -> None:
    """ValueError naming the first numeric field that is NaN/Inf or outside its interval (NUMBER_RANGES).
    Fields the config lacks are skipped: runs recorded before a field was added still load."""
    present = flat_keys(config)
    for key in present:
        value = field_value(config, key)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"config.{key}={value} is not a finite number")
    for key, (low, high, low_in, high_in) in NUMBER_RANGES.items():
        if key not in present:  # a finished run's config.json from before the field existed: its default
            continue
        value = field_value(config, key)
        ok = (low < value or (low_in and value == low)) and (value < high or (high_in and value == high))
        if not ok:
            raise ValueError(f"config.{key}={value} is out of range: it must lie in {_interval(low, high, low_in, high_in)}")
    rate = config.model.dropout_rate
    if rate != -1.0 and not 0 <= rate < 1:
        raise ValueError(f"config.model.dropout_rate={rate} must be -1 (the model's default) or lie in [0, 1)")


def check_paths(config: ml_collections.ConfigDict) -> None:
    """FileNotFoundError naming the config key of a given path that does not exist."""
    for key in EXISTING_PATHS:
        path = field_value(config, key)
        if path and not pathlib.Path(path).expanduser().exists():
            raise FileNotFoundError(f"config.{key}={path!r} does not exist")


def _choice(key: str, value, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=3, cutoff=0.4)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"config.{key}={value!r} is not one of {choices}{hint}")


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the first invalid field (registries are checked by name)."""
    _choice("data.name", config.data.name, DATASETS)
    _choice("data.resize_method", config.data.resize_method, RESIZE_METHODS)
    _choice("model.name", config.model.name, MODELS)
    _choice("model.stem", config.model.stem, STEMS)
    if config.model.stem not in MODELS[config.model.name].stems:
        raise ValueError(f"config.model.stem={config.model.stem!r} is not available for "
                         f"config.model.name={config.model.name!r}; it has {MODELS[config.model.name].stems}")
    _choice("model.dtype", config.model.dtype, DTYPES)
    _choice("optimizer.name", config.optimizer.name, OPTIMIZERS)
    _choice("schedule.name", config.schedule.name, SCHEDULES)
    _choice("train.select_metric", config.train.select_metric, SELECT_METRICS)
    _choice("task.ordinal_head", config.task.ordinal_head, HEADS)
    _choice("loss.imbalance", config.loss.imbalance, IMBALANCE_STRATEGIES)
    _choice("loss.focal_alpha", config.loss.focal_alpha, WEIGHT_SCHEMES)
    _choice("loss.segmentation", config.loss.segmentation, SEGMENTATION_LOSSES)
    _choice("segmentation.decoder", config.segmentation.decoder, DECODERS)
    _choice("segmentation.intensity", config.segmentation.get("intensity", "none"), INTENSITY_MODES)
    _choice("mesh.batch_norm", config.mesh.batch_norm, BATCH_NORM_MODES)
    check_numbers(config)
    check_paths(config)
    if config.model.init in PRETRAINED_INITS and not MODELS[config.model.name].pretrained:
        raise ValueError(f"config.model.init={config.model.init!r} but {config.model.name!r} has no "
                         "pretrained weights")
    if not config.model.init:
        raise ValueError("config.model.init is empty; use 'imagenet', 'scratch', 'mean_var', a weight-store "
                         "name or a file path")
    check_init(config.model.init, config.model.weights_dir)
    validate_transfer(config.transfer, config.model.name, init_kind(config.model.init))
