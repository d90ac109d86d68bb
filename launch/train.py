"""Train and evaluate one run from a config file.

    python -m launch.train --config configs/default.py --workdir /tmp/medtl_default
    python -m launch.train --config configs/medmnist.py:dataset=retinamnist,model=resnet18 \
        --workdir runs/retina --config.optimizer.lr=0.01

Any config field can be overridden with --config.<group>.<field>=value; a misspelt field stops at once,
naming the field and the closest valid ones. Rerunning the same command on the same workdir resumes.
"""

from __future__ import annotations

import logging
import re
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, optionally 'path.py:args'.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder: checkpoints, logs, results.json, report.md.")
flags.mark_flags_as_required(["config", "workdir"])


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing, with config-field typos turned into one readable line instead of a traceback."""
    try:
        return flags.FLAGS(argv)
    except (AttributeError, KeyError):
        field = _bad_override(argv)
        if field is None:
            raise
        sys.exit(f"error: {_unknown_field(argv, field)}")


def _bad_override(argv: list[str]) -> str | None:
    """The first --config.x.y override whose path does not exist in the config file's ConfigDict."""
    from medtl_jax.config_checks import flat_keys
    config = _load_config_file(argv)
    if config is None:
        return None
    valid = set(flat_keys(config))
    for arg in argv[1:]:
        m = re.match(r"--config\.([\w.]+)", arg)
        if m and m.group(1) not in valid:
            return m.group(1)
    return None


def _load_config_file(argv: list[str]):
    for i, arg in enumerate(argv):
        spec = arg.split("=", 1)[1] if arg.startswith("--config=") else (
            argv[i + 1] if arg == "--config" and i + 1 < len(argv) else None)
        if spec:
            return _get_config(spec)
    return None


def _get_config(spec: str):
    """Runs `get_config(arg)` of 'path.py[:arg]', the way the --config flag does."""
    import importlib.util
    path, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("_medtl_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def _unknown_field(argv: list[str], field: str) -> str:
    from medtl_jax.config_checks import unknown_field_message
    return unknown_field_message(_load_config_file(argv), field)


def main(argv: list[str]) -> None:
    del argv
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax and TFDS log every file operation at INFO
    from medtl_jax.train import train_and_evaluate  # after flag parsing: JAX starts here
    results = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    test = results["test"]
    lo, hi = test.get("auc_ci95", [float("nan")] * 2)
    print(f"test AUC {test['auc']:.4f} [95% CI {lo:.4f}, {hi:.4f}]  ACC {test['accuracy']:.4f}  "
          f"balanced ACC {test['balanced_accuracy']:.4f}  (n={test['num_examples']}; "
          f"report: {_WORKDIR.value}/report.md)")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
