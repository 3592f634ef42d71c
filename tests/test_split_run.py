"""The split runner shared by ``evaluate``, ``compare`` and ``gmic evaluate``; the FROC CSV
and report writers; the command line's progress runner and rank helpers.

Sharding is checked against the hand-worked round-robin assignment, the images left out
against the files this test removes or empties itself, the FROC CSV against
:mod:`csv`'s own reading of it.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import pytest

from napari_correlax.distributed import ProcessGroup
from napari_correlax.errors import CorrelaxError
from napari_correlax.evaluate import split_run
from napari_correlax.evaluate.detection import FrocPoint
from napari_correlax.evaluate.split_run import Excluded, SplitSource, split_steps
from napari_correlax.maps.runtime import Progress

SHAPE = (160, 128)
N_IMAGES = 7


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from napari_correlax.synth import write_vindr_dataset

    return write_vindr_dataset(tmp_path_factory.mktemp("split") / "data", N_IMAGES, seed=5,
                               shape=SHAPE, test_fraction=1.0)


@pytest.fixture(scope="module")
def image_ids(dataset) -> list[str]:
    from napari_correlax.io.vindr import load_vindr

    return [r.image_id for r in load_vindr(dataset).split("test")]


class FakeGroup(ProcessGroup):
    """Rank ``rank`` of ``world_size`` without torch.distributed: gather returns this
    rank's value for every rank (each rank's check is then its own); no barrier."""

    def barrier(self):
        pass

    def gather(self, value):
        return [value] * self.world_size


class RecordingJob:
    """A job that computes nothing: it records what the runner asks of it."""

    def __init__(self, group: ProcessGroup, done: set[str] = frozenset()) -> None:
        self.group = group
        self.done = set(done)
        self.computed: list[str] = []
        self.started = None

    def select(self, present):
        return present

    def start(self, images, main):
        self.started = (len(images.usable), main)

    def is_done(self, record):
        return record.image_id in self.done

    def compute(self, record):
        self.computed.append(record.image_id)

    def merge(self, images):
        return images


def run(source: SplitSource, rank: int, world: int, monkeypatch, done=frozenset()):
    """Drive split_steps as rank ``rank`` of ``world``; (events, result, job)."""
    from napari_correlax import distributed

    monkeypatch.setattr(distributed, "join", lambda *a, **k: FakeGroup(rank, world))
    jobs = []

    def open_job(group):
        jobs.append(RecordingJob(group, done))
        return jobs[-1]

    steps = split_steps(source, open_job)
    events = []
    while True:
        try:
            events.append(next(steps))
        except StopIteration as stop:
            return events, stop.value, jobs[0]


def test_shard_is_round_robin():
    assert split_run.shard(list(range(7)), 0, 3) == [0, 3, 6]
    assert split_run.shard(list(range(7)), 1, 3) == [1, 4]
    assert split_run.shard(list(range(7)), 2, 3) == [2, 5]
    assert split_run.shard(list(range(2)), 3, 4) == []


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_every_image_is_computed_by_exactly_one_rank(dataset, image_ids, world, monkeypatch):
    source = SplitSource(dataset, check="none")
    computed = []
    for rank in range(world):
        events, result, job = run(source, rank, world, monkeypatch)
        # rank r gets images r, r + world, ... of the split
        assert job.computed == image_ids[rank::world]
        assert events[-1] == Progress("image", len(job.computed), len(job.computed))
        assert job.started == (N_IMAGES, rank == 0)
        assert (result is None) == (rank != 0)
        computed += job.computed
    assert sorted(computed) == sorted(image_ids)


def test_cached_images_are_skipped_but_counted(dataset, image_ids, monkeypatch):
    done = {image_ids[1], image_ids[4]}
    events, result, job = run(SplitSource(dataset, check="none"), 0, 1, monkeypatch, done)
    assert job.computed == [i for i in image_ids if i not in done]
    assert [e for e in events if isinstance(e, Progress)][-1] == Progress(
        "image", N_IMAGES, N_IMAGES)
    assert [r.image_id for r in result.usable] == image_ids


def test_missing_and_unreadable_files_are_excluded_before_any_work(dataset, tmp_path,
                                                                   monkeypatch):
    import shutil

    from napari_correlax.io.vindr import load_vindr

    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    records = load_vindr(data).split("test")
    records[0].path.unlink()
    records[2].path.write_bytes(b"")
    events, result, job = run(SplitSource(data, limit=5), 0, 1, monkeypatch)
    (excluded,) = [e for e in events if isinstance(e, Excluded)]
    assert excluded.missing == [records[0].image_id]
    assert list(excluded.unreadable) == [records[2].image_id]
    assert "empty" in excluded.unreadable[records[2].image_id]
    # the check runs on the 4 present images of the first 5; Excluded comes before images
    kinds = [(e.stage, e.done) if isinstance(e, Progress) else "excluded" for e in events]
    assert kinds == [("check", 0), ("check", 4), "excluded", ("image", 0), ("image", 1),
                     ("image", 2), ("image", 3)]
    assert job.computed == [records[i].image_id for i in (1, 3, 4)]
    assert [r.image_id for r in result.records] == [r.image_id for r in records[:5]]
    assert result.missing == [records[0].image_id]


def test_empty_split_and_no_usable_image_are_one_error(dataset, tmp_path, monkeypatch):
    with pytest.raises(CorrelaxError, match=r"split 'training' has no images \(splits here: "
                       r"test\)"):
        run(SplitSource(dataset, split="training"), 0, 1, monkeypatch)
    with pytest.raises(CorrelaxError, match=r"no usable image in split 'test' for these "
                       r"outputs \(0 missing, 0 unreadable\)"):
        run(SplitSource(dataset, limit=0, scope=" for these outputs"), 0, 1, monkeypatch)
    with pytest.raises(CorrelaxError, match="check must be one of"):
        SplitSource(dataset, check="full")


def test_read_record_checks_the_size_against_the_csv(dataset):
    from napari_correlax.io.vindr import load_vindr

    record = load_vindr(dataset).split("test")[0]
    assert split_run.read_record(record).pixels.shape == SHAPE
    wrong = dataclasses.replace(record, height=SHAPE[0] + 2)
    with pytest.raises(CorrelaxError, match=f"image is {SHAPE[0]}×{SHAPE[1]} pixels but the "
                       f"CSV says {SHAPE[0] + 2}×{SHAPE[1]}") as info:
        split_run.read_record(wrong)
    assert str(record.path) in str(info.value)


def point(threshold: float, found: int, boxes: int, fps: int, images: int) -> FrocPoint:
    return FrocPoint(threshold, found / boxes, fps / images, found, boxes, fps, images)


def test_froc_csv_round_trips_through_the_csv_module(tmp_path):
    from napari_correlax.evaluate.report import write_froc_csv

    odd = 'Mass, "spiculated"'  # a comma and quotes in a label: CSV must quote them
    curves = {("gradcam", odd): [point(0.05, 2, 3, 7, 4), point(0.1, 1, 3, 2, 4)],
              ("correlax", "Mass"): [point(0.5, 3, 3, 0, 4)]}
    path = write_froc_csv(tmp_path / "froc.csv", curves, ("method", "label"))
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["method", "label", "threshold", "tpr", "fppi", "found", "boxes",
                             "false_positives", "images"]
    assert [(r["method"], r["label"]) for r in rows] == [("gradcam", odd), ("gradcam", odd),
                                                         ("correlax", "Mass")]
    assert rows[0] == {"method": "gradcam", "label": odd, "threshold": "0.0500",
                       "tpr": "0.666667", "fppi": "1.750000", "found": "2", "boxes": "3",
                       "false_positives": "7", "images": "4"}
    assert rows[2]["tpr"] == "1.000000" and rows[2]["fppi"] == "0.000000"
    with pytest.raises(ValueError, match="does not match"):
        write_froc_csv(tmp_path / "bad.csv", {("only-one",): []}, ("method", "label"))


def test_froc_figure_is_a_png(tmp_path):
    from napari_correlax.evaluate.report import write_froc_figure

    curve = [point(0.05, 2, 3, 7, 4), point(0.5, 1, 3, 1, 4)]
    path = write_froc_figure(tmp_path / "froc.png", {"Mass": {"a": curve, "b": []}})
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_markdown_lists_facts_tables_and_images_left_out():
    from napari_correlax.evaluate.report import Table, report_markdown

    table = Table("T", ["a", "b"], rows=[["x", 0.5]])
    text = report_markdown("Run", ["data: `d`", "time: 1 s"], [table], ["i1"], {"i2": "empty"})
    assert text == ("# Run\n\n- data: `d`\n- time: 1 s\n\n### T\n\n| a | b |\n|---|---:|\n"
                    "| x | 0.5000 |\n\n### Images left out\n\n- `i1`: file missing\n"
                    "- `i2`: empty\n")
    assert report_markdown("Run", [], [table]).endswith("| x | 0.5000 |\n")


def test_rank_helpers_read_the_torchrun_environment(monkeypatch):
    from napari_correlax import distributed

    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert (distributed.rank(), distributed.world_size(), distributed.rank_tag()) == (0, 1, "")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert (distributed.rank(), distributed.world_size(), distributed.rank_tag()) == (
        2, 3, "[rank 2] ")


def test_progress_runner_hands_other_events_over_and_tags_the_rank(capsys, monkeypatch):
    from napari_correlax.cli import common

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    seen = []

    def steps():
        yield Progress("check", 1, 1)
        yield "note"
        yield ("bar", 1, 2)
        return 42

    def progress_of(event):
        return (Progress("epoch", event[1], event[2]), " loss 0.5") if event != "note" else None

    assert common.run_with_progress(steps(), "job", on_event=seen.append,
                                    progress_of=progress_of, every_s=0.0) == 42
    assert seen == ["note"]
    assert capsys.readouterr().err.splitlines() == ["[rank 1] job: check 1/1 (100%)",
                                                    "[rank 1] job: epoch 1/2 (50%) loss 0.5"]
    assert common.run_with_progress(steps(), "job", on_event=seen.append,
                                    main_only=True) == 42
    assert seen == ["note"] and capsys.readouterr().err == ""


@pytest.mark.parametrize(("command", "options"), [
    (["evaluate"], []), (["compare"], []), (["gmic", "evaluate"], ["--model", "x.safetensors"]),
])
def test_the_three_split_commands_word_an_empty_split_alike(command, options, dataset,
                                                            tmp_path, capsys):
    from napari_correlax.cli import main

    assert main([*command, str(dataset), *options, "--out", str(tmp_path / "out"),
                 "--split", "training"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].endswith(f"{dataset}: split 'training' has no images (splits here: test)")
