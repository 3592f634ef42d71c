"""Watching a training run from its JSON events, without Qt (train/watch.py)."""

from __future__ import annotations

import json
import sys

from napari_correlax.train.settings import TrainConfig
from napari_correlax.train.watch import (
    EventLines,
    RunEnd,
    TrainWatch,
    in_dock_terms,
    progress_of,
    read_history,
    train_command,
)


def epoch(n, train_loss, best=False, val_loss=None, f1=None, metrics=()):
    return {"event": "epoch", "epoch": n, "epochs": 3, "train_loss": train_loss,
            "val_loss": val_loss, "macro_f1": f1, "best": best, "metrics": list(metrics)}


def test_settings_build_the_train_command_line():
    settings = TrainConfig(data="d", out="o", backbone="tiny", epochs=3, batch_size=8,
                           pretrained="w.pth", select="last", device="cpu", fresh=True)
    assert train_command(settings) == [
        sys.executable, "-m", "napari_correlax.cli", "train", "d", "--out", "o",
        "--backbone", "tiny", "--pretrained", "w.pth", "--epochs", "3", "--batch-size", "8",
        "--select", "last", "--fresh", "--device", "cpu",
        "--progress", "json"]
    # defaults are left out unless asked for
    assert train_command(TrainConfig(data="d", out="o"))[3:] == [
        "train", "d", "--out", "o", "--progress", "json"]
    assert train_command(TrainConfig(data="d", out="o"), ("device", "epochs"))[7:] == [
        "--epochs", "50", "--device", "auto", "--progress", "json"]


def test_errors_name_the_dock_controls_not_the_flags():
    message = ("choosing the best epoch needs validation images, but the training split has "
               "only 1 study to hold out from; keep the last epoch instead (--select last)")
    assert in_dock_terms(message).endswith("keep the last epoch instead (“Keep: last epoch”)")
    assert in_dock_terms("choose another --out or pass --fresh") == (
        "choose another “Output” or pass “start over”")
    watch = TrainWatch()
    watch.handle({"event": "warning", "message": "put torchvision's file there or pass "
                  "--pretrained FILE (--pretrained none silences this)"})
    assert watch.warnings == ["put torchvision's file there or pass “Pretrained: a weights "
                              "file” (“Pretrained: none” silences this)"]
    watch.add_stderr("correlax train: run: a run with other settings; choose another --out "
                     "or pass --fresh\n")
    end = watch.end(2, False, False)
    assert end.error.endswith("choose another “Output” or pass “start over”")
    assert end.status == f"failed (exit 2): {end.error}"


def test_event_lines_wait_for_whole_lines_and_skip_what_is_not_an_object():
    lines = EventLines()
    assert lines.feed(b'{"event": "cache", "do') == []
    assert lines.feed(b'ne": 1, "total": 4}\nloading...\n[1, 2]\n{broken\n{"event": "b') == [
        {"event": "cache", "done": 1, "total": 4}]
    assert lines.feed(b'atch"}\n') == [{"event": "batch"}]
    assert lines.feed("{\"event\": \"warning\", \"message\": \"é\"}\n".encode()) == [
        {"event": "warning", "message": "é"}]


def test_progress_formats():
    assert progress_of({"event": "cache", "done": 2, "total": 5}) == (
        "caching images %v/%m", 2, 5)
    assert progress_of({"event": "batch", "done": 3, "total": 0, "epoch": 2, "epochs": 4,
                        "loss": 0.123456}) == ("epoch 2/4: batch %v/%m (loss 0.1235)", 3, 1)
    assert progress_of({"event": "done", "done": 0, "total": 7}) == ("done", 7, 7)
    assert progress_of({"event": "epoch"}) is None


def test_a_resumed_run_starts_from_the_epochs_on_disk(tmp_path):
    rows = [epoch(1, 0.9, best=True), epoch(2, 0.7), epoch(3, 0.8, best=True)]
    (tmp_path / "metrics.jsonl").write_text(
        "\n".join([json.dumps(rows[0]), "not json", json.dumps(rows[1]), "[]",
                   json.dumps(rows[2])]) + "\n")
    assert read_history(tmp_path) == rows
    best = TrainWatch(TrainConfig(data="d", out=str(tmp_path)))
    assert (best.last_epoch, best.chosen_epoch) == (3, 3)
    rows[2]["best"] = False
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert TrainWatch(TrainConfig(data="d", out=str(tmp_path))).chosen_epoch == 1
    assert TrainWatch(TrainConfig(data="d", out=str(tmp_path), select="last")).chosen_epoch == 3
    fresh = TrainWatch(TrainConfig(data="d", out=str(tmp_path), fresh=True))
    assert (fresh.history, fresh.chosen_epoch) == ([], 0)
    assert read_history(tmp_path / "nothing here") == []


def test_events_give_status_history_and_the_chosen_checkpoint(tmp_path):
    watch = TrainWatch(TrainConfig(data="d", out=str(tmp_path)))
    start = {"event": "start", "train_samples": 40, "val_samples": 6, "device": "cpu",
             "selection": {"split": "training[val 10% of studies, seed 0]"}}
    assert watch.handle(start) == ("40 training samples, 6 validation samples (training[val "
                                   "10% of studies, seed 0]) on cpu; starting weights: none")
    assert watch.handle({"event": "warning", "message": "no ImageNet weights"}) is None
    assert watch.warnings == ["no ImageNet weights"]
    assert watch.handle(epoch(1, 0.51234, best=True, val_loss=0.6, f1=0.25)) == (
        "epoch 1/3: train loss 0.5123, val loss 0.6000, macro F1 0.250")
    assert watch.handle(epoch(2, 0.4)) == "epoch 2/3: train loss 0.4000"
    watch.handle(epoch(2, 0.3))  # an epoch sent again replaces the first report
    assert [(h["epoch"], h["train_loss"]) for h in watch.history] == [(1, 0.51234), (2, 0.3)]
    assert watch.chosen_epoch == 1
    assert watch.find_checkpoint() is None  # not written yet
    (tmp_path / "best.safetensors").write_bytes(b"x")
    assert watch.find_checkpoint() == str(tmp_path / "best.safetensors")
    done = {"event": "done", "checkpoint": "/runs/best.safetensors", "epoch": 1}
    assert watch.handle(done) is None
    assert (watch.chosen_checkpoint, watch.chosen_epoch) == ("/runs/best.safetensors", 1)
    assert watch.end(0, False, False) == RunEnd(
        "finished: best epoch 1 → /runs/best.safetensors", finished=True)
    assert watch.end(0, False, True) == RunEnd(
        "stopped after epoch 2; Start resumes the run")


def test_a_failed_run_names_the_last_error_line():
    watch = TrainWatch()
    assert watch.end(1, False, False) == RunEnd("failed (exit 1): ", error="exit status 1")
    watch.add_stderr("Traceback\n\n  boom\ncorrelax: error: finding_annotations.csv: missing\n")
    assert watch.end(2, False, False) == RunEnd(
        "failed (exit 2): correlax: error: finding_annotations.csv: missing",
        error="correlax: error: finding_annotations.csv: missing")
    killed = "the training process was killed (out of memory?) " \
             "correlax: error: finding_annotations.csv: missing"
    assert watch.end(9, True, False) == RunEnd(f"failed (exit 9): {killed}", error=killed)
    watch.add_stderr("\n".join(f"line {k}" for k in range(100)))
    assert watch.stderr == [f"line {k}" for k in range(60, 100)]


def test_series_to_plot_are_sorted_by_epoch():
    watch = TrainWatch()
    mass = [{"label": "Mass", "f1": 0.5}, {"label": "Asymmetries", "f1": 0.1}]
    for event in (epoch(2, 0.4, val_loss=0.5, f1=0.3, metrics=mass), epoch(1, 0.6)):
        watch.handle(event)
    assert watch.series() == {
        "train_loss": [(1, 0.6), (2, 0.4)], "val_loss": [(2, 0.5)], "macro_f1": [(2, 0.3)],
        "Mass": [(2, 0.5)], "Suspicious Calcification": []}
