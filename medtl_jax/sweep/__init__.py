"""Sweeps: many training runs from one declaration, each in its own folder, skipped once finished.

    spec.py     Sweep / Grid / Runs: what a sweep file's `get_sweep(arg)` returns
    naming.py   readable, unique, filesystem-safe run names from overrides
    resolve.py  config spec + overrides -> the run's config, and values -> command-line flags
    plan.py     the resolved plan (drops impossible runs, merges identical ones; sweep.json)
    status.py   done / changed / failed / partial / todo of a run folder
    runner.py   runs the plan locally, one `launch.train` subprocess per run

The command line is `python -m launch.sweep` (launch/sweep.py); presets live in configs/sweeps/.
"""

from medtl_jax.sweep.plan import Plan, PlannedRun, make_plan, plan_json, sweep_run_json
from medtl_jax.sweep.spec import Grid, Runs, Sweep, load_sweep, parse_sweep_args

__all__ = ["Grid", "Plan", "PlannedRun", "Runs", "Sweep", "load_sweep", "make_plan", "parse_sweep_args",
           "plan_json", "sweep_run_json"]
