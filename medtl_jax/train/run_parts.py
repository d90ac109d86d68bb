"""What the trainer and the inference layer need from a task family, as two plain records.

`ModelParts` is a run's model as built from its config and the dataset's description alone (no data read):
task (head width, loss, scores), network, eval preprocessing and input shape. `RunParts` adds what
training needs: the epochs of batches, the evaluator and the metric that selects the tested checkpoint.
Each family's run module (classification_run, segmentation_run) builds both; `families` picks the module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

from medtl_jax.tasks.base import Evaluator, Task


@dataclasses.dataclass
class ModelParts:
    """A run's task, model, eval preprocessing and model input shape (H, W, C), for init and restore."""

    task: Task
    model: Any
    preprocess: Any
    input_shape: tuple[int, int, int]


@dataclasses.dataclass
class RunParts:
    """What the trainer needs from a task family (classification or segmentation)."""

    built: ModelParts
    steps_per_epoch: int
    train_epoch: Callable[[int, int], Iterator[dict]]  # (epoch, first step) -> host batches
    evaluator: Evaluator
    select_metric: str

    @property
    def task(self) -> Task:
        return self.built.task

    @property
    def model(self) -> Any:
        return self.built.model

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.built.input_shape
