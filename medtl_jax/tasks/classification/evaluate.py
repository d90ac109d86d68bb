"""Evaluation of a classifier: run a split through the model once, in source order, and score it.

Predictions are gathered on the host with the dataset's own example index, so two runs can be compared
example by example (paired tests) and a predictions file can name each image.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import numpy as np
from jax.sharding import Mesh

from medtl_jax.data.pipeline.batches import Preprocess, eval_batches
from medtl_jax.data.subsets.sites import values_by_index
from medtl_jax.runtime import parallel
from medtl_jax.runtime.run_folder import ClassPredictions, RunDir
from medtl_jax.tasks.base import NO_TEST_SPLIT
from medtl_jax.tasks.classification.task import ClassificationTask


def make_eval_step(model, task: ClassificationTask, mesh: Mesh, tta_flips: bool = False) -> Callable:
    """jit-compiled forward pass in eval mode returning task scores, batch sharded over devices; with
    `tta_flips`, the mean of the scores of each image and of its mirror image (left-right)."""

    def scores(state, images):
        logits = model.apply({"params": state.params, "batch_stats": state.batch_stats}, images, train=False)
        return task.scores(logits)

    def eval_step(state, images):
        if not tta_flips:
            return scores(state, images)
        return (scores(state, images) + scores(state, images[:, :, ::-1, :])) / 2

    return jax.jit(eval_step, in_shardings=(parallel.replicated(mesh), parallel.batch_sharded(mesh)),
                   out_shardings=parallel.batch_sharded(mesh))


def predict(eval_step: Callable, state, source, *, global_batch: int, preprocess: Preprocess,
            mesh: Mesh) -> ClassPredictions:
    """Scores for every example of `source`; each process reads its shard, results are gathered."""
    local_batch = global_batch // jax.process_count()
    index, labels, scores = [], [], []
    for batch in eval_batches(source, batch_size=local_batch, preprocess=preprocess,
                              shard_index=jax.process_index(), shard_count=jax.process_count()):
        host = {k: batch[k] for k in ("index", "label", "mask")}
        images = parallel.to_global({"image": batch["image"]}, mesh)["image"]
        out = parallel.to_host(eval_step(state, images))
        gathered = {k: parallel.to_host(v) for k, v in parallel.to_global(host, mesh).items()}
        keep = gathered["mask"] > 0
        index.append(gathered["index"][keep])
        labels.append(gathered["label"][keep])
        scores.append(out[keep])
    order = np.argsort(np.concatenate(index), kind="stable")
    return ClassPredictions(index=np.concatenate(index)[order], labels=np.concatenate(labels)[order],
                       scores=np.concatenate(scores)[order])


def score(task: ClassificationTask, preds: ClassPredictions, *, threshold: float = 0.5,
          bootstrap_samples: int = 0, seed: int = 0) -> dict:
    """The task's headline metrics for a set of predictions."""
    return task.evaluate(preds.labels, preds.scores, threshold=threshold,
                         bootstrap_samples=bootstrap_samples, seed=seed)


class ClassificationEvaluator:
    """Scores splits with one compiled eval step; `final` writes predictions_{val,test}.npz (index, labels,
    scores, and one array per dataset attribute, e.g. 'site', aligned with index).

    Args:
      task, model, mesh: what the run trains, and where.
      sources: split name -> random-access source ('validation', 'test').
      preprocess: the run's deterministic eval preprocessing.
      eval_batch: global batch of the eval step. threshold: the fixed decision threshold.
      bootstrap_samples, seed: the final report's bootstrap CIs. attributes: record keys to keep per example.
      tta_flips: score each image as the mean over it and its mirror image.
    """

    def __init__(self, task: ClassificationTask, model, sources: dict, preprocess: Preprocess, mesh: Mesh, *,
                 eval_batch: int, threshold: float, bootstrap_samples: int, seed: int,
                 attributes: tuple[str, ...] = (), tta_flips: bool = False):
        self.task, self.sources, self.preprocess, self.mesh = task, sources, preprocess, mesh
        self.eval_batch, self.threshold = eval_batch, threshold
        self.bootstrap_samples, self.seed, self.attributes = bootstrap_samples, seed, attributes
        self.eval_step = make_eval_step(model, task, mesh, tta_flips)

    def _predict(self, state, split: str) -> ClassPredictions:
        return predict(self.eval_step, state, self.sources[split], global_batch=self.eval_batch,
                       preprocess=self.preprocess, mesh=self.mesh)

    def validate(self, state) -> dict:
        """Validation metrics at the configured threshold (no bootstrap): the per-epoch selection input."""
        return score(self.task, self._predict(state, "validation"), threshold=self.threshold)

    def final(self, state, run_dir: RunDir) -> dict:
        """Validation and test reports with CIs; the Youden threshold is chosen on validation only. A
        dataset without a test split gets {'num_examples': 0, 'note': NO_TEST_SPLIT} as its test report."""
        val = self._predict(state, "validation")
        youden = self.task.decision_threshold(val.labels, val.scores)
        results = {"test": {"num_examples": 0, "note": NO_TEST_SPLIT}}
        for name, split in (("val", "validation"), ("test", "test")):
            if len(self.sources[split]) == 0:
                continue
            preds = val if name == "val" else self._predict(state, split)
            results[name] = self.task.evaluate(preds.labels, preds.scores, threshold=self.threshold,
                                               youden_threshold=youden, bootstrap_samples=self.bootstrap_samples,
                                               seed=self.seed)
            if jax.process_index() == 0:
                attributes = {key: values_by_index(self.sources[split], key, preds.index) for key in self.attributes}
                run_dir.write_class_predictions(name, dataclasses.replace(preds, attributes=attributes))
        return {"val": results["val"], "test": results["test"]}
