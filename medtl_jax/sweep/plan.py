"""The resolved plan of a sweep: every run's name, overrides, config and `launch.train` command.

`make_plan(sweep, sweep_spec, workdir)` expands the parts in order, resolves each run's config (the config
file + the sweep's fixed overrides + the run's own), and then
  - drops runs that cannot exist: a pretrained init ('imagenet', 'mean_var') for a model without
    pretrained weights (the CBR nets), listed under 'dropped' with the reason;
  - merges runs whose configs are identical (e.g. the imbalance part's 'none' run is a benchmark run):
    the first name is kept and the run lists every part it belongs to;
  - fails on anything else invalid, naming the run (a misspelt field, a bad value).
`plan_json` is what DIR/sweep.json holds; `sweep_run_json` what each DIR/<run>/sweep_run.json holds.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shlex
from collections.abc import Mapping
from typing import Any

from medtl_jax.sweep import naming
from medtl_jax.sweep.resolve import cli_value, config_json, resolve_config, spec_args
from medtl_jax.sweep.spec import ARG_PREFIX, Sweep
from medtl_jax.models import MODELS
from medtl_jax.weights.init_source import PRETRAINED_INITS
from medtl_jax.config.validate import validate_config
from medtl_jax.data.subsets.fractions import check_fraction

SCHEMA_VERSION = 1


@dataclasses.dataclass
class PlannedRun:
    """One run of the plan."""
    name: str
    overrides: dict[str, Any]  # the run's own overrides (what its name shows); ':key' = config-file argument
    parts: list[str]  # the sweep parts this run belongs to
    config_spec: str  # the config file spec with the run's ':key' arguments merged
    config: dict  # the resolved config, as the run's config.json will hold it
    fields: dict[str, Any]  # every field swept anywhere in the sweep -> this run's value
    command: list[str]  # `python -m launch.train ...` (run from the repository root)


@dataclasses.dataclass
class Plan:
    """A sweep resolved for one output folder."""
    sweep: Sweep
    sweep_spec: str
    workdir: str
    fixed: dict[str, Any]
    fields: list[str]
    runs: list[PlannedRun]
    dropped: list[dict]
    merged: list[dict]


def jsonable(value: Any) -> Any:
    """Tuples (and nested ones) as lists, as JSON stores them."""
    if isinstance(value, (tuple, list)):
        return [jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {k: jsonable(v) for k, v in value.items()}
    return value


def _field_value(field: str, spec: str, config: dict) -> Any:
    if field.startswith(ARG_PREFIX):
        return spec_args(spec).get(field[len(ARG_PREFIX):])
    node: Any = config
    for part in field.split("."):
        node = node[part]
    return node


def impossible_reason(config) -> str | None:
    """Why a resolved config cannot be trained whatever the data (None when it can)."""
    model = MODELS.get(config.model.name)
    if model is not None and config.model.init in PRETRAINED_INITS and not model.pretrained:
        return f"{config.model.name} has no pretrained weights (init={config.model.init!r})"
    return None


def train_command(config_spec: str, workdir: str, overrides: Mapping[str, Any], python: str = "python") -> list[str]:
    """argv of `launch.train` for one run: config spec, workdir, then --config.<field>=<value> per override."""
    flags = [f"--config.{k}={cli_value(v)}" for k, v in overrides.items() if not k.startswith(ARG_PREFIX)]
    return [python, "-m", "launch.train", "--config", config_spec, "--workdir", workdir, *flags]


def _validate(config, name: str) -> None:
    try:
        validate_config(config)
        check_fraction(config.data.train_fraction)
    except ValueError as e:
        raise ValueError(f"sweep run {name!r}: {e}") from None


def make_plan(sweep: Sweep, sweep_spec: str, workdir: str | pathlib.Path,
              extra_fixed: Mapping[str, Any] | None = None) -> Plan:
    """Expands, resolves, drops impossible runs, merges identical ones and names the rest."""
    fixed = {**sweep.fixed, **(extra_fixed or {})}
    candidates: list[tuple[str, dict]] = [(part.name, o) for part in sweep.parts for o in part.expand()]
    fields: list[str] = []
    for _, overrides in candidates:
        fields.extend(k for k in overrides if k not in fields)
    naming.check_aliases(fields, sweep.aliases)

    kept: dict[str, dict] = {}  # canonical config JSON -> run under construction
    dropped, merged = [], []
    for part, overrides in candidates:
        label = naming.run_name(overrides, sweep.aliases)
        spec, config = resolve_config(sweep.config, {**fixed, **overrides})
        reason = impossible_reason(config)
        if reason:
            dropped.append({"part": part, "overrides": jsonable(overrides), "reason": reason})
            continue
        _validate(config, label)
        resolved = config_json(config)
        key = json.dumps(resolved, sort_keys=True)
        if key in kept:
            if part not in kept[key]["parts"]:
                kept[key]["parts"].append(part)
            merged.append({"part": part, "overrides": jsonable(overrides), "same_as": key})
            continue
        kept[key] = {"overrides": overrides, "parts": [part], "spec": spec, "config": resolved}

    entries = list(kept.values())
    names = naming.unique_names([e["overrides"] for e in entries], sweep.aliases)
    root = str(workdir)
    runs = []
    for name, e in zip(names, entries):
        run_overrides = {**fixed, **e["overrides"]}
        runs.append(PlannedRun(
            name=name, overrides=e["overrides"], parts=e["parts"], config_spec=e["spec"], config=e["config"],
            fields={f: jsonable(_field_value(f, e["spec"], e["config"])) for f in fields},
            command=train_command(e["spec"], str(pathlib.Path(root) / name), run_overrides)))
    name_of = dict(zip(kept, names))
    for m in merged:
        m["same_as"] = name_of[m["same_as"]]
    return Plan(sweep, sweep_spec, root, fixed, fields, runs, dropped, merged)


def plan_json(plan: Plan) -> dict:
    """The resolved plan (DIR/sweep.json)."""
    s = plan.sweep
    return {"schema": SCHEMA_VERSION, "sweep": s.name, "sweep_spec": plan.sweep_spec, "description": s.description,
            "config": s.config, "fixed": jsonable(plan.fixed), "fields": plan.fields,
            "aliases": {f: naming.alias(f, s.aliases) for f in plan.fields},
            "runs": [{"name": r.name, "overrides": jsonable(r.overrides), "fields": r.fields, "parts": r.parts,
                      "config_spec": r.config_spec, "command": shlex.join(r.command)} for r in plan.runs],
            "dropped": plan.dropped, "merged": plan.merged}


def sweep_run_json(plan: Plan, run: PlannedRun) -> dict:
    """What a run folder records about its place in the sweep (DIR/<run>/sweep_run.json)."""
    return {"schema": SCHEMA_VERSION, "sweep": plan.sweep.name, "sweep_spec": plan.sweep_spec, "run": run.name,
            "overrides": jsonable(run.overrides), "fixed": jsonable(plan.fixed), "fields": run.fields,
            "parts": run.parts, "config_spec": run.config_spec, "command": shlex.join(run.command)}
