"""Preprocessing (SPEC §2, paper §3.1): CLAHE channel fusion and the breast ROI.

All functions take the ``[0, 1]`` float32 H×W image of :func:`read_mammogram` and work
in original image pixel coordinates ``(row, col)``. The ROI is a bounding box in those
coordinates; nothing is resampled, so maps computed on windows of the fused image
overlay the original image exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CLAHE_CLIP_LIMITS", "CLAHE_TILES", "BreastROI", "breast_roi", "fuse_channels"]

CLAHE_CLIP_LIMITS: tuple[float, float] = (1.0, 2.0)
CLAHE_TILES: tuple[int, int] = (8, 8)


def _as_unit(image: np.ndarray) -> np.ndarray:
    """``image`` as float32 in [0, 1]; min–max rescaled unless it already lies there."""
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D grey image, got shape {arr.shape}")
    lo, hi = float(arr.min(initial=0.0)), float(arr.max(initial=0.0))
    if lo >= 0.0 and hi <= 1.0:
        return arr
    if hi <= lo:
        return np.zeros_like(arr)
    return (arr - lo) / (hi - lo)


def clahe(image: np.ndarray, clip_limit: float, tiles: tuple[int, int] = CLAHE_TILES) -> np.ndarray:
    """OpenCV CLAHE on a [0, 1] image, computed at 16-bit precision; returns float32 [0, 1]."""
    import cv2

    u16 = np.round(_as_unit(image) * 65535.0).astype(np.uint16)
    out = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=tuple(tiles)).apply(u16)
    return out.astype(np.float32) / 65535.0


def fuse_channels(
    image: np.ndarray,
    clip_limits: tuple[float, float] = CLAHE_CLIP_LIMITS,
    tiles: tuple[int, int] = CLAHE_TILES,
) -> np.ndarray:
    """RGB = [original, CLAHE(clip 1.0), CLAHE(clip 2.0)] as float32 H×W×3 in [0, 1]."""
    unit = _as_unit(image)
    return np.stack([unit, *(clahe(unit, c, tiles) for c in clip_limits)], axis=-1)


@dataclass(frozen=True)
class BreastROI:
    """The breast region in original image pixels.

    ``box = (y0, x0, y1, x1)`` is half-open; ``mask`` is the filled largest Otsu
    contour (H×W bool), used to skip background windows.
    """

    box: tuple[int, int, int, int]
    mask: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` of the box in pixels."""
        return (self.box[2] - self.box[0], self.box[3] - self.box[1])

    def crop(self, image: np.ndarray) -> np.ndarray:
        """The ROI part of an image with the same pixel grid as the original."""
        y0, x0, y1, x1 = self.box
        return image[y0:y1, x0:x1]

    def to_image(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map ROI-crop coordinates back to original image coordinates."""
        return np.asarray(rows) + self.box[0], np.asarray(cols) + self.box[1]


def breast_roi(image: np.ndarray) -> BreastROI:
    """Otsu threshold → external contours → bounding box of the largest (SPEC §2).

    An image with no foreground (constant, or all background) gives the whole image
    as ROI and an all-False mask.
    """
    import cv2

    unit = _as_unit(image)
    u8 = np.round(unit * 255.0).astype(np.uint8)
    h, w = u8.shape
    if int(u8.max()) == int(u8.min()):
        return BreastROI((0, 0, h, w), np.zeros((h, w), dtype=bool))
    _, binary = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return BreastROI((0, 0, h, w), np.zeros((h, w), dtype=bool))
    largest = max(contours, key=cv2.contourArea)
    x, y, bw, bh = cv2.boundingRect(largest)
    filled = np.zeros((h, w), dtype=np.uint8)
    cv2.drawContours(filled, [largest], -1, 1, thickness=cv2.FILLED)
    return BreastROI((int(y), int(x), int(y + bh), int(x + bw)), filled.astype(bool))
