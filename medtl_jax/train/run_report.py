"""report.md for one run: the numbers of results.json, with the recipe needed to cite them (and the short
report of a run evaluated on another dataset)."""

from __future__ import annotations

from medtl_jax.tasks.families import METRIC_LABELS, SEGMENTATION, family_of

_METRICS = tuple((k, METRIC_LABELS[k]) for k in ("auc", "accuracy", "balanced_accuracy", "sensitivity", "specificity",
                                                  "f1", "qwk", "ece", "dice", "iou", "hd95"))
_YOUDEN = (("sensitivity", "sensitivity"), ("specificity", "specificity"), ("f1", "F1"), ("accuracy", "ACC"))


def _fmt(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and x != x) else f"{x:.4f}"


def _transfer(cfg: dict) -> str:
    t = cfg.get("transfer", {})
    parts = [t.get("mode", "finetune")]
    if t.get("mode") == "freeze_stages":
        parts.append(f"first {t['freeze_stages']} stages frozen")
    if t.get("layer_decay", 1.0) != 1.0:
        parts.append(f"layer-wise lr decay {t['layer_decay']}")
    if t.get("transfusion_stages"):
        parts.append(f"pretrained up to stage {t['transfusion_stages']}")
    parts.append(f"BatchNorm {t.get('bn', 'train')}")
    return ", ".join(parts)


def _loss(cfg: dict, data: dict) -> str:
    loss = cfg.get("loss", {})
    if family_of(data["task"]) is SEGMENTATION:
        return loss.get("segmentation", "dice_ce")
    head = cfg.get("task", {}).get("ordinal_head", "dense") if data["task"] == "ordinal" else "dense"
    return f"imbalance strategy {loss.get('imbalance', 'none')}, {head} head"


def _length(cfg: dict, results: dict) -> str:
    """How long the run trained, and why it stopped."""
    tr, t = cfg["train"], results["timing"]
    stop = results.get("stopping") or {}
    planned = stop.get("planned_steps", t["steps"])
    spe = max(1, t["steps_per_epoch"])
    text = (f"- {tr['steps']} optimizer steps ({planned // spe} epochs of {spe} steps)" if tr.get("steps") else
            f"- {tr['epochs']} epochs")
    text += f", global batch {tr['batch_size']}, seed {cfg['seed']}"
    if stop.get("reason") == "early_stopping":
        text += (f"; stopped early after epoch {stop['epoch']} (step {stop['step']} of {planned}): no new best "
                 f"validation {results['selection']['metric']} in {stop['patience']} epochs")
    elif stop.get("patience"):
        text += f"; early stopping (patience {stop['patience']}) did not trigger"
    return text


def _averaging(cfg: dict, results: dict) -> list[str]:
    """Weight averaging and test-time augmentation, where used."""
    lines = []
    decay = cfg["train"].get("ema_decay", 0.0)
    if decay:
        lines.append(f"- weight averaging: EMA of parameters and BatchNorm statistics (decay {decay}), validated "
                     f"beside the trained weights; tested: {results['selection'].get('weights', 'raw')} weights")
    if cfg["eval"].get("tta_flips"):
        lines.append("- test-time augmentation: scores averaged over each image and its mirror image")
    return lines


def shown_metrics(results: dict, fixed_threshold: float) -> list[tuple[str, str]]:
    """(key, column label) of the metrics a split report of `results` carries, in the standard order; the
    accuracy of binary and multi-label tasks is labelled with its fixed threshold."""
    scored = results["test"] if "note" not in results["test"] else results["val"]  # no test split: validation
    kind = results["data"]["task"]
    return [(k, f"ACC @{fixed_threshold}" if k == "accuracy" and kind in ("binary", "multilabel") else label)
            for k, label in _METRICS if k in scored]


def results_table(results: dict, shown: list[tuple[str, str]]) -> list[str]:
    """Markdown rows: validation and test metrics with the AUC's bootstrap CI and the number scored."""
    lines = ["| split | " + " | ".join(label for _, label in shown) + " | AUC 95% CI (bootstrap) | n |",
             "|---" * (len(shown) + 3) + "|"]
    for split in ("val", "test"):
        r = results[split]
        if "note" in r:
            lines.append(f"| {split} | " + " | ".join("—" for _ in shown) + f" | {r['note']} | 0 |")
            continue
        ci = r.get("auc_ci95") or [None, None]
        n = r.get("num_examples", r.get("num_images"))
        lines.append(f"| {split} | " + " | ".join(_fmt(r.get(k)) for k, _ in shown)
                     + f" | [{_fmt(ci[0])}, {_fmt(ci[1])}] | {n} |")
    return lines


def render_run_report(results: dict) -> str:
    """Markdown text of a run's results: data, recipe, selection rule, metrics with CIs, timing."""
    cfg, data = results["config"], results["data"]
    m, opt, sched, aug = cfg["model"], cfg["optimizer"], cfg["schedule"], cfg["augment"]
    sel = results["selection"]
    fixed = cfg["eval"]["threshold"]
    shown = shown_metrics(results, fixed)
    lines = [
        f"# {data['name']} — {m['name']} ({m['init']} init)", "",
        "## Data",
        f"- dataset `{data['name']}`, task {data['task']}, {data['num_classes']} classes "
        f"({', '.join(data['label_names'])}), stored at {data['image_size']} px, {data['channels']} channel(s)",
        "- splits: " + ", ".join(f"{k} {v}" for k, v in data["splits"].items()), "",
        "## Recipe",
        f"- model `{m['name']}`, init `{m['init']}`, stem `{m['stem']}`, compute dtype {m['dtype']}",
        f"- transfer: {_transfer(cfg)}; loss: {_loss(cfg, data)}",
        f"- input {cfg['data']['input_size'] or 'model default'} px ({cfg['data']['resize_method']} resize), "
        f"augmentation: " + (f"flip={aug['flip']}, rotate ±{aug['rotate_degrees']}°, crop_scale={aug['crop_scale']}, "
                             f"brightness={aug['brightness']}, contrast={aug['contrast']}" if aug["enabled"] else "none"),
        f"- optimizer {opt['name']} lr {opt['lr']} weight decay {opt['weight_decay']}"
        + (f" momentum {opt['momentum']}" if opt["name"] == "sgd" else ""),
        f"- schedule {sched['name']} (warm-up "
        + (f"{sched['warmup_steps']} steps" if sched.get("warmup_steps", -1) >= 0 else f"{sched['warmup_epochs']} epochs")
        + (f", ×{sched['decay_factor']} at epochs {sched['milestones_epochs']}" if sched["name"] == "multistep" else "")
        + ")",
        _length(cfg, results),
        *_averaging(cfg, results),
        f"- selection: checkpoint with the best validation {sel['metric']} "
        f"(epoch {sel['best_epoch']}, {_fmt(sel['val_score'])}); test evaluated once with it", "",
        "## Results", "", *results_table(results, shown)]
    youden = results["test"].get("at_youden")
    if youden:
        thr = youden["threshold"]
        thr_text = _fmt(thr) if isinstance(thr, float) else "per label"
        lines += ["", f"At the Youden-optimal threshold chosen on validation ({thr_text}; not the fixed "
                  f"{fixed} of the table), test: "
                  + ", ".join(f"{label} {_fmt(youden.get(k))}" for k, label in _YOUDEN)]
    t, env = results["timing"], results["environment"]
    lines += ["", f"Accuracy uses a fixed threshold of {cfg['eval']['threshold']} for binary tasks and argmax "
                  "otherwise; AUC is scikit-learn's (multi-class: mean one-vs-rest, as MedMNIST v2).", "",
              "## Run", f"- training time {t['train_seconds']} s over {t['steps']} steps "
              f"({t['steps_per_epoch']} per epoch); jax {env['jax']} on {env['devices']} {env['backend']} "
              f"device(s), {env['processes']} process(es)", ""]
    lines += _config_changes(results.get("config_changes") or [])
    return "\n".join(lines)


def _config_changes(history: list[dict]) -> list[str]:
    """The config changes allowed on purpose when the run was resumed: the recipe above is the last one."""
    if not history:
        return []
    lines = ["## Config changed on resume", "",
             "The run was continued on purpose with another config (`--allow_config_change`); the recipe above "
             "is the final one, the steps before each change used the earlier values:", ""]
    for entry in history:
        lines.append(f"- from step {entry['step']}: " + "; ".join(
            f"{k} {before!r} -> {after!r}" for k, (before, after) in entry["changes"].items()))
    return lines + [""]


def render_evaluation_report(results: dict) -> str:
    """Markdown of a finished run scored on another dataset or site (`medtl_jax.inference.cross_evaluate`)."""
    cfg, data, source = results["config"], results["data"], results["source"]
    fixed = cfg["eval"]["threshold"]
    return "\n".join([
        f"# {source['model']} from {source['dataset']!r} evaluated on {data['name']!r}", "",
        f"- source run: {source['run']} (trained on `{source['dataset']}`; checkpoint '{source['checkpoint']}' at "
        f"step {source['step']}); model, preprocessing and evaluation settings as in its config.json",
        f"- evaluated on: `{data['name']}`, task {data['task']}, {data['num_classes']} classes, splits "
        + ", ".join(f"{k} {v}" for k, v in data["splits"].items()),
        f"- changed data fields: " + (", ".join(f"{k}={v!r}" for k, v in source["data_overrides"].items()) or "none"),
        "", "## Results", "", *results_table(results, shown_metrics(results, fixed)), ""])
