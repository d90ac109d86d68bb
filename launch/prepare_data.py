r"""Bring your own data: an image folder, a CSV manifest or a DICOM folder -> a TFDS dataset.

  python -m launch.prepare_data --source PATH|CSV --name NAME [--format folder|dicom|csv]
      [--data_dir DIR] [--on-error fail|skip] [--on-conflict refuse|warn] [--image_size N]
      [--window PRESET] [--frame K|expand] [--bits 8|16] [--seed S]
      [--val_fraction 0.1 --test_fraction 0.2]
      [--path_column COL] [--label_columns A,B,C] [--path_root DIR] [--keep_ids] [--overwrite]

Layouts: folder / dicom = root/<class>/**/<image> (the class is the sub-folder name; dicom keeps only
DICOM files); csv = one row per image with path, label (or --label_columns for multi-label 0/1
columns), optional patient_id, site, split, frame and metadata columns (medtl_jax.data.ingest.manifest).
DICOM: modality LUT, header VOI (or --window lung|mediastinum|soft_tissue|bone|brain; bone is C 400 /
W 1800), MONOCHROME1 inverted, --frame K or 'expand' (one example per frame), colour to RGB.
Splits: the CSV's split column, else grouped by patient and stratified by label (seeded).
Refused unless --on-conflict=warn (leakage and label errors): a file listed twice (also via a
symlink), a file with two labels, a patient in two of the CSV's splits, an empty class folder. With
warn each is printed and listed in the summary: a repeat keeps its first row, a file with two labels
is dropped, splits stay as given, an empty folder is no class. A refusal writes nothing.

Output in <data_dir>/custom/<name>/1.0.0/: the TFDS files, splits.csv (patient ids replaced by a
salted hash unless --keep_ids), summary.json, summary.md, thumbnails.png and, with --on-error=skip,
skipped_files.csv. The summary is also printed. Train with --config.data.name=custom
--config.data.subset=NAME --config.data.data_dir=DIR.
"""

from __future__ import annotations

import argparse
import sys

from medtl_jax.data.ingest import dataset_summary
from medtl_jax.data.ingest.dicom import WINDOW_PRESETS, UnreadableImageError
from medtl_jax.data.ingest.prepare_custom import PrepareOptions, prepare_custom


def _frame(text: str) -> int | str:
    if text == "expand":
        return text
    if text.isdigit():
        return int(text)
    raise argparse.ArgumentTypeError(f"--frame must be a frame index (0, 1, ...) or 'expand', got "
                                     f"{text!r}")


def parser() -> argparse.ArgumentParser:
    """The command-line flags (PrepareOptions field for each)."""
    p = argparse.ArgumentParser(prog="python -m launch.prepare_data", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True, help="image folder, DICOM folder or CSV manifest")
    p.add_argument("--name", required=True, help="dataset name (config.data.subset)")
    p.add_argument("--format", choices=("folder", "dicom", "csv"), default=None,
                   help="default: csv for a .csv file, else folder")
    p.add_argument("--data_dir", default=None, help="TFDS folder (default $MEDTL_DATA_DIR or "
                                                    "~/.cache/medtl_jax/tfds)")
    p.add_argument("--on-error", "--on_error", dest="on_error", choices=("fail", "skip"),
                   default="fail", help="unreadable files: stop (default) or skip and list them")
    p.add_argument("--on-conflict", "--on_conflict", dest="on_conflict", choices=("refuse", "warn"),
                   default="refuse", help="files listed twice or with two labels, a patient in two "
                   "given splits, empty class folders: stop (default) or warn, fix and list them")
    p.add_argument("--image_size", type=int, default=None,
                   help="resize every image to NxN (needed when sizes differ)")
    p.add_argument("--window", choices=sorted(WINDOW_PRESETS), default=None,
                   help="DICOM window preset (default: the header's VOI LUT / window)")
    p.add_argument("--frame", type=_frame, default=0, help="DICOM frame index or 'expand'")
    p.add_argument("--bits", type=int, choices=(8, 16), default=8, help="stored bit depth")
    p.add_argument("--no_invert_monochrome1", dest="invert_monochrome1", action="store_false",
                   help="keep MONOCHROME1 DICOM as stored (default: inverted)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated split")
    p.add_argument("--val_fraction", type=float, default=0.1)
    p.add_argument("--test_fraction", type=float, default=0.2)
    p.add_argument("--path_column", default=None, help="CSV path column (default: path/image/...)")
    p.add_argument("--label_columns", default=None,
                   help="comma-separated CSV label columns; several = multi-label 0/1")
    p.add_argument("--path_root", default=None,
                   help="folder that relative CSV paths start from (default: the CSV's folder)")
    p.add_argument("--keep_ids", action="store_true",
                   help="write raw patient ids into splits.csv (default: salted hashes)")
    p.add_argument("--salt", default=None, help="salt of the id hashes (default: random, unsaved)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset of this name")
    return p


def main(argv: list[str] | None = None) -> int:
    """Parses flags, builds the dataset, prints the summary; exit code 1 on bad input."""
    args = parser().parse_args(argv)
    options = PrepareOptions(**{k: v for k, v in vars(args).items() if k != "label_columns"},
                             label_columns=tuple(c.strip() for c in args.label_columns.split(","))
                             if args.label_columns else None)
    import tensorflow_datasets as tfds
    from absl import logging as absl_logging
    tfds.disable_progress_bar()
    absl_logging.set_verbosity(absl_logging.ERROR)  # TFDS's "custom data configuration" notices
    try:
        summary = prepare_custom(options)
    except (UnreadableImageError, ValueError) as err:
        print(f"prepare_data: error: {err}", file=sys.stderr)
        return 1
    print(dataset_summary.markdown(summary))
    print(f"written to {summary['dataset_dir']} (summary.json, summary.md, thumbnails.png, "
          f"splits.csv) in {summary['build_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
