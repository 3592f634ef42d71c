"""Sliding-window geometry (docs/method.md §6): the one place that knows where windows are.

Coordinates are ``(row, col)`` in pixels of the *original* image unless a name says
otherwise. A window is a ``window × window`` square; window ``(i, j)`` of a grid
covers the half-open pixel ranges

    rows  [origin_y + i·stride, origin_y + i·stride + window)
    cols  [origin_x + j·stride, origin_x + j·stride + window)

Edge policy (docs/method.md §6 "pad or shift"): **pad**. The grid is the smallest one
with a uniform stride that covers the region of interest, by default with its window
*centres* (``reach="border"``: the map reaches the skin line and the chest wall, the
windows at the edge hang over it), or with the windows themselves (``reach="inside"``,
the paper's layout over the ROI crop, whose map stops about half a window short of the
breast's edge). The overhang is split evenly before and after the ROI, so the grid is
centred on the breast. Pixels that fall outside the image are read as 0 (the black
background of a mammogram). Every cell of a map therefore sits on a regular lattice,
which is what napari's ``scale``/``translate`` can express exactly.

The aggregation kernel (docs/method.md §6) has offsets ``k·stride`` for integer ``k`` with
``|k·stride| ≤ window/2`` — symmetric and including 0 — and weights
``IoU(window, window shifted by (dy, dx))`` normalised to sum 1. Smoothing divides by the
kernel mass of the evaluated windows (:func:`smooth_map`), so maps are not damped at the
grid's edge or next to skipped windows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["WindowGrid", "iou_kernel", "mask_outline", "smooth_map"]


def iou_kernel(window: int, stride: int) -> np.ndarray:
    """Normalised IoU aggregation kernel, shape ``(2K+1, 2K+1)``, ``K = ⌊window / 2 / stride⌋``.

    Entry ``[K + k, K + l]`` is the IoU of the centre window and the window shifted by
    ``(k·stride, l·stride)`` pixels, divided by the sum over all entries.
    """
    if window <= 0 or stride <= 0:
        raise ValueError("window and stride must be positive")
    half = (window // 2) // stride
    steps = np.arange(-half, half + 1) * stride
    inter = (window - np.abs(steps))[:, None] * (window - np.abs(steps))[None, :]
    iou = inter / (2.0 * window * window - inter)
    return (iou / iou.sum()).astype(np.float64)


def smooth_map(
    values: np.ndarray, kernel: np.ndarray, evaluated: np.ndarray | None = None
) -> np.ndarray:
    """Normalised kernel smoothing of ``(..., gy, gx)`` window-grid values (docs/method.md §6).

    ``P = conv2d(G·E, K) / conv2d(E, K)`` over the last two axes, with ``E`` the
    ``(gy, gx)`` mask of evaluated windows (``evaluated``; None: every window) and zero
    padding outside the grid: each cell is the kernel-weighted mean of the evaluated
    windows within the kernel's reach, so neither the grid's edge nor skipped windows pull
    it towards 0, and a constant over the evaluated windows stays that constant. Values
    of skipped windows are ignored. Cells that no evaluated window reaches are NaN. The
    result has ``values``' shape and dtype float32; the kernel is symmetric, so
    correlation and convolution agree.
    """
    from scipy.ndimage import correlate

    arr = np.asarray(values, dtype=np.float64)
    grid_shape = arr.shape[-2:]
    if evaluated is None:
        weight = np.ones(grid_shape, dtype=np.float64)
    else:
        weight = np.asarray(evaluated, dtype=bool).astype(np.float64)
        if weight.shape != grid_shape:
            raise ValueError(f"evaluated mask {weight.shape} does not match the grid {grid_shape}")
    mass = correlate(weight, kernel, mode="constant", cval=0.0)
    k = kernel.reshape((1,) * (arr.ndim - 2) + kernel.shape)
    total = correlate(np.where(weight > 0, arr, 0.0), k, mode="constant", cval=0.0)
    # Every kernel weight is positive, so the mass is exactly 0 only where no evaluated
    # window is within reach (a sum of exact zeros).
    reached = mass > 0.0
    out = np.full(arr.shape, np.nan, dtype=np.float64)
    np.divide(total, mass, out=out, where=np.broadcast_to(reached, arr.shape))
    return out.astype(np.float32)


@dataclass(frozen=True)
class WindowGrid:
    """A regular grid of square windows in original-image pixel coordinates.

    Attributes
    ----------
    window, stride:
        Window side and step, pixels.
    origin:
        ``(row, col)`` of the top-left pixel of window ``(0, 0)``; may be negative
        (the window then overhangs the image and reads zeros there).
    shape:
        ``(gy, gx)``, number of windows along rows and columns.
    image_shape:
        ``(H, W)`` of the original image.
    """

    window: int
    stride: int
    origin: tuple[int, int]
    shape: tuple[int, int]
    image_shape: tuple[int, int]

    @classmethod
    def covering(
        cls,
        image_shape: tuple[int, int],
        roi: tuple[int, int, int, int] | None = None,
        *,
        window: int,
        stride: int,
        reach: str = "border",
    ) -> WindowGrid:
        """The smallest centred grid over ``roi = (y0, x0, y1, x1)`` (half-open, original
        pixels; default the whole image).

        ``reach`` says how far the windows go (module docstring):

        - ``"border"``: window *centres* span the ROI, the first and last within half a
          stride of its edge, so the map (one stride per cell) reaches the skin line and
          the chest wall; windows there hang over the breast's edge and read background
          (0) outside the image.
        - ``"inside"``: the windows themselves cover the ROI (the paper's layout over the
          ROI crop); the map's cells stop about half a window short of the ROI's edge.
        """
        if window <= 0 or stride <= 0:
            raise ValueError("window and stride must be positive")
        if reach not in ("border", "inside"):
            raise ValueError(f"reach must be 'border' or 'inside', not {reach!r}")
        h_img, w_img = int(image_shape[0]), int(image_shape[1])
        y0, x0, y1, x1 = roi if roi is not None else (0, 0, h_img, w_img)
        counts, starts = [], []
        for lo, hi in ((y0, y1), (x0, x1)):
            size = max(int(hi) - int(lo), 1)
            if reach == "border":
                # Window centres inside the ROI, as many as fit at this stride, centred:
                # the first and last lie within half a stride of the ROI's edge, so the
                # map's cells (each drawn one stride wide) reach the edge.
                n = (size - 1) // stride + 1
                slack = (size - 1) - (n - 1) * stride
                counts.append(n)
                starts.append(int(lo) + slack // 2 - (window - 1) // 2)
                continue
            n = 1 if size <= window else math.ceil((size - window) / stride) + 1
            overhang = (n - 1) * stride + window - size
            counts.append(n)
            starts.append(int(lo) - overhang // 2)
        return cls(window, stride, (starts[0], starts[1]), (counts[0], counts[1]), (h_img, w_img))

    @property
    def n_windows(self) -> int:
        """Number of windows in the grid."""
        return self.shape[0] * self.shape[1]

    def corners(self) -> np.ndarray:
        """``(gy, gx, 2)`` int array of each window's top-left ``(row, col)`` in image pixels."""
        iy = self.origin[0] + self.stride * np.arange(self.shape[0])
        ix = self.origin[1] + self.stride * np.arange(self.shape[1])
        return np.stack(np.meshgrid(iy, ix, indexing="ij"), axis=-1)

    def centres(self) -> np.ndarray:
        """``(gy, gx, 2)`` float array of window centres in image pixel coordinates.

        Pixel ``r`` is centred at coordinate ``r`` (napari's convention), so a window
        covering pixels ``a … a+window-1`` is centred at ``a + (window-1)/2``.
        """
        return self.corners() + (self.window - 1) / 2.0

    def kernel(self) -> np.ndarray:
        """The docs/method.md §6 IoU kernel for this grid's window and stride."""
        return iou_kernel(self.window, self.stride)

    def smooth(self, values: np.ndarray, evaluated: np.ndarray | None = None) -> np.ndarray:
        """Normalised IoU-kernel smoothing of ``(..., gy, gx)`` values over the windows
        in ``evaluated`` (``(gy, gx)`` bool; None: all), see :func:`smooth_map`."""
        return smooth_map(values, self.kernel(), evaluated)

    def layer_transform(
        self, spacing_mm: tuple[float, float] | None = None
    ) -> tuple[tuple[float, float], tuple[float, float]]:
        """``(scale, translate)`` that put map cell ``(i, j)`` on window ``(i, j)``'s centre.

        In image pixels when ``spacing_mm`` is None, in millimetres otherwise (use the
        same spacing as the image layer's ``scale``).
        """
        sy, sx = spacing_mm if spacing_mm is not None else (1.0, 1.0)
        c = (self.window - 1) / 2.0
        scale = (self.stride * sy, self.stride * sx)
        translate = ((self.origin[0] + c) * sy, (self.origin[1] + c) * sx)
        return scale, translate

    def padded(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """Zero-pad ``image`` (H×W or H×W×ch) so every window is an in-bounds slice.

        Returns the padded array and the ``(row, col)`` offset to add to image
        coordinates to index it.
        """
        h, w = image.shape[:2]
        gy, gx = self.shape
        top = max(0, -self.origin[0])
        left = max(0, -self.origin[1])
        bottom = max(0, self.origin[0] + (gy - 1) * self.stride + self.window - h)
        right = max(0, self.origin[1] + (gx - 1) * self.stride + self.window - w)
        pad = [(top, bottom), (left, right)] + [(0, 0)] * (image.ndim - 2)
        if top or bottom or left or right:
            image = np.pad(image, pad, mode="constant")
        return image, (top, left)

    def fraction_inside(self, mask: np.ndarray) -> np.ndarray:
        """``(gy, gx)`` fraction of each window's pixels that are True in ``mask`` (H×W)."""
        import cv2

        padded, (oy, ox) = self.padded(np.asarray(mask, dtype=bool).view(np.uint8))
        # Summed-area table, (H + 1) × (W + 1), exact integer counts in float64.
        integral = cv2.integral(np.ascontiguousarray(padded), sdepth=cv2.CV_64F)
        c = self.corners()
        y0 = c[..., 0] + oy
        x0 = c[..., 1] + ox
        y1, x1 = y0 + self.window, x0 + self.window
        total = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
        return total / float(self.window * self.window)

    def coverage(self, evaluated: np.ndarray, *, cells: bool = False) -> np.ndarray:
        """``(H, W)`` bool: original-image pixels covered by the ``evaluated`` windows.

        ``evaluated`` is ``(gy, gx)`` bool. ``cells=False``: pixels inside at least one
        evaluated window (the area the model looked at). ``cells=True``: pixels inside
        the map cell of an evaluated window, the ``stride × stride`` square centred on
        the window centre that a grid map draws: pixel ``r`` (centred at ``r``) belongs
        to the cell centred at ``c`` when ``c − stride/2 ≤ r < c + stride/2``.
        """
        covered = np.zeros(self.image_shape, dtype=bool)
        if cells:
            low = np.ceil(self.centres() - self.stride / 2.0).astype(np.int64)
            side = self.stride
        else:
            low, side = self.corners(), self.window
        for r, c in low[np.asarray(evaluated, dtype=bool)]:
            covered[max(int(r), 0): max(int(r) + side, 0),
                    max(int(c), 0): max(int(c) + side, 0)] = True
        return covered

    def cells_on_image(self, values: np.ndarray, per_cell: int
                       ) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
        """Grid values ``(..., gy, gx)`` as cells clipped to the image's edge.

        Each map cell (the ``stride × stride`` square centred on its window's centre) is
        split into ``per_cell × per_cell`` sub-cells of equal value; sub-cells whose
        centre lies off the image (row outside ``[−0.5, H − 0.5)``, likewise columns)
        are NaN, so a map drawn from them stops at the image's edge instead of
        overhanging it by up to half a stride. Returns the float32 array
        ``(..., gy·per_cell, gx·per_cell)`` and its ``(scale, translate)`` in image
        pixels (napari's convention: element ``(i, j)`` centred at
        ``translate + scale · (i, j)``).
        """
        k = max(int(per_cell), 1)
        data = np.repeat(np.repeat(np.asarray(values, dtype=np.float32), k, axis=-2), k, axis=-1)
        (sy, sx), (ty, tx) = self.layer_transform(None)
        scale = (sy / k, sx / k)
        translate = (ty - sy / 2 + scale[0] / 2, tx - sx / 2 + scale[1] / 2)
        for axis, (t, s, size) in enumerate(zip(translate, scale, self.image_shape)):
            centre = t + s * np.arange(data.shape[-2 + axis])
            off = (centre < -0.5) | (centre >= size - 0.5)
            if off.any():
                index = (Ellipsis, off, slice(None)) if axis == 0 else (Ellipsis, off)
                data[index] = np.nan
        return data, scale, translate

    def cell_of(self, row: float, col: float) -> tuple[int, int]:
        """Grid cell whose window centre is nearest to image point ``(row, col)`` (clipped)."""
        c = (self.window - 1) / 2.0
        i = round((row - self.origin[0] - c) / self.stride)
        j = round((col - self.origin[1] - c) / self.stride)
        return (min(max(i, 0), self.shape[0] - 1), min(max(j, 0), self.shape[1] - 1))

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly description (used in saved results)."""
        return {
            "window": self.window,
            "stride": self.stride,
            "origin": list(self.origin),
            "shape": list(self.shape),
            "image_shape": list(self.image_shape),
        }

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> WindowGrid:
        """Inverse of :meth:`to_dict`."""
        return cls(
            int(d["window"]),  # type: ignore[arg-type]
            int(d["stride"]),  # type: ignore[arg-type]
            tuple(int(v) for v in d["origin"]),  # type: ignore[union-attr]
            tuple(int(v) for v in d["shape"]),  # type: ignore[union-attr]
            tuple(int(v) for v in d["image_shape"]),  # type: ignore[union-attr]
        )


def mask_outline(mask: np.ndarray) -> list[np.ndarray]:
    """Outlines of the True regions of ``mask`` (H×W), outer edges and holes alike.

    Each outline is an ``(N, 2)`` float array of ``(row, col)`` pixel coordinates (pixel
    ``r`` centred at ``r``) of boundary pixels, in order around the region and closed
    (the last point repeats the first); straight runs keep only their end points. A
    boundary pixel is True in ``mask`` and has a False 4-neighbour or lies on the
    image's edge.
    """
    import cv2

    m = np.ascontiguousarray(np.asarray(mask, dtype=bool).view(np.uint8))
    contours, _ = cv2.findContours(m, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    out = []
    for contour in contours:
        points = contour.reshape(-1, 2)[:, ::-1].astype(np.float64)
        out.append(np.concatenate([points, points[:1]]))
    return out
