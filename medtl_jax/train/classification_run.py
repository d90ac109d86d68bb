"""The classification side of a run: task (head + loss), model, training epochs and evaluator.

`classification_parts(config, data, mesh)` turns the config into what the trainer needs and nothing
task-specific leaks into the trainer: the loss follows `config.loss.imbalance` (weights and priors from
the training labels), ordinal grades use `config.task.ordinal_head`, and 'balanced_sampling' over-samples
minority classes in every epoch's order. Validation scores every epoch at `config.eval.threshold`; the
final report adds, for binary and multi-label tasks, the metrics at the Youden threshold chosen on the
validation split and applied unchanged to test.
"""

from __future__ import annotations

from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from medtl_jax.data.pipeline.batches import Augment, Preprocess, as_iterator, train_batches
from medtl_jax.data.pipeline.sampling import balanced_indices
from medtl_jax.models import build_classifier, get_spec
from medtl_jax.tasks import make_task
from medtl_jax.tasks.classification.evaluate import ClassificationEvaluator
from medtl_jax.tasks.classification.losses import class_counts, make_loss
from medtl_jax.tasks.families import CLASSIFICATION
from medtl_jax.train.run_parts import ModelParts, RunParts
from medtl_jax.transfer.modes import effective_bn_mode
from medtl_jax.weights.model_input import backbone_kwargs, check_in_channels, input_normalization


def train_labels(source) -> np.ndarray:
    """Labels of every training record, in source order (for class counts and balanced sampling)."""
    return np.stack([np.asarray(source[i]["label"]) for i in range(len(source))])


def _loss_kind(kind: str) -> str:
    return "multiclass" if kind == "ordinal" else kind


def make_classification_task(config, info, labels: np.ndarray | None = None):
    """The task of `info`; with the training `labels`, its loss is the imbalance loss of `config.loss`
    (without them, the plain loss: enough to restore and predict)."""
    head = config.task.ordinal_head if info.task == "ordinal" else "dense"
    strategy = config.loss.imbalance
    loss_fn = None
    if labels is not None and strategy not in ("none", "balanced_sampling"):
        kind = _loss_kind(info.task)
        counts = class_counts(kind, labels, info.num_classes)
        loss_fn = make_loss(kind, strategy, counts, focal_gamma=config.loss.focal_gamma,
                            cb_beta=config.loss.cb_beta, la_tau=config.loss.la_tau,
                            focal_alpha=config.loss.focal_alpha, num_examples=len(labels))
    return make_task(info.task, info.num_classes, info.label_names, head=head, loss_fn=loss_fn)


def classification_model(config, info, task=None) -> ModelParts:
    """The classifier and its deterministic preprocessing for `config` on data described by `info` (reads
    no data, so `medtl_jax.inference.restore` rebuilds a finished run's model with it). `task` defaults to
    the task without training labels."""
    task = make_classification_task(config, info) if task is None else task
    spec = get_spec(config.model.name)
    check_in_channels(config.model.name, config.model.in_channels, info.channels)
    dtype = jnp.bfloat16 if config.model.dtype == "bfloat16" else jnp.float32
    aux_outputs = task.num_outputs if config.model.aux_loss_weight > 0 else 0
    model = build_classifier(config.model.name, task.num_outputs, stem=config.model.stem, dtype=dtype,
                             **backbone_kwargs(config.model.name, config.model.in_channels, aux_outputs))
    dropout = spec.dropout_rate if config.model.dropout_rate < 0 else config.model.dropout_rate
    model = model.clone(dropout_rate=dropout, head_type=task.head,
                        backbone_bn=effective_bn_mode(config.transfer))
    mean, std = input_normalization(spec, config.model.name, config.model.in_channels)
    preprocess = Preprocess(input_size=config.data.input_size or spec.default_input_size, mean=mean, std=std,
                            resize_method=config.data.resize_method)
    size = preprocess.input_size
    return ModelParts(task, model, preprocess, (size, size, preprocess.channels))


def classification_evaluator(config, built: ModelParts, data, mesh) -> ClassificationEvaluator:
    """The evaluator of `built` on `data`'s validation and test splits, with the config's eval settings."""
    return ClassificationEvaluator(built.task, built.model, data.sources, built.preprocess, mesh,
                                   eval_batch=config.train.eval_batch_size, threshold=config.eval.threshold,
                                   bootstrap_samples=config.eval.bootstrap_samples, seed=config.seed,
                                   attributes=tuple(data.info.attributes), tta_flips=config.eval.tta_flips)


def classification_parts(config, data, mesh) -> RunParts:
    """Task, model, epochs and evaluator of a classification run."""
    info = data.info
    labels = train_labels(data.sources["train"])
    built = classification_model(config, info, make_classification_task(config, info, labels))
    a = config.augment
    augment = (Augment(flip=a.flip, rotate_degrees=a.rotate_degrees, crop_scale=a.crop_scale,
                       brightness=a.brightness, contrast=a.contrast) if a.enabled else None)

    balanced = config.loss.imbalance == "balanced_sampling"
    epoch_indices = ((lambda epoch: balanced_indices(labels, seed=config.seed, epoch=epoch,
                                                     kind=_loss_kind(info.task))) if balanced else
                     (lambda epoch: None))
    epoch_length = len(epoch_indices(0)) if balanced else len(labels)
    steps_per_epoch = epoch_length // config.train.batch_size

    def train_epoch(epoch: int, start: int) -> Iterator[dict]:
        ds = train_batches(data.sources["train"], batch_size=config.train.batch_size // jax.process_count(),
                           seed=config.seed, epoch=epoch, preprocess=built.preprocess, augment=augment,
                           shard_index=jax.process_index(), shard_count=jax.process_count(),
                           indices=epoch_indices(epoch))
        return as_iterator(ds[start:])

    select = CLASSIFICATION.select_metric(config.train.select_metric, info.task)
    return RunParts(built, steps_per_epoch, train_epoch, classification_evaluator(config, built, data, mesh),
                    select)
