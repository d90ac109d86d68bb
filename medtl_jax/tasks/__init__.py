"""Tasks: a head's output size, its loss, the mapping from logits to scores and the evaluator, per family of
label kinds (base: the protocols and TaskFamily; families: kind -> family; classification/, segmentation/).
"""

from medtl_jax.tasks.classification.task import TASK_KINDS, ClassificationTask, make_task

__all__ = ["TASK_KINDS", "ClassificationTask", "make_task"]
