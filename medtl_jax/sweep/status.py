"""Where a planned run stands, from its folder alone.

  done     results.json present and its config equals the planned one
  changed  results.json (or, for an unfinished run, config.json) records a different config
  failed   the last attempt failed (FAILED holds the error tail) and no results.json
  partial  started (config.json or checkpoints present): rerunning resumes from the latest checkpoint
  todo     nothing yet
"""

from __future__ import annotations

import dataclasses
import pathlib

from medtl_jax.runtime.run_folder import RunDir, config_differences

DONE, CHANGED, FAILED, PARTIAL, TODO = "done", "changed", "failed", "partial", "todo"


@dataclasses.dataclass(frozen=True)
class RunStatus:
    """A run's status and, for 'changed', the fields that differ ('field: recorded -> planned')."""

    status: str
    differences: tuple[str, ...] = ()


def run_status(run_dir: str | pathlib.Path, planned_config: dict) -> RunStatus:
    """The status of the run in `run_dir` against the config the sweep plans for it."""
    run_dir = RunDir(run_dir)
    started = run_dir.config_json.is_file()
    results = run_dir.read_results()
    if results is not None:
        recorded = results.get("config")
        if recorded is None and started:
            recorded = run_dir.read_config()
        diff = config_differences(recorded or {}, planned_config)
        return RunStatus(CHANGED, tuple(diff)) if diff else RunStatus(DONE)
    if started:
        diff = config_differences(run_dir.read_config(), planned_config)
        if diff:
            return RunStatus(CHANGED, tuple(diff))
    if run_dir.failed.is_file():
        return RunStatus(FAILED)
    if started or run_dir.checkpoints_dir.is_dir():
        return RunStatus(PARTIAL)
    return RunStatus(TODO)
