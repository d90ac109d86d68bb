"""A finished run, rebuilt for prediction without its training data: config, model, preprocessing, weights.

`load_run(workdir)` reads `config.json` and the dataset description the trainer stored in
`results.json` ('data': task, classes, label names, channels), builds the model and its eval
preprocessing with the trainer's own functions (`classification_run.classification_model`,
`segmentation_run.segmentation_model`) and restores a checkpoint through `RunCheckpoints`, so the
weights and the pixels fed to them are exactly those of the run's own evaluation. The training data are
opened only when results.json is missing (a run that never finished), to learn the classes.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from medtl_jax.tasks.classification import evaluate

from medtl_jax.runtime import parallel
from medtl_jax.runtime.checkpoint import RunCheckpoints
from medtl_jax.train.classification_run import classification_model, make_classification_task
from medtl_jax.inference.cross_evaluate import run_config
from medtl_jax.data.registry import DataInfo
from medtl_jax.transfer.optimizer import make_optimizer
from medtl_jax.train.segmentation_run import segmentation_model
from medtl_jax.train.trainer import TrainState
from medtl_jax.transfer.modes import wrap_optimizer
from medtl_jax.data import load_data

log = logging.getLogger(__name__)
CHECKPOINTS = ("best", "latest")


@dataclasses.dataclass
class RestoredRun:
    """Everything prediction needs from a run folder.

    task: ClassificationTask or SegmentationTask; preprocess: Preprocess (classification) or
    SegPreprocess; state: the restored TrainState, replicated on `mesh`; step: its training step.
    """

    workdir: pathlib.Path
    config: ml_collections.ConfigDict
    info: DataInfo
    task: Any
    model: Any
    preprocess: Any
    state: Any
    mesh: Any
    step: int
    _eval_step: Any = dataclasses.field(default=None, repr=False)

    def eval_step(self):
        """The trainer's compiled eval step (images -> task scores) for this run, built once."""
        if self._eval_step is None:
            self._eval_step = evaluate.make_eval_step(self.model, self.task, self.mesh)
        return self._eval_step

    @property
    def segmentation(self) -> bool:
        """Whether the run segments images (masks out) rather than classifying them."""
        return self.info.task == "segmentation"

    def host_variables(self) -> dict:
        """{'params', 'batch_stats'} as host numpy arrays (for Grad-CAM, which runs on one device)."""
        return jax.device_get({"params": self.state.params, "batch_stats": self.state.batch_stats})


def data_info(workdir: pathlib.Path, config: ml_collections.ConfigDict) -> DataInfo:
    """The DataInfo the trainer stored in results.json; without results.json, that of the training data."""
    path = workdir / "results.json"
    if path.is_file():
        stored = json.loads(path.read_text()).get("data")
        if not isinstance(stored, dict):
            raise ValueError(f"{path} has no 'data' entry describing the dataset (classes, channels)")
        fields = {f.name for f in dataclasses.fields(DataInfo)}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in stored.items() if k in fields}
        return DataInfo(**values)
    log.warning("%s not found (unfinished run?): opening the training data to learn its classes", path)
    try:
        return load_data(config.data).info
    except Exception as e:  # noqa: BLE001 - any failure means the same thing to the user
        raise FileNotFoundError(f"{path} not found and the run's training data ({config.data.name!r}) could "
                                f"not be opened to learn its classes: {e}") from e


def _steps(workdir: pathlib.Path, config) -> tuple[int, int]:
    """(steps per epoch, total steps) of the run: only the optimizer's state layout depends on them."""
    try:
        timing = json.loads((workdir / "results.json").read_text())["timing"]
        return max(1, int(timing["steps_per_epoch"])), max(1, int(timing["steps"]))
    except (OSError, KeyError, TypeError, ValueError):
        return 1, max(1, int(config.train.epochs))


def _abstract_state(config, model, input_shape, steps: tuple[int, int], mesh) -> TrainState:
    """The run's TrainState as shapes with a replicated sharding: the layout a checkpoint restores into."""
    rngs = {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}
    variables = jax.eval_shape(lambda: model.init(rngs, jnp.zeros((1, *input_shape)), train=False))
    tx = wrap_optimizer(make_optimizer(config, *steps)[0], variables["params"], config.model.name,
                        config.transfer)
    shapes = jax.eval_shape(lambda v: TrainState(
        step=jnp.zeros((), jnp.int32), params=v["params"], batch_stats=v.get("batch_stats", {}),
        opt_state=tx.init(v["params"]), rng=jax.random.PRNGKey(0)), variables)
    rep = parallel.replicated(mesh)
    return jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep), shapes)


def load_run(workdir: str | pathlib.Path, which: str = "best", num_devices: int | None = None) -> RestoredRun:
    """Rebuilds the run in `workdir` and restores its `which` ('best' | 'latest') checkpoint."""
    workdir = pathlib.Path(workdir)
    if which not in CHECKPOINTS:
        raise ValueError(f"checkpoint={which!r} is not one of {CHECKPOINTS}")
    if not workdir.is_dir():
        raise FileNotFoundError(f"run folder {workdir} not found")
    config = copy.deepcopy(run_config(workdir))
    info = data_info(workdir, config)
    ckpt_dir = workdir / "checkpoints" / which
    if not ckpt_dir.is_dir() or not any(p.name.isdigit() for p in ckpt_dir.iterdir()):
        raise FileNotFoundError(f"no '{which}' checkpoint in {ckpt_dir}")
    mesh = parallel.make_mesh(num_devices)
    if info.task == "segmentation":
        task, model, preprocess = segmentation_model(config, info)
        size = config.segmentation.patch_size
        input_shape = (size, size, 3)
    else:
        plain = copy.deepcopy(config)
        plain.loss.imbalance = "none"  # the loss is not used here; its class counts would need the labels
        task = make_classification_task(plain, info, np.zeros((0,), np.int32))
        model, preprocess = classification_model(config, info, task)
        input_shape = (preprocess.input_size, preprocess.input_size, preprocess.channels)
    abstract = _abstract_state(config, model, input_shape, _steps(workdir, config), mesh)
    ckpts = RunCheckpoints(workdir)
    try:
        restored = ckpts.restore(which, abstract)
    finally:
        ckpts.close()
    if restored is None:
        raise FileNotFoundError(f"no '{which}' checkpoint in {ckpt_dir}")
    state, _ = restored
    return RestoredRun(workdir=workdir, config=config, info=info, task=task, model=model, preprocess=preprocess,
                       state=state, mesh=mesh, step=int(state.step))
