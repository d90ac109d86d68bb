"""Checkpoints of finite states only: no checkpoint ever holds NaN or Inf, and a run that diverges stops
with one error saying which good checkpoint was kept and how to continue."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from medtl_jax.runtime.checkpoint import RunCheckpoints
from medtl_jax.runtime.run_folder import RunDir


class NonFiniteLossError(RuntimeError):
    """Raised when the training loss becomes NaN or infinite; the last good checkpoint is kept."""


@jax.jit
def _all_finite(state) -> jax.Array:
    """Whether every floating-point leaf (parameters, BatchNorm statistics, optimizer moments) is finite."""
    leaves = [x for x in jax.tree_util.tree_leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def diverged(what: str, step: int, ckpts: RunCheckpoints, run_dir: RunDir) -> NonFiniteLossError:
    """The error of a run whose loss or state became non-finite at `step`, saying what was kept and how to
    go on."""
    last = ckpts.latest_step()
    fix = "lower config.optimizer.lr (or set config.optimizer.grad_clip_norm)"
    if last is None:
        kept = f"no checkpoint had been saved yet, so {fix} and rerun: the run starts afresh"
    else:
        kept = (f"the last good checkpoint (step {last}) is kept in {run_dir.checkpoint_dir('latest')}; {fix} "
                "and rerun with --allow_config_change=optimizer.lr to continue from it, or use a new --workdir")
    return NonFiniteLossError(f"training diverged: {what} at step {step}, so nothing was saved from it; {kept}")


def save_finite(ckpts: RunCheckpoints, which: tuple[str, ...], step: int, state, record: dict,
          run_dir: RunDir) -> None:
    """Checkpoints (one per series in `which`), only of a finite state: no checkpoint ever holds NaN or
    Inf. The state is checked once for all series."""
    if not bool(_all_finite(state)):
        raise diverged("parameters or optimizer state became non-finite", step, ckpts, run_dir)
    for series in which:
        ckpts.save(series, step, state, record)
