"""A per-image summary table: for each label, the peak prediction and peak correlation
with their locations; clicking a row centres the view there."""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QAbstractItemView, QTableWidget, QTableWidgetItem

__all__ = ["PeakTable"]

_COLUMNS = ("Label", "Map", "Peak", "Row", "Col")


class PeakTable(QTableWidget):
    """Peaks of a :class:`~napari_correlax.maps.MapResult` over an image layer."""

    def __init__(self, viewer: Any) -> None:
        super().__init__(0, len(_COLUMNS))
        self.viewer = viewer
        self.image_layer: Any = None
        self.setHorizontalHeaderLabels(list(_COLUMNS))
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.verticalHeader().setVisible(False)
        self.setMaximumHeight(180)
        self.setToolTip("Per label, the highest prediction and correlation and where they are "
                        "(image pixels); click a row to centre the view there")
        self.cellClicked.connect(lambda row, _col: self.centre_on(row))
        self._points: list[tuple[float, float]] = []

    def show_result(self, result: Any, image_layer: Any, labels: list[str] | None = None) -> None:
        """Fill the table with ``result``'s peaks (``labels``: only these labels)."""
        rows = [p for p in result.peaks() if labels is None or p[0] in labels]
        self.image_layer = image_layer
        self._points = [point for *_, point in rows]
        self.setRowCount(len(rows))
        for k, (label, kind, value, (row, col)) in enumerate(rows):
            for c, text in enumerate((label, kind, f"{value:.3f}", f"{row:.0f}", f"{col:.0f}")):
                self.setItem(k, c, QTableWidgetItem(text))
        self.resizeColumnsToContents()

    def centre_on(self, row: int) -> None:
        """Centre the view on the peak of table row ``row`` (image pixels → world)."""
        if not 0 <= row < len(self._points) or self.image_layer is None:
            return
        world = self.image_layer.data_to_world(self._points[row])
        self.viewer.camera.center = tuple(float(v) for v in world)
