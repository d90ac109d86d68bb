"""Evaluate a finished run's best checkpoint on another dataset (another hospital, camera or protocol).

The run's model, preprocessing and task come from its own config (`<workdir>/config.json`); only the
`data` group is replaced, so a CHASE_DB1-trained vessel model can be scored on DRIVE's test split, or a
site-A classifier on site B. Classes must match: a checkpoint with a different head width is refused with
a message naming both datasets. Only the checkpoint's params and BatchNorm statistics are read. The output
folder gets results.json, predictions_{val,test}.npz and report.md (`launch.evaluate` is the command).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import jax

from medtl_jax.config.validate import validate_config
from medtl_jax.data import load_data
from medtl_jax.data.subsets.training_subset import select_training_data
from medtl_jax.inference.prediction_model import restore_variables, run_config
from medtl_jax.runtime import parallel
from medtl_jax.runtime.run_folder import RunDir
from medtl_jax.tasks.families import family_of
from medtl_jax.train.families import builder_for
from medtl_jax.train.run_report import render_evaluation_report

CHECKPOINT = "best"


def summary_line(results: dict) -> str:
    """One line: the headline metric on test (or validation, without a test split) and where it was written."""
    data = results["data"]
    metric = family_of(data["task"]).headline_metric
    split = "test" if "note" not in results["test"] else "val"
    scored = results[split]
    n = scored.get("num_examples", scored.get("num_images"))
    value = scored.get(metric)
    shown = "n/a" if value is None else f"{value:.4f}"
    return (f"{results['source']['dataset']} -> {data['name']}: {split} {metric} {shown} ({n} scored); "
            f"results in {results['out']}")


def evaluate_on(workdir: str | pathlib.Path, data_overrides: dict, out_dir: str | pathlib.Path) -> dict:
    """Scores the best checkpoint of `workdir` on the dataset given by `data_overrides` (config.data fields);
    returns results.json's content ({'val', 'test', 'source', 'data', 'config', ...}) and writes it, the
    predictions and report.md into `out_dir`."""
    config = run_config(workdir)
    source = {"run": str(workdir), "dataset": config.data.name, "model": config.model.name,
              "checkpoint": CHECKPOINT, "data_overrides": dict(data_overrides)}
    for key, value in data_overrides.items():
        config.data[key] = value
    config.model.init = "scratch"  # the weights come from the checkpoint
    validate_config(config)
    out = RunDir(out_dir)
    out.check_writable()
    data = select_training_data(config.data, load_data(config.data))
    mesh = parallel.make_mesh(config.mesh.num_devices)
    builder = builder_for(data.info)
    built = builder.model(config, data.info)
    try:
        state, step = restore_variables(RunDir(workdir), CHECKPOINT, built, mesh)
    except ValueError as e:  # e.g. a head sized for another number of classes
        raise ValueError(f"the best checkpoint of the {source['dataset']!r} run {workdir} does not fit a model for "
                         f"{config.data.name!r} ({data.info.num_classes} classes): {e}") from e
    out.path.mkdir(parents=True, exist_ok=True)
    results = builder.evaluator(config, built, data, mesh).final(state, out)
    results.update(source={**source, "step": step}, out=str(out.path),
                   data={**dataclasses.asdict(data.info), "validation_examples_used": len(data.sources["validation"])},
                   config=json.loads(config.to_json_best_effort()))
    results["summary"] = summary_line(results)
    if jax.process_index() == 0:
        out.write_results(results, render_evaluation_report(results))
    return results
