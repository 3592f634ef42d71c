"""Stopping a dock's background work before napari's window and its widgets go away.

A napari worker runs in a thread of Qt's pool and reports through signals; when the
window closes, Qt deletes the docks (and, at exit, the signal objects) while a worker may
still be inside a batch. A signal emitted then, or a slot run on a deleted widget, ends in
``RuntimeError: wrapped C/C++ object ... has been deleted`` and can abort the process.
So a dock asks to be told when the window is about to close (:func:`when_window_closes`)
and stops its workers there (:func:`stop_worker`): its slots are disconnected first, then
the worker is asked to quit and awaited (it quits at its next yield, one batch later).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QEvent, QObject

__all__ = ["STOP_WAIT_S", "stop_worker", "when_window_closes"]

log = logging.getLogger(__name__)

#: Longest wait for a worker to reach its next yield when the window closes, seconds.
STOP_WAIT_S = 60.0

_SIGNALS = ("started", "yielded", "returned", "errored", "warned", "aborted", "finished")


class _CloseWatcher(QObject):
    """Event filter on napari's main window: calls ``on_close()`` on its Close event."""

    def __init__(self, parent: QObject, on_close: Callable[[], None]) -> None:
        super().__init__(parent)
        self.on_close = on_close

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Close:
            try:
                self.on_close()
            except Exception:  # closing must go on whatever the dock says
                log.exception("stopping a dock's work on close failed")
        return False


def when_window_closes(viewer: Any, owner: QObject, on_close: Callable[[], None]) -> bool:
    """Call ``on_close()`` when ``viewer``'s main window gets its close event, before
    napari tears the window and its docks down (``owner``: the dock; the hook goes with
    it). False when the viewer has no Qt window (a headless viewer model)."""
    window = getattr(getattr(viewer, "window", None), "_qt_window", None)
    if window is None:
        return False
    window.installEventFilter(_CloseWatcher(owner, on_close))
    return True


def stop_worker(worker: Any, wait_s: float = STOP_WAIT_S) -> bool:
    """Disconnect every slot from a napari worker's signals, ask it to quit and wait (at
    most ``wait_s`` seconds) until its thread has left the work; True when it has.

    Nothing the worker still sends reaches a dock after this. Safe on ``None`` and on a
    worker that has ended.
    """
    if worker is None:
        return True
    for name in _SIGNALS:
        try:
            getattr(worker, name).disconnect()
        except (AttributeError, RuntimeError, TypeError):  # no such signal, or no slots
            pass
    worker.quit()
    deadline = time.monotonic() + wait_s
    while worker.is_running:
        if time.monotonic() > deadline:
            log.warning("a worker did not stop within %.0f s of closing", wait_s)
            return False
        time.sleep(0.02)
    return True
