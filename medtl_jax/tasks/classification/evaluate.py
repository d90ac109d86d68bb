"""Evaluation: run a split through the model once, in source order, and score it.

Predictions are gathered on the host with the dataset's own example index, so two runs can be compared
example by example (paired tests) and a predictions file can name each image.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import numpy as np
from jax.sharding import Mesh

from medtl_jax.runtime import parallel
from medtl_jax.data.pipeline.batches import Preprocess, eval_batches
from medtl_jax.tasks import ClassificationTask


@dataclasses.dataclass
class Predictions:
    """Scores of every example of one split, with its labels and dataset indices."""

    index: np.ndarray
    labels: np.ndarray
    scores: np.ndarray


def make_eval_step(model, task: ClassificationTask, mesh: Mesh) -> Callable:
    """jit-compiled forward pass in eval mode returning task scores, batch sharded over devices."""

    def eval_step(state, images):
        logits = model.apply({"params": state.params, "batch_stats": state.batch_stats}, images, train=False)
        return task.scores(logits)

    return jax.jit(eval_step, in_shardings=(parallel.replicated(mesh), parallel.batch_sharded(mesh)),
                   out_shardings=parallel.batch_sharded(mesh))


def predict(eval_step: Callable, state, source, *, global_batch: int, preprocess: Preprocess,
            mesh: Mesh) -> Predictions:
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
    return Predictions(index=np.concatenate(index)[order], labels=np.concatenate(labels)[order],
                       scores=np.concatenate(scores)[order])


def score(task: ClassificationTask, preds: Predictions, *, threshold: float = 0.5,
          bootstrap_samples: int = 0, seed: int = 0) -> dict:
    """The task's headline metrics for a set of predictions."""
    return task.evaluate(preds.labels, preds.scores, threshold=threshold,
                         bootstrap_samples=bootstrap_samples, seed=seed)
