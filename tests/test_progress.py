"""Time left from the measured rate (docks and command line)."""

from __future__ import annotations

import pytest

from napari_correlax.maps.runtime import Progress, TimeLeft, format_time_left


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_time_left_is_the_remaining_work_at_the_stage_rate():
    clock = Clock()
    left = TimeLeft(min_seconds=2.0, clock=clock)
    left.update(Progress("window", 0, 100))
    clock.now += 1.0
    left.update(Progress("window", 10, 100))
    assert left.seconds() is None  # not measured long enough
    clock.now += 3.0  # 40 windows in 4 s: 10 per second
    left.update(Progress("window", 40, 100))
    assert left.seconds() == pytest.approx(60 / 10)
    # a new stage is timed on its own, from its first event
    left.update(Progress("masks", 0, 1000))
    clock.now += 5.0
    left.update(Progress("masks", 100, 1000))  # 20 per second
    assert left.seconds() == pytest.approx(900 / 20)
    assert left.text() == "about 45 s left"


@pytest.mark.parametrize(("seconds", "text"), [
    (None, ""), (1.0, "about 5 s left"), (42.0, "about 40 s left"),
    (600.0, "about 10 min left"), (3 * 3600.0, "about 3.0 h left"),
])
def test_time_left_in_words(seconds, text):
    assert format_time_left(seconds) == text


def test_progress_lines_when_stderr_is_not_a_terminal(capsys, monkeypatch):
    """A log file gets a line now and then and one at the end of each stage."""
    from napari_correlax.cli import common

    monkeypatch.setattr(common, "LOG_EVERY_S", 0.0)

    def steps():
        yield Progress("masks", 0, 4)
        yield Progress("masks", 2, 4)
        yield Progress("masks", 4, 4)
        return "done"

    assert common.run_with_progress(steps(), "img.dcm") == "done"
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["img.dcm: masks 0/4 (0%)", "img.dcm: masks 2/4 (50%)",
                     "img.dcm: masks 4/4 (100%)"]


def test_time_left_follows_the_recent_rate_and_grows_while_no_event_comes():
    """CorRELAX credits windows that stop early at once: a fast start, then a slow end.
    The estimate follows the pace of the last ``window_seconds``, and time without an
    event makes it grow rather than stand still."""
    clock = Clock()
    left = TimeLeft(min_seconds=2.0, clock=clock, window_seconds=10.0)
    done = 0
    left.update(Progress("masks", done, 10_000))
    for _ in range(10):  # 900 per second for 10 s (early stops credited)
        clock.now += 1.0
        done += 900
        left.update(Progress("masks", done, 10_000))
    assert left.seconds() == pytest.approx(1000 / 900)
    for _ in range(20):  # then 10 per second, up to done = 9200 at t = 130
        clock.now += 1.0
        done += 10
        left.update(Progress("masks", done, 10_000))
    # the rate since t = 120 (done 9100): 100 in 10 s; a rate since the start would say
    # 9200 in 30 s and promise 2.6 s for the 800 left
    assert left.seconds() == pytest.approx(800 / 10)
    clock.now += 5.0  # no event for 5 s: 100 in 15 s, more time left
    assert left.seconds() == pytest.approx(800 * 15 / 100)
    assert left.text() == "about 2 min left"
