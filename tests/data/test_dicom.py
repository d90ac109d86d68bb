"""DICOM decoding on pydicom's own test files: windows, MONOCHROME1, frames, colour, codecs, errors."""

import shutil
import warnings

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
from pydicom.data import get_testdata_file  # noqa: E402

from medtl_jax.data.ingest import dicom, image_files  # noqa: E402
from medtl_jax.data.ingest.image_files import DicomOptions, UnreadableImageError  # noqa: E402


def _file(name: str) -> str:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom test file {name} not available (pip install pydicom-data)")
    return path


def _raw(name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(_file(name))
        return ds, ds.pixel_array.astype(np.float64)


def _linear_voi(x, center, width):
    """DICOM PS3.3 C.11.2.1.2.1 'LINEAR' window to [0, 1], written out by hand."""
    return np.clip((x - (center - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0)


@pytest.mark.parametrize("preset", sorted(dicom.WINDOW_PRESETS))
def test_window_presets_match_hand_computation_on_ct(preset):
    ds, raw = _raw("CT_small.dcm")
    hu = raw * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    center, width = dicom.WINDOW_PRESETS[preset]
    expected = np.round(np.clip((hu - (center - width / 2)) / width, 0, 1) * 255).astype(np.uint8)
    got = image_files.read_image(_file("CT_small.dcm"), dicom=DicomOptions(window=preset))
    assert got.shape == (128, 128, 1) and got.dtype == np.uint8
    np.testing.assert_array_equal(got[..., 0], expected)


def test_preset_values_and_16_bit_output():
    assert dicom.WINDOW_PRESETS["lung"] == (-600, 1500)
    assert dicom.WINDOW_PRESETS["bone"] == (400, 1800)
    assert dicom.WINDOW_PRESETS["brain"] == (40, 80)
    assert dicom.WINDOW_PRESETS["soft_tissue"] == dicom.WINDOW_PRESETS["mediastinum"] == (40, 400)
    ds, raw = _raw("CT_small.dcm")
    hu = raw * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    expected = np.round(np.clip((hu - (-600 - 750)) / 1500, 0, 1) * 65535).astype(np.uint16)
    got = image_files.read_image(_file("CT_small.dcm"), dicom=DicomOptions(window="lung", bits=16))
    assert got.dtype == np.uint16
    np.testing.assert_array_equal(got[..., 0], expected)
    with pytest.raises(ValueError, match="unknown window preset 'lungs'"):
        DicomOptions(window="lungs")


def test_header_window_and_minmax_fallback():
    ds, raw = _raw("MR_small.dcm")  # Window Center/Width in the header, no rescale
    expected = np.round(_linear_voi(raw, float(ds.WindowCenter), float(ds.WindowWidth)) * 255)
    np.testing.assert_array_equal(image_files.read_image(_file("MR_small.dcm"))[..., 0], expected)
    ds, raw = _raw("CT_small.dcm")  # rescale but no window: the image's own range
    hu = raw * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    expected = np.round((hu - hu.min()) / (hu.max() - hu.min()) * 255)
    np.testing.assert_array_equal(image_files.read_image(_file("CT_small.dcm"))[..., 0], expected)


def test_monochrome1_cr_is_inverted():
    ds, raw = _raw("RG3_UNCR.dcm")  # CR, MONOCHROME1, header window
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    unit = _linear_voi(raw, float(ds.WindowCenter), float(ds.WindowWidth))
    got = image_files.read_image(_file("RG3_UNCR.dcm"))
    np.testing.assert_array_equal(got[..., 0], np.round((1 - unit) * 255))
    kept = image_files.read_image(_file("RG3_UNCR.dcm"),
                                  dicom=DicomOptions(invert_monochrome1=False))
    np.testing.assert_array_equal(kept[..., 0], np.round(unit * 255))


def test_multiframe_expand_and_frame_index():
    path = _file("emri_small.dcm")
    frames = image_files.read_frames(path, dicom=DicomOptions(frame="expand"))
    assert len(frames) == 10 and all(f.shape == (64, 64, 1) for f in frames)
    assert not np.array_equal(frames[0], frames[3])
    np.testing.assert_array_equal(image_files.read_image(path, dicom=DicomOptions(frame=3)), frames[3])
    with pytest.raises(UnreadableImageError, match=r"emri_small\.dcm: frame 10 requested but the "
                                                   r"file has 10 frame\(s\)"):
        image_files.read_image(path, dicom=DicomOptions(frame=10))
    with pytest.raises(ValueError, match="use read_frames"):
        image_files.read_image(path, dicom=DicomOptions(frame="expand"))


@pytest.mark.parametrize("twin", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm",
                                  "MR_small_jpeg_ls_lossless.dcm", "MR_small_bigendian.dcm",
                                  "MR_small_implicit.dcm"])
def test_lossless_codecs_equal_uncompressed(twin):
    np.testing.assert_array_equal(image_files.read_image(_file(twin)),
                                  image_files.read_image(_file("MR_small.dcm")))


@pytest.mark.parametrize("twin", ["emri_small_RLE.dcm", "emri_small_jpeg_2k_lossless.dcm",
                                  "emri_small_jpeg_ls_lossless.dcm"])
def test_multiframe_codecs_equal_uncompressed(twin):
    opts = DicomOptions(frame="expand")
    got = image_files.read_frames(_file(twin), dicom=opts)
    want = image_files.read_frames(_file("emri_small.dcm"), dicom=opts)
    np.testing.assert_array_equal(np.stack(got), np.stack(want))


@pytest.mark.parametrize("name,max_mean_diff", [
    ("SC_rgb_rle.dcm", 0.0), ("SC_rgb_jpeg_gdcm.dcm", 0.0),      # RLE, JPEG lossless RGB
    ("US1_J2KR.dcm", 0.0),                                        # JPEG 2000 lossless, YBR_RCT
    ("SC_rgb_jpeg_dcmtk.dcm", 1.0), ("US1_J2KI.dcm", 2.5)])       # JPEG baseline YBR, JPEG 2000 lossy
def test_colour_codecs_match_uncompressed(name, max_mean_diff):
    twin = "US1_UNCR.dcm" if name.startswith("US1") else "SC_rgb.dcm"
    got = image_files.read_image(_file(name)).astype(int)
    want = image_files.read_image(_file(twin)).astype(int)
    assert got.shape == want.shape and got.shape[-1] == 3
    assert np.abs(got - want).mean() <= max_mean_diff


def test_ybr_full_converted_to_rgb_by_hand_formula():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(_file("SC_ybr_full_uncompressed.dcm"))
        ybr = pydicom.pixels.pixel_array(ds, raw=True).astype(np.float64)
    assert ds.PhotometricInterpretation == "YBR_FULL"
    y, cb, cr = ybr[..., 0], ybr[..., 1] - 128, ybr[..., 2] - 128
    rgb = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], axis=-1)
    got = image_files.read_image(_file("SC_ybr_full_uncompressed.dcm")).astype(int)
    assert np.abs(got - np.clip(np.round(rgb), 0, 255)).max() <= 1


def test_palette_colour_becomes_rgb():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(_file("OBXXXX1A_rle.dcm"))
        lut = pydicom.pixels.apply_color_lut(ds.pixel_array, ds)
    got = image_files.read_image(_file("OBXXXX1A_rle.dcm"))
    bits = 16 if lut.dtype == np.uint16 else 8
    np.testing.assert_array_equal(got, np.round(lut / (2**bits - 1) * 255).astype(np.uint8))


def test_ids_from_header_and_probe():
    ds, _ = _raw("MR_small.dcm")
    assert dicom.dicom_ids(_file("MR_small.dcm")) == (ds.PatientID, ds.SeriesInstanceUID)
    shape = image_files.probe(_file("emri_small.dcm"))
    assert (shape.height, shape.width, shape.channels, shape.frames) == (64, 64, 1, 10)
    assert image_files.probe(_file("US1_J2KR.dcm")).channels == 3


def test_unreadable_dicom_errors_name_the_file(tmp_path):
    fake = tmp_path / "scan.dcm"
    fake.write_text("this is not DICOM")
    with pytest.raises(UnreadableImageError, match=r"cannot read image .*scan\.dcm: not a DICOM file"):
        image_files.read_image(fake)
    truncated = tmp_path / "MR_truncated.dcm"
    shutil.copy(_file("MR_truncated.dcm"), truncated)
    with pytest.raises(UnreadableImageError, match=r"MR_truncated\.dcm: cannot decode pixel data"):
        image_files.read_image(truncated)
    # a DICOM file without a .dcm suffix is still recognised by its preamble
    bare = tmp_path / "IM0001"
    shutil.copy(_file("MR_small.dcm"), bare)
    np.testing.assert_array_equal(image_files.read_image(bare),
                                  image_files.read_image(_file("MR_small.dcm")))
