"""The accelerator benchmark runs end to end (tiny case on the CPU) and prints its table."""

import os
import subprocess
import sys

from tests.helpers.paths import REPO_ROOT


def test_accelerator_benchmark_smoke_run():
    done = subprocess.run(
        [sys.executable, "benchmarks/accelerator.py", "--model", "cbr_tiny", "--size", "32", "--batch", "16",
         "--repeats", "1", "--pipeline_steps", "2"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("jax ") and "2 x" in lines[0], lines[0]
    rows = {ln.split("|")[1].strip(): ln.split("|")[2].strip() for ln in lines if ln.startswith("| ") and "---" not in ln}
    assert float(rows["flax float32 (2 device(s))"]) > 0 and float(rows["flax bfloat16 (2 device(s))"]) > 0
    assert float(rows["input pipeline (host, grain)"]) > 0
    assert rows["torch bf16 autocast, channels_last (1 GPU)"] == "n/a"  # no CUDA, and no torchvision cbr_tiny
