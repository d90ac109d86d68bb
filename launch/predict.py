"""Apply a trained run to new images: one CSV of probabilities (or masks), optional Grad-CAM overlays.

    python -m launch.predict --workdir runs/pneu --input scans/ --out preds.csv
    python -m launch.predict --workdir runs/pneu --input cohort.csv --out preds.csv --gradcam
    python -m launch.predict --workdir runs/vessels --input fundus/ --out vessels.csv   # segmentation run

--input is an image or DICOM file, a folder (searched recursively for images and DICOM files, suffixless
DICOM included) or a CSV with a 'path' column (relative paths are read from the CSV's folder; the other
columns, e.g. patient_id, are copied to the output). The run's own config.json and results.json give the
model and its preprocessing; the training data are not needed. Unreadable files are listed in
<out stem>.unreadable.csv. Grad-CAM overlays go to --gradcam_dir (default <out stem>_gradcam/); masks of a
segmentation run to <out stem>_masks/.

Bad inputs (a missing file, a folder without images, an --out that cannot be written, checked before the
model loads) end with one `error: ...` line and exit code 2; --debug or MEDTL_DEBUG=1 shows the traceback.
"""

from __future__ import annotations

import logging
import pathlib

from absl import app, flags
from absl import logging as absl_logging

_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder of a trained model (config.json, checkpoints/).")
_INPUT = flags.DEFINE_string("input", None, "Image or DICOM file, folder, or CSV with a 'path' column.")
_OUT = flags.DEFINE_string("out", None, "Output CSV.")
_GRADCAM = flags.DEFINE_bool("gradcam", False, "Write a Grad-CAM overlay PNG per image (classification runs).")
_GRADCAM_DIR = flags.DEFINE_string("gradcam_dir", None, "Folder for the overlays (implies --gradcam); default <out stem>_gradcam.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Images per forward pass (rounded up to the device count).",
                              lower_bound=1)
_CHECKPOINT = flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which checkpoint of the run to apply.")
_DICOM_WINDOW = flags.DEFINE_string("dicom_window", None,
                                    "DICOM window preset (lung, mediastinum, soft_tissue, bone, brain); "
                                    "default: the file's own VOI window.")
_DEBUG = flags.DEFINE_bool("debug", False, "Show the traceback of input errors too (or set MEDTL_DEBUG=1).")
flags.mark_flags_as_required(["workdir", "input", "out"])


def main(argv: list[str]) -> None:
    del argv
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every file operation at INFO
    from medtl_jax.runtime.cli_errors import user_errors
    with user_errors(_DEBUG.value):
        print(_predict().line())


def _predict():
    """Inputs listed and --out checked first (no model loaded yet), then the run restored and applied."""
    from medtl_jax.data.ingest.image_files import DicomOptions
    from medtl_jax.inference.prediction import check_writable, predict_inputs
    from medtl_jax.inference.prediction_inputs import list_inputs
    from medtl_jax.inference.prediction_model import load_run

    out = pathlib.Path(_OUT.value)
    dicom = DicomOptions(window=_DICOM_WINDOW.value) if _DICOM_WINDOW.value else None
    inputs = list_inputs(_INPUT.value)
    check_writable(out)
    gradcam_dir = None
    if _GRADCAM.value or _GRADCAM_DIR.value:
        gradcam_dir = pathlib.Path(_GRADCAM_DIR.value) if _GRADCAM_DIR.value else out.with_name(f"{out.stem}_gradcam")
    run = load_run(_WORKDIR.value, _CHECKPOINT.value)
    return predict_inputs(run, inputs, out, batch_size=_BATCH.value, gradcam_dir=gradcam_dir, dicom=dicom)


if __name__ == "__main__":
    app.run(main)
