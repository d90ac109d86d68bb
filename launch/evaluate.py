"""Score a finished run's best checkpoint on another dataset or site: the cross-site question as a command.

    python -m launch.evaluate --workdir runs/drive_unet --out runs/drive_unet/on_chase \
        --config.data.name=chase_db1
    python -m launch.evaluate --workdir runs/drive_unet --out eval/hospital_c \
        --config.data.name=seg_folders --config.data.manual_dir=/data/hospital_c   # root/<split>/{images,masks,fov}
    python -m launch.evaluate --workdir runs/pneu --out eval/site_b --config.data.train_sites=B

The model, its preprocessing and the evaluation settings come from the run's own config.json; only
`--config.data.<field>=value` overrides change (which dataset, where it lives, which sites). Images may
have another size than the training set's (segmentation predicts whole images by sliding windows; a
classifier resizes to its input size). --out receives results.json (validation and test metrics with the
source run and checkpoint step), predictions_{val,test}.npz and report.md. A checkpoint whose head does not
fit the new dataset's classes is refused, naming both datasets.

Bad inputs end with one `error: ...` line and exit code 2; --debug or MEDTL_DEBUG=1 shows the traceback.
"""

from __future__ import annotations

import logging

from absl import app, flags
from absl import logging as absl_logging

_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder of a trained model (config.json, checkpoints/best).")
_OUT = flags.DEFINE_string("out", None, "Folder for results.json, predictions and report.md.")
_DEBUG = flags.DEFINE_bool("debug", False, "Show the traceback of input errors too (or set MEDTL_DEBUG=1).")
flags.mark_flags_as_required(["workdir", "out"])

_OVERRIDES: list[tuple[str, str]] = []


def parse_flags(argv: list[str]) -> list[str]:
    """absl flags after the --config.data.* overrides are taken out (kept for main)."""
    from medtl_jax.config.arguments import split_overrides
    from medtl_jax.runtime.cli_errors import user_errors
    with user_errors(debug="--debug" in argv):
        rest, overrides = split_overrides(argv)
        _OVERRIDES[:] = overrides
        try:
            return flags.FLAGS(rest)
        except flags.Error as err:
            raise ValueError(str(err)) from err


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax and TFDS log every file operation at INFO
    from medtl_jax.config.arguments import data_overrides
    from medtl_jax.inference.cross_evaluate import evaluate_on
    from medtl_jax.inference.prediction_model import run_config
    from medtl_jax.runtime.cli_errors import user_errors
    with user_errors(_DEBUG.value):
        if len(argv) > 1:
            raise ValueError(f"unexpected argument(s) {' '.join(argv[1:])!r}: every option is --name=value")
        overrides = data_overrides(run_config(_WORKDIR.value), _OVERRIDES)
        results = evaluate_on(_WORKDIR.value, overrides, _OUT.value)
    print(results["summary"])


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
