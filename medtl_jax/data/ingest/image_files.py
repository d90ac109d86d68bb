"""Read one image file of any supported kind into a HxWxC array (C = 1 grey or 3 RGB).

DICOM files (suffix .dcm/.dicom, or any file with the 'DICM' magic at byte 128) go through
medtl_jax.data.ingest.dicom; everything else through PIL. Every failure (missing, truncated, corrupt or
non-image file) raises `UnreadableImageError(path, reason)`, a ValueError whose message names the file.

Non-DICOM conversions: greyscale 'L' stays 1 channel; RGB stays 3; alpha is dropped (LA -> grey,
RGBA -> RGB); palette images become RGB (or grey when the palette is grey); 16-bit grey ('I;16',
'I') is mapped linearly from the 0..65535 range (x / 257 for 8-bit output), float 'F' from 0..1 when
its maximum is <= 1 (else from 0..65535), 1-bit images to 0/255. Multi-page TIFF: the first page.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import PIL.Image

from medtl_jax.data.ingest.dicom import (WINDOW_PRESETS, DicomOptions, UnreadableImageError,
                                  is_dicom_file, read_dicom, read_header)

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom")

__all__ = ["IMAGE_SUFFIXES", "DICOM_SUFFIXES", "DicomOptions", "WINDOW_PRESETS",
           "UnreadableImageError", "is_dicom", "probe", "ImageShape", "read_image", "read_frames"]


def is_dicom(path) -> bool:
    """True for a .dcm/.dicom name or a file with the DICOM preamble."""
    return str(path).lower().endswith(DICOM_SUFFIXES) or is_dicom_file(path)


def _scale(values: np.ndarray, top: float, bits: int) -> np.ndarray:
    unit = np.clip(values.astype(np.float64) / top, 0.0, 1.0)
    return np.round(unit * (255 if bits == 8 else 65535)).astype(np.uint8 if bits == 8 else np.uint16)


def _grey_palette(img: PIL.Image.Image) -> bool:
    """True when every palette entry has R == G == B (such images are stored as 1 channel)."""
    palette = np.asarray(img.getpalette() or [], dtype=np.int32).reshape(-1, 3)
    return bool(len(palette)) and bool((palette == palette[:, :1]).all())


def _pil_channels(img: PIL.Image.Image) -> int:
    if img.mode == "P":
        return 1 if _grey_palette(img) else 3
    return 1 if img.mode in ("L", "LA", "1", "I", "F") or img.mode.startswith("I;16") else 3


def _pil_array(img: PIL.Image.Image, bits: int) -> np.ndarray:
    """A decoded PIL image -> HxWxC uint8/uint16 (see the module docstring for the mode rules)."""
    mode = img.mode
    if mode == "P":
        rgb = np.asarray(img.convert("RGBA" if "transparency" in img.info else "RGB"))[..., :3]
        arr, top = (rgb[..., :1] if _grey_palette(img) else rgb), 255.0
    elif mode in ("L", "LA"):
        arr, top = np.asarray(img)[..., :1] if mode == "LA" else np.asarray(img)[..., None], 255.0
    elif mode == "1":
        arr, top = np.asarray(img.convert("L"))[..., None], 255.0
    elif mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(img)
        top = 1.0 if mode == "F" and arr.size and float(arr.max()) <= 1.0 else 65535.0
        arr = arr[..., None]
    else:  # RGB, RGBA, CMYK, YCbCr, LAB, HSV...
        arr, top = np.asarray(img.convert("RGB")), 255.0
    if top == 255.0 and bits == 8:
        return np.ascontiguousarray(arr, dtype=np.uint8)
    return _scale(arr, top, bits)


def _read_pil(path, bits: int) -> np.ndarray:
    try:
        with PIL.Image.open(path) as img:
            img.load()  # decodes now: truncated or corrupt data fail here, not later
            return _pil_array(img, bits)
    except FileNotFoundError as exc:
        raise UnreadableImageError(path, "file not found") from exc
    except PIL.UnidentifiedImageError as exc:
        raise UnreadableImageError(path, "not a recognised image format") from exc
    except (OSError, SyntaxError, ValueError, EOFError, PIL.Image.DecompressionBombError) as exc:
        raise UnreadableImageError(path, f"corrupt or truncated image ({exc})") from exc


@dataclasses.dataclass(frozen=True)
class ImageShape:
    """Geometry read from a file's header without decoding the pixels."""

    height: int
    width: int
    channels: int
    frames: int = 1
    patient_id: str | None = None  # DICOM only; for grouping, never logged
    series_uid: str | None = None


def probe(path) -> ImageShape:
    """Height, width, channels (and DICOM frame count / ids) from the header; cheap, no decoding.

    Raises UnreadableImageError for a missing file or one whose header is not an image's; damage in
    the pixel data itself only shows when the image is read.
    """
    if not os.path.exists(path):
        raise UnreadableImageError(path, "file not found")
    if os.path.isdir(path):
        raise UnreadableImageError(path, "is a folder, not a file")
    if is_dicom(path):
        head = read_header(path)
        return ImageShape(head.rows, head.columns, head.channels, head.frames, head.patient_id,
                          head.series_uid)
    try:
        with PIL.Image.open(path) as img:
            return ImageShape(img.height, img.width, _pil_channels(img))
    except PIL.UnidentifiedImageError as exc:
        raise UnreadableImageError(path, "not a recognised image format") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise UnreadableImageError(path, f"corrupt image header ({exc})") from exc


def read_frames(path, *, dicom: DicomOptions | None = None, bits: int | None = None) -> list[np.ndarray]:
    """Every frame `dicom.frame` asks for (several only for DICOM with frame='expand'), HxWxC each."""
    options = dicom if dicom is not None else DicomOptions()
    bits = options.bits if bits is None else bits
    if not os.path.exists(path):
        raise UnreadableImageError(path, "file not found")
    if os.path.isdir(path):
        raise UnreadableImageError(path, "is a folder, not a file")
    if is_dicom(path):
        if bits != options.bits:
            options = DicomOptions(window=options.window, frame=options.frame, bits=bits,
                                   invert_monochrome1=options.invert_monochrome1)
        return read_dicom(path, options)
    return [_read_pil(path, bits)]


def read_image(path, *, dicom: DicomOptions | None = None, bits: int | None = None) -> np.ndarray:
    """One image as HxWxC (C = 1 or 3), uint8 (or uint16 when bits/dicom.bits is 16).

    DICOM is decoded with `dicom` (default DicomOptions(): header window, first frame, 8 bits);
    frame='expand' is refused here because it yields several images: use `read_frames`.
    """
    if dicom is not None and dicom.frame == "expand":
        raise ValueError("read_image returns one image; use read_frames for frame='expand'")
    return read_frames(path, dicom=dicom, bits=bits)[0]
