"""`python -m launch.train` in a real subprocess, stopped by a signal once it has logged a given step."""

import json
import os
import pathlib
import subprocess
import time

from tests.helpers.paths import REPO_ROOT


def two_cpu_env() -> dict:
    """This environment on 2 fake CPU devices: what the stopped trainings run with."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    return env


def logged_steps(workdir) -> int:
    """The last step written to the run's metrics.jsonl (0 before the first)."""
    path = pathlib.Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return 0
    return max([json.loads(ln)["step"] for ln in path.read_text().splitlines() if ln.strip()] or [0])


def start_and_signal(cmd, workdir, at_step: int, sig) -> subprocess.CompletedProcess:
    """Runs `cmd` from the repository root, sends `sig` once step `at_step` is logged and waits for the end."""
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=two_cpu_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while logged_steps(workdir) < at_step:
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() < deadline, "training did not reach the step in time"
        time.sleep(0.05)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(cmd, proc.returncode, out)
