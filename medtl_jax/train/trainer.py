"""The trainer. Reads top to bottom: set-up, state, step, loop, evaluation, checkpoint.

`train_and_evaluate(config, workdir)` trains a classifier or a segmenter chosen by the data's task family (its
parts come from `medtl_jax.train.families`; the optimizer is wrapped for the transfer mode by
`medtl_jax.transfer.modes`), validates every epoch, keeps
the checkpoint with the best validation metric, evaluates the test split once with it, and writes
`results.json` and `report.md`. Rerunning the same command on the same workdir resumes from the latest
checkpoint (mid-epoch too: the data order is a pure function of seed, epoch and step).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import pathlib
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from tqdm import tqdm

from medtl_jax.runtime import parallel
from medtl_jax.runtime.run_folder import RunDir
from medtl_jax.runtime.checkpoint import ModelVariables, RunCheckpoints
from medtl_jax.config.validate import validate_config
from medtl_jax.data import load_data
from medtl_jax.data.subsets.training_subset import select_training_data
from medtl_jax.runtime.metric_log import MetricLog
from medtl_jax.train.families import builder_for
from medtl_jax.train.run_parts import RunParts
from medtl_jax.weights.model_input import fold_pretrained
from medtl_jax.models import get_spec
from medtl_jax.transfer.optimizer import make_optimizer, total_epochs
from medtl_jax.runtime.preemption import PreemptionWatch, Preempted
from medtl_jax.train import selection
from medtl_jax.train.finite_checkpoints import NonFiniteLossError, diverged, save_finite
from medtl_jax.train.run_report import render_run_report
from medtl_jax.transfer.modes import init_kind, initialize, wrap_optimizer
from medtl_jax.weights.init_source import load_init_variables

log = logging.getLogger(__name__)


@flax.struct.dataclass
class TrainState:
    """Everything a resumed run needs besides the data position (which is `step`). `ema` holds the
    exponential moving averages {'params', 'batch_stats'} when `config.train.ema_decay` > 0, else None."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array
    ema: Any = None

    def variables(self, ema: bool = False) -> ModelVariables:
        """The weights a model is evaluated with: the trained ones, or (`ema`) their moving average."""
        if ema:
            return ModelVariables(params=self.ema["params"], batch_stats=self.ema["batch_stats"])
        return ModelVariables(params=self.params, batch_stats=self.batch_stats)


# ----------------------------------------------------------------------------------------------------
# Set-up: data, task, model, input pipeline, mesh, optimizer.
# ----------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Setup:
    """What the run is made of, derived from the config once (task-specific parts in `parts`)."""

    data: Any
    parts: RunParts
    mesh: Any
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    steps_per_epoch: int
    total_steps: int
    aux_loss_weight: float = 0.0
    grad_accum_steps: int = 1
    bn_groups: int = 1  # >1: BatchNorm statistics per group of rows (one group per device)
    ema_decay: float = 0.0  # >0: moving averages of params and BN statistics kept in the state

    @property
    def epochs(self) -> int:
        return self.total_steps // self.steps_per_epoch

    @property
    def task(self):
        return self.parts.task

    @property
    def model(self):
        return self.parts.model


def make_setup(config: ml_collections.ConfigDict) -> Setup:
    """Validates the config and builds the data, task, model, epochs, evaluator, mesh and optimizer."""
    validate_config(config)
    return build_setup(config)


def build_setup(config: ml_collections.ConfigDict) -> Setup:
    """`make_setup` for a config already validated (`validate_config`)."""
    data = select_training_data(config.data, load_data(config.data))  # train_sites, train_fraction
    mesh = parallel.make_mesh(config.mesh.num_devices)
    if len(data.sources["validation"]) == 0:
        raise ValueError(f"the validation split of config.data.name={config.data.name!r} "
                         f"(subset {config.data.subset!r}) is empty: the tested checkpoint is chosen on it; "
                         "give the dataset a validation split")
    parallel.check_batch_size(config.train.batch_size, mesh, "config.train.batch_size")
    parallel.check_batch_size(config.train.eval_batch_size, mesh, "config.train.eval_batch_size")
    parts = builder_for(data.info).parts(config, data, mesh)
    if parts.steps_per_epoch == 0:
        raise ValueError(f"config.train.batch_size={config.train.batch_size} exceeds the "
                         f"{len(data.sources['train'])} training examples used")
    total_steps = parts.steps_per_epoch * total_epochs(config, parts.steps_per_epoch)
    tx, schedule = make_optimizer(config, parts.steps_per_epoch, total_steps)
    rngs = {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}
    shapes = jax.eval_shape(lambda: parts.model.init(rngs, jnp.zeros((1, *parts.input_shape)), train=False))
    tx = wrap_optimizer(tx, shapes["params"], config.model.name, config.transfer)
    accum = int(config.train.grad_accum_steps)
    if accum < 1 or config.train.batch_size % (accum * mesh.devices.size):
        raise ValueError(f"config.train.grad_accum_steps={accum} must be >= 1 and split "
                         f"config.train.batch_size={config.train.batch_size} into micro-batches divisible by "
                         f"the {mesh.devices.size} devices")
    return Setup(data, parts, mesh, tx, schedule, parts.steps_per_epoch, total_steps,
                 aux_loss_weight=float(config.model.aux_loss_weight), grad_accum_steps=accum,
                 bn_groups=bn_groups(config, mesh), ema_decay=float(config.train.get("ema_decay", 0.0)))


def bn_groups(config: ml_collections.ConfigDict, mesh) -> int:
    """How many groups of rows get their own BatchNorm statistics: 1 for 'global' (statistics of the
    whole global batch, what SyncBN computes), one per device for 'per_device' (what pmap code without an
    axis_name computes; results then depend on the device count)."""
    return mesh.devices.size if config.mesh.get("batch_norm", "global") == "per_device" else 1


# ----------------------------------------------------------------------------------------------------
# State: random, ImageNet (or any stored) initialisation, Mean-Var or partial transfusion; replicated.
# ----------------------------------------------------------------------------------------------------

def pretrained_skip(config: ml_collections.ConfigDict, variables: dict) -> tuple[str, ...]:
    """Variable paths that stay freshly initialised under pretrained init: everything outside the
    backbone (head, decoder), a CIFAR-style stem, and Inception's auxiliary classifier (its converted
    weights are not kept; it is trained anew)."""
    skip = [k for k in variables["params"] if k != "backbone"]
    if config.model.stem == "cifar":
        skip.append("backbone/conv1")
    if config.model.aux_loss_weight > 0:
        skip.append("backbone/AuxLogits")
    return tuple(skip)


def create_state(config: ml_collections.ConfigDict, s: Setup) -> TrainState:
    """Initial TrainState (see `medtl_jax.transfer.modes.initialize`), placed replicated on the mesh."""
    rng = jax.random.PRNGKey(config.seed)
    init_rng, dropout_rng, state_rng, resample_rng = jax.random.split(rng, 4)
    dummy = jnp.zeros((1, *s.parts.input_shape), jnp.float32)
    variables = jax.jit(lambda r, d: s.model.init({"params": r, "dropout": d}, dummy, train=False))(
        init_rng, dropout_rng)
    variables = jax.device_get(variables)
    pretrained = load_init_variables(config.model.init, config.model.name,
                                     weights_file=config.model.weights_file, store_dir=config.model.weights_dir)
    if pretrained is not None:
        pretrained = fold_pretrained(pretrained, get_spec(config.model.name), config.model.name,
                                     config.model.in_channels)
    variables = initialize(variables, config.model.name, init_kind(config.model.init), pretrained=pretrained,
                           transfusion_stages=config.transfer.transfusion_stages, rng=resample_rng,
                           skip=pretrained_skip(config, variables))
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    ema = {"params": params, "batch_stats": batch_stats} if s.ema_decay else None
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                       opt_state=s.tx.init(params), rng=state_rng, ema=ema)
    return jax.device_put(state, parallel.replicated(s.mesh))


# ----------------------------------------------------------------------------------------------------
# Step: one jit-compiled SGD step, batch sharded over the data axis, state replicated and donated.
# ----------------------------------------------------------------------------------------------------

def moving_average(ema, params, batch_stats, step, decay: float):
    """The EMA after one more step (None without EMA). The decay ramps up as min(decay, (1 + t) / (10 + t)),
    so early averages are not dominated by the random or ImageNet starting point (TF's num_updates rule)."""
    if ema is None:
        return None
    rate = jnp.minimum(decay, (1.0 + step) / (10.0 + step))
    return optax.incremental_update({"params": params, "batch_stats": batch_stats}, ema, 1.0 - rate)


def make_train_step(s: Setup):
    """The compiled train step: (state, batch) -> (state, metrics).

    With `grad_accum_steps` k > 1 the global batch is split into k micro-batches (rows j, j+k, j+2k, ...,
    so every device keeps its share of each) whose gradients are averaged before one optimizer update:
    the same update as the whole batch at 1/k of the activation memory. BatchNorm then normalises with
    each micro-batch's statistics and updates its running ones k times (as in PyTorch accumulation);
    with frozen statistics (`config.transfer.bn='frozen'`) the result equals the large batch exactly.
    `config.mesh.batch_norm='per_device'` normalises each device's rows with their own statistics.
    """
    k, g = s.grad_accum_steps, s.bn_groups

    def forward(params, batch_stats, images, rng):
        return s.model.apply(
            {"params": params, "batch_stats": batch_stats}, images, train=True,
            mutable=["batch_stats", "intermediates"], rngs={"dropout": rng},
            capture_intermediates=(lambda mdl, _: mdl.name == "backbone") if s.aux_loss_weight else False)

    def grouped_forward(params, batch_stats, images, rng):
        """Per-device BatchNorm: each device's rows form a group normalised by its own statistics; the
        running statistics are averaged over groups (as pmap code averages them across devices)."""
        rows = images.reshape(g, images.shape[0] // g, *images.shape[1:])
        rows = jax.lax.with_sharding_constraint(rows, parallel.batch_sharded(s.mesh))
        logits, updates = jax.vmap(forward, in_axes=(None, None, 0, 0))(
            params, batch_stats, rows, jax.random.split(rng, g))
        merge = lambda x: x.reshape(-1, *x.shape[2:])  # noqa: E731
        return merge(logits), {"batch_stats": jax.tree_util.tree_map(lambda x: x.mean(0), updates["batch_stats"]),
                               "intermediates": jax.tree_util.tree_map(merge, updates.get("intermediates", {}))}

    def loss_fn(params, batch_stats, batch, rng):
        logits, updates = (forward if g == 1 else grouped_forward)(params, batch_stats, batch["image"], rng)
        loss = s.task.batch_loss(logits, batch).mean()
        if s.aux_loss_weight:  # Inception's auxiliary classifier (Szegedy et al. weigh it 0.4)
            aux = updates["intermediates"]["backbone"]["__call__"][0]["aux_logits"][:, 0, 0, :]
            loss = loss + s.aux_loss_weight * s.task.loss(aux.astype(jnp.float32), batch["label"]).mean()
        return loss, updates["batch_stats"]

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def accumulated(params, batch_stats, batch, rng):
        micro = jax.tree_util.tree_map(
            lambda x: jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1), batch)

        def body(carry, xs):
            loss_sum, grad_sum, stats = carry
            j, mb = xs
            (loss, stats), grads = grad_fn(params, stats, mb, jax.random.fold_in(rng, j))
            return (loss_sum + loss, jax.tree_util.tree_map(jnp.add, grad_sum, grads), stats), None

        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        (loss, grads, stats), _ = jax.lax.scan(body, (jnp.zeros((), jnp.float32), zeros, batch_stats),
                                               (jnp.arange(k), micro))
        return (loss / k, stats), jax.tree_util.tree_map(lambda g: g / k, grads)

    def train_step(state: TrainState, batch: dict):
        rng = jax.random.fold_in(state.rng, state.step)
        compute = grad_fn if k == 1 else accumulated
        (loss, batch_stats), grads = compute(state.params, state.batch_stats, batch, rng)
        updates, opt_state = s.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state,
                                  ema=moving_average(state.ema, params, batch_stats, state.step, s.ema_decay))
        return new_state, {"loss": loss, "grad_norm": optax.global_norm(grads), "lr": s.schedule(state.step)}

    rep, shard = parallel.replicated(s.mesh), parallel.batch_sharded(s.mesh)
    return jax.jit(train_step, in_shardings=(rep, shard), out_shardings=(rep, rep), donate_argnums=(0,))


# ----------------------------------------------------------------------------------------------------
# Loop: epochs of steps, validation each epoch, latest + best checkpoints; resumes where it stopped.
# ----------------------------------------------------------------------------------------------------

def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, *,
                       allow_config_change: tuple[str, ...] = ()) -> dict:
    """Trains, selects the best validation checkpoint, tests it once; returns the results dict.

    Everything is checked before the run folder is touched: the config, the workdir, and (on resume) that
    the folder's run has the same config, except for the fields named in `allow_config_change`."""
    t_start = time.time()
    workdir = pathlib.Path(workdir)
    run_dir = RunDir(workdir)
    validate_config(config)
    run_dir.check_writable()
    current = json.loads(config.to_json_best_effort())
    changes = run_dir.check_resume(current, allow_config_change)
    s = build_setup(config)
    workdir.mkdir(parents=True, exist_ok=True)
    state = create_state(config, s)
    ckpts = RunCheckpoints(run_dir.path)
    try:
        results = _train_and_test(config, run_dir, s, state, ckpts, current, changes, t_start)
    except BaseException:
        with contextlib.suppress(Exception):  # the first error is the one to report
            ckpts.close()
        raise
    ckpts.close()
    return results


def _train_and_test(config, run_dir: RunDir, s: Setup, state: TrainState, ckpts: RunCheckpoints,
                    current: dict, changes: dict, t_start: float) -> dict:
    record = {"epoch": 0, "best_score": float("-inf"), "best_epoch": -1, "train_seconds": 0.0}
    restored = ckpts.restore("latest", state)
    if restored is not None:
        state, record = restored
        log.info("resumed from step %d (epoch %d)", int(state.step), record["epoch"])
    if changes:
        log.warning("continuing with config changes allowed on purpose: %s",
                    "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items()))
    if jax.process_index() == 0:
        run_dir.record_config(current, changes, int(state.step))
    metric_log = MetricLog(run_dir, resume_step=int(state.step))
    train_step = make_train_step(s)

    step = int(state.step)
    with PreemptionWatch() as preemption, tqdm(total=s.total_steps, initial=step, desc="train", unit="step",
                                               dynamic_ncols=True, disable=jax.process_index() != 0) as bar:
        t_train = time.time()
        while step < s.total_steps and not record.get("stopped"):
            epoch, offset = divmod(step, s.steps_per_epoch)
            t_mark, step_mark = time.time(), step
            for batch in s.parts.train_epoch(epoch, offset):
                state, step_metrics = train_step(state, parallel.to_global(batch, s.mesh))
                step += 1
                if step % config.train.log_every_steps == 0 or step % s.steps_per_epoch == 0:
                    host = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
                    if not np.isfinite(host["loss"]):
                        ckpts.wait()
                        raise diverged(f"training loss became {host['loss']}", step, ckpts, run_dir)
                    rate = (step - step_mark) * config.train.batch_size / max(time.time() - t_mark, 1e-9)
                    metric_log.write(step, "train", {**host, "images_per_second": rate})
                    bar.set_postfix(loss=f"{host['loss']:.4f}", img_s=f"{rate:.0f}", epoch=epoch + 1)
                bar.update(1)
                mid_epoch = step % s.steps_per_epoch != 0
                if mid_epoch and preemption.requested():
                    record["train_seconds"] += time.time() - t_train
                    save_finite(ckpts, ("latest",), step, state, record, run_dir)
                    ckpts.wait()
                    raise Preempted(f"{preemption.reason} received: stopped at step {step} with a checkpoint in "
                                    f"{run_dir.checkpoint_dir('latest')}; rerun the same command to resume")
                every = config.train.checkpoint_every_steps
                if mid_epoch and every and step % every == 0:
                    record["train_seconds"] += time.time() - t_train
                    t_train = time.time()
                    save_finite(ckpts, ("latest",), step, state, record, run_dir)
            # Validation at the end of each epoch (trained weights, and their EMA); the best is kept.
            validations = {"raw": s.parts.evaluator.validate(state.variables())}
            if state.ema is not None:
                validations["ema"] = s.parts.evaluator.validate(state.variables(ema=True))
            for weights, val in validations.items():
                metric_log.write(step, "val" if weights == "raw" else "val_ema", val)
            record["epoch"] = epoch + 1
            record["train_seconds"] += time.time() - t_train
            t_train = time.time()
            weights, score = selection.best_candidate(validations, s.parts.select_metric)
            improved = selection.update_best(record, weights, score, epoch + 1, step)
            reason = selection.stop_reason(record, config.train.patience) if step < s.total_steps else None
            if reason:
                record["stopped"] = {"reason": reason, "step": step}
            if improved and weights == "ema":  # the tested checkpoint holds the averaged weights
                save_finite(ckpts, ("best",), step, state.replace(params=state.ema["params"],
                                                                  batch_stats=state.ema["batch_stats"]), record, run_dir)
            save_finite(ckpts, ("best", "latest") if improved and weights == "raw" else ("latest",), step, state,
                        record, run_dir)
            if jax.process_index() == 0:
                tqdm.write(f"epoch {epoch + 1}/{s.epochs}: val {s.parts.select_metric} {score:.4f} ({weights} "
                           f"weights; best {record['best_score']:.4f} at epoch {record['best_epoch']})"
                           + (f"; {reason}: no new best in {config.train.patience} epochs" if reason else ""))
            if step < s.total_steps and not reason and preemption.requested():
                ckpts.wait()
                raise Preempted(f"{preemption.reason} received: stopped after epoch {epoch + 1} (step {step}) with "
                                f"a checkpoint in {run_dir.checkpoint_dir('latest')}; rerun the same command to "
                                "resume")
    ckpts.wait()

    # ------------------------------------------------------------------------------------------------
    # Evaluation: the best validation checkpoint, on validation and (once) on test.
    # ------------------------------------------------------------------------------------------------
    best_state, best_record = ckpts.restore("best", state)
    results: dict[str, Any] = s.parts.evaluator.final(best_state.variables(), run_dir)
    results["selection"] = {"metric": s.parts.select_metric, "best_epoch": best_record["best_epoch"],
                            "best_step": best_record.get("best_step"), "val_score": best_record["best_score"],
                            "weights": best_record.get("best_weights", "raw")}
    results["stopping"] = selection.stopping_summary(record, s.total_steps, int(config.train.patience))
    results["data"] = {**dataclasses.asdict(s.data.info), "train_examples_used": len(s.data.sources["train"]),
                       "validation_examples_used": len(s.data.sources["validation"])}
    results["timing"] = {"train_seconds": round(record["train_seconds"], 1),
                         "total_seconds_this_invocation": round(time.time() - t_start, 1),
                         "steps": results["stopping"]["step"], "steps_per_epoch": s.steps_per_epoch}
    results["environment"] = {"jax": jax.__version__, "backend": jax.default_backend(),
                              "devices": jax.device_count(), "processes": jax.process_count()}
    results["config"] = current
    results["config_changes"] = run_dir.config_changes()
    metric_log.write(s.total_steps, "test", results["test"])
    metric_log.close()
    if jax.process_index() == 0:
        run_dir.write_results(results, render_run_report(results))
    return results
