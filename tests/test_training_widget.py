"""The "Train classifier" dock in napari (Xvfb): run, plot, stop, errors, hand-over, the
forms bound to the training settings, Keep on the sample data, closing during a run."""

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
    assert widget.settings().select == "best"  # default: best on a share of training studies
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
    argv = widget.command(widget.settings())
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
    widget = open_dock(viewer, phantom_data, tmp_path / "gmic")
    widget.family_combo.setCurrentText("GMIC")
    widget.form.widgets["train_cam"].setCurrentText("xgradcam")
    widget.epochs_spin.setValue(1)
    widget.batch_spin.setValue(4)
    widget.device_combo.setCurrentText("cpu")
    widget.extra_args = ["--input-size", "256", "160", "--global-filters", "8",
                         "--global-stages", "2", "--local-width", "8", "--k", "2",
                         "--crop-size", "32", "32", "--top-t", "0.05", "--threads", "1"]
    settings = widget.settings()
    assert widget.command(settings)[3:6] == ["gmic", "train", str(phantom_data)]
    assert settings.train_cam == "xgradcam"
    widget.start_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=180_000)
    errors, _, _ = messages
    assert errors == []
    assert [h["epoch"] for h in widget.history] == [1]
    model = load_model(widget.chosen_checkpoint)  # the GMIC checkpoint it wrote
    assert type(model).__name__ == "GMIC"


def test_forms_and_training_settings_round_trip(make_napari_viewer, tmp_path):
    """Controls → settings → controls gives the same settings, for both model families,
    and each form starts at its settings' defaults."""
    from napari_correlax._napari._training_widget import TrainingWidget
    from napari_correlax.gmic.config import GMICTrainConfig
    from napari_correlax.train.settings import TrainConfig

    widget = TrainingWidget(make_napari_viewer())
    widget.data_edit.setText("d")
    widget.out_edit.setText("o")
    assert widget.settings() == TrainConfig(data="d", out="o")
    wanted = TrainConfig(data="d", out="o", backbone="tiny", epochs=7, batch_size=5,
                         pretrained=str(tmp_path / "w.pth"), select="last", device="cpu")
    widget.form.show(wanted)
    assert widget.settings() == wanted
    widget.family_combo.setCurrentText("GMIC")
    assert widget.settings() == GMICTrainConfig(data="d", out="o")
    wanted = GMICTrainConfig(data="d", out="o", train_cam="layercam", epochs=3, batch_size=2,
                             init=str(tmp_path / "sample_model_1.p"), device="cpu")
    widget.form.show(wanted)
    assert widget.settings() == wanted


def test_choosing_gmic_starts_gmic_train_with_its_own_defaults(
        make_napari_viewer, qtbot, phantom_data, tmp_path, messages):
    """The batch box follows the model family: GMIC's recipe is batch 6, 50 epochs."""
    from napari_correlax._napari._training_widget import TrainingWidget

    widget = TrainingWidget(make_napari_viewer())
    widget.data_edit.setText(str(phantom_data))
    widget.out_edit.setText(str(tmp_path / "gmic"))
    assert widget.batch_spin.value() == 48  # the classifier's recipe
    widget.family_combo.setCurrentText("GMIC")
    assert (widget.batch_spin.value(), widget.epochs_spin.value()) == (6, 50)
    widget.start()
    try:
        assert widget.running
        args = widget._process.arguments()
        assert args[2:4] == ["gmic", "train"]
        assert args[args.index("--batch-size") + 1] == "6"
        assert args[args.index("--epochs") + 1] == "50"
        assert args[args.index("--train-cam") + 1] == "cam"
    finally:
        widget.stop_and_wait()
    assert not widget.running


def test_keep_follows_the_sample_data_and_training_works_there(
        make_napari_viewer, qtbot, tmp_path, messages):
    """The README's sample data has one training study: nothing to hold out, so the dock
    keeps the last epoch, says so, and the run succeeds."""
    sample = Path(__file__).resolve().parents[1] / "sample_data"
    viewer = make_napari_viewer()
    widget = open_dock(viewer, sample, tmp_path / "run", epochs=1)
    widget.select_combo.setCurrentIndex(widget.select_combo.findData("best"))
    widget.start()
    assert widget.settings().select == "last"
    assert "Keep set to “last epoch”" in widget.status_label.text()
    assert "--select" not in widget.status_label.text()
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    errors, _, _ = messages
    assert errors == []
    assert "finished" in widget.status_label.text()
    assert widget.chosen_checkpoint == str(tmp_path / "run" / "last.safetensors")


def test_a_failure_names_the_dock_controls_in_the_status_line(make_napari_viewer, tmp_path,
                                                             messages):
    viewer = make_napari_viewer()
    widget = open_dock(viewer, tmp_path, tmp_path / "run")
    widget.watch.add_stderr("correlax train: data: choosing the best epoch needs validation "
                            "samples, but the validation images have none with the run's "
                            "labels; keep the last epoch instead (--select last)\n")
    widget._finished(2, None)
    errors, _, _ = messages
    status = widget.status_label.text()
    assert "(“Keep: last epoch”)" in status and "--select" not in status
    assert errors and "Keep: last epoch" in errors[0]


def test_closing_napari_during_training_asks_and_keeps_finished_epochs(
        make_napari_viewer, qtbot, phantom_data, tmp_path, messages, monkeypatch):
    from qtpy.QtWidgets import QMessageBox

    from napari_correlax._napari import _training_widget

    answers = []

    def answer(reply):
        def question(*args, **kwargs):
            answers.append(reply)
            return reply
        return question

    viewer = make_napari_viewer()
    widget = open_dock(viewer, phantom_data, tmp_path / "run", epochs=200)
    widget.select_combo.setCurrentText("last epoch")
    widget.start()
    qtbot.waitUntil(lambda: len(widget.history) >= 1, timeout=120_000)
    window = viewer.window._qt_window
    monkeypatch.setattr(_training_widget.QMessageBox, "question",
                        answer(QMessageBox.StandardButton.No))
    assert window.close() is False  # the close was refused
    assert answers == [QMessageBox.StandardButton.No]
    assert widget.running
    monkeypatch.setattr(_training_widget.QMessageBox, "question",
                        answer(QMessageBox.StandardButton.Yes))
    assert window.close() is True
    assert len(answers) == 2 and not widget.running
    assert "stopped" in widget.status_label.text()
    state = json.loads((tmp_path / "run" / "last.train.json").read_text())
    assert 1 <= state["epoch"] < 200
    assert (tmp_path / "run" / "last.safetensors").is_file()
    # the run resumes after the saved epoch
    from napari_correlax.train import TrainConfig, train_steps

    resumed = train_steps(TrainConfig(data=str(phantom_data), out=str(tmp_path / "run"),
                                      backbone="tiny", epochs=200, batch_size=8, input_size=64,
                                      select="last", device="cpu", threads=1))
    start = next(resumed)
    resumed.close()
    assert start.data["resumed"] is True
