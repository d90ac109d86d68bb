"""What a prepared dataset holds: counts, image sizes, intensities, skipped files, a thumbnail grid.

`SummaryCollector.observe` is called for every example as it is written (so nothing is read twice);
`summary` turns what it saw into a JSON-able dict, `markdown` into a report and `thumbnail_grid` into
a PNG with one labelled row per class (a few random images each). No patient id or DICOM header
value is recorded: only counts (and, for input problems kept with --on-conflict=warn, the manifest
rows and files concerned).
"""

from __future__ import annotations

import numpy as np
import PIL.Image
import PIL.ImageDraw

from medtl_jax.data.ingest.manifest import Row

SPLITS = ("train", "validation", "test")
THUMB = 64


class SummaryCollector:
    """Accumulates per-split class/site counts, an intensity sample and thumbnails per class."""

    def __init__(self, label_names, multilabel: bool, num_examples: int, seed: int = 0,
                 sample_size: int = 256, thumbs_per_class: int = 6):
        self.label_names, self.multilabel = tuple(label_names), multilabel
        self.rng = np.random.default_rng(seed)
        self.sample = set(self.rng.choice(num_examples, min(num_examples, sample_size),
                                          replace=False).tolist()) if num_examples else set()
        self.k = thumbs_per_class
        self.written: list[tuple[int, Row, str]] = []
        self.sums = np.zeros(2)
        self.extremes = [np.inf, -np.inf]
        self.pixels, self.sampled = 0, 0
        self.seen = [0] * len(self.label_names)
        self.thumbs: list[list[np.ndarray]] = [[] for _ in self.label_names]

    def observe(self, index: int, row: Row, split: str, image: np.ndarray) -> None:
        """Records one written example (its stored image, after resizing)."""
        self.written.append((index, row, split))
        if index in self.sample:
            values = image.astype(np.float64)
            self.sums += (values.sum(), np.square(values).sum())
            self.extremes = [min(self.extremes[0], values.min()), max(self.extremes[1], values.max())]
            self.pixels += values.size
            self.sampled += 1
        classes = [k for k, v in enumerate(row.label) if v] if self.multilabel else [row.label[0]]
        for k in classes:  # reservoir sampling: a uniform random k per class
            self.seen[k] += 1
            slot = len(self.thumbs[k]) if len(self.thumbs[k]) < self.k else \
                int(self.rng.integers(self.seen[k]))
            if slot < self.k:
                thumb = _thumbnail(image)
                if slot == len(self.thumbs[k]):
                    self.thumbs[k].append(thumb)
                else:
                    self.thumbs[k][slot] = thumb

    def counts(self, sites: tuple[str, ...]) -> dict:
        """Examples per split, per class (positives for multi-label) and per site, by split."""
        per_split = {s: 0 for s in SPLITS}
        per_class = {name: {s: 0 for s in SPLITS} for name in self.label_names}
        per_site = {site: {s: 0 for s in SPLITS} for site in sites}
        for _, row, split in self.written:
            per_split[split] += 1
            classes = [k for k, v in enumerate(row.label) if v] if self.multilabel else [row.label[0]]
            for k in classes:
                per_class[self.label_names[k]][split] += 1
            if sites:
                per_site[row.site or "unknown"][split] += 1
        for table in (per_class, per_site):
            for value in table.values():
                value["total"] = sum(value[s] for s in SPLITS)
        return {"total": len(self.written), "per_split": per_split, "per_class": per_class,
                "per_site": per_site}

    def intensity(self) -> dict:
        """Mean/std/min/max of stored pixel values over the sampled images."""
        if not self.pixels:
            return {"sample_images": 0}
        mean = self.sums[0] / self.pixels
        std = float(np.sqrt(max(self.sums[1] / self.pixels - mean**2, 0.0)))
        return {"sample_images": self.sampled, "mean": round(float(mean), 3), "std": round(std, 3),
                "min": float(self.extremes[0]), "max": float(self.extremes[1])}


def _thumbnail(image: np.ndarray) -> np.ndarray:
    """uint8 THUMB x THUMB RGB preview of a stored image (16-bit divided by 257)."""
    if image.dtype != np.uint8:
        image = np.round(image / 257.0).astype(np.uint8)
    rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image
    pil = PIL.Image.fromarray(rgb)
    pil.thumbnail((THUMB, THUMB), PIL.Image.BILINEAR)
    canvas = PIL.Image.new("RGB", (THUMB, THUMB))
    canvas.paste(pil, ((THUMB - pil.width) // 2, (THUMB - pil.height) // 2))
    return np.asarray(canvas)


def size_stats(shapes: list[tuple[int, int]]) -> dict:
    """min / median / max of source heights and widths."""
    if not shapes:
        return {}
    h, w = np.asarray(shapes).T
    return {axis: {"min": int(v.min()), "median": float(np.median(v)), "max": int(v.max())}
            for axis, v in (("height", h), ("width", w))}


def thumbnail_grid(collector: SummaryCollector) -> PIL.Image.Image:
    """One row per class: its name and count, then up to `thumbs_per_class` random images."""
    gap, label_w = 4, 160
    rows = len(collector.label_names)
    width = label_w + collector.k * (THUMB + gap) + gap
    grid = PIL.Image.new("RGB", (width, rows * (THUMB + gap) + gap), (200, 200, 200))
    draw = PIL.ImageDraw.Draw(grid)
    for r, name in enumerate(collector.label_names):
        top = gap + r * (THUMB + gap)
        draw.text((gap, top + THUMB // 2 - 12), f"{name[:24]}", fill=(0, 0, 0))
        draw.text((gap, top + THUMB // 2 + 2), f"n={collector.seen[r]}", fill=(90, 90, 90))
        for c, thumb in enumerate(collector.thumbs[r]):
            grid.paste(PIL.Image.fromarray(thumb), (label_w + c * (THUMB + gap), top))
    return grid


def _table(title: str, table: dict) -> list[str]:
    lines = [f"| {title} | " + " | ".join(SPLITS) + " | total |",
             "|---|" + "---:|" * (len(SPLITS) + 1)]
    lines += [f"| {name} | " + " | ".join(str(v[s]) for s in SPLITS) + f" | {v['total']} |"
              for name, v in table.items()]
    return lines


def markdown(summary: dict) -> str:
    """summary.md: the same facts as summary.json, for people."""
    c = summary["counts"]
    out = [f"# Dataset `{summary['name']}`", "",
           f"- source: {summary['format']} ({summary['task']}, {len(summary['label_names'])} "
           f"labels, {summary['channels']} channel(s), stored {summary['image_size'][0]}x"
           f"{summary['image_size'][1]} at {summary['bits']} bits"
           f"{', resized' if summary['resized'] else ''})",
           f"- splits: {summary['splits_from']}; examples: {c['total']} = "
           + " + ".join(f"{c['per_split'][s]} {s}" for s in SPLITS),
           f"- groups (patients): {summary['groups']['count']}, rows without patient id: "
           f"{summary['groups']['rows_without_patient_id']}, groups in several splits: "
           f"{summary['groups']['in_several_splits']}", ""]
    empty = [s for s in SPLITS if not c["per_split"][s]]
    if empty:
        out += [f"- WARNING: empty split(s): {', '.join(empty)} (the trainer needs train and "
                f"validation examples)", ""]
    out += _table("class", c["per_class"]) + [""]
    if c["per_site"]:
        out += _table("site", c["per_site"]) + [""]
    sizes = summary["source_image_size"]
    if sizes:
        out.append("- source image size (min / median / max): H " + " / ".join(
            f"{sizes['height'][k]:g}" for k in ("min", "median", "max")) + ", W " + " / ".join(
            f"{sizes['width'][k]:g}" for k in ("min", "median", "max")))
    i = summary["intensity"]
    if i.get("sample_images"):
        out.append(f"- intensity over {i['sample_images']} images: mean {i['mean']}, std {i['std']}, "
                   f"min {i['min']:g}, max {i['max']:g}")
    skipped = summary["skipped_files"]
    out.append(f"- unreadable files: {len(skipped)}")
    out += [f"  - {s['path']}: {s['reason']}" for s in skipped[:50]]
    if len(skipped) > 50:
        out.append(f"  - ... {len(skipped) - 50} more in skipped_files.csv")
    problems = summary.get("input_problems", [])  # absent in summaries of older builds
    if problems:
        out.append(f"- WARNING: input problems kept with --on-conflict=warn: {len(problems)}")
        out += [f"  - {p['kind']}: {p['problem']}; {p['action']}" for p in problems[:50]]
        if len(problems) > 50:
            out.append(f"  - ... {len(problems) - 50} more in summary.json")
    return "\n".join(out) + "\n"
