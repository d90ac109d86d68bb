"""One process of a multi-process (or single-process reference) run, for tests/runtime/test_multiprocess.py.

    PYTHONPATH=. python tests/helpers/multiprocess_worker.py --data_dir D --out O \
        [--precision float64] [--steps 3] [--port P --num_processes N --process_id I]

(from the repository root: PYTHONPATH=. makes `tests.helpers` importable; the test sets it for its subprocesses).

Runs the first `--steps` train steps of the tiny config with the trainer's own pieces (make_setup,
create_state, make_train_step, the setup's train_epoch, parallel.to_global) and writes
O/<precision>_p<I>.npz: this process's batches, the losses, and its copy of params and batch_stats.
JAX must not start before `maybe_initialize`, so nothing at the top of this module touches a backend.
"""

from __future__ import annotations

import argparse
import itertools
import pathlib
import sys

import numpy as np

from tests.helpers.tiny_recipe import tiny_config


def _flat(tree, prefix: str) -> dict[str, np.ndarray]:
    """{prefix/path: this process's copy} of a replicated pytree of global arrays."""
    import jax
    out = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        out[prefix + jax.tree_util.keystr(path)] = np.asarray(leaf.addressable_data(0))
    return out


def _float64_setup(config, s):
    """The same set-up computing in float64 (as in test_train): rounding then cannot hide a real difference."""
    import dataclasses
    import jax.numpy as jnp
    from medtl_jax.models import build_classifier
    model = build_classifier(config.model.name, s.task.num_outputs, stem=config.model.stem, dtype=jnp.float64)
    return dataclasses.replace(s, parts=dataclasses.replace(
        s.parts, built=dataclasses.replace(s.parts.built, model=model.clone(dropout_rate=0.0))))


def run_steps(config, n_steps: int, out: pathlib.Path, precision: str) -> None:
    """The first `n_steps` steps of epoch 0, exactly as train_and_evaluate runs them (or in float64)."""
    import jax
    import jax.numpy as jnp
    from medtl_jax.runtime import parallel
    from medtl_jax.train import trainer as train
    if precision == "float64":
        jax.config.update("jax_enable_x64", True)
    s = train.make_setup(config)
    if precision == "float64":
        s = _float64_setup(config, s)
    state = train.create_state(config, s)
    if precision == "float64":
        def to_float64(tree):
            return jax.tree_util.tree_map(lambda a: a.astype(jnp.float64) if a.dtype == jnp.float32 else a, tree)
        state = jax.jit(to_float64, out_shardings=parallel.replicated(s.mesh))(state)
    step = train.make_train_step(s)
    batches = list(itertools.islice(s.parts.train_epoch(0, 0), n_steps))
    losses = []
    for b in batches:
        state, metrics = step(state, parallel.to_global({**b, "image": b["image"].astype(precision)}, s.mesh))
        losses.append(float(jax.device_get(metrics)["loss"]))
    arrays = {"loss": np.asarray(losses), "image": np.stack([b["image"] for b in batches]),
              "label": np.stack([b["label"] for b in batches]),
              "mesh_processes": np.asarray([d.process_index for d in s.mesh.devices.flat])}
    arrays.update(_flat(state.params, "params"))
    arrays.update(_flat(state.batch_stats, "batch_stats"))
    np.savez(out / f"{precision}_p{jax.process_index()}.npz", **arrays)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--out", required=True, type=pathlib.Path)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--precision", choices=["float32", "float64"], default="float32")
    parser.add_argument("--port", type=int)
    parser.add_argument("--num_processes", type=int)
    parser.add_argument("--process_id", type=int)
    args = parser.parse_args(argv)

    from medtl_jax.runtime import distributed
    address = f"localhost:{args.port}" if args.port else None
    joined = distributed.maybe_initialize(address, args.num_processes, args.process_id)
    assert joined == (address is not None), joined
    assert distributed.maybe_initialize(address, args.num_processes, args.process_id) == joined  # idempotent
    print(distributed.describe(), flush=True)
    run_steps(tiny_config(args.data_dir), args.steps, args.out, args.precision)


if __name__ == "__main__":
    main(sys.argv[1:])
