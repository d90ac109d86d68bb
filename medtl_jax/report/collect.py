"""Finding and reading the runs of a sweep folder.

A sweep folder holds one folder per run (found at any depth; a run folder is not searched further). A run
folder has config.json and, once finished, results.json, metrics.jsonl and predictions_{val,test}.npz; a
sweep launcher (launch.sweep) adds sweep_run.json = {"sweep", "run", "overrides", "fields", "parts", ...}.

What distinguishes runs (their *settings*) is the set of swept fields that vary across the finished runs:
from sweep_run.json's `fields` (else `overrides`) where present, else the fields whose values differ
between the runs' flattened configs. Runs with the same settings apart from `seed` form a group; runs
listing sweep `parts` (benchmark, imbalance, ...) can be split into one sweep per part (`split_parts`).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

from medtl_jax.tasks.base import TaskFamily
from medtl_jax.tasks.families import CLASSIFICATION, family_of
from medtl_jax.runtime.run_folder import CHECKPOINTS, RUN_MARKERS, TENSORBOARD, ClassPredictions, RunDir, flatten

SKIP_DIRS = {CHECKPOINTS, TENSORBOARD, "report_files", "report"}


@dataclasses.dataclass
class Run:
    """One run folder: its config, results (None until finished) and the settings that tell it apart."""

    path: pathlib.Path
    name: str
    config: dict
    results: dict | None
    overrides: dict
    parts: list[str] = dataclasses.field(default_factory=list)  # sweep parts (sweep_run.json), if any
    settings: dict = dataclasses.field(default_factory=dict)
    _cache: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @property
    def finished(self) -> bool:
        return self.results is not None

    @property
    def seed(self) -> int:
        return int(self.settings.get("seed", self.config.get("seed", 0)))

    @property
    def task(self) -> str:
        return (self.results or {}).get("data", {}).get("task", "unknown")

    @property
    def family(self) -> TaskFamily:
        """The run's task family (classification where results.json does not say)."""
        return family_of(self.task, default=CLASSIFICATION)

    @property
    def group_key(self) -> tuple:
        """Settings without the seed, hashable (values as JSON text)."""
        return tuple((k, json.dumps(v, sort_keys=True)) for k, v in sorted(self.settings.items()) if k != "seed")

    def predictions(self, split: str = "test") -> ClassPredictions | None:
        """The split's per-example predictions, or None (absent, or segmentation probability maps)."""
        if split not in self._cache:
            self._cache[split] = RunDir(self.path).read_class_predictions(split)
        return self._cache[split]

    def metrics_log(self) -> list[dict]:
        """Records of metrics.jsonl (empty if absent); a broken line is an error naming the file."""
        return RunDir(self.path).read_metrics()


@dataclasses.dataclass
class Group:
    """Runs sharing all settings but the seed, ordered by seed."""

    key: tuple
    settings: dict  # without seed
    runs: list[Run]

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]

    @property
    def task(self) -> str:
        return self.runs[0].task

    @property
    def family(self) -> TaskFamily:
        return self.runs[0].family

    def label(self, keys: list[str]) -> str:
        """Short name from the settings in `keys` ('all runs' when there are none)."""
        parts = [f"{short_key(k)}={format_value(self.settings.get(k), k)}" for k in keys if k in self.settings]
        return ", ".join(parts) if parts else "all runs"


@dataclasses.dataclass
class Sweep:
    """A sweep folder read: finished runs, unfinished ones, and the settings keys that vary."""

    root: pathlib.Path
    name: str
    runs: list[Run]
    unfinished: list[Run]
    varying: list[str]  # setting keys (incl. seed) whose values differ across finished runs

    @property
    def group_keys(self) -> list[str]:
        return [k for k in self.varying if k != "seed"]

    def groups(self) -> list[Group]:
        """Finished runs grouped by settings without the seed, in a stable sorted order."""
        by_key: dict[tuple, list[Run]] = {}
        for run in self.runs:
            by_key.setdefault(run.group_key, []).append(run)
        groups = [Group(k, {kk: v for kk, v in runs[0].settings.items() if kk != "seed"},
                        sorted(runs, key=lambda r: (r.seed, r.name))) for k, runs in by_key.items()]
        return sorted(groups, key=lambda g: [sort_value(g.settings.get(k)) for k in self.group_keys])


KEY_ORDER = ("model.name", "model.init")  # these lead group labels; other settings follow, sorted


def short_key(key: str) -> str:
    """'model.init' -> 'init', 'data.train_fraction' -> 'train_fraction'; '<group>.name' -> '<group>'."""
    parts = key.split(".")
    return parts[-2] if parts[-1] == "name" and len(parts) > 1 else parts[-1]


def ordered_keys(keys) -> list[str]:
    """Setting keys with model name and init first, then the rest alphabetically."""
    return sorted(keys, key=lambda k: (KEY_ORDER.index(k) if k in KEY_ORDER else len(KEY_ORDER), k))


def format_value(v: Any, key: str = "") -> str:
    """A setting value as text: lists joined with '+' (an empty site list is 'all', other empty lists
    'none'), floats without trailing zeros."""
    if isinstance(v, (list, tuple)):
        return "+".join(format_value(x) for x in v) or ("all" if "site" in key else "none")
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def sort_value(v: Any) -> tuple:
    """Sort key mixing numbers and text: numbers first, by value."""
    if isinstance(v, bool) or v is None:
        return (2, str(v))
    if isinstance(v, (int, float)):
        return (0, float(v), "")
    return (1, json.dumps(v, sort_keys=True))


def find_run_dirs(root: pathlib.Path) -> list[pathlib.Path]:
    """Folders under `root` holding a run marker file; a run folder's own subfolders are not searched."""
    found = []

    def walk(d: pathlib.Path):
        if RunDir(d).is_run_folder():
            found.append(d)
            return
        for child in sorted(p for p in d.iterdir() if p.is_dir() and p.name not in SKIP_DIRS
                            and not p.name.startswith(".")):
            walk(child)

    for child in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in SKIP_DIRS
                        and not p.name.startswith(".")):  # e.g. .replaced/ (launch.sweep --force), .jax_cache/
        walk(child)
    if not found and RunDir(root).is_run_folder():
        found.append(root)  # a single run folder is a sweep of one
    return found


def read_run(path: pathlib.Path, root: pathlib.Path) -> Run:
    """One run folder (config from config.json, else from results.json). From sweep_run.json: the run's
    name, its parts, and as overrides its `fields` (every field swept anywhere in the sweep) or else its
    own `overrides`."""
    run_dir = RunDir(path)
    results = run_dir.read_results()
    config = run_dir.read_config() if run_dir.config_json.is_file() else (results or {}).get("config", {})
    overrides, parts, name = {}, [], (str(path.relative_to(root)) if path != root else path.name)
    meta = run_dir.read_sweep_record()
    if meta is not None:
        overrides = dict(meta.get("fields") or meta.get("overrides") or {})
        parts = [str(p) for p in meta.get("parts") or []]
        name = str(meta.get("run") or name)
    return Run(path=path, name=name, config=config, results=results, overrides=overrides, parts=parts)


def make_sweep(root: pathlib.Path, name: str, runs: list[Run]) -> Sweep:
    """A Sweep of `runs` whose settings are the fields that vary among them (runs are copied, so a run
    shared by two parts has each part's settings; loaded predictions are shared)."""
    flat = [flatten(r.config) for r in runs]
    candidates = {k for r in runs for k in r.overrides}
    if any(not r.overrides for r in runs):  # no sweep record: every config field that differs
        candidates |= {k for f in flat for k in f}
    values = [{k: r.overrides.get(k, f.get(k)) for k in candidates} for r, f in zip(runs, flat)]

    def differing(vals):
        return ordered_keys(k for k in candidates if len({json.dumps(v.get(k), sort_keys=True) for v in vals}) > 1)

    # groups and labels use what differs among finished runs; an unfinished run shows what sets it apart
    finished = [v for r, v in zip(runs, values) if r.finished]
    varying, varying_all = differing(finished or values), differing(values)
    copies = []
    for run, v in zip(runs, values):
        settings = {k: v[k] for k in (varying if run.finished else varying_all)}
        settings.setdefault("seed", run.config.get("seed", 0))
        copies.append(dataclasses.replace(run, settings=settings))
    return Sweep(root=root, name=name, runs=[r for r in copies if r.finished],
                 unfinished=[r for r in copies if not r.finished], varying=varying)


def collect(root: str | pathlib.Path) -> Sweep:
    """Reads every run of a sweep folder and works out which settings vary (see the module docstring)."""
    root = pathlib.Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"sweep folder {root} does not exist or is not a folder")
    dirs = find_run_dirs(root)
    if not dirs:
        raise ValueError(f"sweep folder {root} holds no run folders (no subfolder with "
                         f"{', '.join(RUN_MARKERS)})")
    runs = [read_run(d, root) for d in dirs]
    name = next((meta.get("sweep") for meta in (RunDir(d).read_sweep_record() for d in dirs) if meta), None) \
        or root.name
    return make_sweep(root, str(name), runs)


def split_parts(sweep: Sweep) -> list[tuple[str | None, Sweep]]:
    """[(part name, the sweep of its runs)] by the `parts` of sweep_run.json (a run may be in several);
    [(None, sweep)] when no run names a part. Runs naming no part form the part 'other'."""
    runs = sweep.runs + sweep.unfinished
    names = list(dict.fromkeys(p for r in runs for p in r.parts))
    if not names:
        return [(None, sweep)]
    if any(not r.parts for r in runs):
        names.append("other")
    return [(n, make_sweep(sweep.root, sweep.name, [r for r in runs if n in (r.parts or ["other"])]))
            for n in names]
