"""Which weights are tested: per-epoch validation of the trained weights (and their EMA), the best-so-far
rule, and early stopping.

Every epoch ends with a validation of the trained weights and, with `config.train.ema_decay` > 0, of their
exponential moving average; the better of the two on the selection metric is that epoch's candidate, and
the best candidate over epochs is the checkpoint tested once at the end (`record['best_weights']` says
which kind it is). With `config.train.patience` = p > 0, training stops after p validations without a new
best (MedMNIST+ uses 5 on validation loss; here the selection metric), and the run records where and why.
"""

from __future__ import annotations

import math

WEIGHTS = ("raw", "ema")


def metric_value(metrics: dict, name: str) -> float:
    """The selection metric of one validation, -inf where it is missing or NaN (never selected)."""
    value = metrics.get(name)
    return float("-inf") if value is None or math.isnan(value) else float(value)


def best_candidate(validations: dict[str, dict], metric: str) -> tuple[str, float]:
    """(weights, score) of the better validation among {'raw': ..., 'ema': ...} (raw wins ties)."""
    name = max(validations, key=lambda k: (metric_value(validations[k], metric), k == "raw"))
    return name, metric_value(validations[name], metric)


def update_best(record: dict, weights: str, score: float, epoch: int, step: int) -> bool:
    """Records (weights, score) as the best so far when it beats the record (the first epoch always
    does); returns whether it did."""
    improved = score > record["best_score"] or record["best_epoch"] < 0
    if improved:
        record.update(best_score=score, best_epoch=epoch, best_step=step, best_weights=weights)
    return improved


def stop_reason(record: dict, patience: int) -> str | None:
    """'early_stopping' when the last `patience` validations brought no new best (0 = never), else None."""
    if patience and record["epoch"] - record["best_epoch"] >= patience:
        return "early_stopping"
    return None


def stopping_summary(record: dict, total_steps: int, patience: int) -> dict:
    """results.json's 'stopping': where training ended and why ('completed' or 'early_stopping')."""
    stopped = record.get("stopped")
    return {"reason": stopped["reason"] if stopped else "completed", "patience": patience,
            "epoch": record["epoch"], "step": stopped["step"] if stopped else total_steps,
            "planned_steps": total_steps}
