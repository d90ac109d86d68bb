"""The trainer. Reads top to bottom: set-up, state, step, loop, evaluation, checkpoint.

`train_and_evaluate(config, workdir)` trains a classifier chosen by config, validates every epoch, keeps
the checkpoint with the best validation metric, evaluates the test split once with it, and writes
`results.json` and `report.md`. Rerunning the same command on the same workdir resumes from the latest
checkpoint (mid-epoch too: the data order is a pure function of seed, epoch and step).
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import pathlib
import time
from typing import Any

import flax
from flax import traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from tqdm import tqdm

from medtl_jax import evaluate, parallel
from medtl_jax.atomic_io import write_bytes_atomic, write_json_atomic
from medtl_jax.checkpoint import RunCheckpoints
from medtl_jax.config_checks import validate_config
from medtl_jax.data import load_data
from medtl_jax.data.pipeline import Augment, Preprocess, as_iterator, train_batches
from medtl_jax.metric_log import MetricLog
from medtl_jax.model_input import backbone_kwargs, check_in_channels, fold_pretrained, input_normalization
from medtl_jax.models import build_classifier, get_spec
from medtl_jax.optim import make_optimizer
from medtl_jax.report.run_report import write_run_report
from medtl_jax.tasks import make_task
from medtl_jax.weights.init_source import load_init_variables
from medtl_jax.weights.store import merge_pretrained

log = logging.getLogger(__name__)


@flax.struct.dataclass
class TrainState:
    """Everything a resumed run needs besides the data position (which is `step`)."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array


class NonFiniteLossError(RuntimeError):
    """Raised when the training loss becomes NaN or infinite; the last good checkpoint is kept."""


# ----------------------------------------------------------------------------------------------------
# Set-up: data, task, model, input pipeline, mesh, optimizer.
# ----------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Setup:
    """What the run is made of, derived from the config once."""

    data: Any
    task: Any
    model: Any
    preprocess: Preprocess
    augment: Augment | None
    mesh: Any
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    steps_per_epoch: int
    total_steps: int
    aux_loss_weight: float = 0.0


def make_setup(config: ml_collections.ConfigDict) -> Setup:
    """Validates the config and builds the data, task, model, pipeline settings, mesh and optimizer."""
    validate_config(config)
    data = load_data(config.data)
    task = make_task(data.info.task, data.info.num_classes, data.info.label_names)
    spec = get_spec(config.model.name)
    check_in_channels(config.model.name, config.model.in_channels, data.info.channels)
    dtype = jnp.bfloat16 if config.model.dtype == "bfloat16" else jnp.float32
    aux_outputs = task.num_outputs if config.model.aux_loss_weight > 0 else 0
    model = build_classifier(config.model.name, task.num_outputs, stem=config.model.stem, dtype=dtype,
                             **backbone_kwargs(config.model.name, config.model.in_channels, aux_outputs))
    dropout = spec.dropout_rate if config.model.dropout_rate < 0 else config.model.dropout_rate
    model = model.clone(dropout_rate=dropout)
    mean, std = input_normalization(spec, config.model.name, config.model.in_channels)
    preprocess = Preprocess(input_size=config.data.input_size or spec.default_input_size, mean=mean, std=std,
                            resize_method=config.data.resize_method)
    a = config.augment
    augment = (Augment(flip=a.flip, rotate_degrees=a.rotate_degrees, crop_scale=a.crop_scale,
                       brightness=a.brightness, contrast=a.contrast) if a.enabled else None)
    mesh = parallel.make_mesh(config.mesh.num_devices)
    parallel.check_batch_size(config.train.batch_size, mesh, "config.train.batch_size")
    parallel.check_batch_size(config.train.eval_batch_size, mesh, "config.train.eval_batch_size")
    steps_per_epoch = len(data.sources["train"]) // config.train.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"config.train.batch_size={config.train.batch_size} exceeds the "
                         f"{len(data.sources['train'])} training examples")
    total_steps = steps_per_epoch * config.train.epochs
    tx, schedule = make_optimizer(config, steps_per_epoch, total_steps)
    return Setup(data, task, model, preprocess, augment, mesh, tx, schedule, steps_per_epoch, total_steps,
                 aux_loss_weight=float(config.model.aux_loss_weight))


# ----------------------------------------------------------------------------------------------------
# State: random or ImageNet initialisation, replicated over the mesh.
# ----------------------------------------------------------------------------------------------------

def pretrained_skip(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """Variable paths that stay freshly initialised under pretrained init: the head, a CIFAR-style stem,
    and Inception's auxiliary classifier (its converted weights are not kept; it is trained anew)."""
    skip = ["head"]
    if config.model.stem == "cifar":
        skip.append("backbone/conv1")
    if config.model.aux_loss_weight > 0:
        skip.append("backbone/AuxLogits")
    return tuple(skip)


def create_state(config: ml_collections.ConfigDict, s: Setup) -> TrainState:
    """Initial TrainState (ImageNet backbone + fresh head, or scratch), placed replicated on the mesh."""
    rng = jax.random.PRNGKey(config.seed)
    init_rng, dropout_rng, state_rng = jax.random.split(rng, 3)
    size = s.preprocess.input_size
    dummy = jnp.zeros((1, size, size, s.preprocess.channels), jnp.float32)
    variables = jax.jit(lambda r, d: s.model.init({"params": r, "dropout": d}, dummy, train=False))(
        init_rng, dropout_rng)
    variables = jax.device_get(variables)
    pretrained = load_init_variables(config.model.init, config.model.name,
                                     weights_file=config.model.weights_file, store_dir=config.model.weights_dir)
    if pretrained is not None:
        pretrained = fold_pretrained(pretrained, get_spec(config.model.name), config.model.name,
                                     config.model.in_channels)
        variables = merge_pretrained(variables, pretrained, skip=pretrained_skip(config))
    params = variables["params"]
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                       batch_stats=variables.get("batch_stats", {}), opt_state=s.tx.init(params),
                       rng=state_rng)
    return jax.device_put(state, parallel.replicated(s.mesh))


# ----------------------------------------------------------------------------------------------------
# Step: one jit-compiled SGD step, batch sharded over the data axis, state replicated and donated.
# ----------------------------------------------------------------------------------------------------

def make_train_step(s: Setup):
    """The compiled train step: (state, batch) -> (state, metrics)."""

    def train_step(state: TrainState, batch: dict):
        rng = jax.random.fold_in(state.rng, state.step)

        def loss_fn(params):
            logits, updates = s.model.apply(
                {"params": params, "batch_stats": state.batch_stats}, batch["image"], train=True,
                mutable=["batch_stats", "intermediates"], rngs={"dropout": rng},
                capture_intermediates=(lambda mdl, _: mdl.name == "backbone") if s.aux_loss_weight else False)
            loss = s.task.loss(logits, batch["label"]).mean()
            if s.aux_loss_weight:  # Inception's auxiliary classifier (Szegedy et al. weigh it 0.4)
                aux = updates["intermediates"]["backbone"]["__call__"][0]["aux_logits"][:, 0, 0, :]
                loss = loss + s.aux_loss_weight * s.task.loss(aux.astype(jnp.float32), batch["label"]).mean()
            return loss, updates["batch_stats"]

        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = s.tx.update(grads, state.opt_state, state.params)
        new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                                  batch_stats=batch_stats, opt_state=opt_state)
        return new_state, {"loss": loss, "grad_norm": optax.global_norm(grads), "lr": s.schedule(state.step)}

    rep, shard = parallel.replicated(s.mesh), parallel.batch_sharded(s.mesh)
    return jax.jit(train_step, in_shardings=(rep, shard), out_shardings=(rep, rep), donate_argnums=(0,))


# ----------------------------------------------------------------------------------------------------
# Loop: epochs of steps, validation each epoch, latest + best checkpoints; resumes where it stopped.
# ----------------------------------------------------------------------------------------------------

def _epoch_batches(config, s: Setup, epoch: int, start: int):
    ds = train_batches(s.data.sources["train"], batch_size=config.train.batch_size // jax.process_count(),
                       seed=config.seed, epoch=epoch, preprocess=s.preprocess, augment=s.augment,
                       shard_index=jax.process_index(), shard_count=jax.process_count())
    return as_iterator(ds[start:])


def _select(metrics: dict, name: str) -> float:
    value = metrics.get(name, float("nan"))
    return float("-inf") if value is None or np.isnan(value) else float(value)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict:
    """Trains, selects the best validation checkpoint, tests it once; returns the results dict."""
    t_start = time.time()
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    s = make_setup(config)
    _record_config(config, workdir)
    state = create_state(config, s)
    ckpts = RunCheckpoints(workdir)
    record = {"epoch": 0, "best_score": float("-inf"), "best_epoch": -1, "train_seconds": 0.0}
    restored = ckpts.restore("latest", state)
    if restored is not None:
        state, record = restored
        log.info("resumed from step %d (epoch %d)", int(state.step), record["epoch"])
    metric_log = MetricLog(workdir, resume_step=int(state.step))
    train_step = make_train_step(s)
    eval_step = evaluate.make_eval_step(s.model, s.task, s.mesh)

    step = int(state.step)
    bar = tqdm(total=s.total_steps, initial=step, desc="train", unit="step", dynamic_ncols=True,
               disable=jax.process_index() != 0)
    t_train = time.time()
    while step < s.total_steps:
        epoch, offset = divmod(step, s.steps_per_epoch)
        t_mark, step_mark = time.time(), step
        for batch in _epoch_batches(config, s, epoch, offset):
            state, step_metrics = train_step(state, parallel.to_global(batch, s.mesh))
            step += 1
            if step % config.train.log_every_steps == 0 or step % s.steps_per_epoch == 0:
                host = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
                if not np.isfinite(host["loss"]):
                    ckpts.wait()
                    raise NonFiniteLossError(
                        f"training loss became {host['loss']} at step {step}; the last good checkpoint "
                        f"(step {ckpts.latest_step()}) is kept in {workdir / 'checkpoints' / 'latest'}")
                rate = (step - step_mark) * config.train.batch_size / max(time.time() - t_mark, 1e-9)
                metric_log.write(step, "train", {**host, "images_per_second": rate})
                bar.set_postfix(loss=f"{host['loss']:.4f}", img_s=f"{rate:.0f}", epoch=epoch + 1)
            bar.update(1)
        # Validation at the end of each epoch; the best checkpoint by the selection metric is kept.
        val = evaluate.score(s.task, evaluate.predict(
            eval_step, state, s.data.sources["validation"], global_batch=config.train.eval_batch_size,
            preprocess=s.preprocess, mesh=s.mesh), threshold=config.eval.threshold)
        metric_log.write(step, "val", val)
        record["epoch"] = epoch + 1
        record["train_seconds"] += time.time() - t_train
        t_train = time.time()
        score = _select(val, config.train.select_metric)
        if score > record["best_score"] or record["best_epoch"] < 0:
            record.update(best_score=score, best_epoch=epoch + 1, best_step=step)
            ckpts.save("best", step, state, record)
        ckpts.save("latest", step, state, record)
        tqdm.write(f"epoch {epoch + 1}/{config.train.epochs}: val {config.train.select_metric} "
                   f"{val.get(config.train.select_metric, float('nan')):.4f} (best {record['best_score']:.4f} "
                   f"at epoch {record['best_epoch']})")
    bar.close()
    ckpts.wait()

    # ------------------------------------------------------------------------------------------------
    # Evaluation: the best validation checkpoint, on validation and (once) on test.
    # ------------------------------------------------------------------------------------------------
    best_state, best_record = ckpts.restore("best", state)
    results: dict[str, Any] = {}
    for split, name in (("validation", "val"), ("test", "test")):
        preds = evaluate.predict(eval_step, best_state, s.data.sources[split],
                                 global_batch=config.train.eval_batch_size, preprocess=s.preprocess, mesh=s.mesh)
        results[name] = evaluate.score(s.task, preds, threshold=config.eval.threshold,
                                       bootstrap_samples=config.eval.bootstrap_samples, seed=config.seed)
        _write_predictions(workdir / f"predictions_{name}.npz", preds)
    results["selection"] = {"metric": config.train.select_metric, "best_epoch": best_record["best_epoch"],
                            "best_step": best_record.get("best_step"), "val_score": best_record["best_score"]}
    results["data"] = dataclasses.asdict(s.data.info)
    results["timing"] = {"train_seconds": round(record["train_seconds"], 1),
                         "total_seconds_this_invocation": round(time.time() - t_start, 1),
                         "steps": s.total_steps, "steps_per_epoch": s.steps_per_epoch}
    results["environment"] = {"jax": jax.__version__, "backend": jax.default_backend(),
                              "devices": jax.device_count(), "processes": jax.process_count()}
    results["config"] = json.loads(config.to_json_best_effort())
    metric_log.write(s.total_steps, "test", results["test"])
    metric_log.close()
    ckpts.close()
    if jax.process_index() == 0:
        write_json_atomic(workdir / "results.json", results)
        write_run_report(workdir / "report.md", results)
    return results


# ----------------------------------------------------------------------------------------------------
# Records: the config the run was started with, and the predictions it scored.
# ----------------------------------------------------------------------------------------------------

def _record_config(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> None:
    """Writes config.json; on resume, warns about any field that differs from the original run."""
    path = workdir / "config.json"
    current = json.loads(config.to_json_best_effort())
    if path.exists():
        before = json.loads(path.read_text())
        before, now = (traverse_util.flatten_dict(d, sep=".") for d in (before, current))
        changed = [k for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)]
        if changed:
            log.warning("resuming with a config that differs from the original run in: %s", ", ".join(changed))
    if jax.process_index() == 0:
        write_json_atomic(path, current)


def _write_predictions(path: pathlib.Path, preds: evaluate.Predictions) -> None:
    if jax.process_index() != 0:
        return
    buf = io.BytesIO()
    np.savez(buf, index=preds.index, labels=preds.labels, scores=preds.scores)
    write_bytes_atomic(path, buf.getvalue())
