"""The classification side of a run: task (head + loss), model, training epochs and evaluation.

`classification_parts(config, data, mesh)` turns the config into what the trainer needs and nothing
task-specific leaks into the trainer: the loss follows `config.loss.imbalance` (weights and priors from
the training labels), ordinal grades use `config.task.ordinal_head`, and 'balanced_sampling' over-samples
minority classes in every epoch's order. Validation scores every epoch at `config.eval.threshold`; the
final report adds, for binary and multi-label tasks, the metrics at the Youden threshold chosen on the
validation split and applied unchanged to test.
"""

from __future__ import annotations

import dataclasses
import io
import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from medtl_jax.tasks.classification import evaluate
from medtl_jax.runtime.atomic_io import write_bytes_atomic
from medtl_jax.config.validate import check_select_metric
from medtl_jax.data.pipeline.batches import Augment, Preprocess, as_iterator, train_batches
from medtl_jax.data.pipeline.sampling import balanced_indices
from medtl_jax.data.subsets.sites import values_by_index
from medtl_jax.tasks.classification.metrics import SELECTABLE_METRICS
from medtl_jax.weights.model_input import backbone_kwargs, check_in_channels, input_normalization
from medtl_jax.models import build_classifier, get_spec
from medtl_jax.tasks import make_task
from medtl_jax.tasks.classification.losses import class_counts, make_loss
from medtl_jax.transfer.modes import effective_bn_mode


NO_TEST_SPLIT = "no test split: the dataset has none, so only validation was evaluated"


@dataclasses.dataclass
class RunParts:
    """What the trainer needs from a task family (classification or segmentation)."""

    task: Any
    model: Any
    input_shape: tuple[int, int, int]  # (H, W, C) of the model input, for init
    steps_per_epoch: int
    train_epoch: Callable[[int, int], Iterator[dict]]  # (epoch, first step) -> host batches
    evaluator: Any  # .validate(state) -> metrics; .final(state, workdir) -> {'val': ..., 'test': ...}
    select_metric: str


def train_labels(source) -> np.ndarray:
    """Labels of every training record, in source order (for class counts and balanced sampling)."""
    return np.stack([np.asarray(source[i]["label"]) for i in range(len(source))])


def _loss_kind(kind: str) -> str:
    return "multiclass" if kind == "ordinal" else kind


def make_classification_task(config, info, labels: np.ndarray):
    """The task of `info`, with the imbalance loss of `config.loss` built from the training labels."""
    head = config.task.ordinal_head if info.task == "ordinal" else "dense"
    strategy = config.loss.imbalance
    loss_fn = None
    if strategy not in ("none", "balanced_sampling"):
        kind = _loss_kind(info.task)
        counts = class_counts(kind, labels, info.num_classes)
        loss_fn = make_loss(kind, strategy, counts, focal_gamma=config.loss.focal_gamma,
                            cb_beta=config.loss.cb_beta, la_tau=config.loss.la_tau,
                            focal_alpha=config.loss.focal_alpha, num_examples=len(labels))
    return make_task(info.task, info.num_classes, info.label_names, head=head, loss_fn=loss_fn)


def classification_model(config, info, task) -> tuple[Any, Preprocess]:
    """The classifier and its deterministic preprocessing for `config` on data described by `info`
    (reads no data, so `medtl_jax.inference.prediction_model` rebuilds a finished run's model with it)."""
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
    return model, preprocess


def classification_parts(config, data, mesh) -> RunParts:
    """Task, model, epochs and evaluator of a classification run."""
    info = data.info
    labels = train_labels(data.sources["train"])
    task = make_classification_task(config, info, labels)
    model, preprocess = classification_model(config, info, task)
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
                           seed=config.seed, epoch=epoch, preprocess=preprocess, augment=augment,
                           shard_index=jax.process_index(), shard_count=jax.process_count(),
                           indices=epoch_indices(epoch))
        return as_iterator(ds[start:])

    evaluator = ClassificationEvaluator(config, task, model, data, preprocess, mesh)
    select = "auc" if config.train.select_metric == "auto" else config.train.select_metric
    check_select_metric(select, task.kind, SELECTABLE_METRICS[task.kind])
    size = preprocess.input_size
    return RunParts(task, model, (size, size, preprocess.channels), steps_per_epoch, train_epoch, evaluator,
                    select)


class ClassificationEvaluator:
    """Scores splits with one compiled eval step; writes predictions_{val,test}.npz at the end (index, labels,
    scores, and one array per `DataInfo.attributes` key, e.g. 'site', aligned with index)."""

    def __init__(self, config, task, model, data, preprocess: Preprocess, mesh):
        self.config, self.task, self.data, self.preprocess, self.mesh = config, task, data, preprocess, mesh
        self.eval_step = evaluate.make_eval_step(model, task, mesh)

    def _predict(self, state, split: str) -> evaluate.Predictions:
        return evaluate.predict(self.eval_step, state, self.data.sources[split],
                                global_batch=self.config.train.eval_batch_size, preprocess=self.preprocess,
                                mesh=self.mesh)

    def validate(self, state) -> dict:
        """Validation metrics at the configured threshold (no bootstrap): the per-epoch selection input."""
        return evaluate.score(self.task, self._predict(state, "validation"), threshold=self.config.eval.threshold)

    def final(self, state, workdir: pathlib.Path) -> dict:
        """Validation and test reports with CIs; the Youden threshold is chosen on validation only. A
        dataset without a test split gets {'num_examples': 0, 'note': NO_TEST_SPLIT} as its test report."""
        c = self.config
        val = self._predict(state, "validation")
        youden = self.task.decision_threshold(val.labels, val.scores)
        results = {"test": {"num_examples": 0, "note": NO_TEST_SPLIT}}
        for name, split in (("val", "validation"), ("test", "test")):
            if len(self.data.sources[split]) == 0:
                continue
            preds = val if name == "val" else self._predict(state, split)
            results[name] = self.task.evaluate(preds.labels, preds.scores, threshold=c.eval.threshold,
                                               youden_threshold=youden, bootstrap_samples=c.eval.bootstrap_samples,
                                               seed=c.seed)
            attributes = {key: values_by_index(self.data.sources[split], key, preds.index)  # e.g. 'site'
                          for key in self.data.info.attributes}
            _write_predictions(workdir / f"predictions_{name}.npz", preds, attributes)
        return {"val": results["val"], "test": results["test"]}


def _write_predictions(path: pathlib.Path, preds: evaluate.Predictions, attributes: dict | None = None) -> None:
    if jax.process_index() != 0:
        return
    buf = io.BytesIO()
    np.savez(buf, index=preds.index, labels=preds.labels, scores=preds.scores, **(attributes or {}))
    write_bytes_atomic(path, buf.getvalue())
