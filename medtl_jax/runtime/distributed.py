"""Multi-process start-up: join the JAX distributed system before anything else touches JAX.

    from medtl_jax.runtime import distributed
    distributed.maybe_initialize(coordinator_address, num_processes, process_id)  # first JAX call
    logging.info(distributed.describe())

`maybe_initialize` calls `jax.distributed.initialize` in two cases:

* explicit: `coordinator_address`, `num_processes` and `process_id` are all given (the launcher's
  --coordinator_address / --num_processes / --process_id). Any other combination is an error that
  names the missing flags. This is how CPU processes on one machine, or hosts without a cluster
  manager, are joined (on CPU the cross-process collectives are gloo, JAX's default since 0.5.1).
* automatic: none is given and the environment is a multi-process cluster that JAX's own
  detectors recognise, so `jax.distributed.initialize()` without arguments fills everything in:
  - SLURM with more than one task: SLURM_JOB_ID, SLURM_STEP_NODELIST, SLURM_NTASKS > 1,
    SLURM_PROCID and SLURM_LOCALID all set (the variables JAX's SLURM detector reads; it then
    gives each task the device numbered SLURM_LOCALID, i.e. one task per GPU);
  - Open MPI with more than one rank: OMPI_MCA_orte_hnp_uri and OMPI_COMM_WORLD_SIZE > 1;
  - Cloud TPU on GKE: TPU_PROCESS_ADDRESSES or TPU_WORKER_HOSTNAMES listing more than one host;
    multislice TPU: MEGASCALE_COORDINATOR_ADDRESS.
  A TPU VM pod slice on GCE publishes its workers through the metadata server, not the environment;
  there the TPU runtime joins the hosts by itself (initialize is optional on TPU), or the explicit
  flags can be given.

Anything else (a laptop, one GPU box, one TPU VM) stays single-process and nothing is called.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax

_FLAGS = ("coordinator_address", "num_processes", "process_id")


def cluster_environment(environ: dict[str, str] | None = None) -> str | None:
    """Name of the multi-process cluster the environment describes ('slurm', 'ompi', 'tpu'), or None.

    Only multi-process set-ups count: a one-task SLURM job or a single TPU VM returns None.
    """
    env = os.environ if environ is None else environ

    def count(name: str) -> int:
        try:
            return int(env.get(name, "1"))
        except ValueError:
            return 1

    slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
    if all(k in env for k in slurm) and count("SLURM_NTASKS") > 1:
        return "slurm"
    if "OMPI_MCA_orte_hnp_uri" in env and count("OMPI_COMM_WORLD_SIZE") > 1:
        return "ompi"
    hosts = env.get("TPU_PROCESS_ADDRESSES") or env.get("TPU_WORKER_HOSTNAMES") or ""
    if len([h for h in hosts.split(",") if h.strip()]) > 1 or env.get("MEGASCALE_COORDINATOR_ADDRESS"):
        return "tpu"
    return None


def check_flags(coordinator_address: str | None, num_processes: int | None,
                process_id: int | None) -> bool:
    """True when all three explicit settings are given, False when none is; raises otherwise.

    A partial set is almost always a launch-script mistake, and JAX's own message would not name
    our flags, so the error lists what is missing and what a complete command looks like.
    """
    values = dict(zip(_FLAGS, (coordinator_address, num_processes, process_id)))
    given = [k for k, v in values.items() if v not in (None, "")]
    if not given:
        return False
    missing = [k for k in _FLAGS if k not in given]
    if missing:
        raise ValueError(
            f"multi-process flags are all-or-none: got {', '.join('--' + k for k in given)} but not "
            f"{', '.join('--' + k for k in missing)}. Run every process with e.g. "
            "--coordinator_address=host0:1234 --num_processes=2 --process_id=<0 or 1> "
            "(or none of them under SLURM / Cloud TPU, which are detected automatically)")
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise ValueError(f"--process_id={process_id} must be in [0, --num_processes={num_processes})")
    if ":" not in coordinator_address:
        raise ValueError(f"--coordinator_address={coordinator_address!r} needs a port, e.g. host0:1234")
    return True


def maybe_initialize(coordinator_address: str | None = None, num_processes: int | None = None,
                     process_id: int | None = None, local_device_ids: Sequence[int] | None = None) -> bool:
    """Joins the distributed system when flags or the cluster ask for it; True if JAX is now multi-process.

    Must run before any other JAX call (JAX refuses once a backend exists). Calling it again is a
    no-op that returns True once initialised, so a library and its launcher may both call it.
    """
    if jax.distributed.is_initialized():
        return True
    explicit = check_flags(coordinator_address, num_processes, process_id)
    if explicit:
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=int(num_processes),
                                   process_id=int(process_id), local_device_ids=local_device_ids)
        return True
    if cluster_environment() is not None:
        jax.distributed.initialize(local_device_ids=local_device_ids)
        return True
    return False


def describe() -> str:
    """One log line: this process's place in the run and the devices it sees (starts the backend)."""
    local = jax.local_devices()
    return (f"process {jax.process_index()} of {jax.process_count()}: {len(local)} local / "
            f"{jax.device_count()} global {local[0].platform} devices")
