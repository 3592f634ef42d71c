"""The docks' throttled progress display (see napari_correlax._napari._progress)."""

from __future__ import annotations

from qtpy.QtWidgets import QLabel, QProgressBar

from napari_correlax._napari._progress import ThrottledProgress


def test_only_the_latest_event_is_shown_and_not_more_than_once_per_interval(qtbot):
    bar, label = QProgressBar(), QLabel()
    qtbot.addWidget(bar)
    qtbot.addWidget(label)
    shown = []
    bar.valueChanged.connect(shown.append)
    view = ThrottledProgress(bar, label, describe=lambda s, d, t: f"{s}: {d} of {t}",
                             interval_ms=200)
    for done in range(1, 101):  # a burst of 100 events, as a fast worker sends them
        view.update(("masks", done, 100))
    assert shown == [] and label.text() == ""  # nothing drawn inside the burst
    qtbot.waitUntil(lambda: bar.value() == 100, timeout=2000)
    assert shown == [100]  # one refresh, with the last event
    assert bar.text() == "masks 100 / 100" and label.text() == "masks: 100 of 100"
    view.update(("windows", 3, 7))
    view.flush()  # immediate refresh on demand
    assert (bar.value(), bar.maximum(), bar.text()) == (3, 7, "windows 3 / 7")


def test_stop_drops_a_pending_event_and_reset_empties_the_bar(qtbot):
    bar = QProgressBar()
    qtbot.addWidget(bar)
    view = ThrottledProgress(bar, interval_ms=50)
    view.update(("masks", 5, 10))
    view.stop()
    qtbot.wait(150)
    assert bar.value() != 5 and view.latest is None
    view.update(("masks", 5, 10))
    view.flush()
    view.reset("cancelled")
    assert (bar.value(), bar.maximum(), bar.text()) == (0, 1, "cancelled")


def test_the_time_left_is_refreshed_while_no_event_comes(qtbot):
    """A long batch sends no event: the label's time left grows with the clock instead
    of standing at the last estimate."""
    bar, label = QProgressBar(), QLabel()
    qtbot.addWidget(bar)
    qtbot.addWidget(label)
    view = ThrottledProgress(bar, label, describe=lambda s, d, t: f"{s}: {d} of {t}",
                             interval_ms=50)
    now = [100.0]
    view.time_left.clock = lambda: now[0]
    view.update(("masks", 0, 100))
    now[0] = 104.0
    view.update(("masks", 40, 100))  # 40 in 4 s: 60 left take 6 s
    qtbot.waitUntil(lambda: label.text() == "masks: 40 of 100 — about 5 s left", timeout=2000)
    now[0] = 160.0  # 56 s later, still no event: 40 in 60 s, 60 left take 90 s
    qtbot.waitUntil(lambda: label.text() == "masks: 40 of 100 — about 2 min left",
                    timeout=2000)
    view.stop()
    now[0] = 1000.0
    qtbot.wait(200)
    assert label.text() == "masks: 40 of 100 — about 2 min left"  # stopped: left as it was
