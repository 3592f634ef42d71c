"""Adding result layers to a viewer without freezing it: one layer per event-loop turn.

napari needs 0.1–0.3 s to set up each new image layer (more on a software-rendered
display); adding a dozen in one go would block the window for seconds. The queue adds or
updates one layer, returns to the event loop, and goes on with the next.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from qtpy.QtCore import QObject, QTimer

from . import _layers

__all__ = ["LayerQueue"]


class LayerQueue(QObject):
    """Layers waiting to be added to ``viewer``; ``drained`` is called when none are left."""

    def __init__(self, viewer: Any, parent: QObject, drained: Callable[[], None]) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.drained = drained
        self.items: list[_layers.LayerData] = []
        self._adding = False
        self.timer = QTimer(self)
        self.timer.setInterval(0)
        self.timer.timeout.connect(self.add_next)

    @property
    def pending(self) -> bool:
        """True while layers are waiting."""
        return bool(self.items)

    def add(self, data: Iterable[_layers.LayerData]) -> None:
        """Queue layers to add or update (by name)."""
        self.items.extend(data)
        if self.items and not self.timer.isActive():
            self.timer.start()

    def discard(self, names: Iterable[str]) -> None:
        """Drop queued layers with these names (they are being removed)."""
        names = set(names)
        self.items = [d for d in self.items if d[1]["name"] not in names]

    def add_next(self) -> None:
        """Add the next queued layer; call ``drained`` once the queue is empty."""
        if self._adding:  # re-entered through a processEvents() inside napari
            return
        if self.items:
            self._adding = True
            try:
                _layers.add_or_update(self.viewer, [self.items.pop(0)])
            finally:
                self._adding = False
        if not self.items:
            self.timer.stop()
            self.drained()
