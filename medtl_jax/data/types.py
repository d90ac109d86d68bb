"""What a dataset is and how to open it: the types every data source returns, and one config reader.

`DataInfo` describes a dataset (task, classes, geometry, split sizes); `DataBundle` pairs it with one
random-access source per split. Sources (medtl_jax.data.sources) build them; the registry picks one.
"""

from __future__ import annotations

import dataclasses
from typing import Any

SPLITS = ("train", "validation", "test")
# A dataset's kind of label: one label (or label vector) per example, or a mask per image.
EXAMPLE_LABEL_KINDS = ("binary", "multiclass", "ordinal", "multilabel")
MASK_KINDS = ("segmentation",)
TASK_KINDS = EXAMPLE_LABEL_KINDS + MASK_KINDS


@dataclasses.dataclass(frozen=True)
class DataInfo:
    """What a dataset is: task kind, classes, image geometry and split sizes.

    task: one of TASK_KINDS. num_classes: 2 for binary (and binary masks), the number of labels for
    multilabel. attributes: record keys holding a per-example group (e.g. 'site'), for per-group evaluation.
    """

    name: str
    task: str
    num_classes: int
    label_names: tuple[str, ...]
    channels: int
    image_size: int
    splits: dict[str, int]
    attributes: tuple[str, ...] = ()

    @property
    def example_labels(self) -> bool:
        """Whether records carry one 'label' per example (stratifiable), rather than a 'mask' per image."""
        return self.task in EXAMPLE_LABEL_KINDS


@dataclasses.dataclass
class DataBundle:
    """A dataset ready to read: its DataInfo and one random-access source per split.

    Records are dicts with 'image' uint8 HxWxC, 'label' (int, or int32 vector for multilabel),
    'index' (position in the original file/split) and any `info.attributes`.
    """

    info: DataInfo
    sources: dict[str, Any]


def config_value(config, key: str, default=None):
    """config.key of a ConfigDict or a dict (a data config), `default` when absent or None."""
    value = config.get(key, default) if hasattr(config, "get") else getattr(config, key, default)
    return default if value is None else value
