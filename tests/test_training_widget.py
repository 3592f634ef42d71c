"""The "Train classifier" dock in napari (Xvfb): run, plot, stop, errors, hand-over."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.gui

napari = pytest.importorskip("napari")


@pytest.fixture(scope="module")
def phantom_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 phantoms (512×320) in the VinDr layout: 2 training studies, 1 test study."""
    from napari_correlax.synth import write_vindr_dataset

    return write_vindr_dataset(tmp_path_factory.mktemp("vindr"), 12, seed=1, shape=(512, 320))


@pytest.fixture
def messages(monkeypatch):
    """(errors, infos, warnings) shown by the dock, instead of notifications."""
    from napari_correlax._napari import _training_widget

    errors: list[str] = []
    infos: list[str] = []
    warnings: list[str] = []
    monkeypatch.setattr(_training_widget, "show_error", errors.append)
    monkeypatch.setattr(_training_widget, "show_info", infos.append)
    monkeypatch.setattr(_training_widget, "show_warning", warnings.append)
    return errors, infos, warnings


def open_dock(viewer, data: Path, out: Path, epochs: int = 2):
    from napari_correlax._napari._training_widget import TrainingWidget

    widget = TrainingWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.data_edit.setText(str(data))
    widget.out_edit.setText(str(out))
    widget.backbone_combo.setCurrentText("tiny")
    widget.epochs_spin.setValue(epochs)
    widget.batch_spin.setValue(8)
    widget.device_combo.setCurrentText("cpu")
    widget.extra_args = ["--input-size", "64", "--threads", "1"]
    return widget


def test_dock_trains_plots_and_hands_checkpoint_to_analysis(
        make_napari_viewer, qtbot, phantom_data, tmp_path, messages):
    viewer = make_napari_viewer()
    widget = open_dock(viewer, phantom_data, tmp_path / "run")
    assert not widget.use_button.isEnabled()
    assert widget.request().select == "best"  # default: best on a share of training studies
    widget.start_button.click()
    assert widget.running and not widget.start_button.isEnabled()
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    errors, _, warnings = messages
    assert errors == [] and warnings == []  # tiny has no ImageNet weights to miss
    assert [h["epoch"] for h in widget.history] == [1, 2]
    logged = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [h["train_loss"] for h in widget.history] == [h["train_loss"] for h in logged]
    train_line = widget.loss_ax.lines[0]
    assert list(train_line.get_xdata()) == [1, 2]
    assert len(widget.loss_ax.lines) == 2 and len(widget.f1_ax.lines) >= 1
    assert widget.progress_bar.value() == widget.progress_bar.maximum()
    assert "finished" in widget.status_label.text()
    best = tmp_path / "run" / "best.safetensors"
    assert widget.chosen_checkpoint == str(best) and best.is_file()
    assert widget.use_button.isEnabled()
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["selection"]["split"] == "training[val 10% of studies, seed 0]"

    # no analysis dock open yet: "Use in analysis" opens it and sets the checkpoint
    widget.use_button.click()
    from napari_correlax._napari._analysis_widget import AnalysisWidget

    docks = [w for w in viewer.window.dock_widgets.values() if isinstance(w, AnalysisWidget)]
    assert len(docks) == 1
    assert docks[0].model_edit.text() == str(best)


def test_use_in_analysis_finds_an_open_dock(make_napari_viewer, tmp_path, messages):
    from qtpy.QtWidgets import QWidget

    class FakeAnalysis(QWidget):
        def __init__(self):
            super().__init__()
            self.paths: list[str] = []

        def set_checkpoint(self, path: str) -> None:
            self.paths.append(path)

    viewer = make_napari_viewer()
    fake = FakeAnalysis()
    viewer.window.add_dock_widget(fake, name="fake analysis")
    widget = open_dock(viewer, tmp_path, tmp_path / "run")
    widget.chosen_checkpoint = str(tmp_path / "model.safetensors")
    widget.use_in_analysis()
    assert fake.paths == [str(tmp_path / "model.safetensors")]


def test_stop_ends_the_process_and_keeps_finished_epochs(
        make_napari_viewer, qtbot, phantom_data, tmp_path, messages):
    viewer = make_napari_viewer()
    widget = open_dock(viewer, phantom_data, tmp_path / "run", epochs=200)
    widget.select_combo.setCurrentText("last epoch")
    argv = widget.request().command()
    assert argv[argv.index("--select") + 1] == "last"
    widget.start()
    qtbot.waitUntil(lambda: len(widget.history) >= 1, timeout=120_000)
    widget.stop_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=30_000)
    assert "stopped" in widget.status_label.text()
    errors, _, _ = messages
    assert errors == []
    state = json.loads((tmp_path / "run" / "last.train.json").read_text())
    assert 1 <= state["epoch"] < 200
    assert state["selection"]["rule"] == "last" and state["selection"]["split"] is None
    assert widget.start_button.isEnabled() and not widget.stop_button.isEnabled()
    # keeping the last epoch: the checkpoint to hand over is last.safetensors
    assert not (tmp_path / "run" / "best.safetensors").exists()
    assert widget.chosen_checkpoint == str(tmp_path / "run" / "last.safetensors")
    assert widget.use_button.isEnabled()


def test_warning_events_are_shown_and_kept(make_napari_viewer, tmp_path, messages):
    viewer = make_napari_viewer()
    widget = open_dock(viewer, tmp_path, tmp_path / "run")
    assert not widget.notice_label.isVisibleTo(widget)
    text = "no ImageNet weights for resnet18: training starts from random weights"
    widget.handle_event({"event": "warning", "done": 0, "total": 0, "message": text})
    widget.handle_event({"event": "cache", "done": 1, "total": 4})
    _, _, warnings = messages
    assert warnings == [text]
    assert widget.notice_label.isVisibleTo(widget) and text in widget.notice_label.text()
    assert widget.warnings == [text]


def test_failing_run_shows_the_reason_and_napari_survives(
        make_napari_viewer, qtbot, tmp_path, messages):
    viewer = make_napari_viewer()
    empty = tmp_path / "empty"
    empty.mkdir()
    widget = open_dock(viewer, empty, tmp_path / "run")
    widget.start()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    errors, _, _ = messages
    assert len(errors) == 1 and "finding_annotations.csv" in errors[0]
    assert "failed" in widget.status_label.text()
    assert widget.start_button.isEnabled()


def test_missing_data_folder_is_refused_before_starting(make_napari_viewer, tmp_path, messages):
    viewer = make_napari_viewer()
    widget = open_dock(viewer, tmp_path / "nope", tmp_path / "run")
    widget.start()
    errors, _, _ = messages
    assert not widget.running and errors and "nope" in errors[0]


def test_the_dock_trains_gmic_with_the_chosen_cam(make_napari_viewer, qtbot, phantom_data,
                                                  tmp_path, messages):
    from napari_correlax.models import load_model

    viewer = make_napari_viewer()
    widget = open_dock(viewer, phantom_data, tmp_path / "gmic", epochs=1)
    widget.backbone_combo.setCurrentText("GMIC · xgradcam")
    widget.batch_spin.setValue(4)
    widget.extra_args = ["--input-size", "256", "160", "--global-filters", "8",
                         "--global-stages", "2", "--local-width", "8", "--k", "2",
                         "--crop-size", "32", "32", "--top-t", "0.05", "--threads", "1"]
    request = widget.request()
    assert request.command()[3:6] == ["gmic", "train", str(phantom_data)]
    assert request.train_cam == "xgradcam"
    widget.start_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=180_000)
    errors, _, _ = messages
    assert errors == []
    assert [h["epoch"] for h in widget.history] == [1]
    model = load_model(widget.chosen_checkpoint)  # the GMIC checkpoint it wrote
    assert type(model).__name__ == "GMIC"
