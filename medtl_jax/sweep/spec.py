"""What a sweep file declares: `get_sweep(arg) -> Sweep`, a base config plus parts that are concatenated.

    Sweep(name="study", config="configs/medmnist.py:dataset=pneumoniamnist",
          fixed={"train.epochs": 10},
          parts=[Grid("benchmark", {"model.name": ["resnet50", "vgg16"], "seed": [0, 1, 2]}),
                 Runs("extra", [{"model.name": "alexnet", "optimizer.lr": 0.01}])])

Fields are dotted config paths ('model.name', 'seed'); a field written ':key' is an argument of the config
file instead (':model' turns 'configs/medmnist.py:dataset=x' into '...:dataset=x,model=<value>'), so a
sweep can reuse a config file's recipe logic rather than copy it. `aliases` shorten field names in run
names (defaults in `medtl_jax.sweep.naming.DEFAULT_ALIASES`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

from medtl_jax.config.arguments import parse_args

ARG_PREFIX = ":"


@dataclasses.dataclass(frozen=True)
class Grid:
    """The product of `axes` (field -> values); the last field varies fastest."""

    name: str
    axes: Mapping[str, Sequence[Any]]

    def expand(self) -> list[dict[str, Any]]:
        """One override dict per grid point."""
        for field, values in self.axes.items():
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not len(values):
                raise ValueError(f"sweep part {self.name!r}: field {field!r} needs a non-empty list of values, "
                                 f"got {values!r}")
        keys = list(self.axes)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(self.axes[k] for k in keys))]


@dataclasses.dataclass(frozen=True)
class Runs:
    """An explicit list of override dicts."""

    name: str
    runs: Sequence[Mapping[str, Any]]

    def expand(self) -> list[dict[str, Any]]:
        """The override dicts, copied."""
        return [dict(r) for r in self.runs]


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A base config (file spec + `fixed` overrides for every run) and the parts whose runs it holds."""

    name: str
    config: str
    parts: Sequence[Grid | Runs]
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    aliases: Mapping[str, str] = dataclasses.field(default_factory=dict)
    description: str = ""


def parse_sweep_args(arg: str | None, defaults: dict, flags: Sequence[str] = ()) -> dict:
    """'k=v,flag' sweep-file arguments -> dict typed like `defaults`, plus flag -> bool; unknown keys name
    the valid ones."""
    items = [s for s in (arg or "").split(",") if s]
    out = {f: False for f in flags}
    for f in flags:
        if f in items:
            out[f] = True
    try:
        out.update(parse_args(",".join(s for s in items if s not in flags), defaults))
    except ValueError as e:
        raise ValueError(f"{e}; flags: {list(flags)}") from None
    return out


def load_sweep(spec: str) -> tuple[Sweep, str]:
    """Runs `get_sweep(arg)` of 'path.py[:arg]'; returns the Sweep and the spec as given."""
    path, _, arg = spec.partition(":")
    file = pathlib.Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"--sweep {spec!r}: no sweep file {path}")
    module_spec = importlib.util.spec_from_file_location(f"_medtl_sweep_{file.stem}", file)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_sweep"):
        raise ValueError(f"sweep file {path} has no get_sweep(arg) function")
    sweep = module.get_sweep(arg or None)
    if not isinstance(sweep, Sweep):
        raise TypeError(f"{path}: get_sweep returned {type(sweep).__name__}, expected medtl_jax.sweep.Sweep")
    return sweep, spec
