"""Evaluate a finished run's best checkpoint on another dataset (another hospital, camera or protocol).

The run's model, preprocessing and task come from its own config (`<workdir>/config.json`); only the
`data` group is replaced, so a CHASE_DB1-trained vessel model can be scored on DRIVE's test split, or a
site-A classifier on site B. Classes must match: a checkpoint with a different head width is refused with
a message naming both datasets.
"""

from __future__ import annotations

import json
import pathlib

import ml_collections

from medtl_jax.runtime.checkpoint import RunCheckpoints
from medtl_jax.train import trainer as train


def run_config(workdir: str | pathlib.Path) -> ml_collections.ConfigDict:
    """The config a run was started with (its config.json), as a ConfigDict."""
    path = pathlib.Path(workdir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {workdir} a medtl-jax run folder?")
    return ml_collections.ConfigDict(json.loads(path.read_text()))


def evaluate_on(workdir: str | pathlib.Path, data_overrides: dict, out_dir: str | pathlib.Path) -> dict:
    """Scores the best checkpoint of `workdir` on the dataset given by `data_overrides` (config.data fields);
    returns {'val': ..., 'test': ...} as in results.json and writes predictions into `out_dir`."""

    config = run_config(workdir)
    source_data = config.data.name
    for key, value in data_overrides.items():
        config.data[key] = value
    config.model.init = "scratch"  # the weights come from the checkpoint
    s = train.make_setup(config)
    state = train.create_state(config, s)
    try:
        restored = RunCheckpoints(workdir).restore("best", state)
    except ValueError as e:  # e.g. a head sized for another number of classes
        raise ValueError(f"the best checkpoint of the {source_data!r} run {workdir} does not fit a model for "
                         f"{config.data.name!r} ({s.data.info.num_classes} classes): {e}") from e
    if restored is None:
        raise FileNotFoundError(f"no best checkpoint in {pathlib.Path(workdir) / 'checkpoints' / 'best'}")
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return s.parts.evaluator.final(restored[0], out_dir)
