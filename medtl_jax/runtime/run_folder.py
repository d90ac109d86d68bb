"""The run folder: every file of one run, named and read or written here and nowhere else.

A run folder holds `config.json` (the config of the run), `config_changes.json` (fields changed on purpose
when resuming, with the step), `checkpoints/{latest,best}/<step>/` (orbax), `metrics.jsonl` and `tb/`
(training logs), `results.json`, `report.md`, `predictions_{val,test}.npz` (per-example scores of a
classifier, or the probability maps of a segmenter), and, when launched by a sweep, `sweep_run.json`,
`train.log` and `FAILED`. Resuming with another config would leave a folder whose config no longer matches
its checkpoints, so `RunDir.check_resume` refuses any difference not allowed by name.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pathlib
from typing import Any, Sequence

import numpy as np

from medtl_jax.runtime.atomic_io import write_bytes_atomic, write_json_atomic, write_text_atomic

CONFIG_JSON = "config.json"
CONFIG_CHANGES_JSON = "config_changes.json"
RESULTS_JSON = "results.json"
REPORT_MD = "report.md"
METRICS_JSONL = "metrics.jsonl"
TENSORBOARD = "tb"
CHECKPOINTS = "checkpoints"
SWEEP_RUN_JSON = "sweep_run.json"
TRAIN_LOG = "train.log"
FAILED = "FAILED"
# Files whose presence makes a folder a run folder (a sweep's report looks for them).
RUN_MARKERS = (RESULTS_JSON, CONFIG_JSON, SWEEP_RUN_JSON)
CHECKPOINT_SERIES = ("latest", "best")
PREDICTION_SPLITS = ("val", "test")
# Keys of a classification predictions file; other arrays in it are per-example attributes (e.g. 'site').
PREDICTION_KEYS = ("index", "labels", "scores")


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
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}; move the run folder away to redo it") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: unreadable ({e}); move the run folder away to redo it") from None


@dataclasses.dataclass(frozen=True)
class ClassPredictions:
    """One split's per-example scores with their labels and dataset indices, and per-example attributes
    (e.g. {'site': [...]}) aligned with `index`."""

    index: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    attributes: dict = dataclasses.field(default_factory=dict)

    @property
    def site(self) -> np.ndarray | None:
        """The acquisition site of each example, where the dataset records one."""
        return self.attributes.get("site")


def _file(name: str) -> property:
    """A RunDir attribute: the path of the run folder's file (or subfolder) `name`."""
    return property(lambda self: self.path / name, doc=f"<run folder>/{name}")


@dataclasses.dataclass(frozen=True)
class RunDir:
    """One run folder: the path of each of its files, and how each is read and written."""

    path: pathlib.Path

    def __post_init__(self):
        object.__setattr__(self, "path", pathlib.Path(self.path))

    # ------------------------------------------------------------------------------------------------
    # File names.
    # ------------------------------------------------------------------------------------------------
    config_json = _file(CONFIG_JSON)
    config_changes_json = _file(CONFIG_CHANGES_JSON)
    results_json = _file(RESULTS_JSON)
    report_md = _file(REPORT_MD)
    metrics_jsonl = _file(METRICS_JSONL)
    tensorboard_dir = _file(TENSORBOARD)
    checkpoints_dir = _file(CHECKPOINTS)
    sweep_run_json = _file(SWEEP_RUN_JSON)
    train_log = _file(TRAIN_LOG)
    failed = _file(FAILED)

    def checkpoint_dir(self, which: str) -> pathlib.Path:
        """checkpoints/<which> for a series of CHECKPOINT_SERIES."""
        if which not in CHECKPOINT_SERIES:
            raise ValueError(f"checkpoint={which!r} is not one of {CHECKPOINT_SERIES}")
        return self.checkpoints_dir / which

    def predictions_npz(self, split: str) -> pathlib.Path:
        """predictions_<split>.npz for a split of PREDICTION_SPLITS."""
        if split not in PREDICTION_SPLITS:
            raise ValueError(f"predictions split {split!r} is not one of {PREDICTION_SPLITS}")
        return self.path / f"predictions_{split}.npz"

    # ------------------------------------------------------------------------------------------------
    # State of the folder.
    # ------------------------------------------------------------------------------------------------
    def checkpoint_steps(self, which: str = "latest") -> list[int]:
        """Steps of the finished checkpoints of a series, read from the folder names (no orbax needed)."""
        root = self.checkpoint_dir(which)
        if not root.is_dir():
            return []
        return sorted(int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit())

    def is_run_folder(self) -> bool:
        """Whether the folder holds one of RUN_MARKERS (a run started, finished, or planned by a sweep)."""
        return any((self.path / name).is_file() for name in RUN_MARKERS)

    def holds_a_run(self) -> bool:
        """Whether the folder holds anything trained: a checkpoint or results."""
        return self.results_json.is_file() or any(self.checkpoint_steps(w) for w in CHECKPOINT_SERIES)

    def check_writable(self) -> None:
        """ValueError unless the folder exists, or can be created: a file in the way or an unwritable
        parent is found before any work starts."""
        workdir = self.path
        if workdir.exists() and not workdir.is_dir():
            raise ValueError(f"--workdir {workdir} is a file, not a folder")
        existing = workdir
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise ValueError(f"--workdir {workdir}: {existing} is a file, so the folder cannot be created")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ValueError(f"--workdir {workdir}: {existing} is not writable")

    # ------------------------------------------------------------------------------------------------
    # Config, its changes on resume, results and the run's report.
    # ------------------------------------------------------------------------------------------------
    def read_config(self) -> dict:
        """config.json as a dict; FileNotFoundError naming the folder when it is not a run folder."""
        if not self.config_json.is_file():
            raise FileNotFoundError(f"{self.config_json} not found: is {self.path} a medtl-jax run folder?")
        return read_json(self.config_json)

    def check_resume(self, current: dict, allowed: Sequence[str] = ()) -> dict[str, tuple]:
        """The fields in which `current` differs from the run already here ({} for a new run).

        Raises ConfigChangedError, touching nothing, when a changed field is not in `allowed` (dotted names,
        e.g. 'train.epochs') and the folder holds checkpoints or results; a folder with only a config.json
        (nothing trained yet) takes the new config."""
        if not self.config_json.is_file():
            return {}
        changes = changed_fields(read_json(self.config_json), current)
        unknown = sorted(set(allowed) - set(flatten(current)))
        if unknown:
            raise ValueError(f"--allow_config_change names no config field: {', '.join(unknown)}")
        refused = [k for k in changes if k not in allowed]
        if refused and self.holds_a_run():
            shown = "; ".join(f"{k}: {changes[k][0]!r} -> {changes[k][1]!r}" for k in refused[:8])
            more = f"; ... {len(refused) - 8} more" if len(refused) > 8 else ""
            raise ConfigChangedError(
                f"{self.path} holds a run with another config ({len(refused)} field(s) differ: {shown}{more}); "
                f"rerun with the original config, use a new --workdir, or continue this run on purpose with "
                f"--allow_config_change={','.join(refused)} (recorded in {self.config_changes_json.name} and "
                "the report)")
        return changes

    def record_config(self, current: dict, changes: dict[str, tuple], step: int) -> None:
        """Writes config.json; changes allowed on resume are appended to config_changes.json with the step."""
        if changes and self.holds_a_run():
            history = self.config_changes()
            history.append({"step": int(step), "changes": {k: list(v) for k, v in changes.items()}})
            write_json_atomic(self.config_changes_json, history)
        write_json_atomic(self.config_json, current)

    def config_changes(self) -> list[dict]:
        """The config changes allowed on resume, oldest first ([] when the run kept its config)."""
        path = self.config_changes_json
        return list(read_json(path)) if path.is_file() else []

    def read_results(self) -> dict | None:
        """results.json (None until the run finished); ValueError naming the file if it is no JSON object."""
        if not self.results_json.is_file():
            return None
        results = read_json(self.results_json)
        if not isinstance(results, dict):
            raise ValueError(f"{self.results_json} holds {type(results).__name__}, not a JSON object")
        return results

    def write_results(self, results: dict, report_text: str) -> None:
        """results.json and report.md, each written whole or not at all."""
        write_json_atomic(self.results_json, results)
        write_text_atomic(self.report_md, report_text)

    def read_sweep_record(self) -> dict | None:
        """sweep_run.json (what a sweep planned for this run), or None when no sweep launched it."""
        if not self.sweep_run_json.is_file():
            return None
        meta = read_json(self.sweep_run_json)
        if not isinstance(meta, dict):
            raise ValueError(f"{self.sweep_run_json} holds {type(meta).__name__}, not a JSON object")
        return meta

    def write_sweep_record(self, record: dict) -> None:
        write_json_atomic(self.sweep_run_json, record)

    def write_failed(self, text: str) -> None:
        """FAILED: why the last attempt failed (the sweep runner writes the exit code and the log's tail)."""
        write_text_atomic(self.failed, text)

    def clear_failed(self) -> None:
        self.failed.unlink(missing_ok=True)

    def read_metrics(self) -> list[dict]:
        """Records of metrics.jsonl (empty if absent); a broken line is an error naming the file."""
        if not self.metrics_jsonl.is_file():
            return []
        out = []
        for i, line in enumerate(self.metrics_jsonl.read_text().splitlines(), 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{self.metrics_jsonl} line {i} is not JSON: {e}") from e
        return out

    # ------------------------------------------------------------------------------------------------
    # Predictions: two formats, one per task family.
    # ------------------------------------------------------------------------------------------------
    def write_class_predictions(self, split: str, preds: ClassPredictions) -> None:
        """predictions_<split>.npz of a classifier: index, labels, scores and one array per attribute."""
        clash = set(preds.attributes) & set(PREDICTION_KEYS)
        if clash:
            raise ValueError(f"prediction attributes {sorted(clash)} clash with the file's own keys")
        buf = io.BytesIO()
        np.savez(buf, index=preds.index, labels=preds.labels, scores=preds.scores, **preds.attributes)
        write_bytes_atomic(self.predictions_npz(split), buf.getvalue())

    def read_class_predictions(self, split: str) -> ClassPredictions | None:
        """A classifier's predictions of `split`; None if absent or of another kind (probability maps)."""
        path = self.predictions_npz(split)
        if not path.is_file():
            return None
        with np.load(path) as z:
            if not set(PREDICTION_KEYS) <= set(z.files):
                return None
            return ClassPredictions(index=z["index"], labels=z["labels"], scores=z["scores"],
                                    attributes={k: z[k] for k in z.files if k not in PREDICTION_KEYS})

    def write_probability_maps(self, split: str, ids: Sequence[str], probs: Sequence[np.ndarray]) -> None:
        """predictions_<split>.npz of a segmenter: image ids and each image's [H, W, C] probabilities as
        uint8 (p * 255, rounded), compressed."""
        buf = io.BytesIO()
        np.savez_compressed(buf, ids=np.array(list(ids)),
                            **{f"probs_{i}": np.round(np.asarray(p) * 255).astype(np.uint8)
                               for i, p in enumerate(probs)})
        write_bytes_atomic(self.predictions_npz(split), buf.getvalue())

    def read_probability_maps(self, split: str, n: int | None = None) -> tuple[list[str], list[np.ndarray]]:
        """(ids, [H, W, C] float32 probabilities) of the first `n` images (all when None) of a segmenter's
        predictions; ValueError naming the file when it holds no probability maps."""
        path = self.predictions_npz(split)
        with np.load(path) as z:
            if "ids" not in z.files:
                raise ValueError(f"{path} holds no segmentation probability maps (no 'ids')")
            ids = [str(i) for i in z["ids"][:n]]
            return ids, [z[f"probs_{i}"].astype(np.float32) / 255.0 for i in range(len(ids))]
