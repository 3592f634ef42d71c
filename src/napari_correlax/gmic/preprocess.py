"""From a mammogram to GMIC's input, and back (docs/method.md §9).

:func:`gmic_input` follows the official GMIC test-time pipeline in one call:

1. **Orientation by laterality.** Right-breast images are mirrored left–right so every
   breast faces right (chest wall on the left edge), as the official loader does for
   images stored in the usual radiological orientation.
2. **Breast crop.** Tissue = pixels above ``tissue_threshold`` (0: the official
   ``> 0``); the mask is eroded by ``erosion`` px (city-block distance, the official 100
   iterations of a cross), its largest 4-connected component kept and dilated back;
   its bounding box gets up to ``margin`` px on the top, the bottom and the nipple side.
3. **Fit to the input size** (2944×1920 by default), either
   ``fit="window"`` (official): a native-resolution window, its right edge at the
   right-most tissue column of the crop's lower two thirds; for CC views its rows
   maximise the tissue pixels inside it (ties: nearest the crop's centre), for MLO
   views its bottom is at the lowest tissue row; shifted inside the crop when it
   overhangs, zero-padded when the crop is smaller (CC: rows split top/bottom, MLO: at
   the bottom; columns on the right);
   or ``fit="resize"`` ([CAM-GMIC]): the crop resized to the input size (area
   interpolation when shrinking, bilinear otherwise), aspect ratio not kept.
4. **Standardisation** per image: minus the mean, over max(std, 1e-5) (float32).

The returned :class:`InputTransform` maps input pixels, boxes and maps (input-resolution
or any grid covering the input, such as the 46×30 saliency grid) back to the original
image's pixels, ``(row, col)`` with pixel ``r`` centred at coordinate ``r``.

Choices: the window is anchored to the tissue edge itself (the official code's anchor
sits one or two pixels inside it); an image where the erosion leaves no tissue is
cropped from the un-eroded mask, and one without tissue is used whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CorrelaxError
from .config import FITS, INPUT_SIZE

if TYPE_CHECKING:
    import torch

    from ..io.image import Mammogram

__all__ = ["FITS", "GMICInput", "InputTransform", "gmic_input", "standardise"]

@dataclass(frozen=True)
class InputTransform:
    """Axis-aligned geometry from the original image to the GMIC input.

    The original image is first mirrored left–right when ``flipped``; in that frame
    the input's edge ``e`` (pixel edges, 0 … input size) lies at ``start + scale · e``
    per axis (``start`` may be negative where the input is zero-padded; ``scale`` is
    original pixels per input pixel, 1 for ``fit="window"``).
    """

    original_shape: tuple[int, int]
    input_shape: tuple[int, int]
    flipped: bool
    start: tuple[float, float]
    scale: tuple[float, float]

    def to_original(self, rows: Any, cols: Any) -> tuple[np.ndarray, np.ndarray]:
        """Input pixel coordinates (row, col; pixel centres) → original image (row, col)."""
        r = self.start[0] + self.scale[0] * (np.asarray(rows, dtype=np.float64) + 0.5) - 0.5
        c = self.start[1] + self.scale[1] * (np.asarray(cols, dtype=np.float64) + 0.5) - 0.5
        if self.flipped:
            c = self.original_shape[1] - 1 - c
        return r, c

    def to_input(self, rows: Any, cols: Any) -> tuple[np.ndarray, np.ndarray]:
        """Original image (row, col) → input pixel coordinates (row, col); inverse of
        :meth:`to_original`. Points outside the input map outside ``[0, size)``."""
        r = np.asarray(rows, dtype=np.float64)
        c = np.asarray(cols, dtype=np.float64)
        if self.flipped:
            c = self.original_shape[1] - 1 - c
        return ((r + 0.5 - self.start[0]) / self.scale[0] - 0.5,
                (c + 0.5 - self.start[1]) / self.scale[1] - 0.5)

    def box_to_original(self, boxes: Any) -> np.ndarray:
        """Boxes (…, 4) ``(top, left, bottom, right)`` in input pixel edges (half-open,
        as ``GMICResult.patch_boxes`` gives them)
        → the same in original pixel edges, float64 (mirroring swaps left and right)."""
        b = np.asarray(boxes, dtype=np.float64)
        top = self.start[0] + self.scale[0] * b[..., 0]
        bottom = self.start[0] + self.scale[0] * b[..., 2]
        left = self.start[1] + self.scale[1] * b[..., 1]
        right = self.start[1] + self.scale[1] * b[..., 3]
        if self.flipped:
            width = self.original_shape[1]
            left, right = width - right, width - left
        return np.stack([top, left, bottom, right], axis=-1)

    def map_to_original(self, values: Any) -> np.ndarray:
        """Warp maps (…, h, w) covering the input onto the original image (…, H, W).

        ``values`` may be at input resolution or on any coarser grid covering the
        input evenly (grid cell i spans input pixels [i·size/h, (i+1)·size/h)), such as
        the saliency maps. Bilinear between cell centres, edge cells extended to the
        input's border (as an OpenCV bilinear resize does); float32, NaN on original
        pixels outside the input.
        """
        v = np.asarray(values, dtype=np.float32)
        if v.ndim < 2:
            raise CorrelaxError(f"a map needs at least 2 dimensions, not shape {v.shape}")
        height, width = self.original_shape
        rows = self._axis(np.arange(height, dtype=np.float64), 0, v.shape[-2])
        cols_orig = np.arange(width, dtype=np.float64)
        if self.flipped:
            cols_orig = width - 1 - cols_orig
        cols = self._axis(cols_orig, 1, v.shape[-1])
        lo, hi, frac, inside_r = rows
        along_rows = (v[..., lo, :] * (1 - frac)[:, None] + v[..., hi, :] * frac[:, None])
        lo, hi, frac, inside_c = cols
        out = along_rows[..., lo] * (1 - frac) + along_rows[..., hi] * frac
        out = out.astype(np.float32, copy=False)
        outside = ~(inside_r[:, None] & inside_c[None, :])
        out[..., outside] = np.nan
        return out

    def _axis(self, coords: np.ndarray, axis: int, cells: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Interpolation indices and weights along one axis for original pixel centres
        ``coords`` (in the mirrored frame), on a grid of ``cells`` covering the input."""
        edge = (coords + 0.5 - self.start[axis]) / self.scale[axis]  # input pixel edges
        size = self.input_shape[axis]
        inside = (edge >= 0) & (edge <= size)
        g = np.clip(edge * cells / size - 0.5, 0, cells - 1)
        lo = np.floor(g).astype(np.int64)
        hi = np.minimum(lo + 1, cells - 1)
        return lo, hi, (g - lo).astype(np.float32), inside


@dataclass(frozen=True)
class GMICInput:
    """A mammogram made into GMIC's input by :func:`gmic_input`.

    ``image``: (rows, cols) float32, standardised (mean 0, std 1 unless constant), or
    the fitted [0, 1] pixels when ``gmic_input(..., standardised=False)``;
    ``transform``: geometry back to the original image; ``laterality`` ("L"/"R") and
    ``view`` ("CC"/"MLO") used; ``mean``/``std``: the standardisation's statistics, in
    the units of the [0, 1] pixels (0 and 1 when not standardised).
    """

    image: np.ndarray
    transform: InputTransform
    laterality: str
    view: str
    mean: float
    std: float

    def tensor(self) -> torch.Tensor:
        """The image as a 1×1×rows×cols float32 tensor (for ``GMIC.run``)."""
        import torch

        return torch.from_numpy(np.ascontiguousarray(self.image))[None, None]


def gmic_input(
    image: Mammogram | np.ndarray,
    laterality: str | None = None,
    *,
    view: str | None = None,
    size: tuple[int, int] = INPUT_SIZE,
    fit: str = "window",
    tissue_threshold: float = 0.0,
    erosion: int = 100,
    margin: int = 50,
    standardised: bool = True,
) -> GMICInput:
    """GMIC's input for a mammogram, with its transform back to original pixels.

    ``image``: a :class:`~napari_correlax.io.Mammogram` or an H×W array in [0, 1]
    (tissue bright, background 0). ``laterality`` "L" or "R" (default: the
    Mammogram's ``meta["laterality"]``); ``view`` "CC" or "MLO" (default: its
    ``meta["view_position"]``, else CC; ML-type views count as MLO). ``size``: input
    (rows, cols) in pixels. ``fit``: ``"window"`` or ``"resize"``. The remaining
    options tune the breast crop (see the module notes); ``standardised=False`` skips
    step 4 (training standardises after its augmentation).
    """
    pixels, meta, label = _unpack(image)
    side = laterality if laterality is not None else meta.get("laterality")
    side = str(side).strip().upper() if side is not None else ""
    if side not in ("L", "R"):
        raise CorrelaxError(
            "laterality unknown: give 'L' or 'R' (GMIC mirrors right breasts to face right)",
            label)
    kind = view if view is not None else meta.get("view_position")
    kind = "MLO" if kind is not None and str(kind).strip().upper().startswith("ML") else "CC"
    if fit not in FITS:
        raise CorrelaxError(f"unknown fit {fit!r}; choose one of {list(FITS)}", label)
    rows, cols = (int(v) for v in size)
    if rows < 1 or cols < 1:
        raise CorrelaxError(f"input size must be positive, not {size}", label)

    flipped = side == "R"
    frame = pixels[:, ::-1] if flipped else pixels
    tissue = frame > tissue_threshold
    top, bottom, left, right, breast = _breast_crop(tissue, erosion, margin)
    crop = frame[top:bottom, left:right]
    if fit == "window":
        out, (r0, c0) = _window(crop, tissue[top:bottom, left:right],
                                breast[top:bottom, left:right], (rows, cols), kind)
        start, scale = (float(top + r0), float(left + c0)), (1.0, 1.0)
    else:
        import cv2

        h, w = crop.shape
        shrink = h >= rows and w >= cols
        out = cv2.resize(np.ascontiguousarray(crop, dtype=np.float32), (cols, rows),
                         interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        start, scale = (float(top), float(left)), (h / rows, w / cols)
    out = np.asarray(out, dtype=np.float32)
    transform = InputTransform(
        original_shape=(int(pixels.shape[0]), int(pixels.shape[1])),
        input_shape=(rows, cols), flipped=flipped, start=start, scale=scale,
    )
    if not standardised:
        return GMICInput(out, transform, side, kind, 0.0, 1.0)
    values, mean, std = standardise(out)
    return GMICInput(values, transform, side, kind, float(mean), float(std))


def standardise(image: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Step 4 of :func:`gmic_input`: ``(image − mean) / max(std, 1e-5)`` in float32 (the
    population std, as the official loader's numpy computes it); returns the
    standardised image, the mean and the divisor."""
    out = np.asarray(image, dtype=np.float32)
    mean = np.mean(out, dtype=np.float32)
    std = np.maximum(np.std(out, dtype=np.float32), np.float32(1e-5))
    return ((out - mean) / std).astype(np.float32), float(mean), float(std)


# ----------------------------------------------------------------------------- details


def _unpack(image: Any) -> tuple[np.ndarray, dict[str, Any], str | None]:
    """Pixels (float32 H×W), metadata and a label for errors."""
    from ..io.image import Mammogram

    if isinstance(image, Mammogram):
        pixels, meta, label = image.pixels, dict(image.meta or {}), image.path
    else:
        pixels, meta, label = image, {}, None
    pixels = np.asarray(pixels, dtype=np.float32)
    if pixels.ndim != 2 or min(pixels.shape) < 1:
        raise CorrelaxError(f"GMIC needs a 2-D grey image, not shape {pixels.shape}", label)
    if not np.isfinite(pixels).all():
        raise CorrelaxError("image has non-finite values", label)
    return pixels, meta, label


def _breast_crop(tissue: np.ndarray, erosion: int, margin: int
                 ) -> tuple[int, int, int, int, np.ndarray]:
    """``(top, bottom, left, right, mask)``: the half-open crop box around the largest
    tissue component (breast facing right) and that component's mask (full size)."""
    import cv2

    height, width = tissue.shape
    if not tissue.any():
        return 0, height, 0, width, np.ones_like(tissue)
    u8 = np.pad(tissue, 1).astype(np.uint8)  # outside the image counts as background
    eroded = cv2.distanceTransform(u8, cv2.DIST_L1, 3)[1:-1, 1:-1] > erosion
    dilate = erosion > 0 and bool(eroded.any())
    if not dilate:
        eroded = tissue
    _, labels, stats, _ = cv2.connectedComponentsWithStats(
        eroded.astype(np.uint8), connectivity=4)
    component = labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    if dilate:
        distance = cv2.distanceTransform((~component).astype(np.uint8), cv2.DIST_L1, 3)
        breast = distance <= erosion
    else:
        breast = component
    rows = np.flatnonzero(breast.any(axis=1))
    cols = np.flatnonzero(breast.any(axis=0))
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    left, right = int(cols[0]), int(cols[-1]) + 1
    top -= min(top, margin)
    bottom += min(height - bottom, margin)
    right += min(width - right, margin)  # the nipple side; the chest wall is on the left
    return top, bottom, left, right, breast


def _window(crop: np.ndarray, tissue: np.ndarray, breast: np.ndarray,
            size: tuple[int, int], view: str) -> tuple[np.ndarray, tuple[int, int]]:
    """The official window of ``size`` px in the crop; returns it (zero-padded where it
    leaves the crop) and its upper-left corner in crop pixels (negative when padded)."""
    height, width = crop.shape
    rows, cols = size
    lower = breast[height // 3:]
    tissue_cols = np.flatnonzero(lower.any(axis=0)) if lower.size else np.array([], int)
    edge = int(tissue_cols[-1]) + 1 if tissue_cols.size else width
    if width <= cols:
        left = 0
    else:
        left = int(np.clip(edge - cols, 0, width - cols))
    if height <= rows:
        top = -((rows - height) // 2) if view == "CC" else 0
    elif view == "MLO":
        in_band = np.flatnonzero(tissue[:, max(0, width - cols):].any(axis=1))
        lowest = int(np.flatnonzero(breast.any(axis=1))[-1]) if breast.any() else height - 1
        if in_band.size:
            lowest = min(lowest, int(in_band[-1]))
        top = int(np.clip(lowest + 1 - rows, 0, height - rows))
    else:
        per_row = np.concatenate([[0], np.cumsum(tissue[:, left:left + cols].sum(axis=1))])
        sums = per_row[rows:] - per_row[:-rows]  # tissue pixels of the window at each top
        best = np.flatnonzero(sums == sums.max())
        centre = height // 2
        top = int(best[np.argmin(np.abs(best + rows // 2 - centre))])
    out = np.zeros((rows, cols), dtype=np.float32)
    r0, r1 = max(top, 0), min(top + rows, height)
    c0, c1 = max(left, 0), min(left + cols, width)
    out[r0 - top:r1 - top, c0 - left:c1 - left] = crop[r0:r1, c0:c1]
    return out, (top, left)
