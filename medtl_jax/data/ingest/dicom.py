"""DICOM -> display-ready arrays (pydicom): modality LUT, VOI window, MONOCHROME1, frames, colour.

Pipeline for one file, in the order DICOM PS3.3 prescribes:
1. decode the pixel data (`pydicom.pixels.pixel_array`; compressed transfer syntaxes need the pylibjpeg
   plugins from the `dicom` extra; YBR_FULL/YBR_FULL_422/YBR_RCT/YBR_ICT come out as RGB because pydicom's
   decoders call `convert_color_space` for us; PALETTE COLOR goes through `apply_color_lut`);
2. grey images: modality LUT (`apply_modality_lut`: Rescale Slope/Intercept, e.g. CT -> Hounsfield units);
3. VOI: a named preset (`WINDOW_PRESETS`, simple linear clip `clip((x - (C - W/2)) / W, 0, 1)`) when
   `DicomOptions.window` names one; else the header's VOI LUT Sequence or Window Center/Width
   (`apply_voi_lut`, first view); else the frame's own min..max;
4. MONOCHROME1 (0 = white) is inverted so that every output is "bright = dense" like MONOCHROME2;
5. scaled to 8-bit (0..255, uint8) or 16-bit (0..65535, uint16). Colour images keep their values
   (rescaled from their Bits Stored to the output depth) and skip steps 2-4.

Frames: `DicomOptions.frame` is a frame index (0 = first) or 'expand' (every frame is returned).
Enhanced multi-frame objects whose rescale lives only in the per-frame functional groups are windowed
from the stored values (pydicom's modality LUT reads the top-level attributes only).

Privacy: nothing here logs header values; `dicom_ids` returns PatientID / SeriesInstanceUID for grouping
only, and callers hash them before writing anything (see medtl_jax.data.ingest.splits).
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

# Window presets (centre, width) in Hounsfield units. Bone uses C 400 / W 1800 (the wide bone window;
# 300/1500 is the other common choice).
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (40.0, 400.0),
    "soft_tissue": (40.0, 400.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}


class UnreadableImageError(ValueError):
    """A file that cannot be decoded as an image; the message names the path and the reason."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = str(reason)
        super().__init__(f"cannot read image {self.path}: {self.reason}")


@dataclasses.dataclass(frozen=True)
class DicomOptions:
    """How to turn a DICOM file into pixels.

    window: a WINDOW_PRESETS name, or None to use the header's VOI LUT / Window Center-Width.
    frame: index of the frame to keep, or 'expand' to keep every frame.
    bits: output depth, 8 (uint8) or 16 (uint16).
    invert_monochrome1: flip MONOCHROME1 images so that high values are bright.
    """

    window: str | None = None
    frame: int | str = 0
    bits: int = 8
    invert_monochrome1: bool = True

    def __post_init__(self):
        if self.window is not None and self.window not in WINDOW_PRESETS:
            raise ValueError(f"unknown window preset {self.window!r}; valid: {sorted(WINDOW_PRESETS)}")
        if self.frame != "expand" and not (isinstance(self.frame, int) and self.frame >= 0):
            raise ValueError(f"frame must be a non-negative int or 'expand', got {self.frame!r}")
        if self.bits not in (8, 16):
            raise ValueError(f"bits must be 8 or 16, got {self.bits!r}")


def is_dicom_file(path) -> bool:
    """True when the file carries the 'DICM' magic at byte 128 (the DICOM Part 10 preamble)."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _dcmread(path, **kwargs):
    """pydicom.dcmread that turns every failure into UnreadableImageError naming `path`."""
    import pydicom  # optional dependency: pip install medtl-jax[dicom]
    from pydicom.errors import InvalidDicomError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(path, **kwargs)
    except InvalidDicomError as exc:
        raise UnreadableImageError(path, "not a DICOM file (no DICM preamble or file meta header)"
                                   ) from exc
    except FileNotFoundError as exc:
        raise UnreadableImageError(path, "file not found") from exc
    except Exception as exc:  # pydicom raises many kinds on damaged files
        raise UnreadableImageError(path, f"damaged DICOM file ({type(exc).__name__}: {exc})") from exc


@dataclasses.dataclass(frozen=True)
class DicomHeader:
    """What a manifest needs from a header: grouping ids (never logged), frame count and geometry."""

    patient_id: str | None
    series_uid: str | None
    frames: int
    rows: int
    columns: int
    channels: int


_HEADER_TAGS = ["PatientID", "SeriesInstanceUID", "NumberOfFrames", "Rows", "Columns",
                "SamplesPerPixel", "PhotometricInterpretation"]


def read_header(path) -> DicomHeader:
    """Reads the header only (no pixel data); UnreadableImageError when it is not an image DICOM."""
    ds = _dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    if "Rows" not in ds or "Columns" not in ds:
        raise UnreadableImageError(path, "DICOM file has no image (no Rows/Columns)")
    colour = int(ds.get("SamplesPerPixel", 1) or 1) == 3 or \
        ds.get("PhotometricInterpretation") == "PALETTE COLOR"
    return DicomHeader(
        patient_id=str(ds.get("PatientID", "") or "").strip() or None,
        series_uid=str(ds.get("SeriesInstanceUID", "") or "").strip() or None,
        frames=int(ds.get("NumberOfFrames", 1) or 1), rows=int(ds.Rows), columns=int(ds.Columns),
        channels=3 if colour else 1)


def dicom_ids(path) -> tuple[str | None, str | None]:
    """(PatientID, SeriesInstanceUID) from the header, None where absent; for grouping splits only."""
    ds = _dcmread(path, stop_before_pixels=True, specific_tags=["PatientID", "SeriesInstanceUID"])
    return (str(ds.get("PatientID", "") or "").strip() or None,
            str(ds.get("SeriesInstanceUID", "") or "").strip() or None)


def _voi_output_range(ds) -> tuple[float, float]:
    """Range of values `apply_voi_lut` produces for this header (mirrors pydicom's rules)."""
    if "VOILUTSequence" in ds:
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2**bits - 1)
    if ds.get("ModalityLUTSequence"):
        lo, hi = 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    elif int(ds.get("PixelRepresentation", 0)) == 0:
        lo, hi = 0.0, float(2 ** int(ds.BitsStored) - 1)
    else:
        lo, hi = -float(2 ** (int(ds.BitsStored) - 1)), float(2 ** (int(ds.BitsStored) - 1) - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        lo, hi = lo * float(slope) + float(intercept), hi * float(slope) + float(intercept)
    return lo, hi


def window_unit(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """Linear window to [0, 1]: clip((x - (C - W/2)) / W, 0, 1) (float64)."""
    return np.clip((values.astype(np.float64) - (center - width / 2.0)) / width, 0.0, 1.0)


def _grey_unit(frame: np.ndarray, ds, options: DicomOptions) -> np.ndarray:
    """One grey frame (stored values) -> [0, 1] after modality LUT, VOI and MONOCHROME1 inversion."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    values = apply_modality_lut(frame, ds)
    if options.window is not None:
        unit = window_unit(values, *WINDOW_PRESETS[options.window])
    elif "VOILUTSequence" in ds or "WindowCenter" in ds:
        lo, hi = _voi_output_range(ds)
        unit = np.clip((apply_voi_lut(values, ds, index=0).astype(np.float64) - lo) / (hi - lo), 0, 1)
    else:
        lo, hi = float(values.min()), float(values.max())
        unit = (values.astype(np.float64) - lo) / (hi - lo) if hi > lo else np.zeros(values.shape)
    if options.invert_monochrome1 and ds.get("PhotometricInterpretation") == "MONOCHROME1":
        unit = 1.0 - unit
    return unit


def _to_bits(unit: np.ndarray, bits: int) -> np.ndarray:
    top = 255 if bits == 8 else 65535
    return np.round(unit * top).astype(np.uint8 if bits == 8 else np.uint16)


def _colour_frame(frame: np.ndarray, ds, bits: int) -> np.ndarray:
    """An RGB frame at its stored depth -> uint8/uint16 RGB at the requested depth."""
    stored = int(ds.get("BitsStored", 8))
    if ds.get("PhotometricInterpretation") == "PALETTE COLOR":
        stored = 16 if frame.dtype == np.uint16 else 8  # the LUT's own depth
    top = float(2**stored - 1)
    return _to_bits(np.clip(frame.astype(np.float64) / top, 0.0, 1.0), bits)


def read_dicom(path, options: DicomOptions = DicomOptions()) -> list[np.ndarray]:
    """Decodes `path` into a list of HxWxC arrays (C = 1 grey or 3 RGB; uint8 or uint16).

    One array for an integer `options.frame`, one per frame for 'expand'. Raises UnreadableImageError
    (naming the file) for non-DICOM or damaged files, missing pixel data, or a frame index out of range.
    """
    from pydicom.pixels import apply_color_lut, pixel_array

    ds = _dcmread(path)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise UnreadableImageError(path, "DICOM file has no pixel data")
    count = int(ds.get("NumberOfFrames", 1) or 1)
    if options.frame != "expand" and options.frame >= count:
        raise UnreadableImageError(path, f"frame {options.frame} requested but the file has "
                                         f"{count} frame(s)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if options.frame == "expand":
                pixels = pixel_array(ds)
                frames = list(pixels) if count > 1 else [pixels]
            else:
                frames = [pixel_array(ds, index=options.frame if count > 1 else None)]
    except Exception as exc:  # decoder missing, truncated pixel data, bad codestream...
        raise UnreadableImageError(path, f"cannot decode pixel data ({type(exc).__name__}: {exc})"
                                   ) from exc
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    out = []
    for frame in frames:
        if photometric == "PALETTE COLOR":
            out.append(_colour_frame(apply_color_lut(frame, ds), ds, options.bits))
        elif frame.ndim == 3:  # RGB (YBR already converted by the decoder)
            out.append(_colour_frame(frame, ds, options.bits))
        else:
            out.append(_to_bits(_grey_unit(frame, ds, options), options.bits)[..., None])
    return out
