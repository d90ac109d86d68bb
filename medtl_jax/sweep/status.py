"""Where a planned run stands, from its folder alone.

  done     results.json present and its config equals the planned one
  changed  results.json (or, for an unfinished run, config.json) records a different config
  failed   the last attempt failed (FAILED holds the error tail) and no results.json
  partial  started (config.json or checkpoints present): rerunning resumes from the latest checkpoint
  todo     nothing yet
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

DONE, CHANGED, FAILED, PARTIAL, TODO = "done", "changed", "failed", "partial", "todo"


@dataclasses.dataclass(frozen=True)
class RunStatus:
    """A run's status and, for 'changed', the fields that differ ('field: recorded -> planned')."""

    status: str
    differences: tuple[str, ...] = ()


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{'a.b': leaf} of a nested dict."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def config_differences(recorded: dict, planned: dict) -> list[str]:
    """'field: recorded -> planned' for every field whose value differs (missing counts as a difference)."""
    a, b = flatten(recorded), flatten(planned)
    missing = "<absent>"
    return [f"{k}: {a.get(k, missing)!r} -> {b.get(k, missing)!r}" for k in sorted(set(a) | set(b))
            if a.get(k, missing) != b.get(k, missing)]


def _read_json(path: pathlib.Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable ({e}); move the run folder away to redo it") from None


def run_status(run_dir: str | pathlib.Path, planned_config: dict) -> RunStatus:
    """The status of the run in `run_dir` against the config the sweep plans for it."""
    run_dir = pathlib.Path(run_dir)
    results, config = run_dir / "results.json", run_dir / "config.json"
    if results.is_file():
        recorded = _read_json(results).get("config")
        if recorded is None and config.is_file():
            recorded = _read_json(config)
        diff = config_differences(recorded or {}, planned_config)
        return RunStatus(CHANGED, tuple(diff)) if diff else RunStatus(DONE)
    if config.is_file():
        diff = config_differences(_read_json(config), planned_config)
        if diff:
            return RunStatus(CHANGED, tuple(diff))
    if (run_dir / "FAILED").is_file():
        return RunStatus(FAILED)
    if config.is_file() or (run_dir / "checkpoints").is_dir():
        return RunStatus(PARTIAL)
    return RunStatus(TODO)
