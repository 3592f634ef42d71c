"""The test-set reader's rules without Qt or a model (evaluate/review.py, SPEC §10).

The data set is written by hand: six test images and one training image, with the
labels, files and order below, so every expectation is worked out from this table.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from napari_correlax.errors import CorrelaxError, JobFailure
from napari_correlax.evaluate.review import (
    ALL,
    WITH_FINDINGS,
    Review,
    load_steps,
    read_preview,
    saved_settings,
)
from napari_correlax.evaluate.runner import LoadedImage
from napari_correlax.evaluate.verdicts import ReaderState
from napari_correlax.labels import LABELS
from napari_correlax.maps.result import MapResult
from napari_correlax.maps.settings import MapSettings
from napari_correlax.windows import WindowGrid

H, W = 200, 160
LONG = "c2-0123456789abcdef"
#: (study, image, laterality, view, [(category, xmin, ymin, xmax, ymax)], split, file?)
IMAGES = [
    ("s1", "a1", "L", "CC", [("Mass", 100, 100, 140, 150)], "test", True),
    ("s1", "a2", "L", "MLO", [], "test", True),
    ("s2", "b1", "R", "CC", [("Suspicious Calcification", 20, 30, 40, 50),
                             ("Mass", 60, 60, 90, 100)], "test", True),
    ("s2", "b2", "R", "MLO", [("Mass", 10, 10, 50, 50)], "test", False),
    ("s3", "c1", "L", "CC", [], "test", True),
    ("s3", LONG, "L", "MLO", [("Focal Asymmetry", 5, 5, 30, 30)], "test", True),
    ("t1", "x1", "R", "CC", [("Mass", 10, 10, 60, 60)], "training", True),
]
TEST_IDS = ["a1", "a2", "b1", "b2", "c1", LONG]
MASS_RULES = ["prediction>=0.25", "prediction>=0.50", "correlation>0"]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    rows = []
    for study, image, lat, view, boxes, split, present in IMAGES:
        head = [study, image, lat, view, str(H), str(W)]
        for category, *box in boxes or [("No Finding", "", "", "", "")]:
            rows.append([*head, str([category]), *(str(v) for v in box), split])
        if present:
            path = root / "images" / study / f"{image}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")  # only looked up, never read, unless a test writes pixels
    with open(root / "finding_annotations.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["study_id", "image_id", "laterality", "view_position", "height",
                         "width", "finding_categories", "xmin", "ymin", "xmax", "ymax", "split"])
        writer.writerows(rows)
    return root


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """A file standing for a checkpoint: the cache key only hashes its bytes."""
    path = tmp_path / "reader.safetensors"
    path.write_bytes(b"weights of a model that is never loaded")
    return path


def opened(data: Path, work: Path, checkpoint: Path, split: str = "test", choice: str = ALL,
           settings: MapSettings | None = None) -> tuple[Review, int]:
    review = Review()
    review.open(data, work)
    review.configure(str(checkpoint), settings or MapSettings(stride=64, masks=16))
    return review, review.list_images(split, choice)


def mass_result(pred_at: tuple[int, int], pred: float, corr_at: tuple[int, int], corr: float
                ) -> MapResult:
    """Maps on a 5×4 grid of 64 px windows, stride 32, origin (0, 0): window (i, j) is
    centred at (32 i + 31.5, 32 j + 31.5). Only Mass has non-zero values."""
    grid = WindowGrid(64, 32, (0, 0), (5, 4), (H, W))
    prediction = np.zeros((len(LABELS), 5, 4))
    correlation = np.full((len(LABELS), 5, 4), -0.5)
    mass = LABELS.index("Mass")
    prediction[mass][pred_at] = pred
    correlation[mass][corr_at] = corr
    return MapResult(labels=list(LABELS), grid=grid, prediction=prediction,
                     window_mask=np.ones((5, 4), bool), correlation=correlation)


def loaded(review: Review, image_id: str, result: MapResult, key: str | None = None
           ) -> LoadedImage:
    record = review.index.by_id(image_id)
    return LoadedImage(record, np.zeros((H, W)), None, result,
                       review.key if key is None else key, "reader")


# -- list and filter -------------------------------------------------------------------
def test_filters_keep_the_images_of_the_split_with_the_chosen_findings(data, tmp_path,
                                                                       checkpoint):
    review, _ = opened(data, tmp_path / "work", checkpoint)
    assert review.splits() == ["test", "training"]
    ids = {choice: [r.image_id for r in review.filtered("test", choice)]
           for choice in (ALL, WITH_FINDINGS, "Mass", "Asymmetries", "Skin Thickening")}
    assert ids == {ALL: TEST_IDS, WITH_FINDINGS: ["a1", "b1", "b2", LONG],
                   "Mass": ["a1", "b1", "b2"], "Asymmetries": [LONG], "Skin Thickening": []}
    assert [r.image_id for r in review.filtered("train", ALL)] == ["x1"]
    assert review.list_images("test", "Skin Thickening") == -1 and review.current is None


def test_navigation_follows_the_list_and_stops_at_both_ends(data, tmp_path, checkpoint):
    review, start = opened(data, tmp_path / "work", checkpoint)
    assert start == 0  # a1: the first image with a finding and no verdict
    assert review.go(start).image_id == "a1"
    seen = [review.current.image_id]
    for _ in range(7):  # two steps more than the list holds
        review.go(review.position + 1)
        seen.append(review.current.image_id)
    assert seen == [*TEST_IDS, LONG, LONG]
    review.go(review.position - 10)
    assert review.position == 0 and review.neighbour(-1) is None
    assert review.neighbour(1).image_id == "a2"
    assert (review.find("3"), review.find(" b2 "), review.find("s3"), review.find("c2")) == (
        2, 3, 4, 5)
    assert review.find("zz") is None
    assert review.position_of(LONG) == 5 and review.position_of("x1") == -1


def test_status_symbols_and_summary(data, tmp_path, checkpoint):
    review, start = opened(data, tmp_path / "work", checkpoint)
    review.go(start)
    assert [review.status(r) for r in review.records] == [
        "none", "normal", "none", "bad", "normal", "none"]
    assert review.describe(0) == ("○ 1. a1 L CC · Mass", "study s1\nimage a1")
    assert review.describe(1)[0] == "· 2. a2 L MLO · no finding"
    text, tip = review.describe(3)
    missing = data / "images" / "s2" / "b2.dicom"
    assert text == "✗ 4. b2 R MLO · Mass" and tip == f"{missing}: file not found"
    assert review.describe(5)[0] == "○ 6. c2-012345678 L MLO · Asymmetries"
    assert review.summary() == "6 images: 0 reviewed, 3 to review, 1 missing or unreadable."
    assert review.summary(checking=True).endswith("unreadable (checking files…).")

    review.accept(loaded(review, "a1", mass_result((3, 3), 0.4, (0, 0), 0.3)))
    review.automatic_verdicts(review.loaded["a1"])
    assert review.status(review.current) == "open"
    # one line per finding, judged on the map kind viewed (correlation first)
    assert [(f.label, f.kind, f.boxes, f.automatic()) for f in review.findings()] == [
        ("Mass", "correlation", 1, "miss")]
    review.set_verdict(0, "hit")
    # every line the reader was shown is judged: reviewed, whatever the other map kind
    assert review.status(review.current) == "done" and review.describe(0)[0].startswith("● ")
    assert review.summary() == "6 images: 1 reviewed, 2 to review, 1 missing or unreadable."
    review.set_view("prediction")
    assert [(f.kind, f.automatic(), f.reader_verdict) for f in review.findings()] == [
        ("prediction", "hit >=0.25 · miss >=0.50", "")]
    assert review.status(review.current) == "done"
    review.set_verdict(0, "unsure")
    review.set_view("correlation")
    review.set_verdict(0, "")  # cleared: the prediction line is still all judged
    assert review.status(review.current) == "done"
    review.set_view("prediction")
    review.set_verdict(0, "")
    assert review.status(review.current) == "open" and review.describe(0)[0].startswith("○ ")
    # two findings, one judged: partial until the second is
    review.go(2)
    review.accept(loaded(review, "b1", mass_result((3, 3), 0.4, (0, 0), 0.3)))
    review.automatic_verdicts(review.loaded["b1"])
    assert [f.label for f in review.findings()] == ["Mass", "Suspicious Calcification"]
    assert review.set_verdict(0, "miss") == 1
    assert review.status(review.current) == "partial" and review.describe(2)[0].startswith("◐")
    review.set_verdict(1, "hit")
    assert review.status(review.current) == "done"
    # an image found unreadable later is marked at once
    assert review.mark_bad(LONG, "truncated") == 5
    assert review.status(review.records[5]) == "bad"
    assert review.describe(5) == ("✗ 6. c2-012345678 L MLO · Asymmetries", "truncated")
    assert review.to_check() == [r for r in review.index.images
                                 if r.image_id not in ("b2", LONG)]


def test_the_list_starts_at_the_first_image_still_to_review(data, tmp_path, checkpoint):
    review, start = opened(data, tmp_path / "work", checkpoint)
    review.go(start)
    review.accept(loaded(review, "a1", mass_result((3, 3), 0.4, (0, 0), 0.3)))
    review.automatic_verdicts(review.loaded["a1"])
    for kind in ("prediction", "correlation"):
        review.set_view(kind)
        review.set_verdict(0, "hit")
    # a1 done, a2 normal: b1 is next; the current image is kept when still listed
    assert review.list_images("test", ALL, keep="not listed") == 2
    assert review.list_images("test", WITH_FINDINGS) == 1  # b1 in [a1, b1, b2, c2]
    review.go(3)
    assert review.current.image_id == LONG
    assert review.list_images("test", ALL) == 5


# -- computing -------------------------------------------------------------------------
def test_prefetch_wants_the_current_image_then_the_next_one(data, tmp_path, checkpoint):
    review, start = opened(data, tmp_path / "work", checkpoint)
    review.go(start)

    def wanted():
        return [r.image_id for r in review.wanted()]

    assert wanted() == ["a1", "a2"]
    assert review.accept(loaded(review, "a1", mass_result((3, 3), 0.4, (0, 0), 0.3))) == "a1"
    assert wanted() == ["a2"]
    review.go(2)  # b1; the next one, b2, has no file
    assert wanted() == ["b1"]
    review.go(3)  # on b2 itself: only c1
    assert wanted() == ["c1"]
    review.go(5)  # the last image: nothing after it
    assert wanted() == [LONG]
    # a failure of the model or the machine halts everything until the settings change
    stop = JobFailure("out of memory: lower the batch size or raise the stride", LONG, False)
    assert review.accept(stop) == "" and review.halted == stop.message
    assert wanted() == [] and review.status(review.current) == "none"
    assert review.configure(review.checkpoint, review.settings) is True
    assert review.halted == "" and wanted() == [LONG]
    # a failure of the image file marks it bad and moves on
    assert review.accept(JobFailure("truncated", LONG, True)) == LONG
    assert review.status(review.current) == "bad" and wanted() == []


def test_loaded_maps_are_kept_for_the_current_image_and_its_neighbours(data, tmp_path,
                                                                       checkpoint):
    review, _ = opened(data, tmp_path / "work", checkpoint)
    review.go(2)  # b1: neighbours a2 and b2
    result = mass_result((0, 0), 0.1, (0, 0), 0.1)
    for image_id in ("a1", "a2", "b1", "c1"):
        assert review.accept(loaded(review, image_id, result)) == image_id
    assert sorted(review.loaded) == ["a2", "b1"]
    # maps made under another key (settings changed meanwhile) are dropped
    assert review.accept(loaded(review, "a2", result, key="old-000000000000")) == ""
    assert review.loaded["a2"].key == review.key
    # new settings: new key, nothing loaded any more
    assert review.configure(review.checkpoint, MapSettings(stride=96, masks=16)) is True
    assert review.loaded == {}


def test_load_steps_blames_the_image_file_without_loading_a_model(data, tmp_path,
                                                                  checkpoint):
    review, _ = opened(data, tmp_path / "work", checkpoint)

    def run(record):
        steps = load_steps(record, str(checkpoint), review.settings, tmp_path / "cache")
        with pytest.raises(StopIteration) as stop:
            while True:
                next(steps)
        return stop.value.value

    missing = review.index.by_id("b2")
    failure = run(missing)
    assert failure == JobFailure(f"{missing.path}: file not found", "b2", True)
    small = review.index.by_id("a1")
    small.path.write_bytes(b"P5\n4 3\n255\n" + bytes(12))  # a 3×4 image; the CSV says 200×160
    failure = run(small)
    assert failure.bad_image and failure.image_id == "a1" and "200×160" in failure.message


def test_a_preview_reads_the_image_alone_and_is_kept_until_its_maps_come(
        data, tmp_path, checkpoint):
    review, _ = opened(data, tmp_path / "work", checkpoint)
    review.go(2)  # b1: neighbours a2 and b2
    record = review.index.by_id("b1")
    pixels = (np.arange(H * W) % 251).astype(np.uint8).reshape(H, W)
    record.path.write_bytes(b"P5\n%d %d\n255\n" % (W, H) + pixels.tobytes())
    shown = read_preview(record)  # no model: the checkpoint here is not one
    assert shown.result is None and not shown.final and shown.record is record
    # the PGM's grey levels stretched to 0–1 (its darkest 0, its brightest 250)
    assert np.allclose(shown.pixels, pixels / 250.0, atol=1e-6)
    assert read_preview(review.index.by_id("b2")) == JobFailure(
        f"{review.index.by_id('b2').path}: file not found", "b2", True)

    assert review.remember_preview(shown) and review.previews["b1"] is shown
    quick = LoadedImage(record, shown.pixels, None, mass_result((0, 0), 0.1, (0, 0), 0.1),
                        review.key, "reader", final=False)
    assert review.remember_preview(quick)  # its prediction maps replace the image alone
    assert not review.remember_preview(shown) and review.previews["b1"] is quick
    other = LoadedImage(record, shown.pixels, None, quick.result, "old-000000000000",
                        "reader", final=False)
    assert not review.remember_preview(other)  # made under settings no longer used
    far = LoadedImage(review.index.by_id("a1"), shown.pixels, None, None, "", "", final=False)
    assert review.remember_preview(far) and "a1" not in review.previews  # not a neighbour
    review.accept(loaded(review, "b1", quick.result))
    assert "b1" not in review.previews  # the maps are here: no preview any more
    assert not review.remember_preview(quick)


# -- verdicts and restart --------------------------------------------------------------
def test_automatic_verdicts_follow_the_pointing_rules(data, tmp_path, checkpoint):
    review, start = opened(data, tmp_path / "work", checkpoint)
    review.go(start)
    # Mass box x 100..140, y 100..150, grown by 48 px: x 52..188, y 52..198.
    # Prediction maximum 0.4 at window (3, 3), centre (127.5, 127.5) -> inside; 0.4 passes
    # >= 0.25 but not >= 0.50. Correlation maximum 0.3 at window (0, 0), centre
    # (31.5, 31.5) -> x = 32 < 52: outside, a miss although 0.3 > 0.
    verdicts = review.automatic_verdicts(
        loaded(review, "a1", mass_result((3, 3), 0.4, (0, 0), 0.3)))
    assert [(v.label, v.rule, v.hit, v.inside) for v in verdicts] == [
        ("Mass", "prediction>=0.25", True, True), ("Mass", "prediction>=0.50", False, True),
        ("Mass", "correlation>0", False, False)]
    assert [(v.row, v.col, v.value) for v in verdicts] == [
        (127.5, 127.5, 0.4), (127.5, 127.5, 0.4), (31.5, 31.5, 0.3)]


def test_the_reader_takes_the_peak_flags_from_the_stored_second_draw(data, tmp_path,
                                                                     checkpoint):
    from dataclasses import replace

    from napari_correlax.maps.cache import ResultCache

    review, start = opened(data, tmp_path / "work", checkpoint)
    review.go(start)
    result = mass_result((3, 3), 0.4, (0, 0), 0.3)
    result = replace(result, extra={"correlation_ci": np.full((len(LABELS), 5, 4), 0.01)})
    mass = LABELS.index("Mass")

    def flags() -> tuple[bool | None, bool | None]:
        (v,) = [v for v in review.automatic_verdicts(loaded(review, "a1", result))
                if v.map == "correlation"]
        return v.nonzero, v.separated

    assert flags() == (None, None)  # no second draw stored: not tested
    # The peak is window (0, 0); windows share no pixel 2 cells apart (64 px, stride 32),
    # and all of those are -0.5, so the runner-up is the first of them, (0, 2).
    rho = np.zeros((2, len(LABELS)))
    half = np.full((2, len(LABELS)), 0.02)
    rho[0, mass], half[0, mass] = 0.05, 0.1  # 0.05 ± 0.1 reaches 0
    rho[1, mass] = 0.3
    cache = ResultCache(tmp_path / "work" / "cache", review.key)

    def store() -> None:
        cache.save_info("a1", {"redraw": {"grid": [5, 4], "cells": [[0, 0], [0, 2]],
                                          "correlation": rho.tolist(), "ci": half.tolist()}})

    store()
    assert flags() == (False, False)
    rho[0, mass] = 0.5  # 0.5 ± 0.1 vs 0.3 ± 0.02: 0.4 > 0.32
    store()
    assert flags() == (True, True)


def test_reader_overrides_are_saved_at_once_and_read_back_after_a_restart(
        data, tmp_path, checkpoint):
    work = tmp_path / "work"
    settings = MapSettings(stride=64, masks=16, device="cpu")
    review, start = opened(data, work, checkpoint, choice=WITH_FINDINGS, settings=settings)
    review.go(start)
    review.accept(loaded(review, "a1", mass_result((3, 3), 0.4, (0, 0), 0.3)))
    review.automatic_verdicts(review.loaded["a1"])
    assert review.first_open_row() == 0
    review.set_view("prediction")
    assert review.set_verdict(0, "hit") == 0  # one finding: nothing after it, stay
    review.set_view("correlation")
    assert review.set_verdict(0, "unsure") == 0
    assert review.set_verdict(0, "miss") == 0  # agrees with the automatic miss
    assert review.set_comment(0, "max on the pectoral muscle") is True
    assert review.set_comment(0, "max on the pectoral muscle") is False  # unchanged
    with pytest.raises(CorrelaxError, match="select a finding row"):
        review.set_verdict(1, "hit")
    with open(work / "verdicts.csv", newline="", encoding="utf-8") as fh:
        on_disk = [(r["image_id"], r["map"], r["auto_verdict"], r["reader_verdict"],
                    r["comment"], r["settings"]) for r in csv.DictReader(fh)]
    # the reader's prediction verdict is stored on both prediction rules
    assert on_disk == [
        ("a1", "prediction>=0.25", "hit", "hit", "", review.key),
        ("a1", "prediction>=0.50", "miss", "hit", "", review.key),
        ("a1", "correlation>0", "miss", "miss", "max on the pectoral muscle", review.key)]
    review.go(2)  # on to b2: the state now points there
    key = review.key

    again = Review()  # a new process on the same folders
    state = again.open(data, work)
    assert (state.split, state.filter, state.model, state.image_id) == (
        "test", WITH_FINDINGS, str(checkpoint), "b2")
    assert again.configure(state.model, saved_settings(state, MapSettings())) is True
    assert again.key == key
    assert again.list_images(state.split, state.filter, keep=state.image_id) == 2
    again.go(0)
    assert [(f.kind, f.automatic(), f.reader_verdict, f.comment) for f in again.rows()] == [
        ("correlation", "miss", "miss", "max on the pectoral muscle")]
    again.set_view("prediction")
    assert [(f.kind, f.automatic(), f.reader_verdict) for f in again.rows()] == [
        ("prediction", "hit >=0.25 · miss >=0.50", "hit")]
    assert again.status(again.current) == "done"
    # the maps computed again refresh the automatic columns, never the reader's
    again.automatic_verdicts(loaded(again, "a1", mass_result((3, 3), 0.7, (3, 3), 0.2)))
    assert [(r.auto_verdict, r.reader_verdict) for r in again.store.for_image("a1")] == [
        ("hit", "hit"), ("hit", "hit"), ("hit", "miss")]


def test_saved_state_belongs_to_its_data_folder(data, tmp_path, checkpoint):
    review, start = opened(data, tmp_path / "work", checkpoint)
    assert review.state() is None  # no image shown yet
    review.go(start)
    doc = json.loads((tmp_path / "work" / "reader-state.json").read_text())
    assert (doc["data"], doc["image_id"], doc["settings"]["stride"]) == (str(data), "a1", 64)
    other = tmp_path / "other"
    other.mkdir()
    (other / "finding_annotations.csv").write_text(
        (data / "finding_annotations.csv").read_text())
    assert Review().open(other, tmp_path / "work") is None  # a state, but another folder's
    default = Review()
    default.open(data)
    assert default.work == data / "correlax"


def test_saved_settings_restore_map_fields_and_keep_the_runtime(tmp_path):
    saved = MapSettings(stride=64, masks=16, seed=3, device="cpu", batch_size=4)
    state = ReaderState(settings=saved.as_dict())
    current = MapSettings(device="cuda", batch_size=32)
    got = saved_settings(state, current)
    assert (got.stride, got.masks, got.seed) == (64, 16, 3)
    assert (got.device, got.batch_size) == ("cuda", 32)
    assert saved_settings(ReaderState(settings={"stride": 0}), current) == current
    assert saved_settings(ReaderState(settings={"method": "no such"}), current) == current


# -- cache key -------------------------------------------------------------------------
def test_cache_key_names_the_checkpoint_and_changes_with_map_settings(data, tmp_path,
                                                                      checkpoint):
    review, _ = opened(data, tmp_path / "work", checkpoint, settings=MapSettings(stride=64))
    fingerprint = hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:16]
    # CorRELAX's keys also carry the version of its mask streams (2: one per window)
    fields = {"model": fingerprint, "definition": 2, **MapSettings(stride=64).map_fields(),
              "masks_streams": 2}
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode())
    assert review.key == f"reader-{digest.hexdigest()[:12]}"
    first = review.key
    # runtime-only fields do not change the maps
    assert review.configure(str(checkpoint), MapSettings(stride=64, device="cpu")) is False
    assert review.key == first and review.settings.device == "cpu"
    keys = {first}
    for settings in (MapSettings(stride=48), MapSettings(stride=64, masks=512),
                     MapSettings(stride=64, seed=1)):
        assert review.configure(str(checkpoint), settings) is True
        keys.add(review.key)
    assert len(keys) == 4
    # prediction maps do not depend on the mask count
    review.configure(str(checkpoint), MapSettings(method="prediction", masks=16))
    prediction = review.key
    assert review.configure(str(checkpoint), MapSettings(method="prediction")) is False
    assert review.key == prediction
    # other weights, other key
    checkpoint.write_bytes(b"other weights")
    assert review.configure(str(checkpoint), MapSettings(method="prediction")) is True
    assert review.key != prediction
    # a missing checkpoint: an error, the key stays
    with pytest.raises(CorrelaxError, match="checkpoint file not found"):
        review.configure(str(tmp_path / "gone.safetensors"), MapSettings())
    assert review.key != "" and review.checkpoint == str(tmp_path / "gone.safetensors")


def test_review_imports_without_qt_napari_or_torch():
    import subprocess
    import sys

    code = ("import sys, napari_correlax.evaluate.review; "
            "print(sorted(m for m in ('qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'napari', "
            "'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], check=True, timeout=120,
                         capture_output=True, text=True).stdout
    assert out.strip() == "[]"


def test_report_puts_the_readers_hit_rate_beside_the_automatic_one(data, tmp_path,
                                                                    checkpoint):
    review, start = opened(data, tmp_path / "work", checkpoint)
    review.go(start)
    with pytest.raises(CorrelaxError, match="no verdicts"):
        review.export_report(tmp_path / "empty")
    review.accept(loaded(review, "a1", mass_result((3, 3), 0.4, (0, 0), 0.3)))
    rows = review.automatic_verdicts(review.loaded["a1"])
    review.set_verdict(0, "hit")  # on the correlation map
    review.set_view("prediction")
    review.set_verdict(0, "miss")  # on the prediction map: both of its rules
    csv_path, _ = review.export_report(tmp_path / "report")
    with open(csv_path, newline="", encoding="utf-8") as fh:
        lines = {(r["Finding"], r["Map"]): r for r in csv.DictReader(fh)}
    for verdict in rows:  # each rule its own line
        line = lines[(verdict.label, verdict.rule)]
        assert line["Findings"] == "1" and line["Judged"] == "1"
        auto = 1.0 if verdict.hit else 0.0
        assert float(line["Automatic hit rate"]) == auto
        assert float(line["Reader hit rate"]) == (1.0 if verdict.map == "correlation" else 0.0)


def test_normal_images_get_a_no_finding_line_and_false_positives_are_marked(
        data, tmp_path, checkpoint):
    work = tmp_path / "work"
    review, _ = opened(data, work, checkpoint)
    review.go(1)  # a2: no finding
    assert review.status(review.current) == "normal"
    review.accept(loaded(review, "a2", mass_result((3, 3), 0.4, (0, 0), 0.3)))
    review.automatic_verdicts(review.loaded["a2"])
    review.set_view("prediction")
    # The highest lesion prediction is Mass 0.4 at window (3, 3), centre (127.5, 127.5):
    # it passes >= 0.25 (a false alarm: miss) but not >= 0.50 (quiet: hit).
    (line,) = review.findings()
    assert (line.label, line.boxes, line.automatic(), line.location) == (
        "No Finding", 0, "miss >=0.25 · hit >=0.50", (127.5, 127.5))
    assert review.status(review.current) == "open"
    with pytest.raises(CorrelaxError, match="no prediction map"):
        review.mark_false_positive("Breast Cancer", 100.0, 110.0)
    # Near (40, 40) every Mass prediction is 0 (window (0, 0) holds 0.4 only at (3, 3)):
    # below the 25 % rule, not a place a map points at.
    with pytest.raises(CorrelaxError, match=r"map is 0\.00 there, not positive \(≥ 0\.25\)"):
        review.mark_false_positive("Mass", 40.0, 40.0)
    review.set_view("correlation")
    # The Mass correlation is −0.5 everywhere but 0.3 at window (0, 0), centre (31.5,
    # 31.5): a click at (150, 120) is 30.6 px from the centre (159.5, 127.5) only, at −0.5.
    with pytest.raises(CorrelaxError, match=r"-0\.50 there, not positive \(> 0\)"):
        review.mark_false_positive("Mass", 150.0, 120.0)
    assert review.store.for_image("a2", review.key) and not review.marks()
    review.set_view("prediction")
    # A click at (100, 110) is 32.6 px from that centre: the mark snaps to it (the other
    # windows within 48 px hold 0).
    mark = review.mark_false_positive("Mass", 100.0, 110.0)
    again = review.mark_false_positive("Mass", 120.0, 130.0)  # the same window: one mark
    assert (mark.label, mark.kind, mark.location, mark.max_value, mark.reader_verdict) == (
        "Mass", "prediction", (127.5, 127.5), 0.4, "false positive") == (
        again.label, again.kind, again.location, again.max_value, again.reader_verdict)
    lines = review.findings()
    assert [(f.label, f.is_mark) for f in lines] == [("No Finding", False), ("Mass", True)]
    assert review.status(review.current) == "open"  # marks are not verdicts to give
    with pytest.raises(CorrelaxError, match="clear it"):
        review.set_verdict(1, "hit")
    review.set_verdict(0, "miss")  # the reader agrees: a false alarm
    review.set_view("correlation")
    assert [f.is_mark for f in review.findings()] == [False]  # the mark is on prediction
    with open(work / "verdicts.csv", newline="", encoding="utf-8") as fh:
        on_disk = [(r["label"], r["map"], r["auto_verdict"], r["reader_verdict"],
                    r["max_row"]) for r in csv.DictReader(fh)]
    assert on_disk == [
        ("No Finding", "prediction>=0.25", "miss", "miss", "127.5"),
        ("No Finding", "prediction>=0.50", "hit", "miss", "127.5"),
        ("No Finding", "correlation>0", "miss", "", "31.5"),
        ("Mass", "prediction@128,128", "", "false positive", "127.5")]
    csv_path, _ = review.export_report(tmp_path / "report")
    with open(csv_path, newline="", encoding="utf-8") as fh:
        report = {(r["Finding"], r["Map"]): r for r in csv.DictReader(fh)}
    assert report[("No Finding", "prediction>=0.50")]["Reader hit rate"] == "0.0000"
    assert report[("All findings", "prediction>=0.25")]["Findings"] == "0"
    assert report[("All findings", "prediction>=0.25")]["Marked false positives"] == "1"
    assert report[("All findings", "correlation>0")]["Marked false positives"] == "0"
    review.set_view("prediction")
    review.set_verdict(1, "")  # takes the mark back
    assert review.marks() == [] and len(review.findings()) == 1


def test_each_method_has_its_own_automatic_and_reader_verdicts(data, tmp_path, checkpoint):
    work = tmp_path / "work"
    gradcam = MapSettings(method="gradcam", stride=64, options={"mode": "windowed"})
    review, start = opened(data, work, checkpoint, settings=gradcam)
    review.go(start)  # a1: one Mass box, x 100..140, y 100..150
    result = mass_result((3, 3), 0.4, (0, 0), 0.3)
    saliency = np.full((len(LABELS), H, W), np.nan, dtype=np.float32)
    saliency[LABELS.index("Mass"), 20:, :] = -2.0
    saliency[LABELS.index("Mass"), 160, 30] = -1.0  # the maximum: row 160, column 30
    result.correlation = None
    result.extra["saliency"] = saliency
    review.accept(loaded(review, "a1", result))
    verdicts = review.automatic_verdicts(review.loaded["a1"])
    # Column 30.5 is 21.5 px left of the grown box's x 52: a miss, whatever the value
    assert [(v.rule, v.row, v.col, v.hit) for v in verdicts] == [
        ("saliency", 160.0, 30.0, False),
        ("prediction>=0.25", 127.5, 127.5, True), ("prediction>=0.50", 127.5, 127.5, False)]
    (line,) = review.findings()  # C (the method's own map) is the saliency map here
    assert (line.kind, line.automatic()) == ("saliency", "miss")
    review.set_verdict(0, "hit")
    gradcam_key = review.key
    # switching to CorRELAX keeps the Grad-CAM verdicts apart, without asking
    correlax = MapSettings(stride=64)
    assert review.hides_verdicts(str(checkpoint), correlax) == ""
    assert review.configure(str(checkpoint), correlax) is True
    review.accept(loaded(review, "a1", mass_result((3, 3), 0.4, (0, 0), 0.3)))
    review.automatic_verdicts(review.loaded["a1"])
    review.set_verdict(0, "miss")
    with open(work / "verdicts.csv", newline="", encoding="utf-8") as fh:
        rows = [(r["map"], r["reader_verdict"], r["settings"] == gradcam_key)
                for r in csv.DictReader(fh)]
    assert rows == [("saliency", "hit", True), ("prediction>=0.25", "", True),
                    ("prediction>=0.50", "", True), ("prediction>=0.25", "", False),
                    ("prediction>=0.50", "", False), ("correlation>0", "miss", False)]
