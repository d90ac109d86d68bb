"""Segmentation datasets read into memory: DRIVE, CHASE_DB1, ISBI 2012 and users' own folder pairs.

Every split is a `SegmentationSource` (len + getitem) of records
    {'image': uint8 HxWx3 (gray repeated to 3), 'mask': uint8 HxW class ids (0 background),
     'fov': uint8 HxW (1 inside the field of view, all ones where a dataset has none),
     'id': str (the image's file stem), 'index': int (position in the split)}.
Arrays are read-only: the pipeline never changes the cached data in place.

Conventions (binary sets: class 1 is the structure of interest):
  DRIVE      root/training/{images,1st_manual,mask} and root/test (or testing)/{images,1st_manual,
             2nd_manual,mask}. train + validation = the 20 official training images, the last
             `val_count` (default 4, by image number: 37..40) are validation; test = the 20 official
             test images with the first observer's masks (`annotator=2`: the second observer's, test
             split only). fov = the shipped mask/*.gif.
  CHASE_DB1  root/Image_NNX.jpg + Image_NNX_1stHO.png (_2ndHO with annotator=2), 28 images. The common
             protocol: the first 20 in sorted order (01L..10R) train, of which the last `val_count`
             (default 4: 09L..10R) are validation; the last 8 (11L..14R) test. No FOV masks ship:
             fov = red channel > 10, largest connected component, holes filled. No erosion: annotators
             drew vessels up to the dark rim (a 3-pixel erosion drops 35..800 vessel pixels per image;
             this rule leaves at most ~230 of ~70k outside).
  ISBI 2012  root/train/{image,label}/N.png, 30 serial EM sections, sorted by N. Labels are 0/255 with
             membranes BLACK (0); here mask 1 = membrane (label < 128), about 22% of pixels. The
             official test labels are not public, so the 30 labelled sections are split in consecutive
             blocks: train 20 / validation `val_count` (default 5) / test 5 (the last ones).
  Generic    root/<split>/images/<name>.<png|jpg|jpeg|tif|tiff|bmp|gif>, root/<split>/masks/<name>.<any
             of those> (same stem) and optional root/<split>/fov/<name>.* (nonzero = inside). <split>
             is train (required), validation (or val) and test (both optional: no validation folder ->
             the last `val_count` of train, default 20% of it; no test folder -> an empty test split).
             Mask values are class ids 0..C-1, or 0/255 for a binary mask (255 -> 1); palette images
             give their palette indices; a mask mixing 255 with other nonzero values is an error.
"""

from __future__ import annotations

import os
import pathlib
import re
from collections.abc import Sequence

import numpy as np
import PIL.Image
from scipy import ndimage

from medtl_jax.data.types import DataBundle, DataInfo, config_value

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif")
NAMES = ("drive", "chase_db1", "isbi2012", "seg_folders")
_DEFAULT_SUBDIR = {"drive": "retina_vessels/DRIVE", "chase_db1": "retina_vessels/CHASE_DB1",
                   "isbi2012": "isbi2012_membrane"}
_LABELS = {"drive": ("background", "vessel"), "chase_db1": ("background", "vessel"),
           "isbi2012": ("background", "membrane")}
_DEFAULT_VAL = {"drive": 4, "chase_db1": 4, "isbi2012": 5}


class SegmentationSource:
    """Random access to one split held in memory: i -> record (see the module docstring)."""
    def __init__(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                 fovs: Sequence[np.ndarray], ids: Sequence[str]):
        if not len(images) == len(masks) == len(fovs) == len(ids):
            raise ValueError("images, masks, fovs and ids need the same length")
        self._records = []
        for i, (image, mask, fov, name) in enumerate(zip(images, masks, fovs, ids)):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
                raise ValueError(f"{name}: image must be uint8 HxWx3, got {image.dtype} {image.shape}")
            if mask.shape != image.shape[:2] or fov.shape != image.shape[:2]:
                raise ValueError(f"{name}: image {image.shape[:2]}, mask {mask.shape} and fov "
                                 f"{fov.shape} differ in size")
            record = {"image": image, "mask": mask.astype(np.uint8, copy=False),
                      "fov": fov.astype(np.uint8, copy=False)}
            for array in record.values():
                array.flags.writeable = False
            self._records.append({**record, "id": str(name), "index": i})

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, i: int) -> dict:
        return self._records[i]

    @property
    def ids(self) -> list[str]:
        """File stems in split order."""
        return [r["id"] for r in self._records]

    def take(self, positions: Sequence[int]) -> "SegmentationSource":
        """A new source of the records at `positions` (re-indexed from 0)."""
        chosen = [self._records[p] for p in positions]
        return SegmentationSource([r["image"] for r in chosen], [r["mask"] for r in chosen],
                                  [r["fov"] for r in chosen], [r["id"] for r in chosen])


# ---------------------------------------------------------------------------------------------------
# Reading files.
# ---------------------------------------------------------------------------------------------------

def _open(path: pathlib.Path) -> PIL.Image.Image:
    try:
        im = PIL.Image.open(path)
        im.load()
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... for bad files
        raise ValueError(f"cannot read image file {path}: {e}") from e
    return im


def read_rgb(path) -> np.ndarray:
    """Image file -> uint8 HxWx3 (gray repeated; 16-bit scaled by 1/257; alpha dropped)."""
    im = _open(pathlib.Path(path))
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im).astype(np.float64)
        scale = 255.0 / 65535.0 if a.max() > 255 else 1.0
        gray = np.clip(np.rint(a * scale), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    return np.asarray(im.convert("RGB"))


def _mask_values(path: pathlib.Path) -> np.ndarray:
    """Raw label values of a mask file: palette indices, gray levels, or 0/1 for 1-bit images."""
    im = _open(path)
    if im.mode in ("P", "L", "1", "I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im)
    elif im.mode in ("RGB", "RGBA", "LA"):
        a = np.asarray(im)
        if im.mode == "LA":
            a = a[..., 0]
        elif not (np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2])):
            raise ValueError(f"mask {path} is a colour image: masks must be gray class ids")
        else:
            a = a[..., 0]
    else:
        raise ValueError(f"mask {path} has unsupported mode {im.mode}")
    return a.astype(np.int64)


def read_class_mask(path) -> np.ndarray:
    """Mask file -> uint8 HxW class ids: values 0..C-1 as they are, a 0/255 mask mapped to 0/1."""
    path = pathlib.Path(path)
    a = _mask_values(path)
    values = np.unique(a)
    if values.min() < 0 or values.max() > 255:
        raise ValueError(f"mask {path} has values outside 0..255: {values.min()}..{values.max()}")
    if 255 in values:
        if not set(values.tolist()) <= {0, 255}:
            raise ValueError(f"mask {path} mixes 255 with other values {values[:8].tolist()}: masks "
                             "must hold class ids 0..C-1 or be binary 0/255")
        a = a // 255
    return a.astype(np.uint8)


def read_binary_mask(path, *, dark_foreground: bool = False) -> np.ndarray:
    """Binary mask file -> uint8 HxW 0/1 from its gray level (palette colours included) vs 128."""
    gray = np.asarray(_open(pathlib.Path(path)).convert("L"))
    return ((gray < 128) if dark_foreground else (gray >= 128)).astype(np.uint8)


def retina_fov(image: np.ndarray, threshold: int = 10) -> np.ndarray:
    """Field of view of a fundus photo: red > threshold, largest component, holes filled (uint8 0/1)."""
    labels, n = ndimage.label(image[..., 0] > threshold)
    if n == 0:
        return np.ones(image.shape[:2], np.uint8)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return ndimage.binary_fill_holes(labels == sizes.argmax()).astype(np.uint8)


def _numbered(folder: pathlib.Path, pattern: str) -> dict[int, pathlib.Path]:
    """{number: file} for files in `folder` whose name matches `pattern` (first group = number)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"expected folder {folder}")
    out = {}
    for p in folder.iterdir():
        m = re.fullmatch(pattern, p.name, flags=re.IGNORECASE)
        if m:
            out[int(m.group(1))] = p
    return out


def _split_tail(source: SegmentationSource, count: int, what: str):
    """(first n - count, last count) of a source; `count` must leave at least one."""
    n = len(source)
    if not 0 <= count < n:
        raise ValueError(f"val_count={count} must be in [0, {n}) for {what} ({n} images)")
    return source.take(range(n - count)), source.take(range(n - count, n))


# ---------------------------------------------------------------------------------------------------
# Layouts.
# ---------------------------------------------------------------------------------------------------

def read_drive(root, *, val_count: int = 4, annotator: int = 1) -> dict[str, SegmentationSource]:
    """DRIVE (Staal et al. 2004) -> {'train', 'validation', 'test'} (split rules: module docstring)."""
    root = pathlib.Path(root)
    test_dir = root / "test" if (root / "test").is_dir() else root / "testing"
    if not (root / "training").is_dir() or not test_dir.is_dir():
        raise FileNotFoundError(f"DRIVE layout not found at {root}: expected training/ and test/ "
                                "(or testing/) folders with images/, 1st_manual/ and mask/")
    if annotator not in (1, 2):
        raise ValueError(f"DRIVE annotator must be 1 or 2, got {annotator}")

    def split(folder: pathlib.Path, kind: str, observer: int) -> SegmentationSource:
        images = _numbered(folder / "images", rf"(\d+)_{kind}\.tiff?")
        manual = _numbered(folder / f"{'1st' if observer == 1 else '2nd'}_manual",
                           rf"(\d+)_manual{observer}\.gif")
        fov = _numbered(folder / "mask", rf"(\d+)_{kind}_mask\.gif")
        recs = ([], [], [], [])
        for num in sorted(images):
            if num not in manual or num not in fov:
                raise ValueError(f"DRIVE image {images[num]} has no manual{observer} mask or fov mask")
            recs[0].append(read_rgb(images[num]))
            recs[1].append(read_binary_mask(manual[num]))
            recs[2].append(read_binary_mask(fov[num]))
            recs[3].append(images[num].stem)
        return SegmentationSource(*recs)

    train, val = _split_tail(split(root / "training", "training", 1), val_count, "DRIVE training")
    return {"train": train, "validation": val, "test": split(test_dir, "test", annotator)}


def read_chase_db1(root, *, val_count: int = 4, annotator: int = 1) -> dict[str, SegmentationSource]:
    """CHASE_DB1 (Fraz et al. 2012) -> {'train', 'validation', 'test'}: 20 (incl. validation) / 8."""
    root = pathlib.Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"CHASE_DB1 folder not found: {root}")
    images = sorted(p for p in root.iterdir() if re.fullmatch(r"Image_\d+[LR]\.jpg", p.name, re.I))
    if len(images) != 28:
        raise ValueError(f"CHASE_DB1 at {root}: expected the 28 Image_NNX.jpg files, "
                         f"found {len(images)}")
    suffix = "1stHO" if annotator == 1 else "2ndHO"
    recs = ([], [], [], [])
    for p in images:
        mask_path = p.with_name(f"{p.stem}_{suffix}.png")
        if not mask_path.is_file():
            raise ValueError(f"CHASE_DB1 image {p} has no mask {mask_path.name}")
        image = read_rgb(p)
        recs[0].append(image)
        recs[1].append(read_binary_mask(mask_path))
        recs[2].append(retina_fov(image))
        recs[3].append(p.stem)
    everything = SegmentationSource(*recs)
    train, val = _split_tail(everything.take(range(20)), val_count, "CHASE_DB1 training")
    return {"train": train, "validation": val, "test": everything.take(range(20, 28))}


def read_isbi2012(root, *, val_count: int = 5, test_count: int = 5) -> dict[str, SegmentationSource]:
    """ISBI 2012 EM membranes -> {'train', 'validation', 'test'} from the 30 labelled sections."""
    root = pathlib.Path(root)
    images = _numbered(root / "train" / "image", r"(\d+)\.(?:png|tiff?)")
    labels = _numbered(root / "train" / "label", r"(\d+)\.(?:png|tiff?)")
    recs = ([], [], [], [])
    for num in sorted(images):
        if num not in labels:
            raise ValueError(f"ISBI 2012 image {images[num]} has no label file")
        image = read_rgb(images[num])
        recs[0].append(image)
        recs[1].append(read_binary_mask(labels[num], dark_foreground=True))  # membranes are black
        recs[2].append(np.ones(image.shape[:2], np.uint8))
        recs[3].append(images[num].stem)
    everything = SegmentationSource(*recs)
    n = len(everything)
    if not (0 <= val_count and 0 <= test_count and val_count + test_count < n):
        raise ValueError(f"ISBI 2012: val_count={val_count} + test_count={test_count} must leave "
                         f"training images out of {n}")
    cut = n - val_count - test_count
    return {"train": everything.take(range(cut)),
            "validation": everything.take(range(cut, n - test_count)),
            "test": everything.take(range(n - test_count, n))}


def _by_stem(folder: pathlib.Path) -> dict[str, pathlib.Path]:
    """{stem: file} of the image files in `folder`; two files with one stem is an error."""
    out: dict[str, pathlib.Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTS:
            if p.stem in out:
                raise ValueError(f"two files share the name {p.stem!r}: {out[p.stem]} and {p}")
            out[p.stem] = p
    return out


def _read_generic_split(folder: pathlib.Path) -> SegmentationSource:
    images = _by_stem(folder / "images")
    if not images:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTS)}) in {folder / 'images'}")
    if not (folder / "masks").is_dir():
        raise FileNotFoundError(f"expected a masks/ folder beside {folder / 'images'}")
    masks = _by_stem(folder / "masks")
    fovs = _by_stem(folder / "fov") if (folder / "fov").is_dir() else None
    recs = ([], [], [], [])
    for stem, path in images.items():
        if stem not in masks:
            raise ValueError(f"no mask for image {path}: expected {folder / 'masks' / stem}.<ext>")
        if fovs is not None and stem not in fovs:
            raise ValueError(f"no fov mask for image {path}: expected {folder / 'fov' / stem}.<ext>")
        image = read_rgb(path)
        mask = read_class_mask(masks[stem])
        fov = ((_mask_values(fovs[stem]) > 0).astype(np.uint8) if fovs is not None
               else np.ones(image.shape[:2], np.uint8))
        if mask.shape != image.shape[:2] or fov.shape != image.shape[:2]:
            raise ValueError(f"image {path} is {image.shape[:2]} but its mask/fov is "
                             f"{mask.shape}/{fov.shape}")
        recs[0].append(image)
        recs[1].append(mask)
        recs[2].append(fov)
        recs[3].append(stem)
    return SegmentationSource(*recs)


def read_generic(root, *, val_count: int | None = None) -> dict[str, SegmentationSource]:
    """Users' own image/mask pairs in the documented folder layout -> {'train','validation','test'}."""
    root = pathlib.Path(root)
    if not (root / "train" / "images").is_dir():
        raise FileNotFoundError(f"expected {root / 'train' / 'images'} (layout: root/<split>/images, "
                                "root/<split>/masks, optional root/<split>/fov)")
    splits = {"train": _read_generic_split(root / "train")}
    val_dir = next((root / v for v in ("validation", "val") if (root / v / "images").is_dir()), None)
    if val_dir is not None:
        splits["validation"] = _read_generic_split(val_dir)
    else:
        n = len(splits["train"])
        count = val_count if val_count is not None else (max(1, n // 5) if n >= 2 else 0)
        splits["train"], splits["validation"] = _split_tail(splits["train"], count, f"{root}/train")
    splits["test"] = (_read_generic_split(root / "test") if (root / "test" / "images").is_dir()
                      else SegmentationSource([], [], [], []))
    return splits


# ---------------------------------------------------------------------------------------------------
# Registry entry.
# ---------------------------------------------------------------------------------------------------

def shared_data_dir() -> pathlib.Path:
    """$MEDTL_SHARED_DATA, else ../shared/data beside the repository (may not exist)."""
    env = os.environ.get("MEDTL_SHARED_DATA")
    return pathlib.Path(env) if env else pathlib.Path(__file__).resolve().parents[4] / "shared" / "data"


def _root(name: str, config) -> pathlib.Path:
    manual = config_value(config, "manual_dir")
    if manual:
        root = pathlib.Path(manual).expanduser()
    elif name in _DEFAULT_SUBDIR:
        root = shared_data_dir() / _DEFAULT_SUBDIR[name]
    else:
        raise ValueError("config.data.name='seg_folders' needs config.data.manual_dir: the folder "
                         "holding train/images and train/masks")
    if not root.is_dir():
        what = {"drive": "the DRIVE folder (training/, test/)",
                "chase_db1": "the CHASE_DB1 folder (Image_01L.jpg, Image_01L_1stHO.png, ...)",
                "isbi2012": "the ISBI 2012 folder (train/image, train/label)",
                "seg_folders": "your folder holding train/images and train/masks"}[name]
        hint = "" if manual else " (or MEDTL_SHARED_DATA to the shared data folder)"
        raise FileNotFoundError(f"{name}: no folder at {root}. Set config.data.manual_dir to {what}"
                                f"{hint}")
    return root


def num_classes(sources: dict[str, SegmentationSource]) -> int:
    """max(2, largest class id in any mask + 1)."""
    top = max((int(s[i]["mask"].max()) for s in sources.values() for i in range(len(s))), default=0)
    return max(2, top + 1)


def load_segmentation(data_config):
    """Registry loader: config.data.{name, manual_dir, val_count} -> DataBundle."""
    name = config_value(data_config, "name")
    if name not in NAMES:
        raise ValueError(f"segmentation dataset {name!r} not in {NAMES}")
    root = _root(name, data_config)
    val_count = config_value(data_config, "val_count", _DEFAULT_VAL.get(name))
    if val_count is not None and int(val_count) < 0:  # config default -1: the dataset's own default
        val_count = _DEFAULT_VAL.get(name)
    if name == "drive":
        sources = read_drive(root, val_count=int(val_count))
    elif name == "chase_db1":
        sources = read_chase_db1(root, val_count=int(val_count))
    elif name == "isbi2012":
        sources = read_isbi2012(root, val_count=int(val_count))
    else:
        sources = read_generic(root, val_count=None if val_count is None else int(val_count))
    classes = num_classes(sources)
    labels = _LABELS.get(name) or (("background", "foreground") if classes == 2 else
                                   ("background", *(f"class_{k}" for k in range(1, classes))))
    size = max((max(s[i]["image"].shape[:2]) for s in sources.values() for i in range(len(s))),
               default=0)
    info = DataInfo(name=name if name != "seg_folders" else f"seg_folders/{root.name}",
                             task="segmentation", num_classes=classes, label_names=labels,
                             channels=3, image_size=size,
                             splits={k: len(v) for k, v in sources.items()})
    return DataBundle(info=info, sources=sources)
