"""What to predict: one image, a folder (recursive; images and DICOM), or a CSV listing image paths.

`list_inputs(path)` returns `PredictionInputs`: one `InputItem` per image (where to read it, the path to
report, the CSV's other columns) and the files a folder held that are not images (reported, never read).
`read_for_run(item, channels)` reads one image (`medtl_jax.data.ingest.image_files.read_image`) and converts it
to the run's channels: RGB -> gray with PIL's ITU-R 601 luma (what 'L' conversion of the data gives),
gray -> RGB by repetition.
"""

from __future__ import annotations

import csv
import dataclasses
import pathlib

import numpy as np
import PIL.Image

from medtl_jax.data.ingest.image_files import DICOM_SUFFIXES, IMAGE_SUFFIXES, DicomOptions, is_dicom, read_image


@dataclasses.dataclass(frozen=True)
class InputItem:
    """One image to predict: `file` (resolved), `path` (as reported), `name` (unique, for output files),
    `columns` (the CSV row's other values, in CSV order)."""

    file: pathlib.Path
    path: str
    name: str
    columns: dict


@dataclasses.dataclass
class PredictionInputs:
    """The images to predict, the extra column names (CSV input) and a folder's non-image files."""

    items: list[InputItem]
    id_columns: list[str]
    skipped: list[pathlib.Path]


def _flat_name(relative: pathlib.Path) -> str:
    """'a/b/img.png' -> 'a__b__img': a file name (no folders, no root) that stays readable."""
    last = relative.stem if relative.suffix.lower() in IMAGE_SUFFIXES + DICOM_SUFFIXES else relative.name
    parts = [p for p in relative.parent.parts if p not in ("", ".", "..", relative.anchor)] + [last]
    return "__".join(parts)


def _unique(names: list[str]) -> list[str]:
    """Appends _2, _3 ... to repeated names."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}_{seen[n]}")
    return out


def _is_image_file(path: pathlib.Path) -> bool:
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES + DICOM_SUFFIXES:
        return True
    return suffix == "" and is_dicom(path)  # DICOM folders often hold files without a suffix


def _no_images_message(folder: pathlib.Path, skipped: list[pathlib.Path], shown: int = 5) -> str:
    """'no images found in <folder> (looked for ...)' plus the non-image files it holds, if any."""
    suffixes = ", ".join(IMAGE_SUFFIXES + DICOM_SUFFIXES)
    text = f"no images found in {folder} (looked for {suffixes} and suffixless DICOM files)"
    if skipped:
        names = ", ".join(str(p.relative_to(folder)) for p in skipped[:shown])
        more = f" and {len(skipped) - shown} more" if len(skipped) > shown else ""
        text += f"; skipped {len(skipped)} non-image files: {names}{more}"
    return text


def _from_folder(folder: pathlib.Path) -> PredictionInputs:
    """Every image and DICOM file below `folder`; ValueError when there is none."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if _is_image_file(p)]
    skipped = [p for p in files if not _is_image_file(p)]
    if not images:
        raise ValueError(_no_images_message(folder, skipped))
    names = _unique([_flat_name(p.relative_to(folder)) for p in images])
    items = [InputItem(file=p, path=str(p), name=n, columns={}) for p, n in zip(images, names)]
    return PredictionInputs(items, [], skipped)


def read_csv_table(csv_path: pathlib.Path) -> tuple[list[str], list[dict]]:
    """(column names, rows as {column: text}) of a CSV: every value a string, empty cells '', blank lines
    skipped. ValueError naming the file for an empty, undecodable or malformed one (an unclosed quote, a
    row whose field count differs from the header's, repeated column names)."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:  # -sig: drops Excel's BOM
            reader = csv.reader(f, strict=True)
            lines = [(reader.line_num, row) for row in reader if row]
    except (csv.Error, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read the CSV {csv_path}: {e}") from e
    if not lines:
        raise ValueError(f"cannot read the CSV {csv_path}: the file is empty (no header row)")
    header = lines[0][1]
    if len(set(header)) != len(header):
        raise ValueError(f"cannot read the CSV {csv_path}: repeated column names in its header {header}")
    for line, row in lines[1:]:
        if len(row) != len(header):
            raise ValueError(f"cannot read the CSV {csv_path}: line {line} has {len(row)} fields, "
                             f"the header has {len(header)}")
    return header, [dict(zip(header, row)) for _, row in lines[1:]]


def _from_csv(csv_path: pathlib.Path) -> PredictionInputs:
    columns, rows = read_csv_table(csv_path)
    if "path" not in columns:
        raise ValueError(f"{csv_path} has no 'path' column (columns: {', '.join(columns)})")
    id_columns = [c for c in columns if c != "path"]
    files = [pathlib.Path(r["path"]) if pathlib.Path(r["path"]).is_absolute() else csv_path.parent / r["path"]
             for r in rows]
    names = _unique([_flat_name(pathlib.Path(r["path"])) for r in rows])
    items = [InputItem(file=f, path=r["path"], name=n, columns={c: r[c] for c in id_columns})
             for f, r, n in zip(files, rows, names)]
    return PredictionInputs(items, id_columns, [])


def list_inputs(path: str | pathlib.Path) -> PredictionInputs:
    """The images named by `path`: an image or DICOM file, a folder (recursive) or a .csv with a 'path'
    column (relative paths resolved against the CSV's folder; the other columns are carried through).

    FileNotFoundError when `path` does not exist; ValueError for a folder holding no image (naming the
    files it skipped) or an unreadable CSV (`read_csv_table`)."""
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input {path} not found")
    if path.is_dir():
        return _from_folder(path)
    if path.suffix.lower() == ".csv":
        return _from_csv(path)
    return PredictionInputs([InputItem(file=path, path=str(path), name=_flat_name(pathlib.Path(path.name)),
                                       columns={})], [], [])


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """uint8 HxWxC (C = 1 or 3) -> HxWx`channels`: luma for RGB -> gray, repetition for gray -> RGB."""
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == channels:
        return image
    if channels == 1:
        return np.asarray(PIL.Image.fromarray(image).convert("L"))[..., None]
    return np.repeat(image, channels, axis=-1)


def read_for_run(item: InputItem, channels: int, dicom: DicomOptions | None = None) -> np.ndarray:
    """The image of `item` as uint8 HxWx`channels` (UnreadableImageError names the file on failure)."""
    return to_channels(read_image(item.file, dicom=dicom), channels)
