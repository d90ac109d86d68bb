"""Run a sweep (configs/sweeps/*.py) on this machine, list it, or print its commands for a pod / SLURM array.

    python -m launch.sweep --sweep configs/sweeps/transfer_study.py:dataset=synthetic,quick --workdir runs/study
    python -m launch.sweep --sweep ... --workdir DIR --dry-run            # name and status of every run
    python -m launch.sweep --sweep ... --workdir DIR --print-commands     # also DIR/commands.txt
    python -m launch.sweep --sweep ... --workdir DIR --only model=cbr --max_runs 2
    python -m launch.sweep --sweep configs/sweeps/medmnist_v2.py:dataset=retinamnist --workdir DIR \
        --set data.manual_dir=../shared/data/medmnist

Each run trains in DIR/<run name> through `python -m launch.train` (a subprocess per run, see
medtl_jax/sweep/runner.py); finished runs are skipped, interrupted ones resume, a failed one leaves
DIR/<run>/FAILED and the sweep goes on. Statuses: done, partial (resumes), failed (retried), todo, and
changed: the folder holds a run of another config, which stops the sweep unless --force (the old folder
is then moved to DIR/.replaced/). `--set field=value` adds a fixed override to every run (e.g. paths that
differ per machine).
Run from the repository root. A SLURM array over the printed commands (1-based task ids):
    sbatch --array=1-$(wc -l < DIR/commands.txt) --wrap 'sed -n "${SLURM_ARRAY_TASK_ID}p" DIR/commands.txt | bash'
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from medtl_jax.sweep.plan import make_plan
from medtl_jax.sweep.runner import SweepConfigChanged, run_plan, select, statuses, write_commands
from medtl_jax.sweep.resolve import load_config, parse_cli_override
from medtl_jax.sweep.spec import load_sweep
from medtl_jax.sweep.status import CHANGED, DONE, FAILED, PARTIAL, TODO


def parse(argv: list[str]) -> argparse.Namespace:
    """Command-line flags (dashes and underscores both accepted)."""
    p = argparse.ArgumentParser(prog="python -m launch.sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("--sweep", required=True, help="sweep file, optionally 'path.py:args'")
    p.add_argument("--workdir", required=True, help="folder of the sweep: one subfolder per run")
    p.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true", help="list runs, run nothing")
    p.add_argument("--print-commands", "--print_commands", dest="print_commands", action="store_true",
                   help="print one launch.train command per run (and write DIR/commands.txt), run nothing")
    p.add_argument("--only", default=None, help="only runs whose name contains this text")
    p.add_argument("--max_runs", "--max-runs", dest="max_runs", type=int, default=None,
                   help="start at most this many runs")
    p.add_argument("--force", action="store_true", help="rerun runs whose folder holds another config")
    p.add_argument("--set", dest="set", action="append", default=[], metavar="FIELD=VALUE",
                   help="fixed override for every run, e.g. data.manual_dir=/data/medmnist (repeatable)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 some run failed, 2 refused or bad input)."""
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        sweep, spec = load_sweep(args.sweep)
        base = load_config(sweep.config)
        extra = dict(parse_cli_override(text, base) for text in args.set)
        plan = make_plan(sweep, spec, pathlib.Path(args.workdir).resolve(), extra)
    except (ValueError, FileNotFoundError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    runs = select(plan, args.only)
    if args.only and not runs:
        print(f"error: --only {args.only!r} matches none of the {len(plan.runs)} runs", file=sys.stderr)
        return 2
    notes = (f" ({len(plan.dropped)} impossible combinations dropped, {len(plan.merged)} duplicates merged)"
             if plan.dropped or plan.merged else "")
    if args.print_commands:
        for line in write_commands(plan, runs):
            print(line)
        print(f"# {len(runs)} commands written to {pathlib.Path(plan.workdir) / 'commands.txt'}{notes}",
              file=sys.stderr)
        return 0
    if args.dry_run:
        status = statuses(plan, runs)
        for run in runs:
            s = status[run.name]
            print(f"{s.status:<8} {run.name}" + (f"  [{'; '.join(s.differences[:3])}]" if s.differences else ""))
        counts = {k: n for k in (DONE, CHANGED, FAILED, PARTIAL, TODO)
                  if (n := sum(s.status == k for s in status.values()))}
        print(f"sweep {sweep.name}: {len(runs)} runs: " + ", ".join(f"{n} {k}" for k, n in counts.items()) + notes)
        return 0
    try:
        summary = run_plan(plan, only=args.only, max_runs=args.max_runs, force=args.force)
    except SweepConfigChanged as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary.line(sweep.name))
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
