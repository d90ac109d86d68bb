"""The recipe and methods paragraphs of a sweep report: what was trained, how it was selected and how the
report's statistics were computed, so the tables can be cited. A setting that differs between runs is
shown as 'varies: a | b'."""

from __future__ import annotations

import json

from medtl_jax.report.collect import Sweep, flatten, format_value


def _value(sweep: Sweep, key: str, default="n/a") -> str:
    """The config value of `key` over the finished runs: one value, or 'varies: a | b | ...'."""
    runs = sweep.runs or sweep.unfinished
    seen = {}
    for r in runs:
        v = flatten(r.config).get(key, default)
        seen.setdefault(json.dumps(v, sort_keys=True), v)
    values = list(seen.values())
    if len(values) == 1:
        return format_value(values[0], key)
    return "varies: " + " | ".join(format_value(v, key) for v in values)


def _environment(sweep: Sweep) -> str:
    envs = {json.dumps(r.results.get("environment", {}), sort_keys=True) for r in sweep.runs}
    parts = []
    for text in sorted(envs):
        e = json.loads(text)
        if e:
            parts.append(f"jax {e.get('jax', '?')} on {e.get('devices', '?')} {e.get('backend', '?')} device(s), "
                         f"{e.get('processes', '?')} process(es)")
    return "; ".join(parts) or "not recorded"


def _data(sweep: Sweep) -> str:
    per_run = ("train_examples_used", "validation_examples_used")  # vary with data.train_fraction / sites
    infos = {json.dumps({k: v for k, v in r.results.get("data", {}).items() if k not in per_run}, sort_keys=True)
             for r in sweep.runs}
    out = []
    for text in sorted(infos):
        d = json.loads(text)
        if d:
            splits = ", ".join(f"{k} {v}" for k, v in d.get("splits", {}).items())
            out.append(f"`{d.get('name')}` ({d.get('task')}, {d.get('num_classes')} classes; {splits})")
    return "; ".join(out) or "n/a"


def recipe_section(sweep: Sweep, opts, versions: dict[str, str]) -> list[str]:
    """Markdown lines of the recipe: data, model, optimisation, selection rule, statistics, software."""
    v = lambda key: _value(sweep, key)  # noqa: E731
    seeds = sorted({len(g.runs) for g in sweep.groups()})
    selection = {r.results.get("selection", {}).get("metric") for r in sweep.runs} - {None}
    sel = " | ".join(sorted(selection)) or v("train.select_metric")
    input_size = v("data.input_size")
    return [
        "## Recipe", "",
        f"- data: {_data(sweep)}",
        f"- model `{v('model.name')}`, init `{v('model.init')}`, transfer mode {v('transfer.mode')}, "
        f"BatchNorm {v('transfer.bn')}, compute dtype {v('model.dtype')}",
        f"- input size {'model default' if input_size == '0' else input_size + ' px'} ({v('data.resize_method')} "
        f"resize); augmentation enabled={v('augment.enabled')}, flip={v('augment.flip')}, "
        f"rotate ±{v('augment.rotate_degrees')}°, crop_scale={v('augment.crop_scale')}",
        f"- optimizer {v('optimizer.name')}, lr {v('optimizer.lr')}, weight decay {v('optimizer.weight_decay')}; "
        f"schedule {v('schedule.name')} (warm-up {v('schedule.warmup_epochs')} epochs)",
        f"- {v('train.epochs')} epochs, global batch {v('train.batch_size')}; loss imbalance strategy "
        f"{v('loss.imbalance')}",
        f"- selection rule: the checkpoint with the best validation {sel}, evaluated once on test",
        f"- seeds per group: {', '.join(map(str, seeds)) or 'n/a'}; per-run CIs in results.json used "
        f"{v('eval.bootstrap_samples')} bootstrap samples; this report's pooled CIs use {opts.bootstrap}",
        f"- training software: {_environment(sweep)}; report: "
        + ", ".join(f"{k} {ver}" for k, ver in versions.items()),
        "",
        "Statistics: mean ± std over seeds use the sample standard deviation (ddof = 1). The 95% CI of a "
        "group's test AUC is a percentile bootstrap of the seed-mean AUC: each replicate resamples the test "
        "examples with replacement (one resample shared by every seed of the group), recomputes each seed's "
        "AUC and averages them; it reflects test-set sampling given the trained models, the ± std the "
        "spread between seeds. AUC is scikit-learn's (multi-class: mean one-vs-rest over classes present).",
        "",
    ]


def comparison_method_text(opts, correction_names: dict[str, str]) -> list[str]:
    """How the paired comparisons were made."""
    return [
        "Paired comparisons: groups equal in every setting but the init (each transfer init against "
        "`scratch`) or the model (every pair); where neither varies, the setting that does (imbalance "
        "strategies against `none`, training sites pairwise, ...). Runs are paired by seed (the seeds both "
        "groups have) on the same test examples. Binary tasks: DeLong et al. (1988) z-test of the difference "
        "of seed-mean AUCs, mean_s AUC(a, s) − mean_s AUC(b, s), with the covariance of all correlated AUCs "
        "(fast midrank algorithm, Sun & Xu 2014). Multi-class and multi-label tasks (macro AUC, where DeLong "
        f"is not standard): a paired bootstrap of the same difference ({opts.bootstrap} resamples, two-sided "
        "percentile p-value). Both tests are conditional on the trained models (test-set uncertainty only; "
        "the seed spread is in the tables' ± std). Multiple comparisons: "
        f"{correction_names[opts.correction]} over all comparisons of this report as one family; "
        f"significant means adjusted p < {opts.alpha}. 'a wins' counts seeds where a's AUC is higher.",
    ]
