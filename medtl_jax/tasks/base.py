"""What every task family gives the trainer, evaluation, prediction and reports.

A *family* serves some kinds of label (`DataInfo.task`): classification serves one label per example
(binary, multi-class, ordinal, multi-label), segmentation a mask per image. Code above this layer asks the
family for facts (which metric leads, which can select a checkpoint, whether predictions are per example)
instead of comparing kind strings; `medtl_jax.tasks.families.family_of(kind)` finds it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Protocol

import jax

from medtl_jax.runtime.run_folder import RunDir

NO_TEST_SPLIT = "no test split: the dataset has none, so only validation was evaluated"


class Task(Protocol):
    """A task as the train step sees it: the head's width and the per-example loss of a batch."""

    @property
    def num_outputs(self) -> int: ...

    def batch_loss(self, logits: jax.Array, batch: dict) -> jax.Array:
        """Per-example loss [B] (float32) of a training batch."""


class Evaluator(Protocol):
    """Scores a state: every epoch on validation (`validate`), once at the end on validation and test
    (`final`, which also writes the predictions files into the run folder)."""

    def validate(self, state: Any) -> dict: ...

    def final(self, state: Any, run_dir: RunDir) -> dict: ...


@dataclasses.dataclass(frozen=True)
class TaskFamily:
    """Facts about one family of tasks.

    Attributes:
      name: 'classification' or 'segmentation'.
      kinds: the `DataInfo.task` values it serves.
      headline_metric: the metric a report leads with and `select_metric='auto'` picks the checkpoint by.
      selectable_metrics: kind -> validation metrics that may pick the checkpoint (larger is better).
      reported_metrics: test metrics a study report tables, in order.
      example_predictions: whether predictions files hold per-example scores (paired tests, bootstrap CIs,
        per-site tables) rather than probability maps.
    """

    name: str
    kinds: tuple[str, ...]
    headline_metric: str
    selectable_metrics: Mapping[str, tuple[str, ...]]
    reported_metrics: tuple[str, ...]
    example_predictions: bool

    def select_metric(self, configured: str, kind: str) -> str:
        """The validation metric that picks the tested checkpoint: `configured` ('auto' = the headline),
        ValueError naming config.train.select_metric when this kind does not compute it."""
        chosen = self.headline_metric if configured == "auto" else configured
        available = self.selectable_metrics[kind]
        if chosen not in available:
            raise ValueError(f"config.train.select_metric={chosen!r} is not computed for a {kind} task; "
                             f"choose one of {('auto',) + tuple(available)}")
        return chosen
