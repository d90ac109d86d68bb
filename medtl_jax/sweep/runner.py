"""Running a plan on this machine: one `python -m launch.train` subprocess per run, one after another.

Why subprocesses rather than calling `train_and_evaluate` in this process: every run starts with a fresh
JAX (no compilation caches, device buffers or leaked memory carried from run to run), a run that crashes
hard (out of memory, an XLA abort, a segfault) fails alone and the sweep goes on, and the command that
runs is exactly the one `--print-commands` hands to a pod or a SLURM array. The price is a few seconds
of start-up per run.

Per run: DIR/<run>/sweep_run.json (atomic) before it starts, the trainer's output appended to
DIR/<run>/train.log, and on a non-zero exit DIR/<run>/FAILED with the exit code and the log's tail.
Finished runs are skipped; a run whose recorded config differs from the plan stops the sweep before
anything runs (unless `force`, which moves the old folder to DIR/.replaced/ and starts over); a partial
run resumes from its checkpoint. SIGTERM is passed to the running trainer (which checkpoints and exits) and the
sweep stops after it.

The runs share JAX's persistent compilation cache (DIR/.jax_cache, unless JAX_COMPILATION_CACHE_DIR is
set): runs that differ only in seed, initialisation or site compile the same programs, and a cached
program loads in a second or two instead of compiling for tens of seconds, which wins back most of what
the fresh processes cost.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from medtl_jax.runtime.atomic_io import write_json_atomic, write_text_atomic
from medtl_jax.runtime.run_folder import RunDir
from medtl_jax.sweep.plan import Plan, PlannedRun, plan_json, sweep_run_json
from medtl_jax.sweep.resolve import REPO_ROOT
from medtl_jax.sweep.status import CHANGED, DONE, RunStatus, run_status

TAIL_LINES = 40


class SweepConfigChanged(RuntimeError):
    """Finished (or started) runs record a config that differs from the plan."""


@dataclasses.dataclass
class Summary:
    """Counts of one invocation."""

    done: int = 0  # finished now
    failed: int = 0
    skipped: int = 0  # finished before
    left: int = 0  # not started (--max_runs, or the sweep was stopped)
    stopped: str = ""

    def line(self, name: str) -> str:
        """The final summary line."""
        text = f"sweep {name}: {self.done} done, {self.failed} failed, {self.skipped} skipped (finished before)"
        if self.left:
            text += f", {self.left} not run"
        return text + (f"; stopped: {self.stopped}" if self.stopped else "")


def select(plan: Plan, only: str | None) -> list[PlannedRun]:
    """The runs whose name contains `only` (all when None)."""
    return [r for r in plan.runs if not only or only in r.name]


def statuses(plan: Plan, runs: list[PlannedRun]) -> dict[str, RunStatus]:
    """Run name -> status of its folder."""
    return {r.name: run_status(pathlib.Path(plan.workdir) / r.name, r.config) for r in runs}


def check_unchanged(status: dict[str, RunStatus]) -> None:
    """SweepConfigChanged naming every run (and its differing fields) whose folder holds another config."""
    changed = {n: s for n, s in status.items() if s.status == CHANGED}
    if not changed:
        return
    lines = [f"{len(changed)} run folder(s) hold a different config than this sweep plans (use --force to move "
             f"them aside and rerun):"]
    for name, s in changed.items():
        shown = "; ".join(s.differences[:8]) + (f"; ... {len(s.differences) - 8} more" if len(s.differences) > 8
                                                else "")
        lines.append(f"  {name}: {shown}")
    raise SweepConfigChanged("\n".join(lines))


def write_plan_files(plan: Plan, runs: list[PlannedRun]) -> None:
    """DIR/sweep.json, and DIR/<run>/sweep_run.json for `runs` (so runs started elsewhere are grouped too)."""
    root = pathlib.Path(plan.workdir)
    write_json_atomic(root / "sweep.json", plan_json(plan))
    for run in runs:
        RunDir(root / run.name).write_sweep_record(sweep_run_json(plan, run))


def write_commands(plan: Plan, runs: list[PlannedRun]) -> list[str]:
    """One shell command per run, also written to DIR/commands.txt (with the plan files)."""
    lines = [shlex.join(r.command) for r in runs]
    write_plan_files(plan, runs)
    write_text_atomic(pathlib.Path(plan.workdir) / "commands.txt", "".join(f"{ln}\n" for ln in lines))
    return lines


def _tail(path: pathlib.Path, n: int = TAIL_LINES) -> str:
    if not path.is_file():
        return ""
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - 64_000))
        text = f.read().decode("utf-8", "replace").replace("\r", "\n")
    return "\n".join([ln for ln in text.splitlines() if ln.strip()][-n:])


def _move_aside(run_dir: pathlib.Path) -> pathlib.Path:
    """Moves a run folder to DIR/.replaced/<name>-<time> (hidden, so reports do not count it)."""
    target = run_dir.parent / ".replaced" / f"{run_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    target.parent.mkdir(exist_ok=True)
    shutil.move(str(run_dir), str(target))
    return target


def _run_one(run: PlannedRun, run_dir: pathlib.Path, env: dict | None) -> tuple[int, bool]:
    """Runs the trainer; returns (exit code, whether SIGTERM arrived meanwhile)."""
    cmd = [sys.executable, *run.command[1:]]
    env = dict(os.environ if env is None else env)
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(run_dir.parent / ".jax_cache"))
    terminated = []
    with RunDir(run_dir).train_log.open("ab") as log:
        log.write(f"\n$ {shlex.join(run.command)}\n".encode())
        log.flush()
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

        def forward(signum, frame):  # the trainer checkpoints on SIGTERM and exits cleanly
            terminated.append(signum)
            proc.send_signal(signum)

        main_thread = threading.current_thread() is threading.main_thread()  # only it may set handlers
        previous = signal.signal(signal.SIGTERM, forward) if main_thread else None
        try:
            rc = proc.wait()
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)
            proc.wait()
            raise
        finally:
            if main_thread:
                signal.signal(signal.SIGTERM, previous)
    return rc, bool(terminated)


def run_plan(plan: Plan, *, only: str | None = None, max_runs: int | None = None, force: bool = False,
             env: dict | None = None, out: Callable[[str], None] = print) -> Summary:
    """Runs the selected runs that are not finished; returns the counts (see the module docstring)."""
    runs = select(plan, only)
    status = statuses(plan, runs)
    if not force:
        check_unchanged(status)
    root = pathlib.Path(plan.workdir)
    write_plan_files(plan, [r for r in runs if status[r.name].status == DONE
                            and not RunDir(root / r.name).sweep_run_json.is_file()])
    summary, started = Summary(), 0
    todo = [r for r in runs if status[r.name].status != DONE]
    summary.skipped = len(runs) - len(todo)
    for i, run in enumerate(todo):
        if (max_runs is not None and started >= max_runs) or summary.stopped:
            summary.left += 1
            continue
        run_dir = pathlib.Path(plan.workdir) / run.name
        if status[run.name].status == CHANGED:
            out(f"moved {run.name} aside to {_move_aside(run_dir)} (--force)")
        run_dir.mkdir(parents=True, exist_ok=True)
        folder = RunDir(run_dir)
        folder.write_sweep_record(sweep_run_json(plan, run))
        folder.clear_failed()
        started += 1
        t0 = time.time()
        rc, terminated = _run_one(run, run_dir, env)
        took = f"{time.time() - t0:.0f} s"
        if rc == 0 and folder.results_json.is_file():
            summary.done += 1
            last = _tail(folder.train_log, 1)
            out(f"[{i + 1}/{len(todo)}] {run.name}: done in {took}" + (f" | {last}" if last else ""))
        elif rc == 0 or terminated:  # SIGTERM: the trainer saved a checkpoint; rerunning resumes
            summary.left += 1
            summary.stopped = f"{run.name} was interrupted after {took} (rerun the sweep to resume it)"
        else:
            summary.failed += 1
            tail = _tail(folder.train_log)
            folder.write_failed(f"exit code {rc}\ncommand: {shlex.join(run.command)}\n"
                                f"--- last {TAIL_LINES} lines of {folder.train_log.name} ---\n{tail}\n")
            out(f"[{i + 1}/{len(todo)}] {run.name}: FAILED (exit code {rc}) after {took}; see "
                f"{folder.failed}")
    return summary
