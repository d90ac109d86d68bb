"""A finished run, rebuilt for prediction without its training data: config, model, preprocessing, weights.

`load_run(workdir)` reads `config.json` and the dataset description the trainer stored in `results.json`
('data': task, classes, label names, channels), builds the model and its eval preprocessing with the
trainer's own builders (`medtl_jax.train.families`), and restores only the parameters and BatchNorm
statistics of a checkpoint (no optimizer is rebuilt), so the weights and the pixels fed to them are exactly
those of the run's own evaluation. The training data are opened only when results.json is missing (a run
that never finished), to learn the classes.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from medtl_jax.data import load_data
from medtl_jax.data.types import DataInfo
from medtl_jax.runtime import parallel
from medtl_jax.runtime.checkpoint import ModelVariables, RunCheckpoints
from medtl_jax.runtime.run_folder import RunDir
from medtl_jax.tasks.classification import evaluate
from medtl_jax.tasks.families import family_of
from medtl_jax.train.families import builder_for
from medtl_jax.train.run_parts import ModelParts

log = logging.getLogger(__name__)


@dataclasses.dataclass
class RestoredRun:
    """Everything prediction needs from a run folder.

    task: ClassificationTask or SegmentationTask; preprocess: Preprocess (classification) or
    SegPreprocess; state: the restored ModelVariables (params, batch_stats), replicated on `mesh`; step:
    the training step of the checkpoint.
    """

    workdir: pathlib.Path
    config: ml_collections.ConfigDict
    info: DataInfo
    built: ModelParts
    state: ModelVariables
    mesh: Any
    step: int
    _eval_step: Any = dataclasses.field(default=None, repr=False)

    @property
    def task(self):
        return self.built.task

    @property
    def model(self):
        return self.built.model

    @property
    def preprocess(self):
        return self.built.preprocess

    def eval_step(self):
        """The trainer's compiled eval step (images -> task scores) for this run, built once."""
        if self._eval_step is None:
            self._eval_step = evaluate.make_eval_step(self.model, self.task, self.mesh,
                                                      bool(self.config.eval.get("tta_flips", False)))
        return self._eval_step

    @property
    def segmentation(self) -> bool:
        """Whether the run segments images (masks out) rather than scoring each image."""
        return not family_of(self.info.task).example_predictions

    def host_variables(self) -> dict:
        """{'params', 'batch_stats'} as host numpy arrays (for Grad-CAM, which runs on one device)."""
        return jax.device_get({"params": self.state.params, "batch_stats": self.state.batch_stats})


def run_config(workdir: str | pathlib.Path) -> ml_collections.ConfigDict:
    """The config a run was started with (its config.json), as a ConfigDict."""
    return ml_collections.ConfigDict(RunDir(workdir).read_config())


def data_info(run_dir: RunDir, config: ml_collections.ConfigDict) -> DataInfo:
    """The DataInfo the trainer stored in results.json; without results.json, that of the training data."""
    results = run_dir.read_results()
    if results is not None:
        stored = results.get("data")
        if not isinstance(stored, dict):
            raise ValueError(f"{run_dir.results_json} has no 'data' entry describing the dataset (classes, channels)")
        fields = {f.name for f in dataclasses.fields(DataInfo)}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in stored.items() if k in fields}
        return DataInfo(**values)
    log.warning("%s not found (unfinished run?): opening the training data to learn its classes", run_dir.results_json)
    try:
        return load_data(config.data).info
    except Exception as e:  # noqa: BLE001 - any failure means the same thing to the user
        raise FileNotFoundError(f"{run_dir.results_json} not found and the run's training data "
                                f"({config.data.name!r}) could not be opened to learn its classes: {e}") from e


def abstract_variables(built: ModelParts, mesh) -> ModelVariables:
    """The model's params and batch_stats as shapes with a replicated sharding: what a checkpoint restores
    into."""
    rngs = {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}
    shapes = jax.eval_shape(lambda: built.model.init(rngs, jnp.zeros((1, *built.input_shape)), train=False))
    rep = parallel.replicated(mesh)
    as_abstract = lambda tree: jax.tree_util.tree_map(  # noqa: E731
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep), tree)
    return ModelVariables(params=as_abstract(shapes["params"]), batch_stats=as_abstract(shapes.get("batch_stats", {})))


def restore_variables(run_dir: RunDir, which: str, built: ModelParts, mesh) -> tuple[ModelVariables, int]:
    """(params + batch_stats, step) of the `which` checkpoint of the run in `run_dir`, shaped for `built`."""
    ckpt_dir = run_dir.checkpoint_dir(which)
    if not run_dir.checkpoint_steps(which):
        raise FileNotFoundError(f"no '{which}' checkpoint in {ckpt_dir}")
    ckpts = RunCheckpoints(run_dir.path)
    try:
        restored = ckpts.restore_variables(which, abstract_variables(built, mesh))
    finally:
        ckpts.close()
    if restored is None:
        raise FileNotFoundError(f"no '{which}' checkpoint in {ckpt_dir}")
    return restored


def load_run(workdir: str | pathlib.Path, which: str = "best", num_devices: int | None = None) -> RestoredRun:
    """Rebuilds the run in `workdir` and restores its `which` ('best' | 'latest') checkpoint."""
    run_dir = RunDir(workdir)
    run_dir.checkpoint_dir(which)  # ValueError for an unknown series
    if not run_dir.path.is_dir():
        raise FileNotFoundError(f"run folder {run_dir.path} not found")
    config = copy.deepcopy(run_config(run_dir.path))
    info = data_info(run_dir, config)
    mesh = parallel.make_mesh(num_devices)
    built = builder_for(info).model(config, info)
    state, step = restore_variables(run_dir, which, built, mesh)
    return RestoredRun(workdir=run_dir.path, config=config, info=info, built=built, state=state, mesh=mesh,
                       step=step)
