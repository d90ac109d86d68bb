"""Device mesh and shardings: data parallel over the 'data' axis, state replicated.

One code path for 1 CPU, 8 fake CPU devices, a GPU box or a TPU pod slice. Host-local batches become
global arrays with `jax.make_array_from_process_local_data`, so each process feeds only its shard.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"
# BatchNorm statistics over the whole global batch (SyncBN) or per device (config.mesh.batch_norm).
BATCH_NORM_MODES = ("global", "per_device")


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D data-parallel mesh over all (or `num_devices`, see `select_devices`) devices."""
    return Mesh(np.asarray(select_devices(jax.devices(), num_devices, jax.process_count())), (DATA_AXIS,))


def select_devices(devices: Sequence, num_devices: int | None, process_count: int) -> list:
    """All devices, or `num_devices` of them: the first ones with one process, else the same number
    from every process (each process feeds its slice of the batch to its own devices, so every
    process needs some), grouped by process in process order."""
    devices = list(devices)
    if not num_devices or num_devices == len(devices):
        return devices
    if num_devices > len(devices):
        raise ValueError(f"config.mesh.num_devices={num_devices} but only {len(devices)} devices exist")
    if process_count == 1:
        return devices[:num_devices]
    per_process = num_devices // process_count
    by_process: dict[int, list] = {}
    for d in devices:
        by_process.setdefault(d.process_index, []).append(d)
    if num_devices % process_count or any(len(v) < per_process for v in by_process.values()):
        raise ValueError(f"config.mesh.num_devices={num_devices} must be a multiple of the {process_count} "
                         f"processes, at most {min(len(v) for v in by_process.values())} from each")
    return [d for p in sorted(by_process) for d in by_process[p][:per_process]]


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding that keeps a full copy on every device (parameters, optimizer state)."""
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Sharding that splits the leading (batch) axis over the data axis."""
    return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch: int, mesh: Mesh, field: str) -> None:
    """The global batch must split evenly over devices and processes; the error names the config field."""
    n = mesh.devices.size
    if global_batch % n or global_batch % jax.process_count():
        raise ValueError(f"{field}={global_batch} must be divisible by the {n} devices "
                         f"and {jax.process_count()} processes")


def to_global(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This process's slice of a batch -> global arrays sharded over the data axis."""
    sharding = batch_sharded(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}


def to_host(x: jax.Array) -> np.ndarray:
    """A global array back on this host, whole (all processes' shards gathered)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))
