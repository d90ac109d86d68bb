"""From a config spec and overrides to the config a run will have, and back to command-line flags.

The planned config must equal what `python -m launch.train --config SPEC --config.a.b=v ...` builds, since
finished runs are recognised by comparing the two: `resolve_config` applies overrides with the types of
the config file's fields, and `cli_value` writes each value so that ml_collections' flag parser reads it
back unchanged (floats by repr, tuples as Python literals).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import pathlib
from collections.abc import Mapping
from typing import Any

import ml_collections

from medtl_jax.sweep.spec import ARG_PREFIX
from medtl_jax.config.validate import flat_keys, unknown_field_message

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def config_path(path: str) -> pathlib.Path:
    """The config file `path`, relative to the working directory or else to the repository root."""
    p = pathlib.Path(path)
    if p.is_file():
        return p
    if not p.is_absolute() and (REPO_ROOT / p).is_file():
        return REPO_ROOT / p
    raise FileNotFoundError(f"config file {path!r} not found (looked in {pathlib.Path.cwd()} and {REPO_ROOT})")


def load_config(spec: str) -> ml_collections.ConfigDict:
    """The config `get_config(arg)` of 'path.py[:arg]' returns (a fresh one per call)."""
    path, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("_medtl_sweep_config", config_path(path))
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def merge_spec_args(spec: str, args: Mapping[str, Any]) -> str:
    """'path.py:a=1,b=2' with the config-file arguments `args` set (replacing or appended)."""
    if not args:
        return spec
    path, _, arg = spec.partition(":")
    items: dict[str, str] = {}
    for item in filter(None, arg.split(",")):
        if "=" not in item:
            raise ValueError(f"config spec {spec!r}: argument {item!r} is not key=value, so the sweep cannot set "
                             f"{sorted(args)} on it")
        k, v = item.split("=", 1)
        items[k] = v
    items.update({k: str(v) for k, v in args.items()})
    return f"{path}:{','.join(f'{k}={v}' for k, v in items.items())}"


def spec_args(spec: str) -> dict[str, str]:
    """The k=v arguments of a config spec (non k=v arguments are left out)."""
    arg = spec.partition(":")[2]
    return dict(item.split("=", 1) for item in arg.split(",") if "=" in item)


def _coerce(current: Any, value: Any, field: str) -> Any:
    if value is None:
        raise ValueError(f"sweep field {field!r}: None cannot be passed on a command line; leave the field out")
    if isinstance(current, tuple):
        return tuple(value) if isinstance(value, (list, tuple)) else (value,)
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def set_field(config: ml_collections.ConfigDict, field: str, value: Any) -> None:
    """config.<field> = value, typed like the field; ValueError naming the field when it does not exist
    or the type does not fit."""
    if field not in flat_keys(config):
        raise ValueError(f"sweep field: {unknown_field_message(config, field)}")
    *groups, name = field.split(".")
    node = config
    for g in groups:
        node = node[g]
    try:
        node[name] = _coerce(node[name], value, field)
    except TypeError as e:
        raise ValueError(f"sweep field 'config.{field}' = {value!r}: {e}") from None


def resolve_config(spec: str, overrides: Mapping[str, Any]) -> tuple[str, ml_collections.ConfigDict]:
    """(config spec with the ':key' arguments merged, config with the field overrides applied)."""
    args = {k[len(ARG_PREFIX):]: v for k, v in overrides.items() if k.startswith(ARG_PREFIX)}
    spec = merge_spec_args(spec, args)
    config = load_config(spec)
    for field, value in overrides.items():
        if not field.startswith(ARG_PREFIX):
            set_field(config, field, value)
    return spec, config


def config_json(config: ml_collections.ConfigDict) -> dict:
    """The config as config.json / results.json hold it."""
    return json.loads(config.to_json_best_effort())


def cli_value(value: Any) -> str:
    """`value` as text that `--config.a.b=<text>` parses back to the same value."""
    if isinstance(value, (tuple, list)):
        return repr(tuple(value))
    if isinstance(value, float):
        return repr(value)
    return str(value)


def parse_cli_override(text: str, config: ml_collections.ConfigDict) -> tuple[str, Any]:
    """'a.b=value' (e.g. from `launch.sweep --set`) -> (field, value typed like the config field)."""
    if "=" not in text:
        raise ValueError(f"--set {text!r}: expected field=value, e.g. data.manual_dir=/data/medmnist")
    field, raw = text.split("=", 1)
    field = field.removeprefix("config.")
    if field not in flat_keys(config):
        raise ValueError(f"--set: {unknown_field_message(config, field)}")
    *groups, name = field.split(".")
    node = config
    for g in groups:
        node = node[g]
    current = node[name]
    if isinstance(current, bool):
        if raw.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"--set {field}={raw!r}: expected true or false")
        return field, raw.lower() in ("true", "1")
    if isinstance(current, (int, float, tuple)):
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            raise ValueError(f"--set {field}={raw!r}: not a {type(current).__name__}") from None
        return field, _coerce(current, value, field)
    return field, raw
