"""Write (and optionally submit) a SLURM batch script that trains one run on N nodes x G GPUs.

    python -m launch.slurm --nodes 2 --gpus_per_node 4 --partition gpu --time 24:00:00 \
        --config configs/medmnist.py:dataset=retinamnist,model=resnet18 \
        --workdir /shared/runs/retina --config.optimizer.lr=0.01 --out retina.sbatch [--submit]

Config overrides are written as for launch.train (--config.a.b=value) and passed through unchanged.
The run folder must be an absolute path on the file system all nodes share, because every process
takes part in writing the checkpoints there. Without --submit the script is written and the sbatch
command that submits it is printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

from launch.tpu_pod import check_override, check_shared_workdir, train_argv
from medtl_jax.runtime.atomic_io import write_text_atomic

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
_TIME = re.compile(r"(\d+-)?\d+(:\d+){0,2}")  # minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS
_NAME = re.compile(r"[\w.@+-]+")


@dataclasses.dataclass(frozen=True)
class SlurmArgs:
    """What the batch script is built from."""
    nodes: int
    gpus_per_node: int
    config: str
    workdir: str
    repo_dir: str
    overrides: tuple[str, ...] = ()
    partition: str | None = None
    account: str | None = None
    time: str = "24:00:00"
    cpus_per_task: int = 8
    job_name: str = "medtl"
    python: str = "python"


def check_args(args: SlurmArgs) -> SlurmArgs:
    """Returns `args` if sbatch could accept them, else ValueError naming the flag (before anything queues)."""
    for flag, value in (("--nodes", args.nodes), ("--gpus_per_node", args.gpus_per_node),
                        ("--cpus_per_task", args.cpus_per_task)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{flag} must be a whole number >= 1, got {value!r}")
    if not _TIME.fullmatch(args.time):
        raise ValueError(f"--time {args.time!r} is not a SLURM time limit "
                         "(minutes, HH:MM:SS or D-HH:MM:SS, e.g. 24:00:00 or 2-00:00:00)")
    for flag, value in (("--partition", args.partition), ("--account", args.account), ("--job_name", args.job_name)):
        if value is not None and not _NAME.fullmatch(value):
            raise ValueError(f"{flag} {value!r} must be one word (letters, digits, . _ - + @)")
    check_shared_workdir(args.workdir, allow_gcs=False)
    for o in args.overrides:
        check_override(o)
    return args


def sbatch_script(args: SlurmArgs) -> str:
    """The batch script text: #SBATCH directives, then one `srun` starting a JAX process per GPU.

    Why one process per GPU (--ntasks-per-node = G) rather than one per node: jax.distributed.initialize()
    with no arguments reads the process id from SLURM_PROCID, the process count from SLURM_NTASKS, the
    coordinator from the first host of SLURM_STEP_NODELIST, and restricts each process to local device
    SLURM_LOCALID. That last step assumes one process per GPU: with one task per node every process
    would drive only GPU 0 of its node. GPUs are requested per node (--gpus-per-node), not per task, so
    that every task sees all of its node's GPUs and picks number SLURM_LOCALID among them; binding one
    GPU to each task (--gpus-per-task=1) would renumber it 0 and break that choice. srun repeats
    --cpus-per-task because since Slurm 22.05 srun no longer inherits it from sbatch, and
    --kill-on-bad-exit=1 ends the whole step when one process dies rather than leaving the others
    waiting in a collective until the time limit.
    """
    check_args(args)
    total = args.nodes * args.gpus_per_node
    directives = [("job-name", args.job_name), ("nodes", args.nodes), ("ntasks-per-node", args.gpus_per_node),
                  ("gpus-per-node", args.gpus_per_node), ("cpus-per-task", args.cpus_per_task),
                  ("time", args.time), ("partition", args.partition), ("account", args.account)]
    srun = ["srun", f"--cpus-per-task={args.cpus_per_task}", "--kill-on-bad-exit=1",
            *train_argv(args.config, args.workdir, args.overrides, args.python)]
    return "\n".join([
        "#!/bin/bash",
        *(f"#SBATCH --{name}={value}" for name, value in directives if value is not None),
        "#",
        f"# {args.nodes} node(s) x {args.gpus_per_node} GPU(s) = {total} JAX process(es), one per GPU.",
        "# jax.distributed.initialize() reads the SLURM_* variables srun sets, so launch.train",
        "# gets no --coordinator_address / --num_processes / --process_id.",
        "# Written by `python -m launch.slurm`; submit with: sbatch <this file>",
        "set -euo pipefail",
        f"cd {shlex.quote(args.repo_dir)}",
        shlex.join(srun),
        "",
    ])


def parse_args(argv: list[str]) -> tuple[SlurmArgs, str, bool]:
    """Command line -> (SlurmArgs, script path, submit); bad values stop with an argparse error."""
    p = argparse.ArgumentParser(prog="python -m launch.slurm", allow_abbrev=False,
                                description=__doc__.split("\n\n")[0],
                                epilog="Any --config.<group>.<field>=value is passed on to launch.train.")
    p.add_argument("--nodes", type=int, required=True, help="Number of nodes.")
    p.add_argument("--gpus_per_node", type=int, required=True, help="GPUs per node (= JAX processes per node).")
    p.add_argument("--config", required=True, help="Config file relative to the repo, optionally 'path.py:args'.")
    p.add_argument("--workdir", required=True, help="Run folder: absolute path on the shared file system.")
    p.add_argument("--partition", help="SLURM partition (default: the cluster's).")
    p.add_argument("--account", help="SLURM account to charge (default: yours).")
    p.add_argument("--time", default="24:00:00", help="Time limit, e.g. 24:00:00 or 2-00:00:00.")
    p.add_argument("--cpus_per_task", type=int, default=8, help="CPU cores per process (input pipeline).")
    p.add_argument("--job_name", default="medtl", help="SLURM job name.")
    p.add_argument("--python", default="python",
                   help="Python with medtl-jax installed, as the compute nodes see it (default: `python` "
                        "on the PATH sbatch exports from where you submit).")
    p.add_argument("--repo_dir", default=str(REPO_ROOT),
                   help="Repo checkout on the shared file system; the job runs from there (default: this one).")
    p.add_argument("--out", default="job.sbatch", help="Where to write the batch script.")
    p.add_argument("--submit", action="store_true", help="Submit the script with sbatch after writing it.")
    ns, extra = p.parse_known_args(argv)
    args = SlurmArgs(nodes=ns.nodes, gpus_per_node=ns.gpus_per_node, config=ns.config, workdir=ns.workdir,
                     repo_dir=ns.repo_dir, overrides=tuple(extra), partition=ns.partition, account=ns.account,
                     time=ns.time, cpus_per_task=ns.cpus_per_task, job_name=ns.job_name, python=ns.python)
    try:
        check_args(args)
    except ValueError as e:
        p.error(str(e))
    config_file = pathlib.Path(args.repo_dir) / args.config.partition(":")[0]
    if pathlib.Path(args.repo_dir).is_dir() and not config_file.is_file():
        p.error(f"config file {config_file} not found")
    return args, ns.out, ns.submit


def main(argv: list[str] | None = None) -> None:
    """Writes the batch script atomically, then prints the sbatch command or (--submit) runs it."""
    args, out, submit = parse_args(sys.argv[1:] if argv is None else argv)
    path = write_text_atomic(out, sbatch_script(args))
    command = ["sbatch", str(path)]
    print(f"wrote {path}: {args.nodes} node(s) x {args.gpus_per_node} GPU(s), "
          f"{args.nodes * args.gpus_per_node} JAX processes")
    if not submit:
        print(f"submit with: {shlex.join(command)}")
        return
    if shutil.which("sbatch") is None:
        sys.exit(f"error: sbatch not found on PATH: run this on the cluster's login node, or copy {path} "
                 f"there and run: {shlex.join(command)}")
    try:
        subprocess.run(command, check=True)
    except subprocess.CalledProcessError as e:
        sys.exit(f"error: sbatch failed (exit code {e.returncode}); the script is kept at {path}")


if __name__ == "__main__":
    main()
