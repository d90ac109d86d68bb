"""Aggregate a sweep folder into report.md, CSV tables and PNG figures.

    python -m launch.report runs/my_sweep
    python -m launch.report runs/my_sweep --out /tmp/report.md --gradcam 0 --bootstrap 2000 --correction bh

DIR holds one folder per run (as written by launch/sweep.py or launch/train.py). Writes report.md (or
--out), report_runs.csv, report_groups.csv and report_comparisons.csv beside it and the figures in
report_files/. Unfinished runs (no results.json) are listed, not an error.
"""

from __future__ import annotations

import argparse
import sys

from medtl_jax.report.stats import CORRECTIONS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(prog="python -m launch.report", description=__doc__.split("\n\n")[0])
    p.add_argument("dir", help="sweep folder holding one folder per run")
    p.add_argument("--out", default=None, help="report path (default DIR/report.md)")
    p.add_argument("--gradcam", type=int, default=4, help="Grad-CAM test images per model; 0 disables")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for CIs and tests")
    p.add_argument("--correction", choices=sorted(CORRECTIONS), default="holm",
                   help="multiple-comparison correction: holm (family-wise) or bh (false discovery rate)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resamples")
    args = p.parse_args(argv)
    if args.gradcam < 0 or args.bootstrap < 0:
        p.error("--gradcam and --bootstrap must be >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    """Builds the report; prints where it went. Errors about the folder exit with a one-line message."""
    args = parse_args(argv)
    from medtl_jax.report.study_report import ReportOptions, build_report
    options = ReportOptions(bootstrap=args.bootstrap, correction=args.correction, gradcam=args.gradcam,
                            seed=args.seed)
    try:
        written = build_report(args.dir, args.out, options)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
