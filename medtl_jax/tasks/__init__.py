"""Tasks: a head's output size, its loss and the mapping from logits to scores, per kind of label."""

from medtl_jax.tasks.classification.task import TASK_KINDS, ClassificationTask, make_task

__all__ = ["TASK_KINDS", "ClassificationTask", "make_task"]
