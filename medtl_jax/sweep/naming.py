"""Run names: readable, stable, filesystem-safe and unique, e.g. 'model=resnet50,init=imagenet,frac=0.05,seed=1'.

A name lists the run's own overrides (not the sweep's fixed ones) in the order its part gives them, each
as alias=value. Values: strings and ints as written, floats by repr (0.05, 1.0), tuples joined with '+'
('A+B', empty: 'none'). Characters outside [A-Za-z0-9._+=,-] become '_'. Names that still collide (two
different override sets sanitised alike) all get '~' and 6 hex digits of a hash of their overrides, and
names over 150 characters are cut and hashed the same way; no name depends on the order of the runs.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

DEFAULT_ALIASES: dict[str, str] = {
    "model.name": "model", "model.init": "init", "data.train_fraction": "frac", "data.fraction_seed": "fseed",
    "data.train_sites": "sites", "loss.imbalance": "imb", "data.input_size": "size", "data.subset": "data",
    "train.epochs": "epochs", "train.batch_size": "bs", "optimizer.lr": "lr", "optimizer.name": "opt",
    "transfer.mode": "mode", "model.stem": "stem", "seed": "seed",
}
MAX_NAME = 150
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=,-]")


def alias(field: str, aliases: Mapping[str, str]) -> str:
    """Short name of `field`: the sweep's alias, else the default one, else ':key' -> 'key', else the path."""
    if field in aliases:
        return aliases[field]
    if field in DEFAULT_ALIASES:
        return DEFAULT_ALIASES[field]
    return field[1:] if field.startswith(":") else field


def format_value(value: Any) -> str:
    """A value as it appears in a run name (before sanitising)."""
    if isinstance(value, (tuple, list)):
        return "+".join(format_value(v) for v in value) if len(value) else "none"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def sanitize(text: str) -> str:
    """`text` with characters unsafe in file names replaced by '_' (and no leading '.')."""
    text = _UNSAFE.sub("_", text)
    return "_" + text[1:] if text.startswith(".") else text


def canonical(overrides: Mapping[str, Any]) -> str:
    """Order-independent JSON text of an override dict (tuples as lists): equal overrides, equal text."""
    return json.dumps({k: overrides[k] for k in sorted(overrides)}, sort_keys=True, default=str)


def _short_hash(overrides: Mapping[str, Any]) -> str:
    return hashlib.sha1(canonical(overrides).encode()).hexdigest()[:6]


def run_name(overrides: Mapping[str, Any], aliases: Mapping[str, str]) -> str:
    """The readable name of one run (see the module docstring); 'base' for a run with no overrides."""
    if not overrides:
        return "base"
    name = sanitize(",".join(f"{alias(k, aliases)}={format_value(v)}" for k, v in overrides.items()))
    if len(name) > MAX_NAME:
        name = f"{name[:MAX_NAME - 7]}~{_short_hash(overrides)}"
    return name


def unique_names(runs: list[Mapping[str, Any]], aliases: Mapping[str, str]) -> list[str]:
    """Names of `runs` (override dicts, all different), made unique by hashing colliding ones."""
    names = [run_name(r, aliases) for r in runs]
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    out = [f"{n}~{_short_hash(r)}" if counts[n] > 1 else n for n, r in zip(names, runs)]
    if len(set(out)) != len(out):  # identical overrides: the planner merges those before naming
        dup = sorted({n for n in out if out.count(n) > 1})
        raise ValueError(f"sweep runs with identical overrides: {dup}")
    return out


def check_aliases(fields: list[str], aliases: Mapping[str, str]) -> None:
    """ValueError when two different swept fields share a short name (run names would be ambiguous)."""
    seen: dict[str, str] = {}
    for f in fields:
        a = alias(f, aliases)
        if a in seen and seen[a] != f:
            raise ValueError(f"sweep fields {seen[a]!r} and {f!r} both shorten to {a!r} in run names; "
                             f"give one an alias in Sweep.aliases")
        seen[a] = f
