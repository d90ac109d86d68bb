"""Optimizers and learning-rate schedules chosen by config (optax), with epoch-based milestones.

Weight decay touches kernels only (ndim > 1): biases and BatchNorm scales are left alone, the usual
practice for ResNets and EfficientNets.
"""

from __future__ import annotations

import jax
import ml_collections
import optax

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "warmup_cosine", "multistep")


def warmup_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
    """Warm-up length in steps: `schedule.warmup_steps` when set (>= 0), else `warmup_epochs` epochs."""
    steps = int(config.schedule.get("warmup_steps", -1))
    return steps if steps >= 0 else int(round(config.schedule.warmup_epochs * steps_per_epoch))


def total_epochs(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
    """Epochs of a run: `train.epochs`, or for a recipe in optimizer steps (`train.steps` > 0) as many
    epochs as reach that many steps on this dataset, so a small and a large set both get the same number of
    updates."""
    steps = int(config.train.get("steps", 0))
    return -(-steps // steps_per_epoch) if steps > 0 else int(config.train.epochs)


def make_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
    """Learning rate per step from `config.schedule` and the peak rate `config.optimizer.lr`."""
    lr, sched = config.optimizer.lr, config.schedule
    warmup = warmup_steps(config, steps_per_epoch)
    if sched.name == "constant":
        main = optax.constant_schedule(lr)
    elif sched.name == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0 if warmup else lr, peak_value=lr, warmup_steps=warmup,
            decay_steps=max(total_steps, warmup + 1), end_value=lr * sched.final_lr_fraction)
    elif sched.name == "multistep":
        boundaries = {int(round(e * steps_per_epoch)): sched.decay_factor for e in sched.milestones_epochs}
        main = optax.piecewise_constant_schedule(lr, {b - warmup: f for b, f in boundaries.items() if b > warmup})
    else:
        raise ValueError(f"config.schedule.name={sched.name!r} is not one of {SCHEDULES}")
    if not warmup:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def _decay_mask(params):
    return jax.tree_util.tree_map(lambda p: p.ndim > 1, params)


def make_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int,
                   total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optax transformation for `config.optimizer` and its schedule."""
    opt = config.optimizer
    schedule = make_schedule(config, steps_per_epoch, total_steps)
    if opt.name == "sgd":
        parts = [optax.add_decayed_weights(opt.weight_decay, mask=_decay_mask)] if opt.weight_decay else []
        parts.append(optax.sgd(schedule, momentum=opt.momentum or None, nesterov=opt.nesterov))
        tx = optax.chain(*parts)
    elif opt.name == "adam":
        tx = optax.adam(schedule)
    elif opt.name == "adamw":
        tx = optax.adamw(schedule, weight_decay=opt.weight_decay, mask=_decay_mask)
    else:
        raise ValueError(f"config.optimizer.name={opt.name!r} is not one of {OPTIMIZERS}")
    if opt.grad_clip_norm:
        tx = optax.chain(optax.clip_by_global_norm(opt.grad_clip_norm), tx)
    return tx, schedule
