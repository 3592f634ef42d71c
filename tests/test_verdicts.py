"""The verdict store (method §10 reader verdicts): atomic CSV, resume, never a lost verdict."""

from __future__ import annotations

import csv
import os

import pytest

from napari_correlax.errors import CorrelaxError
from napari_correlax.evaluate.pointing import Verdict
from napari_correlax.evaluate.verdicts import (
    COLUMNS,
    ReaderState,
    VerdictStore,
)


def verdicts(image="img1", value=0.61):
    return [
        Verdict(image, "Mass", "prediction>=0.25", "prediction", value, 175.5, 223.5, True, True,
                2),
        Verdict(image, "Mass", "correlation>0", "correlation", -0.2, 79.5, 31.5, False, False, 2),
    ]


def add(store, image="img1", value=0.61, settings="tiny-abc"):
    return store.add_automatic(verdicts(image, value), study_id="s1", split="test",
                               model="tiny", settings=settings)


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_rows_are_written_at_once_with_the_documented_columns(tmp_path):
    path = tmp_path / "verdicts.csv"
    store = VerdictStore(path)
    assert not path.exists()
    add(store)
    rows = read_csv(path)
    assert list(rows[0]) == list(COLUMNS)
    assert [(r["image_id"], r["label"], r["map"], r["auto_verdict"]) for r in rows] == [
        ("img1", "Mass", "prediction>=0.25", "hit"), ("img1", "Mass", "correlation>0", "miss")]
    first = rows[0]
    assert (float(first["max_value"]), float(first["max_row"]), float(first["max_col"])) == (
        0.61, 175.5, 223.5)
    assert (first["boxes"], first["inside"], first["model"], first["settings"]) == (
        "2", "true", "tiny", "tiny-abc")
    assert first["reader_verdict"] == "" and first["time"] == ""


def test_reader_verdicts_survive_reopening_and_automatic_refresh(tmp_path):
    path = tmp_path / "verdicts.csv"
    store = VerdictStore(path)
    rows = add(store)
    store.set_reader(rows[0].key, "miss", comment="max on the pectoral muscle")
    store.set_reader(rows[1].key, "unsure")
    # A new process opens the file: everything entered is there.
    again = VerdictStore(path)
    got = {r.map: (r.reader_verdict, r.comment) for r in again.rows()}
    assert got == {"prediction>=0.25": ("miss", "max on the pectoral muscle"),
                   "correlation>0": ("unsure", "")}
    assert all(r.time for r in again.rows())
    # Recomputed maps refresh the automatic columns but keep the reader's.
    add(again, value=0.2)
    third = VerdictStore(path)
    row = third.get(rows[0].key)
    assert (row.reader_verdict, row.comment, row.max_value) == (
        "miss", "max on the pectoral muscle", 0.2)


def test_status_follows_the_reader(tmp_path):
    store = VerdictStore(tmp_path / "v.csv")
    assert store.status("img1") == "none"
    rows = add(store)
    assert store.status("img1") == "open"
    store.set_reader(rows[0].key, "hit")
    assert store.status("img1") == "partial"
    store.set_reader(rows[1].key, "miss")
    assert store.status("img1") == "done"
    store.set_reader(rows[1].key, "")
    assert store.status("img1") == "partial"
    assert store.status("img1", settings="other") == "none"


def test_settings_keep_rows_apart(tmp_path):
    store = VerdictStore(tmp_path / "v.csv")
    add(store, settings="a")
    add(store, settings="b")
    assert len(store) == 4
    assert len(store.for_image("img1", "a")) == 2


def test_bad_verdict_and_unknown_row_raise(tmp_path):
    store = VerdictStore(tmp_path / "v.csv")
    rows = add(store)
    with pytest.raises(CorrelaxError, match="verdict must be"):
        store.set_reader(rows[0].key, "maybe")
    with pytest.raises(CorrelaxError, match="no verdict row"):
        store.set_reader(("x", "Mass", "correlation>0", "tiny-abc"), "hit")


@pytest.mark.parametrize("content", [
    "a,b,c\n1,2,3\n",
    "image_id,label,map,auto_verdict,reader_verdict\nimg,Mass,correlation>0,hit,perhaps\n",
    "image_id,label,map,auto_verdict,reader_verdict,max_value\nimg,Mass,m,hit,,abc\n",
])
def test_a_foreign_or_damaged_file_is_refused_and_left_untouched(tmp_path, content):
    path = tmp_path / "verdicts.csv"
    path.write_text(content)
    with pytest.raises(CorrelaxError) as info:
        VerdictStore(path)
    assert str(path) in str(info.value)
    assert path.read_text() == content


def test_writes_leave_no_temporary_files_and_replace_atomically(tmp_path, monkeypatch):
    path = tmp_path / "verdicts.csv"
    store = VerdictStore(path)
    rows = add(store)
    before = path.read_bytes()
    # A crash in the middle of writing leaves the previous file, complete.
    import napari_correlax.files as files

    def broken_replace(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(files.os, "replace", broken_replace)
    with pytest.raises(OSError):
        store.set_reader(rows[0].key, "hit")
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert store.get(rows[0].key).reader_verdict == ""  # memory agrees with the file
    assert sorted(os.listdir(tmp_path)) == ["verdicts.csv"]


def test_reader_state_round_trip_and_tolerance(tmp_path):
    path = tmp_path / "reader-state.json"
    state = ReaderState(data="/d", split="test", filter="Mass", model="m.safetensors",
                        settings={"stride": 64}, image_id="img7")
    state.save(path)
    assert ReaderState.load(path) == state
    path.write_text("{not json")
    assert ReaderState.load(path) is None
    assert ReaderState.load(tmp_path / "absent.json") is None


def test_interval_columns_round_trip_and_old_files_read(tmp_path):
    path = tmp_path / "verdicts.csv"
    store = VerdictStore(path)
    with_ci = Verdict("img1", "Mass", "correlation>0", "correlation", 0.4, 79.5, 31.5, True,
                      True, 1, ci=0.12, nonzero=True, runner_up=0.35, runner_up_ci=0.1,
                      separated=False)
    store.add_automatic([with_ci, verdicts()[0]], settings="k")
    rows = read_csv(path)
    assert (rows[0]["ci"], rows[0]["nonzero"], rows[0]["separated"]) == ("0.12", "true", "false")
    assert (rows[1]["ci"], rows[1]["nonzero"], rows[1]["separated"]) == ("", "", "")
    again = VerdictStore(path).rows()
    assert again[0].runner_up == 0.35 and again[0].separated is False
    assert again[1].nonzero is None

    # A file written before the interval columns existed.
    old = tmp_path / "old.csv"
    keep = [c for c in COLUMNS if c not in ("ci", "nonzero", "runner_up", "runner_up_ci",
                                             "separated")]
    old.write_text(",".join(keep) + "\n" + ",".join(
        {"image_id": "a", "label": "Mass", "map": "correlation>0", "auto_verdict": "hit",
         "boxes": "1", "inside": "true"}.get(c, "") for c in keep) + "\n", encoding="utf-8")
    (row,) = VerdictStore(old).rows()
    assert row.auto_verdict == "hit" and row.nonzero is None and row.ci != row.ci
