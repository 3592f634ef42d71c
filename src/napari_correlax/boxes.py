"""Ground-truth boxes: one small typed record, used by the data sets, evaluation, layers
and figures (docs/method.md §10–11).

Corners are in original image pixels with the VinDr convention: pixel ``i`` covers
``[i, i + 1)``, so a box ``(xmin, ymin, xmax, ymax)`` spans columns ``xmin … xmax`` and
rows ``ymin … ymax``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Box", "as_box", "as_boxes", "boxes_for_image", "find_annotations"]


@dataclass(frozen=True)
class Box:
    """One annotated box: ``label`` (the model's label), the data set's ``category``
    (e.g. "Focal Asymmetry" for the label "Asymmetries"), corners in image pixels, and
    the finding's BI-RADS when known."""

    label: str
    category: str
    xmin: float
    ymin: float
    xmax: float
    ymax: float
    birads: str | None = None

    @property
    def corners(self) -> tuple[float, float, float, float]:
        """``(xmin, ymin, xmax, ymax)``."""
        return (self.xmin, self.ymin, self.xmax, self.ymax)


def as_box(item: Any) -> Box:
    """A :class:`Box` from a Box, an object with ``label`` and ``box = (x0, y0, x1, y1)``
    (a synthetic finding), an object with ``label``, ``xmin`` … ``ymax``, or a tuple
    ``(label, xmin, ymin, xmax, ymax)``."""
    if isinstance(item, Box):
        return item
    if isinstance(item, tuple):
        label, x0, y0, x1, y1 = item
        return Box(str(label), str(label), float(x0), float(y0), float(x1), float(y1))
    if hasattr(item, "box"):
        x0, y0, x1, y1 = item.box
    else:
        x0, y0, x1, y1 = item.xmin, item.ymin, item.xmax, item.ymax
    birads = getattr(item, "birads", None)
    return Box(str(item.label), str(getattr(item, "category", item.label) or item.label),
               float(x0), float(y0), float(x1), float(y1),
               None if birads in (None, "") else str(birads))


def as_boxes(items: Iterable[Any]) -> list[Box]:
    """:func:`as_box` of each item."""
    return [as_box(item) for item in items]


def find_annotations(image_path: str | Path) -> Path | None:
    """The VinDr ``finding_annotations.csv`` beside an image, if any.

    Looks in the image's folder and up to two folders above it (VinDr keeps images in
    ``<root>/images/<study_id>/``).
    """
    from .io.vindr import FINDINGS_CSV

    folder = Path(image_path).resolve().parent
    for candidate in (folder, *list(folder.parents)[:3]):
        csv_path = candidate / FINDINGS_CSV
        if csv_path.is_file():
            return csv_path
    return None


def boxes_for_image(image_path: str | Path, csv_path: str | Path | None = None) -> list[Any]:
    """Ground-truth boxes of one image from a VinDr CSV (found beside it when not given).

    The image is matched by ``image_id`` = its file name without extension. Returns an
    empty list when there is no CSV or no row for this image; a CSV that cannot be read
    raises :class:`~napari_correlax.errors.CorrelaxError`.
    """
    from .errors import CorrelaxError
    from .io.vindr import load_vindr

    csv_file = Path(csv_path) if csv_path is not None else find_annotations(image_path)
    if csv_file is None:
        return []
    index = load_vindr(csv_file, check_files=False)
    try:
        record = index.by_id(Path(image_path).stem.split(".")[0])
    except CorrelaxError:
        return []
    return list(record.boxes)
