"""Run checkpoints with orbax: `latest` (for resuming) and `best` (by validation metric) in the workdir.

Each checkpoint holds the whole TrainState (params, batch_stats, optimizer state, step, rng) plus a small
JSON record (epoch, best validation score so far), so a rerun of the same command resumes exactly.
Prediction and evaluation read only params and batch_stats (`restore_variables`).
"""

from __future__ import annotations

import contextlib
import errno
import pathlib
import shutil
from typing import Any, Iterator

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp

from medtl_jax.runtime.run_folder import CHECKPOINT_SERIES, RunDir

_DISK_FULL = ("RESOURCE_EXHAUSTED", "No space left on device")


def state_bytes(state: Any) -> int:
    """Bytes of the arrays of a pytree (what one checkpoint of it writes, before compression)."""
    return int(sum(np.dtype(x.dtype).itemsize * int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(state)))


def disk_full_error(directory: pathlib.Path, detail: str, resume_step: int | None) -> OSError:
    """The one-line ENOSPC error of a checkpoint that could not be written to `directory`."""
    resume = (f"rerun the same command to resume from step {resume_step}" if resume_step is not None else
              "rerun the same command to start again")
    return OSError(errno.ENOSPC, f"no space left on the device of {directory} for a checkpoint ({detail}); "
                                 f"the partial checkpoint was removed; free space or move the run folder, then {resume}")


@flax.struct.dataclass
class ModelVariables:
    """What a model needs to predict: its parameters and BatchNorm statistics (a jit-able pytree with the
    same attribute names as the trainer's state, so evaluators take either)."""

    params: Any
    batch_stats: Any


class RunCheckpoints:
    """The two checkpoint series of one run; `which` is 'latest' or 'best'."""

    def __init__(self, workdir: str | pathlib.Path):
        self.run_dir = RunDir(pathlib.Path(workdir).absolute())
        self.root = self.run_dir.checkpoints_dir
        options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True)
        handlers = {"state": ocp.StandardCheckpointHandler(), "record": ocp.JsonCheckpointHandler()}
        self._managers = {which: ocp.CheckpointManager(self.root / which, options=options, item_handlers=handlers)
                          for which in CHECKPOINT_SERIES}

    def latest_step(self, which: str = "latest") -> int | None:
        """Step of the newest checkpoint in a series, or None."""
        return self._managers[which].latest_step()

    def save(self, which: str, step: int, state: Any, record: dict) -> None:
        """Saves state + record under `step` (asynchronously; call `wait` before reading it back).

        A disk without room for it (checked first: the state's size, twice, as 'best' and 'latest' may be
        written together) or one that fills up while writing raises OSError(ENOSPC) naming the folder,
        with the partial checkpoint removed."""
        need = 2 * state_bytes(state)
        free = shutil.disk_usage(self.root).free
        if free < need:
            raise disk_full_error(self.root, f"needs about {need / 2**20:.0f} MiB, {free / 2**20:.0f} MiB free",
                                  self.latest_step())
        with self._disk_errors():
            self._managers[which].save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), record=ocp.args.JsonSave(record)), force=True)

    @contextlib.contextmanager
    def _disk_errors(self) -> Iterator[None]:
        """Turns orbax/tensorstore's out-of-space failures (raised by a save or a later wait) into one
        OSError(ENOSPC), after removing the unfinished '*.orbax-checkpoint-tmp*' folders."""
        try:
            yield
        except (OSError, ValueError) as err:
            if not (getattr(err, "errno", None) == errno.ENOSPC or any(s in str(err) for s in _DISK_FULL)):
                raise
            self.remove_partial()
            raise disk_full_error(self.root, "the disk filled up while writing", self._finished_latest()) from None

    def remove_partial(self) -> None:
        """Deletes checkpoints that were never finished (orbax's temporary folders)."""
        for which in self._managers:
            for tmp in (self.root / which).glob("*.orbax-checkpoint-tmp*"):
                shutil.rmtree(tmp, ignore_errors=True)

    def _finished_latest(self) -> int | None:
        return max(self.run_dir.checkpoint_steps("latest"), default=None)

    def _check_fits(self, which: str, step: int, abstract: Any, *, subset: bool = False) -> None:
        """ValueError listing the arrays whose shapes differ between the checkpoint and `abstract` (with
        `subset`, arrays only in the checkpoint are fine). Checked before any read starts: a failed read
        leaves orbax's threads half-done."""
        manager = self._managers[which]
        saved = _shapes(manager.item_metadata(step)["state"])
        wanted = _shapes(abstract)
        if subset:
            saved = {k: v for k, v in saved.items() if k.split(".")[0] in {p.split(".")[0] for p in wanted}}
        differences = _shape_differences(saved, wanted)
        if differences:
            shown = "; ".join(differences[:5]) + (f"; ... {len(differences) - 5} more" if len(differences) > 5 else "")
            raise ValueError(
                f"the '{which}' checkpoint at step {step} in {manager.directory} does not fit the model built "
                f"from the config (another model, number of classes or transfer mode?): {shown}. Use a new "
                "workdir or the original config.")

    def restore_variables(self, which: str, like: ModelVariables) -> tuple[ModelVariables, int] | None:
        """(variables, step) of the newest checkpoint of a series, reading only params and batch_stats with
        the shapes, dtypes and shardings of `like` (arrays or ShapeDtypeStructs): what prediction and
        evaluation need, without rebuilding the optimizer whose state is stored beside them."""
        manager = self._managers[which]
        manager.wait_until_finished()
        step = manager.latest_step()
        if step is None:
            return None
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct,
                                          {"params": like.params, "batch_stats": like.batch_stats})
        self._check_fits(which, step, abstract, subset=True)
        restore_args = jax.tree_util.tree_map(lambda s: ocp.ArrayRestoreArgs(sharding=s.sharding), abstract)
        restored = ocp.PyTreeCheckpointer().restore(
            self.root / which / str(step) / "state",
            args=ocp.args.PyTreeRestore(item=abstract, restore_args=restore_args, partial_restore=True))
        return ModelVariables(params=restored["params"], batch_stats=restored.get("batch_stats", {})), int(step)

    def restore(self, which: str, like_state: Any) -> tuple[Any, dict] | None:
        """Newest checkpoint of a series restored with the shapes, dtypes and shardings of `like_state`."""
        manager = self._managers[which]
        manager.wait_until_finished()
        step = manager.latest_step()
        if step is None:
            return None
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, like_state)
        self._check_fits(which, step, abstract)
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
        with self._disk_errors():
            for manager in self._managers.values():
                manager.wait_until_finished()

    def close(self) -> None:
        """Finishes pending saves and releases the managers."""
        with self._disk_errors():
            for manager in self._managers.values():
                manager.close()


def _key_name(key) -> str:
    return str(getattr(key, "key", getattr(key, "name", getattr(key, "idx", key))))


def _shapes(tree) -> dict[str, tuple]:
    """{'params.head.kernel': shape} of the array leaves of a state or of a checkpoint's metadata."""
    return {".".join(_key_name(k) for k in path): tuple(leaf.shape)
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree) if hasattr(leaf, "shape")}


def _shape_differences(saved: dict[str, tuple], wanted: dict[str, tuple]) -> list[str]:
    """Readable differences between a checkpoint's arrays and those the config's model needs."""
    out = [f"{k}: checkpoint {saved[k]} vs model {wanted[k]}" for k in sorted(saved.keys() & wanted.keys())
           if saved[k] != wanted[k]]
    out += [f"{k}: only in the model" for k in sorted(wanted.keys() - saved.keys())]
    out += [f"{k}: only in the checkpoint" for k in sorted(saved.keys() - wanted.keys())]
    return out
