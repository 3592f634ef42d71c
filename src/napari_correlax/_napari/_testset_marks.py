"""Marking false positives in the test-set reader: press F (or the dock's button), then
click near the wrong peak on the canvas; the mark snaps to the map's highest window within
48 px (:meth:`~napari_correlax.evaluate.review.Review.mark_false_positive`) and is saved at
once. It is filed under the label whose map is on screen, and refused where that map is
not positive."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from napari.utils.notifications import show_info

from ..errors import CorrelaxError
from ..evaluate.review import Review


class FalsePositiveMarker:
    """Arms one canvas click at a time and turns it into a false-positive mark.

    ``labels()`` gives the labels whose judged map is on screen, topmost first (the first
    is marked on when the selected line's map is not shown), ``selected()`` the label of
    the selected table line, ``guard`` reports errors, ``changed()`` redraws after a mark
    and ``armed(on)`` tells the dock's button.
    """

    def __init__(self, viewer: Any, review: Review, image_layer: str, *,
                 labels: Callable[[], list[str]], selected: Callable[[], str],
                 guard: Callable[..., Any], changed: Callable[[], None],
                 armed: Callable[[bool], None]) -> None:
        self.viewer, self.review, self.image_layer = viewer, review, image_layer
        self._labels, self._selected = labels, selected
        self._guard, self._changed, self._armed = guard, changed, armed

    @property
    def active(self) -> bool:
        """True while the next click will mark."""
        return self._on_click in self.viewer.mouse_drag_callbacks

    def toggle(self) -> None:
        """Arm the next click, or disarm it."""
        if self.active:
            self.viewer.mouse_drag_callbacks.remove(self._on_click)
        else:
            self.viewer.mouse_drag_callbacks.append(self._on_click)
        self._armed(self.active)

    def mark(self, row: float, col: float, label: str | None = None) -> None:
        """Mark near ``(row, col)`` (image pixels) on the viewed map of ``label`` (default:
        the selected line's label when its map is shown, else the topmost shown map's).

        Raises CorrelaxError when no map is shown or ``label``'s is not, or where the map
        is not positive (:meth:`~napari_correlax.evaluate.review.Review.mark_false_positive`).
        """
        shown = self._labels()
        selected = self._selected()
        label = label or (selected if selected in shown else next(iter(shown), ""))
        if label not in shown:
            raise CorrelaxError(f"not marked: the {label or 'judged'} map is not shown; show "
                                "it (P / C, or its layer) and click on it")
        mark = self.review.mark_false_positive(label, row, col)
        self._changed()
        show_info(f"false positive marked on the {mark.label} {mark.kind} map "
                  f"({mark.max_value:.2f}); Clear on its line takes it back")

    def _on_click(self, viewer: Any, event: Any) -> None:
        if self.image_layer in viewer.layers:
            row, col = viewer.layers[self.image_layer].world_to_data(event.position)[-2:]
            self._guard(self.mark, float(row), float(col))
        self.toggle()
