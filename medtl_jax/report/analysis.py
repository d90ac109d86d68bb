"""The numbers of a sweep report as plain data: group summaries, paired comparisons, data-efficiency,
cross-site and imbalance tables. Rendering (markdown, CSV, figures) lives elsewhere."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from medtl_jax.tasks.classification.metrics import auc as task_auc
from medtl_jax.report import stats
from medtl_jax.report.collect import Group, Sweep, short_key, sort_value
from medtl_jax.tasks.base import TaskFamily

# The main table's columns, in order (and the first columns of the CSV tables).
HEADLINE_METRICS = ("auc", "accuracy", "balanced_accuracy", "ece", "qwk", "dice", "iou", "hd95")
COMPARED_KEYS = ("model.init", "model.name")  # transfer vs scratch per model; model vs model
BASELINES = {"model.init": "scratch", "loss.imbalance": "none"}  # compared against, when present


@dataclasses.dataclass
class GroupSummary:
    """One group's test metrics over its seeds."""

    group: Group
    label: str
    per_seed: dict[str, list[float]]  # metric -> value per run (results.json test), seed order
    mean_std: dict[str, tuple[float, float]]
    auc_ci95: tuple[float, float]  # bootstrap of the seed-mean AUC (see stats), NaN without predictions

    @property
    def n_runs(self) -> int:
        return len(self.group.runs)


@dataclasses.dataclass
class Comparison:
    """A paired test of group a against group b on the seeds both have."""

    a: str
    b: str
    differs_in: str
    seeds: list[int]
    method: str  # 'DeLong' | 'paired bootstrap' | 'skipped'
    auc_a: float = float("nan")  # seed means
    auc_b: float = float("nan")
    estimate: float = float("nan")  # seed-mean AUC(a) - AUC(b)
    se: float = float("nan")
    p: float = float("nan")
    p_adjusted: float = float("nan")
    wins: str = ""  # seeds where a's AUC beats b's, e.g. '3/3'
    note: str = ""
    part: str = ""  # the sweep part (sweep_run.json 'parts'), if any


def metric_names(family: TaskFamily, groups: list[Group]) -> list[str]:
    """Metrics present in the test results of any run, in the family's order."""
    names = family.reported_metrics
    present = {k for g in groups for r in g.runs for k in r.results.get("test", {})}
    return [m for m in names if m in present]


def _test_value(run, metric: str) -> float:
    v = run.results.get("test", {}).get(metric)
    return float(v) if isinstance(v, (int, float)) and v is not None else float("nan")


def summarize(sweep: Sweep, groups: list[Group], *, bootstrap: int = 1000, seed: int = 0) -> list[GroupSummary]:
    """Mean ± std over seeds of every test metric, and the bootstrap CI of the seed-mean AUC."""
    out = []
    for g in groups:
        names = metric_names(g.family, [g])
        per_seed = {m: [_test_value(r, m) for r in g.runs] for m in names}
        ci = (float("nan"), float("nan"))
        preds = [r.predictions("test") for r in g.runs]
        if g.family.example_predictions and bootstrap > 0 and preds and all(p is not None for p in preds):
            ci = stats.bootstrap_seed_mean_auc_ci(g.task, [p.labels for p in preds], [p.scores for p in preds],
                                                  num_samples=bootstrap, seed=seed)
        out.append(GroupSummary(g, g.label(sweep.group_keys), per_seed,
                                {m: stats.mean_std(v) for m, v in per_seed.items()}, ci))
    return out


# ---------------------------------------------------------------------------------------------------
# Paired comparisons.
# ---------------------------------------------------------------------------------------------------

def comparison_pairs(sweep: Sweep, groups: list[Group]) -> list[tuple[Group, Group, str]]:
    """(a, b, key) for groups equal in every setting but `key`.

    Keys: model.init and model.name; when neither varies, every varying setting. Where the key has a
    baseline value among the groups (init 'scratch', imbalance 'none'), each other value is compared with
    it; otherwise every pair is."""
    keys = [k for k in COMPARED_KEYS if k in sweep.group_keys] or list(sweep.group_keys)
    pairs = []
    for key in keys:
        buckets: dict[tuple, list[Group]] = {}
        for g in groups:
            rest = tuple(kv for kv in g.key if kv[0] != key)
            buckets.setdefault(rest, []).append(g)
        for members in buckets.values():
            members = sorted(members, key=lambda g: sort_value(g.settings.get(key)))
            values = [g.settings.get(key) for g in members]
            if key in BASELINES and BASELINES[key] in values:
                base = members[values.index(BASELINES[key])]
                pairs += [(g, base, key) for g in members if g is not base]
            else:
                pairs += [(a, b, key) for a, b in itertools.combinations(members, 2)]
    return pairs


def _paired_predictions(a: Group, b: Group):
    """Per common seed, the test predictions of a and b on identical examples; or an explanation."""
    seeds = sorted(set(a.seeds) & set(b.seeds))
    if not seeds:
        return seeds, None, "no seed in common"
    runs_a = {r.seed: r for r in a.runs}
    runs_b = {r.seed: r for r in b.runs}
    pa = [runs_a[s].predictions("test") for s in seeds]
    pb = [runs_b[s].predictions("test") for s in seeds]
    if any(p is None for p in pa + pb):
        return seeds, None, "test predictions missing"
    ref = pa[0]
    for p in pa + pb:
        if not (np.array_equal(p.index, ref.index) and np.array_equal(p.labels, ref.labels)):
            return seeds, None, "test sets differ (index or labels)"
    return seeds, (ref.labels, [p.scores for p in pa], [p.scores for p in pb]), ""


def compare(sweep: Sweep, groups: list[Group], *, correction: str | None = "holm", bootstrap: int = 1000,
            seed: int = 0) -> list[Comparison]:
    """Every comparison of `comparison_pairs`, tested and (unless `correction` is None) corrected together
    as one family (see `correct`)."""
    out = []
    for a, b, key in comparison_pairs(sweep, groups):
        if not a.family.example_predictions:
            continue
        seeds, paired, note = _paired_predictions(a, b)
        c = Comparison(a.label(sweep.group_keys), b.label(sweep.group_keys), key, seeds, "skipped", note=note)
        if paired is not None:
            labels, sa, sb = paired
            auc_a = [task_auc(a.task, labels, s) for s in sa]
            auc_b = [task_auc(a.task, labels, s) for s in sb]
            c.auc_a, c.auc_b = float(np.mean(auc_a)), float(np.mean(auc_b))
            c.wins = f"{sum(x > y for x, y in zip(auc_a, auc_b))}/{len(seeds)}"
            try:
                if a.task == "binary":
                    res, c.method = stats.delong_seed_mean_test(labels, sa, sb), "DeLong"
                else:
                    res = stats.paired_bootstrap_test(a.task, labels, sa, sb, num_samples=max(bootstrap, 1),
                                                      seed=seed)
                    c.method = "paired bootstrap"
                c.estimate, c.se, c.p = res["estimate"], res["se"], res["p"]
            except ValueError as e:
                c.method, c.note = "skipped", str(e)
        out.append(c)
    if correction is not None:
        correct(out, correction)
    return out


def correct(comparisons: list[Comparison], correction: str) -> None:
    """Sets p_adjusted of every comparison, all corrected as one family."""
    for c, p in zip(comparisons, stats.adjust([c.p for c in comparisons], correction)):
        c.p_adjusted = float(p)


# ---------------------------------------------------------------------------------------------------
# Data efficiency, cross-site, imbalance.
# ---------------------------------------------------------------------------------------------------

def fraction_key(sweep: Sweep) -> str | None:
    """The varying setting holding the labelled fraction (e.g. data.train_fraction), if any."""
    return next((k for k in sweep.group_keys if "fraction" in short_key(k)), None)


def data_efficiency(sweep: Sweep, summaries: list[GroupSummary]) -> dict | None:
    """{'key', 'metric', 'fractions', 'lines': {line label: {fraction: (mean, std)}}} or None.

    A line is one combination of the other settings (init, model, ...)."""
    key = fraction_key(sweep)
    if key is None or not summaries:
        return None
    metric = summaries[0].group.family.headline_metric
    others = [k for k in sweep.group_keys if k != key]
    lines: dict[str, dict] = {}
    for s in summaries:
        lines.setdefault(s.group.label(others), {})[s.group.settings.get(key)] = s.mean_std.get(metric, (np.nan,) * 2)
    fractions = sorted({f for line in lines.values() for f in line}, key=sort_value)
    return {"key": key, "metric": metric, "fractions": fractions, "lines": lines}


def cross_site(sweep: Sweep, summaries: list[GroupSummary]) -> dict | None:
    """Test AUC per test site for every group (mean ± std over seeds) when runs differ in their training
    sites (a varying setting named '*site*', e.g. data.train_sites) and predictions carry `site`.

    Rows are the groups, columns the test site ids and 'all'. None otherwise."""
    train_key = next((k for k in sweep.group_keys if "site" in short_key(k)), None)
    if train_key is None:
        return None
    rows, sites = {}, set()
    for s in summaries:
        if not s.group.family.example_predictions:
            continue
        per_site: dict = {}
        for run in s.group.runs:
            p = run.predictions("test")
            if p is None or p.site is None:
                continue
            for site in np.unique(p.site):
                keep = p.site == site
                per_site.setdefault(int(site), []).append(task_auc(s.group.task, p.labels[keep], p.scores[keep]))
            per_site.setdefault("all", []).append(task_auc(s.group.task, p.labels, p.scores))
        if per_site:
            sites |= {k for k in per_site if k != "all"}
            rows[s.label] = {k: stats.mean_std(v) for k, v in per_site.items()}
    if not rows:
        return None
    return {"sites": sorted(sites) + ["all"], "rows": rows, "train_key": train_key}


IMBALANCE_METRICS = ("sensitivity", "specificity", "balanced_accuracy", "auc")


def imbalance(sweep: Sweep, summaries: list[GroupSummary]) -> dict | None:
    """Operating-point metrics per group when runs differ in loss.imbalance; else None.

    Adds the test sensitivity/specificity at the Youden threshold chosen on validation when present."""
    if "loss.imbalance" not in sweep.group_keys:
        return None
    rows = {}
    for s in summaries:
        row = {m: s.mean_std[m] for m in IMBALANCE_METRICS if m in s.mean_std}
        youden = [r.results["test"].get("at_youden") for r in s.group.runs]
        if all(isinstance(y, dict) for y in youden):
            for m in ("sensitivity", "specificity"):
                row[f"{m}_youden"] = stats.mean_std([y.get(m) for y in youden])
        rows[s.label] = row
    columns = [c for c in (*IMBALANCE_METRICS, "sensitivity_youden", "specificity_youden")
               if any(c in r for r in rows.values())]
    return {"columns": columns, "rows": rows}


def fmt_mean_std(ms: tuple[float, float], digits: int = 3) -> str:
    """'0.912 ± 0.011' ('0.912' for one seed, 'n/a' when undefined)."""
    mean, std = ms
    if mean is None or not np.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None and np.isfinite(std) else "")

