"""CSV files of a sweep report: report_runs.csv (one row per run), report_groups.csv (one row per group and
part) and report_comparisons.csv (one row per paired test). Floats keep full precision; undefined is empty."""

from __future__ import annotations

import csv
import io

import numpy as np

from medtl_jax.report import analysis
from medtl_jax.report.collect import Sweep, format_value, ordered_keys

LEADING = analysis.HEADLINE_METRICS  # first columns


def csv_text(header: list[str], rows: list[list]) -> str:
    """CSV text (\\n line ends) of a header and rows."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def cell(x, key: str = ""):
    """CSV cell: numbers as they are, NaN/None empty, lists as the report shows them."""
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return ""
    return format_value(x, key) if isinstance(x, (list, tuple, dict)) else x


def _metric_order(names) -> list[str]:
    return sorted(names, key=lambda m: (m not in LEADING, LEADING.index(m) if m in LEADING else 0, m))


def runs_csv(sweep: Sweep) -> str:
    """One row per run (finished or not): parts, settings, seed, numeric test metrics, selection epoch."""
    keys = sweep.group_keys
    runs = sorted(sweep.runs + sweep.unfinished, key=lambda r: r.name)
    metrics = _metric_order({k for r in sweep.runs for k, v in r.results.get("test", {}).items()
                             if isinstance(v, (int, float)) and not isinstance(v, bool)})
    header = ["run", "status", "parts", *keys, "seed", *(f"test_{m}" for m in metrics), "best_epoch", "path"]
    rows = []
    for r in runs:
        test = (r.results or {}).get("test", {})
        rows.append([r.name, "finished" if r.finished else "unfinished", " ".join(r.parts),
                     *(cell(r.settings.get(k), k) for k in keys), r.seed, *(cell(test.get(m)) for m in metrics),
                     cell((r.results or {}).get("selection", {}).get("best_epoch")), str(r.path)])
    return csv_text(header, rows)


def groups_csv(parts: list[tuple[str | None, Sweep, list[analysis.GroupSummary]]]) -> str:
    """One row per (part, group): settings, seeds, mean and std of each test metric, AUC CI."""
    keys = ordered_keys({k for _, sweep, _ in parts for k in sweep.group_keys})
    metrics = _metric_order({m for _, _, summaries in parts for s in summaries for m in s.mean_std})
    header = ["part", "group", *keys, "n_runs", "seeds", *(f"test_{m}_{x}" for m in metrics for x in ("mean", "std")),
              "test_auc_ci95_lo", "test_auc_ci95_hi"]
    rows = [[name or "", s.label, *(cell(s.group.settings.get(k), k) for k in keys), s.n_runs,
             " ".join(map(str, s.group.seeds)), *(cell(v) for m in metrics for v in s.mean_std.get(m, (None, None))),
             cell(s.auc_ci95[0]), cell(s.auc_ci95[1])]
            for name, _, summaries in parts for s in summaries]
    return csv_text(header, rows)


def comparisons_csv(comparisons: list[analysis.Comparison], correction: str) -> str:
    """One row per paired test, with the raw and the corrected p-value."""
    header = ["part", "a", "b", "differs_in", "method", "seeds", "auc_a", "auc_b", "delta_auc", "se", "a_wins", "p",
              f"p_{correction}", "note"]
    rows = [[c.part, c.a, c.b, c.differs_in, c.method, " ".join(map(str, c.seeds)), cell(c.auc_a), cell(c.auc_b),
             cell(c.estimate), cell(c.se), c.wins, cell(c.p), cell(c.p_adjusted), c.note] for c in comparisons]
    return csv_text(header, rows)
