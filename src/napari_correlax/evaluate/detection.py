"""Detection from maps and FROC (docs/method.md §10, second paper §III-D and Table II).

A map is turned into boxes by thresholding it and taking connected components; a box is
a **true positive** when its IoU with a ground-truth box of the same label is > 0.3.
Sweeping the threshold gives the FROC curve: the true-positive rate (TPR) against the
mean number of false positives per image (FPPI). Operating points are written like the
paper's Table II, ``"0.70@0.88"`` (TPR@FPPI).

Choices the method reference (docs/method.md) leaves open, written down here:

* **Which cells.** A cell is *on* when its value is ≥ the threshold (and, for grid maps,
  its window was evaluated). Components are 8-connected (cells touching at a corner
  belong together).
* **Pixel-resolution maps** (saliency, in original image pixels): raw saliency values
  have no common scale across images or methods, so a map is min–max scaled to [0, 1]
  per image (over its evaluated pixels) before the sweep, as CAM maps are in the
  literature; then each 4 × 4 block of pixels becomes one cell holding its maximum
  (:data:`PIXEL_BLOCK`; boxes are then exact to 4 px, far below lesion sizes).
* **Box of a component.** Each cell stands for the area it is drawn over in napari: a
  ``scale``-sized square centred on it (grid maps: a stride × stride square around the
  window centre; full-resolution maps: the pixel). In the VinDr frame (pixel ``i`` covers
  ``[i, i + 1)``) cell ``k`` of a map with ``scale`` s and ``translate`` t (pixel-centre
  convention, as :meth:`~napari_correlax.windows.WindowGrid.layer_transform`) covers
  ``[t + s·k − s/2 + 0.5, t + s·k + s/2 + 0.5)``. A component's box is the union of its
  cells' squares, clipped to the image when its size is known. Its score is the
  component's maximum.
* **Counting.** A detection is a true positive if it overlaps *any* ground-truth box of
  the label with IoU > 0.3, otherwise a false positive. A ground-truth box counts as
  found when *any* detection overlaps it with IoU > 0.3 (several detections on one
  lesion find it once and are not false positives). TPR = found boxes / all boxes of
  the label; FPPI = false positives / number of images (every image of the set counts,
  including those without the label).
* **Operating point.** As in the paper's Table II ("the highest TPR values obtained
  were considered"): the sweep point with the highest TPR, ties broken by the lowest
  FPPI. :func:`tpr_at_fppi` gives the best TPR within an FPPI budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..boxes import Box

if TYPE_CHECKING:
    from ..maps.result import MapResult

__all__ = [
    "DEFAULT_THRESHOLDS",
    "IOU_MIN",
    "PIXEL_BLOCK",
    "Corners",
    "Detection",
    "FrocPoint",
    "GridMap",
    "block_max",
    "box_iou",
    "detect",
    "froc_curve",
    "match_detections",
    "operating_point",
    "operating_point_text",
    "tpr_at_fppi",
    "unit_scaled",
]

#: IoU above which a detection counts as a true positive (second paper §III-D).
IOU_MIN = 0.3
#: Pixel-resolution maps are reduced to the maximum of blocks of this many pixels per side
#: before detection (boxes to within 4 px, 16× fewer cells to label per threshold).
PIXEL_BLOCK = 4
#: Threshold sweep used when none is given: 0.05, 0.10, …, 0.95.
DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(0.05 * k, 2) for k in range(1, 20))

#: Box corners ``(xmin, ymin, xmax, ymax)`` in image pixels (VinDr frame), the tuple
#: :attr:`napari_correlax.boxes.Box.corners` gives.
Corners = tuple[float, float, float, float]


@dataclass(frozen=True)
class Detection:
    """A detected box ``(xmin, ymin, xmax, ymax)`` in image pixels (VinDr frame) and its score."""

    xmin: float
    ymin: float
    xmax: float
    ymax: float
    score: float

    @property
    def box(self) -> Corners:
        """The corners as a tuple."""
        return (self.xmin, self.ymin, self.xmax, self.ymax)


@dataclass(frozen=True)
class GridMap:
    """A 2-D map with its placement in image pixels.

    ``values`` (rows, cols); cell ``(i, j)`` is centred at
    ``(translate[0] + scale[0]·i, translate[1] + scale[1]·j)`` in image pixels
    (pixel-centre convention). ``mask`` (same shape) marks the cells that may detect;
    ``image_shape`` ``(H, W)`` clips boxes when given.
    """

    values: np.ndarray
    scale: tuple[float, float] = (1.0, 1.0)
    translate: tuple[float, float] = (0.0, 0.0)
    mask: np.ndarray | None = None
    image_shape: tuple[int, int] | None = None

    @classmethod
    def from_result(cls, result: MapResult, name: str, label: str | None = None,
                    block: int = PIXEL_BLOCK) -> GridMap:
        """One map of a :class:`~napari_correlax.maps.MapResult` (``label``: per-label maps).

        Pixel-resolution maps (saliency) are prepared as the module docstring says:
        scaled to [0, 1] per image when their kind has no fixed range, then reduced to
        the maximum of each ``block`` × ``block`` block of pixels.
        """
        from ..maps.kinds import kind

        values = np.asarray(result.get(name))
        if values.ndim == 3:
            values = values[result.label_index(label)]
        spec = kind(name)
        if spec.resolution != "pixel":
            scale, translate = result.grid.layer_transform(None)
            return cls(values, scale, translate, np.asarray(result.window_mask, dtype=bool),
                       tuple(result.image_shape))
        values = np.asarray(values, dtype=np.float64)
        if spec.limits is None:
            values = unit_scaled(values)
        values = block_max(values, block)
        b = float(block)
        return cls(values, (b, b), ((b - 1) / 2, (b - 1) / 2), np.isfinite(values),
                   tuple(result.image_shape))


def unit_scaled(values: np.ndarray) -> np.ndarray:
    """``values`` min–max scaled to [0, 1] over its finite entries (NaN stays NaN; a
    constant map becomes 0)."""
    finite = np.isfinite(values)
    if not finite.any():
        return values
    lo, hi = float(values[finite].min()), float(values[finite].max())
    return (values - lo) / (hi - lo) if hi > lo else np.where(finite, 0.0, np.nan)


def block_max(values: np.ndarray, block: int) -> np.ndarray:
    """Maximum of each ``block`` × ``block`` block (NaN pixels ignored; a block of NaN
    only stays NaN); the last row and column of blocks may be partial."""
    if block <= 1:
        return values
    h, w = values.shape
    hb, wb = -(-h // block), -(-w // block)
    padded = np.full((hb * block, wb * block), np.nan)
    padded[:h, :w] = values
    tiles = padded.reshape(hb, block, wb, block)
    finite = np.isfinite(tiles).any(axis=(1, 3))
    out = np.full((hb, wb), np.nan)
    out[finite] = np.nanmax(np.where(np.isfinite(tiles), tiles, -np.inf), axis=(1, 3))[finite]
    return out


def box_iou(a: Corners, b: Corners) -> float:
    """Intersection over union of two boxes ``(xmin, ymin, xmax, ymax)``; 0 if either is empty."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    area_a = max(a[2] - a[0], 0.0) * max(a[3] - a[1], 0.0)
    area_b = max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0)
    union = area_a + area_b - inter
    return float(inter / union) if union > 0 else 0.0


def detect(grid_map: GridMap, threshold: float) -> list[Detection]:
    """Boxes of the 8-connected components of cells ≥ ``threshold`` (see module docstring).

    Detections are ordered by decreasing score.
    """
    from scipy import ndimage

    values = np.asarray(grid_map.values, dtype=np.float64)
    on = np.isfinite(values) & (values >= threshold)
    if grid_map.mask is not None:
        on &= np.asarray(grid_map.mask, dtype=bool)
    if not on.any():
        return []
    labelled, _ = ndimage.label(on, structure=np.ones((3, 3), dtype=int))
    (sy, sx), (ty, tx) = grid_map.scale, grid_map.translate
    out = []
    for k, found in enumerate(ndimage.find_objects(labelled), start=1):
        if found is None:
            continue
        rows, cols = found
        score = float(values[found][labelled[found] == k].max())
        y0 = ty + sy * rows.start - sy / 2 + 0.5
        y1 = ty + sy * (rows.stop - 1) + sy / 2 + 0.5
        x0 = tx + sx * cols.start - sx / 2 + 0.5
        x1 = tx + sx * (cols.stop - 1) + sx / 2 + 0.5
        if grid_map.image_shape is not None:
            h, w = grid_map.image_shape
            y0, y1 = max(y0, 0.0), min(y1, float(h))
            x0, x1 = max(x0, 0.0), min(x1, float(w))
        out.append(Detection(float(x0), float(y0), float(x1), float(y1), score))
    out.sort(key=lambda d: -d.score)
    return out


def match_detections(
    detections: Sequence[Detection], truth: Sequence[Corners], iou_min: float = IOU_MIN
) -> tuple[list[bool], list[bool]]:
    """``(true positive per detection, found per ground-truth box)`` at IoU > ``iou_min``."""
    iou = np.array([[box_iou(d.box, t) for t in truth] for d in detections],
                   dtype=np.float64).reshape(len(detections), len(truth))
    overlap = iou > iou_min
    return overlap.any(axis=1).tolist(), overlap.any(axis=0).tolist()


@dataclass(frozen=True)
class FrocPoint:
    """One point of a FROC sweep: counts and the rates they give."""

    threshold: float
    tpr: float
    fppi: float
    found: int
    boxes: int
    false_positives: int
    images: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-able copy."""
        return asdict(self)


def froc_curve(
    maps: Sequence[GridMap],
    truth: Sequence[Sequence[Corners | Box]],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    iou_min: float = IOU_MIN,
) -> list[FrocPoint]:
    """FROC sweep over images: ``maps[i]`` with ground-truth boxes ``truth[i]`` (one label),
    each a :class:`~napari_correlax.boxes.Box` or its :data:`Corners`.

    Returns one :class:`FrocPoint` per threshold, in the given order. With no boxes at
    all, TPR is 0.
    """
    if len(maps) != len(truth):
        raise ValueError(f"{len(maps)} maps but {len(truth)} ground-truth lists")
    n_images = len(maps)
    n_boxes = sum(len(t) for t in truth)
    out = []
    for threshold in thresholds:
        found = fps = 0
        for grid_map, boxes in zip(maps, truth):
            dets = detect(grid_map, threshold)
            tp, hit = match_detections(dets, [_corners(b) for b in boxes], iou_min)
            found += sum(hit)
            fps += len(tp) - sum(tp)
        out.append(FrocPoint(
            threshold=float(threshold),
            tpr=found / n_boxes if n_boxes else 0.0,
            fppi=fps / n_images if n_images else 0.0,
            found=found, boxes=n_boxes, false_positives=fps, images=n_images,
        ))
    return out


def _corners(box: Corners | Box) -> Corners:
    """The corners of a :class:`~napari_correlax.boxes.Box` or of a 4-tuple, as floats."""
    x0, y0, x1, y1 = box.corners if isinstance(box, Box) else box
    return (float(x0), float(y0), float(x1), float(y1))


def operating_point(curve: Sequence[FrocPoint]) -> FrocPoint | None:
    """The point with the highest TPR (lowest FPPI among ties); None for an empty curve."""
    if not curve:
        return None
    return min(curve, key=lambda p: (-p.tpr, p.fppi, -p.threshold))


def operating_point_text(point: FrocPoint | None, digits: int = 2) -> str:
    """``"0.70@0.88"`` (TPR@FPPI), or ``"–"`` for None."""
    if point is None:
        return "–"
    return f"{point.tpr:.{digits}f}@{point.fppi:.{digits}f}"


def tpr_at_fppi(curve: Sequence[FrocPoint], fppi: float) -> float:
    """The highest TPR among points with FPPI ≤ ``fppi`` (0 when none qualifies)."""
    return max((p.tpr for p in curve if p.fppi <= fppi), default=0.0)
