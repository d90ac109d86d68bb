"""The files of a run folder, and the rules that keep a folder consistent with the config it was run with.

A run folder holds `config.json` (the config of the run), `config_changes.json` (fields changed on purpose
when resuming, with the step), `checkpoints/{latest,best}/<step>/` (orbax), `metrics.jsonl`, `results.json`,
`report.md` and `predictions_{val,test}.npz`. Resuming with another config would leave a folder whose
config no longer matches its checkpoints, so `check_resume` refuses any difference not allowed by name.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Sequence

from medtl_jax.runtime.atomic_io import write_json_atomic

CONFIG_JSON = "config.json"
CONFIG_CHANGES_JSON = "config_changes.json"
RESULTS_JSON = "results.json"
REPORT_MD = "report.md"
CHECKPOINTS = "checkpoints"
CHECKPOINT_SERIES = ("latest", "best")


class ConfigChangedError(ValueError):
    """A run folder holds a run with another config, and the difference was not allowed by name."""


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{'a.b': leaf} of a nested dict."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def changed_fields(recorded: dict, current: dict) -> dict[str, tuple[Any, Any]]:
    """{field: (recorded, current)} for every field whose value differs (a missing field counts)."""
    missing = "<absent>"
    a, b = flatten(recorded), flatten(current)
    return {k: (a.get(k, missing), b.get(k, missing)) for k in sorted(set(a) | set(b))
            if a.get(k, missing) != b.get(k, missing)}


def config_differences(recorded: dict, planned: dict) -> list[str]:
    """'field: recorded -> planned' for every field whose value differs (missing counts as a difference)."""
    return [f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed_fields(recorded, planned).items()]


def read_json(path: pathlib.Path) -> Any:
    """A JSON file of a run folder; unreadable or broken JSON is a ValueError naming the file."""
    try:
        return json.loads(pathlib.Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable ({e}); move the run folder away to redo it") from None


def checkpoint_steps(workdir: pathlib.Path, which: str = "latest") -> list[int]:
    """Steps of the finished checkpoints of a series, read from the folder names (no orbax needed)."""
    root = pathlib.Path(workdir) / CHECKPOINTS / which
    if not root.is_dir():
        return []
    return sorted(int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit())


def holds_a_run(workdir: pathlib.Path) -> bool:
    """Whether the folder holds anything trained: a checkpoint or results."""
    workdir = pathlib.Path(workdir)
    return (workdir / RESULTS_JSON).is_file() or any(checkpoint_steps(workdir, w) for w in CHECKPOINT_SERIES)


def check_workdir(workdir: pathlib.Path) -> None:
    """ValueError unless `workdir` is a folder, or can be created: a file in the way or an unwritable
    parent is found before any work starts."""
    workdir = pathlib.Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise ValueError(f"--workdir {workdir} is a file, not a folder")
    existing = workdir
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"--workdir {workdir}: {existing} is a file, so the folder cannot be created")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--workdir {workdir}: {existing} is not writable")


def check_resume(workdir: pathlib.Path, current: dict, allowed: Sequence[str] = ()) -> dict[str, tuple]:
    """The fields in which `current` differs from the run already in `workdir` ({} for a new run).

    Raises ConfigChangedError, touching nothing, when a changed field is not in `allowed` (dotted names, e.g.
    'train.epochs') and the folder holds checkpoints or results; a folder with only a config.json (nothing
    trained yet) takes the new config."""
    path = pathlib.Path(workdir) / CONFIG_JSON
    if not path.is_file():
        return {}
    changes = changed_fields(read_json(path), current)
    unknown = sorted(set(allowed) - set(flatten(current)))
    if unknown:
        raise ValueError(f"--allow_config_change names no config field: {', '.join(unknown)}")
    refused = [k for k in changes if k not in allowed]
    if refused and holds_a_run(workdir):
        shown = "; ".join(f"{k}: {changes[k][0]!r} -> {changes[k][1]!r}" for k in refused[:8])
        more = f"; ... {len(refused) - 8} more" if len(refused) > 8 else ""
        raise ConfigChangedError(
            f"{workdir} holds a run with another config ({len(refused)} field(s) differ: {shown}{more}); "
            f"rerun with the original config, use a new --workdir, or continue this run on purpose with "
            f"--allow_config_change={','.join(refused)} (recorded in {CONFIG_CHANGES_JSON} and the report)")
    return changes


def record_config(workdir: pathlib.Path, current: dict, changes: dict[str, tuple], step: int) -> None:
    """Writes config.json; changes allowed on resume are appended to config_changes.json with the step."""
    workdir = pathlib.Path(workdir)
    if changes and holds_a_run(workdir):
        history = config_changes(workdir)
        history.append({"step": int(step), "changes": {k: list(v) for k, v in changes.items()}})
        write_json_atomic(workdir / CONFIG_CHANGES_JSON, history)
    write_json_atomic(workdir / CONFIG_JSON, current)


def config_changes(workdir: pathlib.Path) -> list[dict]:
    """The config changes allowed on resume, oldest first ([] when the run kept its config)."""
    path = pathlib.Path(workdir) / CONFIG_CHANGES_JSON
    return list(read_json(path)) if path.is_file() else []
