"""Stopping a dock's workers before napari's window goes (napari_correlax._napari._closing)."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.gui

napari = pytest.importorskip("napari")


def test_stop_worker_disconnects_quits_and_waits_for_the_thread(qtbot):
    from napari.qt.threading import create_worker

    from napari_correlax._napari._closing import stop_worker

    def steps():
        for k in range(10_000):
            time.sleep(0.2)  # one "batch"
            yield k

    worker = create_worker(steps, _start_thread=False)
    seen: list[int] = []
    worker.yielded.connect(seen.append)
    worker.start()
    qtbot.waitUntil(lambda: len(seen) >= 2, timeout=10_000)
    assert worker.is_running
    start = time.monotonic()
    assert stop_worker(worker) is True
    assert not worker.is_running and worker.abort_requested
    assert time.monotonic() - start < 5.0  # it ended at its next yield
    count = len(seen)
    qtbot.wait(300)  # what it had queued for the GUI is not delivered any more
    assert len(seen) == count
    assert stop_worker(None) is True


def test_the_close_hook_runs_once_when_the_viewer_closes(make_napari_viewer, qtbot):
    from qtpy.QtWidgets import QWidget

    from napari_correlax._napari._closing import when_window_closes

    viewer = make_napari_viewer()
    dock = QWidget()
    viewer.window.add_dock_widget(dock)
    calls: list[bool] = []
    # a method of a widget Qt has deleted would raise: the hook runs while it is alive
    assert when_window_closes(viewer, dock, lambda: calls.append(dock.isWidgetType()))
    assert calls == []
    viewer.close()
    assert calls == [True]
