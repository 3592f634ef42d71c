"""Preprocessing (docs/method.md §2, paper §3.1): CLAHE channel fusion and the breast ROI.

All functions take the ``[0, 1]`` float32 H×W image of :func:`read_mammogram` and work
in original image pixel coordinates ``(row, col)``. The ROI is a bounding box in those
coordinates; nothing is resampled, so maps computed on windows of the fused image
overlay the original image exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "CLAHE_CLIP_LIMITS",
    "CLAHE_TILES",
    "BreastROI",
    "Preprocessing",
    "breast_roi",
    "clahe",
    "fuse_channels",
    "preprocessing_of",
    "to_uint8",
]

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


def to_uint8(image: np.ndarray) -> np.ndarray:
    """``round(x · 255)`` of a [0, 1] image as uint8 (the paper's 8-bit image)."""
    return np.round(_as_unit(image) * 255.0).astype(np.uint8)


def clahe(
    image: np.ndarray,
    clip_limit: float,
    tiles: tuple[int, int] = CLAHE_TILES,
    *,
    bits: int = 8,
    background_zero: bool = True,
) -> np.ndarray:
    """OpenCV CLAHE of a [0, 1] image at ``bits`` bits (8 or 16); float32 [0, 1].

    At 8 bits (the paper's and its authors' choice, and the default) the image is
    quantised as :func:`to_uint8` and, with ``background_zero``, pixels that are 0 there
    (background) are set back to 0 after CLAHE, which would otherwise lift them.
    16 bits reproduces checkpoints made before that correction: OpenCV clips each
    histogram bin at ``clip_limit · tile_pixels / bins``, so with 65,536 bins the same
    clip limit is ~256× weaker and CLAHE is close to the identity.
    """
    import cv2

    op = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=tuple(tiles))
    if bits == 8:
        u8 = to_uint8(image)
        out = op.apply(u8)
        if background_zero:
            out[u8 == 0] = 0
        return out.astype(np.float32) / np.float32(255.0)
    if bits == 16:
        u16 = np.round(_as_unit(image) * 65535.0).astype(np.uint16)
        out16 = op.apply(u16)
        if background_zero:
            out16[u16 == 0] = 0
        return out16.astype(np.float32) / np.float32(65535.0)
    raise ValueError(f"CLAHE runs on 8 or 16 bits, not {bits}")


@dataclass(frozen=True)
class Preprocessing:
    """How a model's input image is made from the [0, 1] mammogram (docs/method.md §2).

    Stored in every checkpoint (:meth:`to_dict`) and applied at inference, so a map is
    computed on the image the model was trained on.

    Attributes
    ----------
    clip_limits:
        CLAHE clip limits of the second and third channel (paper: 1.0 and 2.0).
    tiles:
        CLAHE tile grid (rows, columns); paper: 8 × 8.
    clahe_bits:
        Bit depth CLAHE runs at: 8 (paper) or 16 (legacy checkpoints, see :func:`clahe`).
    base_bits:
        ``8`` quantises the first (original) channel to 8 bits as the authors' code
        does; ``None`` keeps it at full precision.
    background_zero:
        Pixels that are 0 in the quantised image stay 0 after CLAHE.
    voi_lut:
        The DICOM VOI LUT (window) is applied before min–max scaling, as the authors'
        code reads DICOM files; other formats are unaffected.
    """

    clip_limits: tuple[float, ...] = CLAHE_CLIP_LIMITS
    tiles: tuple[int, int] = CLAHE_TILES
    clahe_bits: int = 8
    base_bits: int | None = None
    background_zero: bool = True
    voi_lut: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form stored in checkpoints (key names kept from the first format)."""
        return {
            "clahe_clip_limits": [float(c) for c in self.clip_limits],
            "clahe_tiles": [int(t) for t in self.tiles],
            "clahe_bits": int(self.clahe_bits),
            "base_bits": None if self.base_bits is None else int(self.base_bits),
            "background_zero": bool(self.background_zero),
            "voi_lut": bool(self.voi_lut),
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any] | None) -> Preprocessing:
        """Inverse of :meth:`to_dict`.

        A document without ``clahe_bits`` was written before CLAHE moved to 8 bits: it
        gets the 16-bit CLAHE without the background rule it was trained with.
        """
        doc = dict(doc or {})
        legacy = bool(doc) and "clahe_bits" not in doc
        return cls(
            clip_limits=tuple(float(c) for c in doc.get("clahe_clip_limits", CLAHE_CLIP_LIMITS)),
            tiles=tuple(int(t) for t in doc.get("clahe_tiles", CLAHE_TILES)),  # type: ignore[arg-type]
            clahe_bits=int(doc.get("clahe_bits", 16 if legacy else 8)),
            base_bits=doc.get("base_bits"),
            background_zero=bool(doc.get("background_zero", not legacy)),
            voi_lut=bool(doc.get("voi_lut", False)),
        )

    def fuse(self, image: np.ndarray) -> np.ndarray:
        """RGB = [original, CLAHE(clip 1), CLAHE(clip 2)], float32 H×W×3 in [0, 1]."""
        unit = _as_unit(image)
        base = unit if self.base_bits is None else _quantised(unit, self.base_bits)
        channels = [
            clahe(unit, c, self.tiles, bits=self.clahe_bits, background_zero=self.background_zero)
            for c in self.clip_limits
        ]
        return np.stack([base, *channels], axis=-1)


def _quantised(unit: np.ndarray, bits: int) -> np.ndarray:
    top = float(2**bits - 1)
    return (np.round(unit * top) / top).astype(np.float32)


def preprocessing_of(model: object) -> Preprocessing:
    """The :class:`Preprocessing` a model expects: its ``preprocessing`` attribute (a
    Preprocessing or its dict), or the paper's profile when it has none."""
    prep = getattr(model, "preprocessing", None)
    if isinstance(prep, Preprocessing):
        return prep
    return Preprocessing.from_dict(prep)


def fuse_channels(
    image: np.ndarray,
    clip_limits: tuple[float, ...] = CLAHE_CLIP_LIMITS,
    tiles: tuple[int, int] = CLAHE_TILES,
) -> np.ndarray:
    """RGB = [original, CLAHE(clip 1.0), CLAHE(clip 2.0)] at the paper's settings (8-bit CLAHE,
    background kept at 0); :meth:`Preprocessing.fuse` for other profiles."""
    return Preprocessing(clip_limits=tuple(clip_limits), tiles=tuple(tiles)).fuse(image)


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
    """Otsu threshold → external contours → bounding box of the largest (docs/method.md §2).

    An image with no foreground (constant, or all background) gives the whole image
    as ROI and an all-False mask.
    """
    import cv2

    u8 = to_uint8(image)
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
