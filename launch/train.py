"""Train and evaluate one run from a config file.

    python -m launch.train --config configs/default.py --workdir /tmp/medtl_default
    python -m launch.train --config configs/medmnist.py:dataset=retinamnist,model=resnet18 \
        --workdir runs/retina --config.optimizer.lr=0.01

Any config field can be overridden with --config.<group>.<field>=value; a misspelt field stops at once,
naming the field and the closest valid ones. Rerunning the same command on the same workdir resumes; a
workdir holding a run with another config is refused (naming the fields) unless the changed fields are
named with --allow_config_change=train.epochs,... (recorded in config_changes.json and report.md).
Ctrl-C, like SIGTERM, saves a checkpoint and exits cleanly (a second Ctrl-C stops at once).

A bad input (config value, path, argument) prints one `error:` line and exits with code 2; --debug (or
MEDTL_DEBUG=1) shows the traceback. Everything is checked before the workdir is created.

Several processes (hosts, or CPU processes on one machine) train one run together when each is started
with the same command plus its own --process_id; the workdir must be shared. For example, two CPU
processes with two devices each:

    XLA_FLAGS=--xla_force_host_platform_device_count=2 python -m launch.train ... \
        --coordinator_address=localhost:12355 --num_processes=2 --process_id=0   # and =1 in a second shell

Under SLURM (more than one task) or on a multi-host Cloud TPU the processes find each other without
these flags (see medtl_jax/runtime/distributed.py). Only process 0 writes results and prints the summary.
"""

from __future__ import annotations

import logging
import re
import sys

import pathlib

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from medtl_jax.runtime.cli_errors import DEBUG_ENV, debug_requested, one_line, user_errors

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, optionally 'path.py:args'.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder: checkpoints, logs, results.json, report.md.")
flags.mark_flags_as_required(["config", "workdir"])
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0's coordinator; with --num_processes and --process_id.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes taking part in the run.", lower_bound=1)
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0 .. num_processes-1.",
                                   lower_bound=0)
_ALLOW_CHANGE = flags.DEFINE_list(
    "allow_config_change", [], "Config fields (e.g. train.epochs) that may differ from the run already in "
    "--workdir when resuming it on purpose; the change is recorded.")
_DEBUG = flags.DEFINE_bool("debug", False, f"Show tracebacks of user errors (also: {DEBUG_ENV}=1).")
_LOCAL_DEVICE_IDS = flags.DEFINE_list("local_device_ids", None,
                                      "Devices this process uses (e.g. one GPU each: 0, 1, ...); default all.")


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing, with user errors (a missing config file, a bad config argument or value, a
    misspelt config field) turned into one readable line instead of a traceback."""
    with user_errors(debug="--debug" in argv):
        _check_config_file(argv)
        try:
            return flags.FLAGS(argv)
        except flags.Error as err:
            raise ValueError(_flag_error(err)) from err
        except (AttributeError, KeyError):
            field = _bad_override(argv)
            if field is None:
                raise
            raise ValueError(_unknown_field(argv, field)) from None


def _flag_error(err: Exception) -> str:
    """absl's message; for an error raised inside a config file's get_config, its first line (which flag)
    and the error itself (the last line of the traceback absl embeds), without the traceback."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    if any(ln.startswith("Traceback") for ln in lines):
        return f"{lines[0].rstrip(':')} {lines[-1]}"
    return one_line(err)


def _config_spec(argv: list[str]) -> str | None:
    """The value of --config ('path.py[:arg]'), if given."""
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _check_config_file(argv: list[str]) -> None:
    """FileNotFoundError naming the --config file when it does not exist (absl would defer the error)."""
    spec = _config_spec(argv)
    if spec and not pathlib.Path(spec.partition(":")[0]).is_file():
        raise FileNotFoundError(f"--config {spec}: no such file {spec.partition(':')[0]!r}")


def _bad_override(argv: list[str]) -> str | None:
    """The first --config.x.y override whose path does not exist in the config file's ConfigDict."""
    from medtl_jax.config.validate import flat_keys
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
    spec = _config_spec(argv)
    return _get_config(spec) if spec else None


def _get_config(spec: str):
    """Runs `get_config(arg)` of 'path.py[:arg]', the way the --config flag does."""
    import importlib.util
    path, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("_medtl_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def _unknown_field(argv: list[str], field: str) -> str:
    from medtl_jax.config.validate import unknown_field_message
    return unknown_field_message(_load_config_file(argv), field)


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax and TFDS log every file operation at INFO
    from medtl_jax.runtime import distributed  # imports JAX but starts no backend
    with user_errors(debug=_DEBUG.value):
        if len(argv) > 1:
            raise ValueError(f"unexpected argument(s) {' '.join(argv[1:])!r}: every option is --name=value "
                             "(see --help)")
        device_ids = [int(i) for i in _LOCAL_DEVICE_IDS.value] if _LOCAL_DEVICE_IDS.value else None
        # before anything else touches JAX
        distributed.maybe_initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, device_ids)
        print(distributed.describe(), file=sys.stderr, flush=True)  # INFO logs are muted above
        from medtl_jax.runtime.preemption import Preempted
        from medtl_jax.train.trainer import NonFiniteLossError, train_and_evaluate
        try:
            results = train_and_evaluate(_CONFIG.value, _WORKDIR.value,
                                         allow_config_change=tuple(_ALLOW_CHANGE.value))
        except Preempted as stop:  # SIGTERM or Ctrl-C: checkpoint saved, clean exit; the same command resumes
            print(stop, flush=True)
            return
        except NonFiniteLossError as err:
            if debug_requested(_DEBUG.value):
                raise
            sys.exit(f"error: {one_line(err)}")
        except KeyboardInterrupt:
            sys.exit("interrupted (Ctrl-C) outside training steps; rerun the same command to resume from the "
                     "last checkpoint, if any")
    import jax
    if jax.process_index() == 0:
        print(summary_line(results, _WORKDIR.value))


def summary_line(results: dict, workdir: str) -> str:
    """One line of headline metrics: Dice/IoU/HD95 for masks, AUC (CI), ACC otherwise; of the test split,
    or of validation (said so) for a dataset without one."""
    test = results["test"]
    split = "test"
    if not (test.get("num_examples") or test.get("num_images")):
        split, test = "no test split; validation", results["val"]
    if "dice" in test:
        return (f"{split} Dice {test['dice']:.4f}  IoU {test['iou']:.4f}  HD95 {test['hd95']:.1f} px  "
                f"(n={test['num_images']} images; report: {workdir}/report.md)")
    lo, hi = test.get("auc_ci95") or [float("nan")] * 2
    return (f"{split} AUC {test['auc']:.4f} [95% CI {lo:.4f}, {hi:.4f}]  ACC {test['accuracy']:.4f}  "
            f"balanced ACC {test['balanced_accuracy']:.4f}  (n={test['num_examples']}; report: {workdir}/report.md)")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
