"""Training logs: TensorBoard event files (tensorboardX) and a metrics.jsonl, written by process 0 only."""

from __future__ import annotations

import json
import pathlib

import jax

from medtl_jax.runtime.atomic_io import strict_json
from medtl_jax.runtime.run_folder import RunDir


class MetricLog:
    """Appends scalar metrics to the run folder's metrics.jsonl and tb/ (`RunDir`).

    On resume, lines logged after the restored step are dropped first, so the log reads as one run.
    """

    def __init__(self, run_dir: RunDir | str | pathlib.Path, resume_step: int = 0):
        self.run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
        self.enabled = jax.process_index() == 0
        self.path = self.run_dir.metrics_jsonl
        self._tb = None
        if not self.enabled:
            return
        self._truncate_after(resume_step)
        from tensorboardX import SummaryWriter
        self._tb = SummaryWriter(str(self.run_dir.tensorboard_dir))

    def _truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        kept = [ln for ln in self.path.read_text().splitlines()
                if ln.strip() and json.loads(ln).get("step", 0) <= step]
        self.path.write_text("".join(ln + "\n" for ln in kept))

    def write(self, step: int, split: str, values: dict) -> None:
        """Logs the numeric entries of `values` under `split/<name>` at `step`."""
        if not self.enabled:
            return
        scalars = {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        with self.path.open("a") as f:
            f.write(strict_json({"step": int(step), "split": split, **scalars}) + "\n")
        for k, v in scalars.items():
            self._tb.add_scalar(f"{split}/{k}", v, int(step))

    def close(self) -> None:
        """Flushes the event file."""
        if self._tb is not None:
            self._tb.close()

    def read(self) -> list[dict]:
        """All logged records (for reports and tests)."""
        return self.run_dir.read_metrics()
