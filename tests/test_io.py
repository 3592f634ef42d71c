"""Image reader (docs/method.md §1) and napari reader contribution.

Expected pixel values are computed here by hand from the raw arrays written
to disk (modality LUT, min–max, inversion), never from the reader's output.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
import tifffile
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomFileLike
from pydicom.filewriter import write_dataset
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from napari_correlax._napari._reader import napari_get_reader, read_layers
from napari_correlax.errors import CorrelaxError
from napari_correlax.io import SUPPORTED_SUFFIXES, Mammogram, read_mammogram
from napari_correlax.io.image import META_KEYS, has_dicom_preamble

MAMMO_SOP_CLASS = UID("1.2.840.10008.5.1.4.1.1.1.2")  # Digital Mammography, For Presentation


def write_dicom(
    path: Path,
    raw: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    slope: float | None = None,
    intercept: float | None = None,
    imager_spacing: list[float] | None = None,
    pixel_spacing: list[float] | None = None,
    window: tuple | None = None,
    image_laterality: str | None = None,
    laterality: str | None = None,
    view: str | None = None,
    frames: int | None = None,
    preamble: bool = True,
    syntax: UID = ExplicitVRLittleEndian,
) -> Path:
    """Write ``raw`` (rows, cols[, samples] or frames, rows, cols) as a DICOM file."""
    raw = np.ascontiguousarray(raw)
    samples = raw.shape[-1] if (raw.ndim == 3 and frames is None) else 1
    file_meta = FileMetaDataset()
    file_meta.MediaStorageSOPClassUID = MAMMO_SOP_CLASS
    sop = generate_uid()
    file_meta.MediaStorageSOPInstanceUID = sop
    file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = file_meta
    ds.SOPClassUID = MAMMO_SOP_CLASS
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = "1.2.3.4.5.1"
    ds.SeriesInstanceUID = "1.2.3.4.5.2"
    ds.Modality = "MG"
    rows, cols = raw.shape[1:3] if frames is not None else raw.shape[:2]
    ds.Rows, ds.Columns = int(rows), int(cols)
    ds.SamplesPerPixel = samples
    if samples > 1:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = raw.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if raw.dtype.kind == "i" else 0
    if frames is not None:
        ds.NumberOfFrames = frames
    if slope is not None:
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept or 0
        ds.RescaleType = "US"
    if imager_spacing is not None:
        ds.ImagerPixelSpacing = imager_spacing
    if pixel_spacing is not None:
        ds.PixelSpacing = pixel_spacing
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if image_laterality is not None:
        ds.ImageLaterality = image_laterality
    if laterality is not None:
        ds.Laterality = laterality
    if view is not None:
        ds.ViewPosition = view
    ds.PixelData = raw.tobytes()
    if syntax != ExplicitVRLittleEndian:
        ds.compress(syntax)
    ds.save_as(path, enforce_file_format=preamble)
    return path


def minmax(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64)
    return (values - values.min()) / (values.max() - values.min())


@pytest.fixture
def raw12() -> np.ndarray:
    rng = np.random.default_rng(1)
    raw = rng.integers(10, 3990, size=(24, 17), dtype=np.uint16)
    raw[0, 0], raw[-1, -1] = 3, 4000  # known extremes: values span [3, 4000]
    return raw


# ------------------------------------------------------------------------ DICOM values


def test_monochrome2_values_are_rescaled_then_min_max(tmp_path, raw12):
    path = write_dicom(tmp_path / "a.dcm", raw12, bits_stored=12, slope=0.5, intercept=-100)
    m = read_mammogram(path)
    expected = minmax(raw12 * 0.5 - 100)
    assert m.pixels.dtype == np.float32 and m.pixels.shape == raw12.shape
    np.testing.assert_allclose(m.pixels, expected, atol=1e-6)
    assert m.meta["source_range"] == pytest.approx((3 * 0.5 - 100, 4000 * 0.5 - 100))
    assert m.meta["bits_stored"] == 12 and m.meta["photometric"] == "MONOCHROME2"


def test_monochrome1_is_inverted(tmp_path, raw12):
    path = write_dicom(
        tmp_path / "a.dcm",
        raw12,
        photometric="MONOCHROME1",
        bits_stored=12,
        slope=2.0,
        intercept=10,
    )
    m = read_mammogram(path)
    np.testing.assert_allclose(m.pixels, 1.0 - minmax(raw12 * 2.0 + 10), atol=1e-6)
    # the largest stored value (x-ray-transparent background in MONOCHROME1) is black
    assert m.pixels[-1, -1] == 0.0 and m.pixels[0, 0] == 1.0


def test_16_bit_without_rescale_uses_raw_values(tmp_path):
    raw = np.array([[0, 65535, 1000], [20000, 300, 40000]], dtype=np.uint16)
    m = read_mammogram(write_dicom(tmp_path / "b.dcm", raw))
    np.testing.assert_allclose(m.pixels, raw / 65535.0, atol=1e-6)
    assert m.meta["source_range"] == (0.0, 65535.0)


def test_unused_high_bits_are_ignored(tmp_path):
    raw = np.array([[1, 2], [3, 4095]], dtype=np.uint16)
    dirty = raw | np.uint16(0xF000)  # garbage above BitsStored=12
    m = read_mammogram(write_dicom(tmp_path / "c.dcm", dirty, bits_stored=12))
    np.testing.assert_allclose(m.pixels, minmax(raw), atol=1e-6)


def test_signed_pixels_with_intercept(tmp_path):
    raw = np.array([[-2000, -1], [0, 1500]], dtype=np.int16)
    m = read_mammogram(write_dicom(tmp_path / "s.dcm", raw, slope=1.0, intercept=-1024))
    np.testing.assert_allclose(m.pixels, minmax(raw.astype(float) - 1024), atol=1e-6)
    assert m.meta["source_range"] == (-3024.0, 476.0)


def test_stored_orientation_is_kept(tmp_path):
    raw = np.zeros((6, 9), dtype=np.uint16)
    raw[1, 7] = 500  # one bright pixel near the top-right
    m = read_mammogram(write_dicom(tmp_path / "o.dcm", raw, image_laterality="R"))
    assert np.unravel_index(np.argmax(m.pixels), m.pixels.shape) == (1, 7)


# ------------------------------------------------------------------------ DICOM metadata


def test_imager_pixel_spacing_wins_over_pixel_spacing(tmp_path, raw12):
    path = write_dicom(
        tmp_path / "a.dcm", raw12, imager_spacing=[0.085, 0.07], pixel_spacing=[0.1, 0.1]
    )
    assert read_mammogram(path).spacing_mm == pytest.approx((0.085, 0.07))


def test_pixel_spacing_used_when_alone(tmp_path, raw12):
    path = write_dicom(tmp_path / "a.dcm", raw12, pixel_spacing=[0.1, 0.2])
    assert read_mammogram(path).spacing_mm == pytest.approx((0.1, 0.2))


def test_no_spacing_gives_none(tmp_path, raw12):
    assert read_mammogram(write_dicom(tmp_path / "a.dcm", raw12)).spacing_mm is None


def test_metadata_fields(tmp_path, raw12):
    path = write_dicom(tmp_path / "meta.dcm", raw12, image_laterality="L", view="MLO")
    m = read_mammogram(path)
    assert set(m.meta) == set(META_KEYS)
    ds = pydicom.dcmread(path)
    assert m.meta["laterality"] == "L"
    assert m.meta["view_position"] == "MLO"
    assert m.meta["sop_instance_uid"] == ds.SOPInstanceUID
    assert m.meta["study_instance_uid"] == "1.2.3.4.5.1"
    assert m.meta["series_instance_uid"] == "1.2.3.4.5.2"
    assert m.meta["transfer_syntax"] == ExplicitVRLittleEndian
    assert m.meta["format"] == "dicom"
    assert m.meta["contrast_limits"] is None
    assert m.path == str(path) and m.name == "meta"


def test_laterality_falls_back_to_series_laterality(tmp_path, raw12):
    m = read_mammogram(write_dicom(tmp_path / "a.dcm", raw12, laterality="R"))
    assert m.meta["laterality"] == "R" and m.meta["view_position"] is None


def test_window_maps_into_unit_scale(tmp_path, raw12):
    # values span slope*[3, 4000] + 0 = [6, 8000]; window 3000 ± 1000
    path = write_dicom(tmp_path / "w.dcm", raw12, slope=2.0, intercept=0, window=(3000, 2000))
    lo_v, hi_v = 6.0, 8000.0
    expected = ((2000 - lo_v) / (hi_v - lo_v), (4000 - lo_v) / (hi_v - lo_v))
    assert read_mammogram(path).meta["contrast_limits"] == pytest.approx(expected)


def test_window_for_monochrome1_is_mirrored(tmp_path, raw12):
    path = write_dicom(
        tmp_path / "w.dcm", raw12, photometric="MONOCHROME1", window=([3500, 100], [2000, 50])
    )
    # first window only: 3500 ± 1000 = [2500, 4500] over values [3, 4000]
    lo_v, hi_v = 3.0, 4000.0
    a, b = (2500 - lo_v) / (hi_v - lo_v), (4500 - lo_v) / (hi_v - lo_v)
    assert b > 1.0  # the upper edge clips to 1, so the inverted lower limit is 0
    assert read_mammogram(path).meta["contrast_limits"] == pytest.approx((0.0, 1 - a))


def test_window_outside_the_data_is_dropped(tmp_path, raw12):
    path = write_dicom(tmp_path / "w.dcm", raw12, window=(90000, 100))
    assert read_mammogram(path).meta["contrast_limits"] is None


def test_constant_image_reads_as_zeros(tmp_path):
    raw = np.full((5, 4), 777, dtype=np.uint16)
    m = read_mammogram(write_dicom(tmp_path / "k.dcm", raw, window=(700, 200)))
    assert np.array_equal(m.pixels, np.zeros((5, 4), np.float32))
    assert m.meta["source_range"] == (777.0, 777.0) and m.meta["contrast_limits"] is None


# ------------------------------------------------------------------------ DICOM file forms


def test_dicom_without_extension_is_recognised(tmp_path, raw12):
    path = write_dicom(tmp_path / "IM000001", raw12)
    assert has_dicom_preamble(path)
    np.testing.assert_allclose(read_mammogram(path).pixels, minmax(raw12), atol=1e-6)


def test_dicom_suffix_and_upper_case(tmp_path, raw12):
    for name in ("x.dicom", "Y.DCM"):
        m = read_mammogram(write_dicom(tmp_path / name, raw12))
        np.testing.assert_allclose(m.pixels, minmax(raw12), atol=1e-6)


def test_dicom_without_preamble_named_dcm(tmp_path, raw12):
    path = write_dicom(tmp_path / "raw.dcm", raw12, preamble=False)
    assert not has_dicom_preamble(path)
    np.testing.assert_allclose(read_mammogram(path).pixels, minmax(raw12), atol=1e-6)


@pytest.mark.parametrize("implicit", [True, False])
def test_bare_data_set_without_file_meta(tmp_path, raw12, implicit):
    ds = pydicom.dcmread(write_dicom(tmp_path / "full.dcm", raw12, photometric="MONOCHROME1"))
    del ds.file_meta
    path = tmp_path / "bare.dcm"
    with open(path, "wb") as fh:
        fp = DicomFileLike(fh)
        fp.is_little_endian, fp.is_implicit_VR = True, implicit
        write_dataset(fp, ds)
    assert path.read_bytes()[:2] == b"\x08\x00"  # starts with group 0008, no preamble
    m = read_mammogram(path)
    np.testing.assert_allclose(m.pixels, 1.0 - minmax(raw12), atol=1e-6)
    assert m.meta["transfer_syntax"] == ("1.2.840.10008.1.2" if implicit else "1.2.840.10008.1.2.1")


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless])
def test_compressed_roundtrip_is_lossless(tmp_path, syntax):
    # 64×80: OpenJPEG's default six decomposition levels need at least 64 pixels a side
    raw = np.random.default_rng(3).integers(0, 4096, size=(64, 80), dtype=np.uint16)
    path = write_dicom(
        tmp_path / "c.dcm", raw, photometric="MONOCHROME1", bits_stored=12, syntax=syntax
    )
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == syntax
    m = read_mammogram(path)
    assert m.meta["transfer_syntax"] == syntax
    np.testing.assert_allclose(m.pixels, 1.0 - minmax(raw), atol=1e-6)


def test_multi_frame_is_rejected(tmp_path):
    raw = np.zeros((3, 4, 5), dtype=np.uint16)
    path = write_dicom(tmp_path / "dbt.dcm", raw, frames=3)
    with pytest.raises(CorrelaxError, match="multi-frame") as info:
        read_mammogram(path)
    assert str(path) in str(info.value)


def test_rgb_dicom_is_rejected(tmp_path):
    rgb = np.zeros((4, 5, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    path = write_dicom(tmp_path / "rgb.dcm", rgb, photometric="RGB")
    with pytest.raises(CorrelaxError, match="colour"):
        read_mammogram(path)


def test_unknown_transfer_syntax_names_the_syntax(tmp_path, raw12):
    path = write_dicom(tmp_path / "jxl.dcm", raw12)
    ds = pydicom.dcmread(path)
    # pydicom refuses to write a syntax it does not know: write MPEG-2 (same UID length,
    # also encapsulated) and patch the UID in the file meta to JPEG XL Lossless.
    mpeg2, jpeg_xl = b"1.2.840.10008.1.2.4.100", b"1.2.840.10008.1.2.4.110"
    ds.file_meta.TransferSyntaxUID = UID(mpeg2.decode())
    ds.PixelData = pydicom.encaps.encapsulate([b"\xff\x0a" + b"\x00" * 30])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    assert data.count(mpeg2) == 1
    path.write_bytes(data.replace(mpeg2, jpeg_xl))
    with pytest.raises(CorrelaxError) as info:
        read_mammogram(path)
    text = str(info.value)
    assert str(path) in text and "1.2.840.10008.1.2.4.110" in text and "JPEG XL" in text
    assert "no decoder" in text and "convert" in text


def test_missing_decoder_plugin_is_named(tmp_path, monkeypatch):
    raw = np.random.default_rng(5).integers(0, 4096, size=(64, 64), dtype=np.uint16)
    path = write_dicom(tmp_path / "j2k.dcm", raw, syntax=JPEG2000Lossless)

    class NoPlugin:  # what pydicom reports when no JPEG 2000 package is installed
        is_available = False
        missing_dependencies = ("pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-openjpeg",)

    monkeypatch.setattr(pydicom.pixels, "get_decoder", lambda uid: NoPlugin())
    with pytest.raises(CorrelaxError) as info:
        read_mammogram(path)
    text = str(info.value)
    assert "JPEG 2000" in text and JPEG2000Lossless in text
    assert "install pylibjpeg and pylibjpeg-openjpeg" in text


def test_truncated_pixel_data_is_rejected(tmp_path, raw12):
    path = write_dicom(tmp_path / "t.dcm", raw12)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(CorrelaxError) as info:
        read_mammogram(path)
    assert str(path) in str(info.value)


def test_dicom_without_pixel_data_is_rejected(tmp_path, raw12):
    path = write_dicom(tmp_path / "n.dcm", raw12)
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(CorrelaxError, match="no pixel data"):
        read_mammogram(path)


def test_empty_dicom_image_is_rejected(tmp_path):
    path = write_dicom(tmp_path / "e.dcm", np.zeros((0, 0), dtype=np.uint16))
    with pytest.raises(CorrelaxError, match="empty"):
        read_mammogram(path)


# ------------------------------------------------------------------------ PNG / TIFF / PGM


def _gradient(dtype: type) -> np.ndarray:
    top = np.iinfo(dtype).max
    rng = np.random.default_rng(7)
    img = rng.integers(5, top // 2, size=(19, 23)).astype(dtype)
    img[3, 4] = top - 3
    return img


@pytest.mark.parametrize("suffix", [".png", ".tif", ".tiff", ".pgm"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_raster_roundtrip(tmp_path, suffix, dtype):
    img = _gradient(dtype)
    path = tmp_path / f"img{suffix}"
    assert cv2.imwrite(str(path), img)
    m = read_mammogram(path)
    np.testing.assert_allclose(m.pixels, minmax(img), atol=1e-6)
    assert m.spacing_mm is None
    assert m.meta["format"] == {".tif": "tiff", ".tiff": "tiff"}.get(suffix, suffix[1:])
    assert m.meta["bits_stored"] == np.dtype(dtype).itemsize * 8
    assert m.meta["source_range"] == (float(img.min()), float(img.max()))
    assert m.meta["contrast_limits"] is None and m.meta["laterality"] is None


def test_float_tiff_and_resolution_tag(tmp_path):
    img = np.linspace(-1.5, 2.0, 30, dtype=np.float32).reshape(5, 6)
    path = tmp_path / "f.tif"
    tifffile.imwrite(path, img, resolution=(10.0, 20.0), resolutionunit="CENTIMETER")
    m = read_mammogram(path)
    np.testing.assert_allclose(m.pixels, minmax(img), atol=1e-6)
    # 10 px/cm along x (columns) = 1.0 mm; 20 px/cm along y (rows) = 0.5 mm
    assert m.spacing_mm == pytest.approx((0.5, 1.0))


def test_nan_tiff_is_rejected(tmp_path):
    img = np.ones((4, 4), dtype=np.float32)
    img[1, 1] = np.nan
    tifffile.imwrite(tmp_path / "n.tif", img)
    with pytest.raises(CorrelaxError, match="non-finite"):
        read_mammogram(tmp_path / "n.tif")


def test_multi_page_tiff_is_rejected(tmp_path):
    stack = np.zeros((3, 8, 8), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    with pytest.raises(CorrelaxError, match="3 pages"):
        read_mammogram(tmp_path / "stack.tif")


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_colour_image_is_rejected(tmp_path, suffix):
    img = np.zeros((6, 7, 3), dtype=np.uint8)
    img[..., 2] = 255
    path = tmp_path / f"rgb{suffix}"
    cv2.imwrite(str(path), img)
    with pytest.raises(CorrelaxError, match="colour") as info:
        read_mammogram(path)
    assert str(path) in str(info.value)


def test_grey_saved_as_rgb_is_accepted(tmp_path):
    grey = _gradient(np.uint8)
    cv2.imwrite(str(tmp_path / "g.png"), np.dstack([grey, grey, grey]))
    np.testing.assert_allclose(read_mammogram(tmp_path / "g.png").pixels, minmax(grey), atol=1e-6)


def test_constant_png_reads_as_zeros(tmp_path):
    cv2.imwrite(str(tmp_path / "k.png"), np.full((4, 4), 9, np.uint8))
    pixels = read_mammogram(tmp_path / "k.png").pixels
    assert np.isfinite(pixels).all() and not pixels.any()


def test_content_decides_the_format(tmp_path):
    img = _gradient(np.uint8)
    png = tmp_path / "really_png.dcm"
    png.write_bytes(cv2.imencode(".png", img)[1].tobytes())
    m = read_mammogram(png)
    assert m.meta["format"] == "png"
    np.testing.assert_allclose(m.pixels, minmax(img), atol=1e-6)


# ------------------------------------------------------------------------ bad input


def test_missing_file(tmp_path):
    path = tmp_path / "nope.dcm"
    with pytest.raises(CorrelaxError, match="not found") as info:
        read_mammogram(path)
    assert str(info.value).startswith(str(path))


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.png", b"", "empty"),
        ("notes.png", b"just some text\n" * 20, "not a supported image"),
        ("photo.tif", b"\xff\xd8\xff\xe0" + b"\x00" * 300, "JPEG"),
        ("scan.dcm", b"hello, world\n" * 30, "DICOM"),
        ("trunc.png", b"\x89PNG\r\n\x1a\n\x00\x00", "PNG"),
        ("bad.pgm", b"P5\n10 10\n255\n\x01\x02", "PGM"),
    ],
)
def test_bad_files_raise_correlax_error(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CorrelaxError, match=reason) as info:
        read_mammogram(path)
    assert str(path) in str(info.value)


def test_folder_is_rejected(tmp_path):
    with pytest.raises(CorrelaxError, match="folder"):
        read_mammogram(tmp_path)


def test_name_of_a_pathless_mammogram_is_empty():
    m = Mammogram(np.zeros((2, 2), np.float32), None, {})
    assert m.name == "" and m.path is None


# ------------------------------------------------------------------------ napari reader


@pytest.mark.parametrize(
    "path",
    [
        "image.txt",
        "photo.jpg",
        "x.nii.gz",
        "",
        [],
        ["a.dcm", "b.txt"],
        None,
        123,
        b"a.dcm",
        ["a.dcm", None],
        object(),
    ],
)
def test_get_reader_declines_without_raising(tmp_path, path):
    assert napari_get_reader(path) is None


def test_get_reader_declines_folders_and_plain_files(tmp_path):
    (tmp_path / "folder.dcm").mkdir()
    (tmp_path / "README").write_text("no image here")
    assert napari_get_reader(str(tmp_path / "folder.dcm")) is None
    assert napari_get_reader(str(tmp_path / "README")) is None


def test_get_reader_accepts_supported_files(tmp_path, raw12):
    dcm = write_dicom(tmp_path / "IM0001", raw12)
    assert napari_get_reader(str(dcm)) is read_layers
    assert napari_get_reader(dcm) is read_layers
    assert napari_get_reader([str(tmp_path / f"a{s.upper()}") for s in SUPPORTED_SUFFIXES])
    assert napari_get_reader(str(tmp_path / "missing.png")) is read_layers


def test_reader_layer_kwargs(tmp_path, raw12):
    path = write_dicom(
        tmp_path / "LCC.dcm",
        raw12,
        photometric="MONOCHROME1",
        imager_spacing=[0.07, 0.065],
        window=(2000, 1000),
        image_laterality="L",
    )
    [(data, kwargs, kind)] = napari_get_reader(str(path))(str(path))
    assert kind == "image"
    np.testing.assert_allclose(data, 1.0 - minmax(raw12), atol=1e-6)
    assert kwargs["name"] == "LCC"
    assert kwargs["scale"] == pytest.approx((0.07, 0.065))
    lo_v, hi_v = 3.0, 4000.0
    a, b = (1500 - lo_v) / (hi_v - lo_v), (2500 - lo_v) / (hi_v - lo_v)
    assert kwargs["contrast_limits"] == pytest.approx((1 - b, 1 - a))
    assert kwargs["colormap"] == "gray"
    assert kwargs["metadata"]["path"] == str(path)
    assert kwargs["metadata"]["spacing_mm"] == pytest.approx((0.07, 0.065))
    assert kwargs["metadata"]["mammogram"]["laterality"] == "L"


def test_reader_defaults_without_spacing_or_window(tmp_path):
    img = _gradient(np.uint16)
    cv2.imwrite(str(tmp_path / "a.png"), img)
    cv2.imwrite(str(tmp_path / "b.pgm"), img)
    paths = [str(tmp_path / "a.png"), str(tmp_path / "b.pgm")]
    layers = napari_get_reader(paths)(paths)
    assert [kw["name"] for _, kw, _ in layers] == ["a", "b"]
    for data, kwargs, _ in layers:
        np.testing.assert_allclose(data, minmax(img), atol=1e-6)
        assert kwargs["scale"] == (1.0, 1.0) and kwargs["contrast_limits"] == (0.0, 1.0)
        assert kwargs["metadata"]["spacing_mm"] is None


def test_reader_raises_correlax_error_and_returns_nothing_on_a_bad_file(tmp_path):
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), _gradient(np.uint8))
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(os.urandom(400))
    reader = napari_get_reader([str(good), str(bad)])
    assert reader is not None
    with pytest.raises(CorrelaxError) as info:
        reader([str(good), str(bad)])
    assert str(bad) in str(info.value)


def test_layer_kwargs_build_a_napari_image_layer(tmp_path, raw12):
    layers = pytest.importorskip("napari.layers")
    path = write_dicom(tmp_path / "a.dcm", raw12, pixel_spacing=[0.1, 0.2], window=(2000, 800))
    [(data, kwargs, _)] = read_layers(str(path))
    layer = layers.Image(data, **kwargs)
    assert tuple(layer.scale) == pytest.approx((0.1, 0.2))
    assert tuple(layer.contrast_limits) == pytest.approx(kwargs["contrast_limits"])
