"""The DICOM VOI LUT as the authors' code applies it (method §1, §2), and models that ask for it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_correlax.io import read_mammogram
from napari_correlax.maps.sliding import prepare_image
from napari_correlax.models.classifier import Classifier
from napari_correlax.preprocess import Preprocessing


def _dicom_with_window(tmp_path: Path, phantom, photometric: str) -> Path:
    """A phantom DICOM whose window covers only part of the stored values."""
    import pydicom

    from napari_correlax.synth import write_dicom

    path = write_dicom(tmp_path / f"{photometric}.dcm", phantom, photometric=photometric,
                       bits_stored=12)
    ds = pydicom.dcmread(path)
    stored = ds.pixel_array
    lo, mid, hi = np.percentile(stored, [30, 60, 90])
    ds.WindowCenter = f"{mid:.1f}"
    ds.WindowWidth = f"{max(hi - lo, 2.0):.1f}"
    ds.save_as(path)
    return path


def _dicom_with_lut_sequence(tmp_path: Path, phantom) -> Path:
    """A phantom DICOM with a non-linear 16-bit VOI LUT (and its window, which it overrides)."""
    import pydicom
    from pydicom.dataset import Dataset

    from napari_correlax.synth import write_dicom

    path = write_dicom(tmp_path / "lut.dcm", phantom, bits_stored=12)
    ds = pydicom.dcmread(path)
    entries, first = 3000, 500
    curve = np.sqrt(np.linspace(0.0, 1.0, entries)) * 65535.0
    item = Dataset()
    item.add_new(0x00283002, "US", [entries, first, 16])  # LUT Descriptor
    item.add_new(0x00283006, "US", [int(v) for v in np.round(curve)])  # LUT Data
    ds.VOILUTSequence = [item]
    ds.save_as(path)
    return path


def _authors_reading(path: Path) -> np.ndarray:
    """What the authors' loader computes: VOI LUT, MONOCHROME1 inverted, min-max to [0, 1]."""
    import pydicom
    from pydicom.pixels import apply_voi_lut

    ds = pydicom.dcmread(path)
    image = apply_voi_lut(ds.pixel_array, ds).astype(np.float64)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        image = image.max() - image
    return (image - image.min()) / (image.max() - image.min())


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_window_is_applied_before_inversion_and_scaling(tmp_path, small_phantom, photometric):
    path = _dicom_with_window(tmp_path, small_phantom, photometric)
    plain = read_mammogram(path)
    windowed = read_mammogram(path, voi_lut=True)
    expected = _authors_reading(path)
    np.testing.assert_allclose(windowed.pixels, expected, atol=1e-6, rtol=0)
    assert windowed.meta["voi_lut_applied"] is True
    assert windowed.meta["contrast_limits"] is None  # the window is in the pixels now
    assert plain.meta["voi_lut_applied"] is False
    assert np.abs(plain.pixels - windowed.pixels).max() > 0.1  # the window did something


def test_voi_lut_sequence_is_applied(tmp_path, small_phantom):
    path = _dicom_with_lut_sequence(tmp_path, small_phantom)
    mammogram = read_mammogram(path, voi_lut=True)
    np.testing.assert_allclose(mammogram.pixels, _authors_reading(path), atol=1e-6, rtol=0)
    assert mammogram.meta["voi_lut_applied"] is True


def test_nothing_changes_without_a_window_or_outside_dicom(tmp_path, small_phantom):
    import cv2
    import pydicom

    from napari_correlax.synth import write_dicom

    path = write_dicom(tmp_path / "nowindow.dcm", small_phantom)
    ds = pydicom.dcmread(path)
    del ds.WindowCenter
    del ds.WindowWidth
    ds.save_as(path)
    with_option = read_mammogram(path, voi_lut=True)
    np.testing.assert_array_equal(with_option.pixels, read_mammogram(path).pixels)
    assert with_option.meta["voi_lut_applied"] is False

    png = tmp_path / "image.png"
    stored = np.round(small_phantom.pixels * 65535).astype(np.uint16)
    assert cv2.imwrite(str(png), stored)
    from_png = read_mammogram(png, voi_lut=True)
    expected = (stored - float(stored.min())) / float(stored.max() - stored.min())
    np.testing.assert_allclose(from_png.pixels, expected, atol=1e-6, rtol=0)
    assert from_png.meta["voi_lut_applied"] is False


def _model(voi_lut: bool) -> Classifier:
    profile = Preprocessing(voi_lut=voi_lut)  # base channel at full precision
    return Classifier("tiny", preprocessing=profile.to_dict()).eval()


def _base_channel(prep) -> np.ndarray:
    h, w = prep.pixels.shape
    oy, ox = prep.offset
    return prep.fused[oy : oy + h, ox : ox + w, 0]


def test_prepare_image_feeds_the_voi_image_to_a_model_that_asks_for_it(tmp_path, small_phantom):
    path = _dicom_with_window(tmp_path, small_phantom, "MONOCHROME1")
    mammogram = read_mammogram(path)  # as displayed: no VOI LUT
    expected = _authors_reading(path)

    prep = prepare_image(mammogram, _model(voi_lut=True), stride=64)
    np.testing.assert_allclose(_base_channel(prep), expected, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(prep.pixels, mammogram.pixels)  # display pixels kept
    assert mammogram.meta["voi_lut_applied"] is False  # the caller's image is untouched

    plain = prepare_image(mammogram, _model(voi_lut=False), stride=64)
    np.testing.assert_array_equal(_base_channel(plain), mammogram.pixels)

    # An image read with the VOI LUT goes to a model without it as the file's plain pixels.
    windowed = read_mammogram(path, voi_lut=True)
    back = prepare_image(windowed, _model(voi_lut=False), stride=64)
    np.testing.assert_array_equal(_base_channel(back), mammogram.pixels)
    np.testing.assert_array_equal(back.pixels, windowed.pixels)


def test_prepare_image_leaves_arrays_and_other_formats_alone(tmp_path, small_phantom):
    import cv2

    stored = np.round(small_phantom.pixels * 255).astype(np.uint8)
    png = tmp_path / "image.png"
    assert cv2.imwrite(str(png), stored)
    expected = (stored - float(stored.min())) / float(stored.max() - stored.min())
    for image in (read_mammogram(png), stored.astype(np.float32)):
        prep = prepare_image(image, _model(voi_lut=True), stride=64)
        np.testing.assert_allclose(_base_channel(prep), expected, atol=1e-6, rtol=0)
