"""Progress shown in a dock without slowing the computation it reports.

Every repaint of a widget in napari's window composes the whole window with the OpenGL
canvas. With a software OpenGL renderer (a machine without a GPU, a remote desktop) one
composition costs tens of milliseconds of CPU, taken from the model running in the
worker (or in the training subprocess, on the same cores). Measured in
``benchmarks/napari_worker.py`` on 2 cores: the status text updated at every batch cost
a third of CorRELAX's throughput, and napari's own progress bar (whose animated "in
progress" indicator repaints continuously while any bar exists) halved it. So the docks
show progress on their own determinate ``QProgressBar`` and label, refreshed at most
twice a second with the latest event, and the time left at the measured rate (refreshed
between events too, so it never stands still while the work does).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QObject, QTimer
from qtpy.QtWidgets import QLabel, QProgressBar

from ..maps.runtime import Progress, TimeLeft

__all__ = ["REFRESH_MS", "ThrottledProgress"]

#: Shortest time between two refreshes of the progress widgets, milliseconds.
REFRESH_MS = 500


class ThrottledProgress(QObject):
    """Shows the latest ``(stage, done, total)`` event on a bar (and a label) at most
    every :data:`REFRESH_MS` ms; until :meth:`stop`, the label's time left is refreshed
    at that pace even when no event comes (a long batch makes it grow, not freeze).

    ``describe(stage, done, total)`` gives the label text; ``bar_format(stage)`` the bar's
    format string (Qt's: ``%v`` done, ``%m`` total; default ``"<stage> %v / %m"``).
    """

    def __init__(
        self,
        bar: QProgressBar,
        label: QLabel | None = None,
        *,
        describe: Callable[[str, int, int], str] | None = None,
        bar_format: Callable[[str], str] = lambda stage: f"{stage} %v / %m",
        interval_ms: int = REFRESH_MS,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.bar = bar
        self.label = label
        self.describe = describe
        self.bar_format = bar_format
        self.latest: Any = None
        self.time_left = TimeLeft()
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(int(interval_ms))
        self._timer.timeout.connect(self.flush)

    def update(self, event: Any) -> None:
        """Remember ``event``; it is shown at the next refresh (within ``interval_ms``)."""
        self.latest = event
        self.time_left.update(Progress(*event))
        if not self._timer.isActive():
            self._timer.start()

    def flush(self) -> None:
        """Show the latest event now (and again within ``interval_ms`` until :meth:`stop`)."""
        if self.latest is None:
            return
        self._timer.start()
        stage, done, total = self.latest
        self.bar.setMaximum(max(int(total), 1))
        self.bar.setValue(min(int(done), max(int(total), 1)))
        self.bar.setFormat(self.bar_format(stage))
        if self.label is not None and self.describe is not None:
            eta = self.time_left.text()
            text = self.describe(stage, int(done), int(total))
            self.label.setText(f"{text} — {eta}" if eta else text)

    def stop(self) -> None:
        """Forget the latest event and stop refreshing (the widgets keep what they show)."""
        self._timer.stop()
        self.latest = None

    def reset(self, text: str = "") -> None:
        """Stop, and show an empty bar with ``text`` as its format."""
        self.stop()
        self.time_left = TimeLeft()
        self.bar.setMaximum(1)
        self.bar.setValue(0)
        self.bar.setFormat(text)
