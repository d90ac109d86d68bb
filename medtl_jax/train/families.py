"""Task family -> how a run of it is built (the train layer's side of `medtl_jax.tasks.families`)."""

from __future__ import annotations

import dataclasses
from typing import Callable

from medtl_jax.data.types import DataInfo
from medtl_jax.tasks.families import CLASSIFICATION, SEGMENTATION, family_of
from medtl_jax.train.classification_run import classification_evaluator, classification_model, classification_parts
from medtl_jax.train.run_parts import ModelParts, RunParts
from medtl_jax.train.segmentation_run import segmentation_evaluator, segmentation_model, segmentation_parts


@dataclasses.dataclass(frozen=True)
class RunBuilder:
    """A family's builders: `model(config, info)` without data, `evaluator(config, built, data, mesh)`,
    and `parts(config, data, mesh)` for training."""

    model: Callable[..., ModelParts]
    evaluator: Callable[..., object]
    parts: Callable[..., RunParts]


BUILDERS: dict[str, RunBuilder] = {
    CLASSIFICATION.name: RunBuilder(classification_model, classification_evaluator, classification_parts),
    SEGMENTATION.name: RunBuilder(segmentation_model, segmentation_evaluator, segmentation_parts),
}


def builder_for(info: DataInfo) -> RunBuilder:
    """The builders of the family serving `info.task`."""
    return BUILDERS[family_of(info.task).name]
