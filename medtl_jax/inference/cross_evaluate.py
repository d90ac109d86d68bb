"""Evaluate a finished run's best checkpoint on another dataset (another hospital, camera or protocol).

The run's model, preprocessing and task come from its own config (`<workdir>/config.json`); only the
`data` group is replaced, so a CHASE_DB1-trained vessel model can be scored on DRIVE's test split, or a
site-A classifier on site B. Classes must match: a checkpoint with a different head width is refused with
a message naming both datasets. Only the checkpoint's params and BatchNorm statistics are read.
"""

from __future__ import annotations

import pathlib

from medtl_jax.config.validate import validate_config
from medtl_jax.data import load_data
from medtl_jax.data.subsets.training_subset import select_training_data
from medtl_jax.inference.prediction_model import restore_variables, run_config
from medtl_jax.runtime import parallel
from medtl_jax.runtime.run_folder import RunDir
from medtl_jax.train.families import builder_for


def evaluate_on(workdir: str | pathlib.Path, data_overrides: dict, out_dir: str | pathlib.Path) -> dict:
    """Scores the best checkpoint of `workdir` on the dataset given by `data_overrides` (config.data fields);
    returns {'val': ..., 'test': ...} as in results.json and writes predictions into `out_dir`."""
    config = run_config(workdir)
    source_data = config.data.name
    for key, value in data_overrides.items():
        config.data[key] = value
    config.model.init = "scratch"  # the weights come from the checkpoint
    validate_config(config)
    data = select_training_data(config.data, load_data(config.data))
    mesh = parallel.make_mesh(config.mesh.num_devices)
    builder = builder_for(data.info)
    built = builder.model(config, data.info)
    try:
        state, _ = restore_variables(RunDir(workdir), "best", built, mesh)
    except ValueError as e:  # e.g. a head sized for another number of classes
        raise ValueError(f"the best checkpoint of the {source_data!r} run {workdir} does not fit a model for "
                         f"{config.data.name!r} ({data.info.num_classes} classes): {e}") from e
    out = RunDir(out_dir)
    out.path.mkdir(parents=True, exist_ok=True)
    return builder.evaluator(config, built, data, mesh).final(state, out)
