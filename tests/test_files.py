"""Atomic writes keep the old file on failure and give normal permissions."""

from __future__ import annotations

import os
import stat

import pytest

from napari_correlax.files import atomic_write, atomic_write_text


def test_failed_write_keeps_old_content_and_leaves_no_temp(tmp_path):
    target = tmp_path / "verdicts.csv"
    atomic_write_text(target, "old\n")

    def explode(fh):
        fh.write(b"half")
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(target, explode)
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["verdicts.csv"]


def test_written_files_follow_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "a.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_atomic_csv_reads_back_with_the_csv_module(tmp_path):
    import csv

    from napari_correlax.files import atomic_write_csv

    rows = [["a, b", 'say "hi"', 1.5], ["plain", "", 2]]
    path = atomic_write_csv(tmp_path / "t.csv", ["x", "y", "z"], rows)
    with open(path, newline="", encoding="utf-8") as fh:
        back = list(csv.reader(fh))
    assert back == [["x", "y", "z"], ["a, b", 'say "hi"', "1.5"], ["plain", "", "2"]]
    assert not list(tmp_path.glob(".t.csv.*"))  # no temp file left
