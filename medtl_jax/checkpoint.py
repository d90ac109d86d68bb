"""Run checkpoints with orbax: `latest` (for resuming) and `best` (by validation metric) in the workdir.

Each checkpoint holds the whole TrainState (params, batch_stats, optimizer state, step, rng) plus a small
JSON record (epoch, best validation score so far), so a rerun of the same command resumes exactly.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp


class RunCheckpoints:
    """The two checkpoint series of one run; `which` is 'latest' or 'best'."""

    def __init__(self, workdir: str | pathlib.Path):
        root = pathlib.Path(workdir).absolute() / "checkpoints"
        options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True)
        self._managers = {which: ocp.CheckpointManager(root / which, options=options)
                          for which in ("latest", "best")}

    def latest_step(self, which: str = "latest") -> int | None:
        """Step of the newest checkpoint in a series, or None."""
        return self._managers[which].latest_step()

    def save(self, which: str, step: int, state: Any, record: dict) -> None:
        """Saves state + record under `step` (asynchronously; call `wait` before reading it back)."""
        self._managers[which].save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), record=ocp.args.JsonSave(record)), force=True)

    def restore(self, which: str, like_state: Any) -> tuple[Any, dict] | None:
        """Newest checkpoint of a series restored with the shapes, dtypes and shardings of `like_state`."""
        manager = self._managers[which]
        manager.wait_until_finished()
        step = manager.latest_step()
        if step is None:
            return None
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, like_state)
        try:
            restored = manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), record=ocp.args.JsonRestore()))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(
                f"the '{which}' checkpoint at step {step} in {manager.directory} does not fit the model built "
                f"from the config (another model, number of classes or transfer mode?): {e}. Use a new workdir "
                "or the original config.") from e
        return restored["state"], dict(restored["record"])

    def wait(self) -> None:
        """Blocks until every pending save is on disk."""
        for manager in self._managers.values():
            manager.wait_until_finished()

    def close(self) -> None:
        """Finishes pending saves and releases the managers."""
        for manager in self._managers.values():
            manager.close()
