"""report.md of a sweep folder: recipe and methods, then per sweep part the main table, paired comparisons,
data-efficiency, cross-site and imbalance tables and figures; Grad-CAM overlays (segmentation: predicted vs
true masks) and unfinished runs. Also report_runs.csv, report_groups.csv and report_comparisons.csv beside
it, and the figures in report_files/."""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import scipy
import sklearn

from medtl_jax.runtime.atomic_io import write_text_atomic
from medtl_jax.report import analysis, csv_tables, plots, recipe
from medtl_jax.report.analysis import fmt_mean_std
from medtl_jax.report.collect import Sweep, collect, format_value, short_key, sort_value, split_parts
from medtl_jax.report.stats import CORRECTION_NAMES, CORRECTIONS
from medtl_jax.report.gradcam_figure import gradcam_section
from medtl_jax.report.mask_figure import mask_section
from medtl_jax.tasks.families import METRIC_LABELS, SEGMENTATION


@dataclasses.dataclass
class ReportOptions:
    """What the report computes: bootstrap replicates, correction, Grad-CAM images per model."""
    bootstrap: int = 1000
    correction: str = "holm"
    gradcam: int = 4
    seed: int = 0
    alpha: float = 0.05


def _p(p: float) -> str:
    if p is None or not np.isfinite(p):
        return "n/a"
    return f"{p:.2e}" if p < 1e-3 else f"{p:.4f}"


def _f(x: float, digits: int = 4) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |"
                                                                            for r in rows]


# ---------------------------------------------------------------------------------------------------
# Sections.
# ---------------------------------------------------------------------------------------------------

def main_table(summaries: list[analysis.GroupSummary], bootstrap: int) -> list[str]:
    """Group × headline metrics (mean ± std over seeds), AUC with its pooled bootstrap CI."""
    segmentation = all(not s.group.family.example_predictions for s in summaries)
    order = SEGMENTATION.reported_metrics if segmentation else analysis.HEADLINE_METRICS
    names = [m for m in order if any(m in s.mean_std for s in summaries)]
    labels = {**METRIC_LABELS, "accuracy": "pixel ACC"} if segmentation else METRIC_LABELS
    header = ["group", *(labels[m] + (" [95% CI]" if m == "auc" and bootstrap else "") for m in names),
              "seeds", "n runs"]
    rows = []
    for s in summaries:
        cells = []
        for m in names:
            cell = fmt_mean_std(s.mean_std.get(m, (np.nan, np.nan)))
            if m == "auc" and bootstrap and np.isfinite(s.auc_ci95[0]):
                cell += f" [{s.auc_ci95[0]:.3f}, {s.auc_ci95[1]:.3f}]"
            cells.append(cell)
        rows.append([s.label, *cells, ",".join(map(str, s.group.seeds)), str(s.n_runs)])
    return _table(header, rows)


def comparison_section(comparisons: list[analysis.Comparison], opts: ReportOptions,
                       segmentation: bool = False) -> list[str]:
    """Table of paired tests with raw and adjusted p-values."""
    if not comparisons and segmentation:
        return ["Segmentation runs have no per-example scores: no AUC tests (compare Dice in the table "
                "above; per-image values are in each run's results.json)."]
    if not comparisons:
        return ["No pairs of groups differ in a compared setting only (init or model), or no "
                "per-example test predictions; no paired tests."]
    rows = []
    for c in comparisons:
        sig = "n/a" if not np.isfinite(c.p_adjusted) else ("yes" if c.p_adjusted < opts.alpha else "no")
        rows.append([f"{c.a} vs {c.b}", short_key(c.differs_in), c.method, ",".join(map(str, c.seeds)),
                     _f(c.auc_a), _f(c.auc_b), _f(c.estimate), _f(c.se), c.wins, _p(c.p), _p(c.p_adjusted), sig,
                     c.note])
    header = ["comparison (a vs b)", "differs in", "test", "seeds", "AUC a", "AUC b", "ΔAUC (a − b)", "SE",
              "a wins", "p raw", f"p {opts.correction}", f"significant at {opts.alpha}", "note"]
    return _table(header, rows)


def data_efficiency_section(table: dict | None, figure: str | None) -> list[str]:
    """Metric per labelled fraction, one row per other setting combination."""
    if table is None:
        return []
    fractions = table["fractions"]
    rows = [[label, *(fmt_mean_std(points.get(f, (np.nan, np.nan))) for f in fractions)]
            for label, points in table["lines"].items()]
    out = ["## Data efficiency", "",
           f"Test {METRIC_LABELS.get(table['metric'], table['metric'])} (mean ± std over seeds) by "
           f"`{table['key']}`.", ""]
    out += _table(["setting", *(format_value(f) for f in fractions)], rows)
    return out + (["", f"![data efficiency]({figure})"] if figure else []) + [""]


def cross_site_section(table: dict | None) -> list[str]:
    """Train setting × test site AUC table."""
    if table is None:
        return []
    header = ["train (group)", *(f"test site {s}" if s != "all" else "all test" for s in table["sites"])]
    rows = [[label, *(fmt_mean_std(cells.get(s, (np.nan, np.nan))) for s in table["sites"])]
            for label, cells in table["rows"].items()]
    return ["## Cross-site", "", f"Rows: the training sites (`{table['train_key']}`, with any other setting); "
            "columns: test site ids as stored in the predictions (the dataset's site order); cells: test AUC on "
            "that site's examples, mean ± std over seeds.", "", *_table(header, rows), ""]


def imbalance_section(table: dict | None) -> list[str]:
    """Operating-point metrics per imbalance strategy."""
    if table is None:
        return []
    rows = [[label, *(fmt_mean_std(cells.get(c, (np.nan, np.nan))) for c in table["columns"])]
            for label, cells in table["rows"].items()]
    return ["## Class imbalance", "", "Test metrics at the fixed threshold (config.eval.threshold) and, where "
            "recorded, at the Youden threshold chosen on validation; mean ± std over seeds.", "",
            *_table(["group", *(METRIC_LABELS.get(c, c) for c in table["columns"])], rows), ""]


# ---------------------------------------------------------------------------------------------------
# Figures.
# ---------------------------------------------------------------------------------------------------

def _panels(sweep: Sweep, summaries, item):
    """{panel title: [item(summary) ...]} split by the labelled fraction when it varies."""
    key = analysis.fraction_key(sweep)
    panels: dict[str, list] = {}
    for s in sorted(summaries, key=lambda s: sort_value(s.group.settings.get(key)) if key else 0):
        title = f"{short_key(key)}={format_value(s.group.settings.get(key))}" if key else "test split"
        value = item(s)
        if value is not None:
            panels.setdefault(title, []).append(value)
    return panels


def _roc_item(others):
    def item(s):
        p = s.group.runs[0].predictions("test")  # the lowest seed
        return None if p is None else (s.group.label(others), s.group.task, p)
    return item


def _reliability_item(others):
    def item(s):
        preds = [r.predictions("test") for r in s.group.runs]
        return None if any(p is None for p in preds) else (s.group.label(others), s.group.task, preds)
    return item


def figures(sweep: Sweep, summaries, efficiency, folder: pathlib.Path, prefix: str = "") -> dict[str, pathlib.Path]:
    """Writes the sweep's PNGs into `folder` (names start with `prefix`); {name: path} of the ones drawn."""
    others = [k for k in sweep.group_keys if k != analysis.fraction_key(sweep)]
    classification = [s for s in summaries if s.group.family.example_predictions]
    select = summaries[0].group.runs[0].results.get("selection", {}).get("metric", "auc") if summaries else "auc"
    out = {
        "data_efficiency": plots.data_efficiency_plot(efficiency, folder / f"{prefix}data_efficiency.png"),
        "roc": plots.roc_plot(_panels(sweep, classification, _roc_item(others)), folder / f"{prefix}roc.png"),
        "reliability": plots.reliability_plot(_panels(sweep, classification, _reliability_item(others)),
                                              folder / f"{prefix}reliability.png"),
        "training": plots.training_curves_plot([(s.label, s.group.runs[0].metrics_log()) for s in summaries],
                                               select, folder / f"{prefix}training_curves.png"),
    }
    return {k: v for k, v in out.items() if v is not None}


# ---------------------------------------------------------------------------------------------------
# The report.
# ---------------------------------------------------------------------------------------------------

CAPTIONS = {"roc": "ROC curves (test split, lowest seed of each group)",
            "reliability": "Reliability diagrams (test split, seeds pooled, 10 equal-width bins; binary: "
                           "positive-class probability, multi-class: top label)",
            "training": "Training loss and validation selection metric (lowest seed of each group)"}


@dataclasses.dataclass
class Part:
    """One part of a sweep (or the whole sweep) analysed."""
    name: str | None
    sweep: Sweep
    summaries: list[analysis.GroupSummary]
    comparisons: list[analysis.Comparison]
    efficiency: dict | None
    figs: dict[str, pathlib.Path]


def analyse_part(name: str | None, sweep: Sweep, opts: ReportOptions, folder: pathlib.Path) -> Part:
    """Summaries, uncorrected comparisons, data-efficiency table and figures of one part."""
    groups = sweep.groups()
    summaries = analysis.summarize(sweep, groups, bootstrap=opts.bootstrap, seed=opts.seed)
    comparisons = analysis.compare(sweep, groups, correction=None, bootstrap=opts.bootstrap, seed=opts.seed)
    for c in comparisons:
        c.part = name or ""
    efficiency = analysis.data_efficiency(sweep, summaries)
    figs = figures(sweep, summaries, efficiency, folder, f"{name}_" if name else "") if summaries else {}
    return Part(name, sweep, summaries, comparisons, efficiency, figs)


def part_lines(part: Part, opts: ReportOptions, rel) -> list[str]:
    """The sections of one part: results, comparisons, data efficiency, cross-site, imbalance, figures."""
    if not part.summaries:
        return ["No finished runs yet.", ""]
    segmentation = all(not s.group.family.example_predictions for s in part.summaries)
    figs = part.figs
    lines = ["## Test results", "", *main_table(part.summaries, opts.bootstrap), "",
             "## Paired comparisons", "", *comparison_section(part.comparisons, opts, segmentation), ""]
    lines += data_efficiency_section(part.efficiency, rel(figs["data_efficiency"]) if "data_efficiency" in figs
                                     else None)
    lines += cross_site_section(analysis.cross_site(part.sweep, part.summaries))
    lines += imbalance_section(analysis.imbalance(part.sweep, part.summaries))
    lines += ["## Figures", ""] if any(k in figs for k in CAPTIONS) else []
    for k in (k for k in CAPTIONS if k in figs):
        lines += [f"![{CAPTIONS[k]}]({rel(figs[k])})", f"*{CAPTIONS[k]}*", ""]
    return lines


def image_figures(parts: list[Part], folder: pathlib.Path, n: int, rel, figs: dict) -> list[str]:
    """Grad-CAM overlays (classification) and predicted-vs-true masks (segmentation), from the first part
    that has such runs; adds the figures to `figs`."""
    lines = []
    for section, segmentation in ((gradcam_section, False), (mask_section, True)):
        part = next((p for p in parts if any((not s.group.family.example_predictions) == segmentation
                                             for s in p.summaries)), None)
        if part is not None:
            more, new = section(part.summaries, folder, n, rel)
            lines += more
            figs.update(new)
    return lines


def _demote(lines: list[str]) -> list[str]:
    return ["#" + ln if ln.startswith("## ") else ln for ln in lines]


def build_report(root: str | pathlib.Path, out: str | pathlib.Path | None = None,
                 options: ReportOptions | None = None) -> dict[str, pathlib.Path]:
    """Collects the sweep in `root`, writes report.md (default `root/report.md`), the CSVs and figures;
    returns {name: path} of everything written. A sweep with parts (sweep_run.json) gets one section per
    part; the paired comparisons of all parts are corrected together as one family."""
    opts = options or ReportOptions()
    if opts.correction not in CORRECTIONS:
        raise ValueError(f"unknown correction {opts.correction!r}; choose one of {sorted(CORRECTIONS)}")
    sweep = collect(root)
    out = pathlib.Path(out) if out else sweep.root / "report.md"
    folder = out.parent / "report_files"
    rel = lambda p: p.relative_to(out.parent).as_posix()  # noqa: E731
    parts = [analyse_part(name, sub, opts, folder) for name, sub in split_parts(sweep)]
    comparisons = [c for p in parts for c in p.comparisons]
    analysis.correct(comparisons, opts.correction)
    figs = {f"{p.name}_{k}" if p.name else k: v for p in parts for k, v in p.figs.items()}

    lines = [f"# Study report: {sweep.name}", "",
             f"{len(sweep.runs)} finished run(s) from `{sweep.root}`"
             + (f"; {len(sweep.unfinished)} unfinished" if sweep.unfinished else "")
             + (f"; parts: {', '.join(p.name for p in parts)}" if parts[0].name else "") + ".",
             ("Settings that vary: " + ", ".join(f"`{k}`" for k in sweep.varying)) if sweep.varying else
             "No setting varies between runs.", ""]
    lines += recipe.recipe_section(sweep, opts, versions={"numpy": np.__version__, "scipy": scipy.__version__,
                                                          "scikit-learn": sklearn.__version__})
    if any(s.group.family.example_predictions for p in parts for s in p.summaries):
        lines += [*recipe.comparison_method_text(opts, CORRECTION_NAMES), ""]
    for p in parts:
        if p.name is None:
            lines += part_lines(p, opts, rel)
        else:
            lines += [f"## Part `{p.name}`", "", f"{len(p.sweep.runs)} finished run(s); settings that vary: "
                      + (", ".join(f"`{k}`" for k in p.sweep.varying) or "none") + ".", "",
                      *_demote(part_lines(p, opts, rel))]
    if opts.gradcam > 0:
        lines += image_figures(parts, folder, opts.gradcam, rel, figs)
    if sweep.unfinished:
        lines += ["## Unfinished runs", "", "No results.json yet (still running, failed or not started):", ""]
        lines += [f"- `{r.name}` ({', '.join(f'{short_key(k)}={format_value(v, k)}' for k, v in r.settings.items())})"
                  for r in sorted(sweep.unfinished, key=lambda r: r.name)] + [""]
    written = {"report": write_text_atomic(out, "\n".join(lines)),
               "runs_csv": write_text_atomic(out.parent / "report_runs.csv", csv_tables.runs_csv(sweep)),
               "groups_csv": write_text_atomic(out.parent / "report_groups.csv", csv_tables.groups_csv(
                   [(p.name, p.sweep, p.summaries) for p in parts])),
               "comparisons_csv": write_text_atomic(out.parent / "report_comparisons.csv",
                                                    csv_tables.comparisons_csv(comparisons, opts.correction))}
    return {**written, **figs}
