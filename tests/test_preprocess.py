"""CLAHE fusion and breast ROI (SPEC §2)."""

from __future__ import annotations

import cv2
import numpy as np

from napari_correlax.preprocess import breast_roi, fuse_channels


def test_fusion_channels_are_original_and_two_clahe_levels():
    rng = np.random.default_rng(0)
    img = rng.random((128, 96)).astype(np.float32)
    fused = fuse_channels(img)
    assert fused.shape == (128, 96, 3) and fused.dtype == np.float32
    np.testing.assert_array_equal(fused[..., 0], img)
    u16 = np.round(img * 65535).astype(np.uint16)
    for ch, clip in ((1, 1.0), (2, 2.0)):
        ref = cv2.createCLAHE(clipLimit=clip, tileGridSize=(8, 8)).apply(u16) / 65535.0
        np.testing.assert_allclose(fused[..., ch], ref, atol=1e-6)
    # higher clip limit gives more contrast
    assert fused[..., 2].std() >= fused[..., 1].std()


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
