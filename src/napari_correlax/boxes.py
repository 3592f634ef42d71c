"""Ground-truth boxes: one small typed record, used by the data sets, evaluation, layers
and figures (docs/method.md §10–11).

Corners are in original image pixels with the VinDr convention: pixel ``i`` covers
``[i, i + 1)``, so a box ``(xmin, ymin, xmax, ymax)`` spans columns ``xmin … xmax`` and
rows ``ymin … ymax``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["Box", "as_box", "as_boxes"]


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
