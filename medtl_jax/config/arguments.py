"""Arguments of a config or sweep file (the 'k=v,k=v' after its path, `configs/medmnist.py:size=64`) and
`--config.data.<field>=value` overrides of a finished run's config (`launch.evaluate`).

Each file declares its arguments as a dict of defaults; values are typed like the defaults, so a typo or a
wrong type fails before anything runs, naming the argument and the valid keys.
"""

from __future__ import annotations

import re

from medtl_jax.config.validate import unknown_field_message


def parse_args(arg: str | None, defaults: dict) -> dict:
    """'k=v,k=v' config-file arguments -> dict, typed like `defaults`; unknown keys name the valid ones."""
    out = dict(defaults)
    for item in filter(None, (arg or "").split(",")):
        if "=" not in item:
            raise ValueError(f"config argument {item!r} is not key=value; valid keys: {sorted(defaults)}")
        key, value = item.split("=", 1)
        if key not in defaults:
            raise ValueError(f"unknown config argument {key!r}; valid keys: {sorted(defaults)}")
        out[key] = typed_value(key, value, defaults[key])
    return out


def typed_value(key: str, value: str, default):
    """`value` (command-line text) converted to the type of `default`: text for str and unset (None)
    fields, comma-separated items for tuples and lists; a ValueError names the argument and the type."""
    if default is None or isinstance(default, str):
        return value
    if isinstance(default, (tuple, list)):
        return type(default)(v for v in value.split(",") if v)
    if isinstance(default, bool):
        if value.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"config argument {key}={value!r} must be true or false")
        return value.lower() in ("true", "1")
    try:
        return type(default)(value)
    except ValueError:
        raise ValueError(f"config argument {key}={value!r} must be {type(default).__name__} "
                         f"(e.g. {key}={default})") from None


OVERRIDE = re.compile(r"--config\.([\w.]+)=(.*)", re.DOTALL)


def split_overrides(argv: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """(the other arguments, [(field, text)] of every --config.<field>=value); ValueError for a
    --config.<field> without '=value'."""
    rest, overrides = [], []
    for arg in argv:
        m = OVERRIDE.fullmatch(arg)
        if m:
            overrides.append((m.group(1), m.group(2)))
        elif arg.startswith("--config."):
            raise ValueError(f"{arg}: give config overrides as --config.data.<field>=value")
        else:
            rest.append(arg)
    return rest, overrides


def data_overrides(config, overrides: list[tuple[str, str]]) -> dict:
    """{data field: typed value}; only config.data fields may change, each typed like the run's value."""
    out = {}
    for field, text in overrides:
        group, _, name = field.partition(".")
        if group != "data" or "." in name or not name:
            raise ValueError(f"--config.{field}: only config.data.<field> can change here; the model, its "
                             "preprocessing and evaluation come from the run's config.json")
        if name not in config.data:
            raise ValueError(unknown_field_message(config, field))
        out[name] = typed_value(f"config.{field}", text, config.data[name])
    return out

