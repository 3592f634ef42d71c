"""The "Train classifier" dock: runs ``correlax train`` in a child process and watches it.

Training happens in a separate Python process (``python -m napari_correlax.cli train
... --progress json``) started with ``QProcess``, so a crash or an out-of-memory kill
there never takes napari down, and the event loop never waits on it. The child prints
one JSON object per line (see :class:`~napari_correlax.train.TrainEvent`);
:class:`~napari_correlax.train.watch.TrainWatch` reads them (no Qt there) and the dock
shows a progress bar, a status line, a notice line for warnings (no ImageNet weights
found, so training starts from random weights) and a plot of the training / validation
loss and the validation F1 per epoch. Stop sends SIGTERM (the run keeps every
finished epoch; Start on the same output folder resumes it) and kills the process if it
has not exited 10 s later.

"Keep" chooses the checkpoint: the best validation macro F1 on a held-out share of the
training studies (``--select best``) or the last epoch (``--select last``); the test
split is never read. When the chosen checkpoint exists, "Use in analysis" hands it to
the CorRELAX analysis dock (opened if needed).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from matplotlib.ticker import MaxNLocator
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QProcess, QProcessEnvironment, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..train.watch import (
    PLOTTED_LABELS,
    SELECTIONS,
    EventLines,
    GMICTrainRequest,
    TrainRequest,
    TrainWatch,
    progress_of,
)
from ._forms import TOOLTIPS, devices, path_row, spin
from ._progress import ThrottledProgress

#: Prefix of the model choices that train GMIC (``"GMIC · xgradcam"``).
GMIC = "GMIC"

log = logging.getLogger(__name__)

#: Seconds between Stop's SIGTERM and a hard kill.
STOP_GRACE_S = 10


def _backbones() -> list[str]:
    from ..models.classifier import BACKBONES

    return list(BACKBONES)


class TrainingWidget(QWidget):
    """Dock widget: data set, backbone, epochs, batch, weights, output; Start/Stop; plot."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self._process: QProcess | None = None
        self._stopping = False
        self._lines = EventLines()
        #: What the current (or last) run's events said.
        self.watch = TrainWatch()
        #: More ``correlax train`` options passed as given (``["--input-size", "128"]``).
        self.extra_args: list[str] = []

        self.data_edit, data_row = path_row("folder with finding_annotations.csv",
                                            self._browse_data,
                                            "A data set in the VinDr-Mammo layout to train on")
        self.backbone_combo = QComboBox()
        self.backbone_combo.setToolTip("The network under the paper's head (the paper: "
                                       "efficientnet_v2_s); lite is fast on CPUs. GMIC · X: "
                                       "GMIC from image-level labels (normal vs mass), "
                                       "patches picked with the CAM X")
        self.backbone_combo.addItems(_backbones())
        self.backbone_combo.addItems([f"{GMIC} · {c}" for c in
                                      ("cam", "gradcam", "gradcam++", "xgradcam", "layercam")])
        self.backbone_combo.setCurrentText("efficientnet_v2_s")
        self.epochs_spin = spin(1, 10_000, 50, TOOLTIPS["epochs"])
        self.batch_spin = spin(1, 4096, 48, TOOLTIPS["train_batch"])
        self.pretrained_edit, pretrained_row = path_row(
            "default: ImageNet from the torch cache", self._browse_pretrained,
            TOOLTIPS["pretrained"])
        self.select_combo = QComboBox()
        for text, value in SELECTIONS:
            self.select_combo.addItem(text, value)
        self.select_combo.setToolTip(TOOLTIPS["select"])
        self.out_edit, out_row = path_row("run folder (resumed if it holds a run)",
                                          self._browse_out,
                                          "Where checkpoints and the training log go")
        self.device_combo = QComboBox()
        self.device_combo.addItems(devices())
        self.device_combo.setToolTip(TOOLTIPS["device"])
        self.fresh_check = QCheckBox("start over (ignore a run in the output folder)")
        self.fresh_check.setToolTip("Off: an interrupted run in the output folder resumes")

        form = QFormLayout()
        for label, control in (("Data", data_row), ("Backbone", self.backbone_combo),
                               ("Epochs", self.epochs_spin), ("Batch", self.batch_spin),
                               ("Pretrained", pretrained_row), ("Keep", self.select_combo),
                               ("Output", out_row), ("Device", self.device_combo),
                               ("", self.fresh_check)):
            form.addRow(label, control)

        self.start_button = QPushButton("Start")
        self.start_button.setToolTip("Train in a separate process (napari stays responsive)")
        self.start_button.clicked.connect(lambda: self.start())
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop after saving the current epoch (resumable)")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(lambda: self.stop())
        self.use_button = QPushButton("Use in analysis")
        self.use_button.setEnabled(False)
        self.use_button.setToolTip(
            "open the chosen checkpoint (best or last epoch) in the CorRELAX analysis dock")
        self.use_button.clicked.connect(lambda: self.use_in_analysis())
        buttons = QHBoxLayout()
        for b in (self.start_button, self.stop_button, self.use_button):
            buttons.addWidget(b)

        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        # Batch events refresh the bar at most twice a second (see _progress).
        self.progress = ThrottledProgress(self.progress_bar, parent=self,
                                          bar_format=lambda fmt: fmt)
        self.status_label = QLabel("idle")
        self.status_label.setWordWrap(True)
        #: Warnings of the current run (e.g. no ImageNet weights); hidden when none.
        self.notice_label = QLabel("")
        self.notice_label.setWordWrap(True)
        self.notice_label.setVisible(False)

        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(4, 4), layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(260)
        self.loss_ax, self.f1_ax = self.figure.subplots(2, 1, sharex=True)
        self._draw()

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status_label)
        layout.addWidget(self.notice_label)
        layout.addWidget(self.canvas)
        layout.addStretch(1)

    # -- run state (kept by :attr:`watch`) ---------------------------------------------
    @property
    def history(self) -> list[dict[str, Any]]:
        """Epoch events of the run (earlier epochs of a resumed run first)."""
        return self.watch.history

    @property
    def warnings(self) -> list[str]:
        """Warnings of the current run (e.g. no ImageNet weights)."""
        return self.watch.warnings

    @property
    def chosen_checkpoint(self) -> str | None:
        """The run's chosen checkpoint (best or last epoch, as "Keep" said at Start)."""
        return self.watch.chosen_checkpoint

    @chosen_checkpoint.setter
    def chosen_checkpoint(self, path: str | None) -> None:
        self.watch.chosen_checkpoint = path

    # -- form ------------------------------------------------------------------------------
    def _browse_data(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "VinDr-Mammo data folder")
        if path:
            self.data_edit.setText(path)
            if not self.out_edit.text():
                self.out_edit.setText(str(Path(path).parent / "correlax-run"))

    def _browse_pretrained(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Backbone weights", "", "Weights (*.safetensors *.pth *.pt);;All files (*)"
        )
        if path:
            self.pretrained_edit.setText(path)

    def _browse_out(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Run folder")
        if path:
            self.out_edit.setText(path)

    def request(self) -> TrainRequest | GMICTrainRequest:
        """The current settings (a GMIC run when a "GMIC · <cam>" model is chosen)."""
        model = self.backbone_combo.currentText()
        if model.startswith(GMIC):
            return GMICTrainRequest(
                data=self.data_edit.text().strip(), out=self.out_edit.text().strip(),
                train_cam=model.split(" · ")[-1], init=self.pretrained_edit.text().strip(),
                epochs=self.epochs_spin.value(), batch_size=self.batch_spin.value(),
                device=self.device_combo.currentText(), fresh=self.fresh_check.isChecked())
        return TrainRequest(
            data=self.data_edit.text().strip(),
            out=self.out_edit.text().strip(),
            backbone=self.backbone_combo.currentText(),
            epochs=self.epochs_spin.value(),
            batch_size=self.batch_spin.value(),
            pretrained=self.pretrained_edit.text().strip(),
            select=self.select_combo.currentData(),
            device=self.device_combo.currentText(),
            fresh=self.fresh_check.isChecked(),
        )

    # -- process -------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """True while the training process is alive."""
        return self._process is not None

    def start(self) -> None:
        """Start ``correlax train`` with the dock's settings (plus :attr:`extra_args`)."""
        if self.running:
            return
        req = self.request()
        if not req.data or not Path(req.data).is_dir():
            show_error(f"data folder not found: {req.data or '(none given)'}")
            return
        if not req.out:
            show_error("choose an output folder for the run")
            return
        argv = req.command() + list(self.extra_args)
        # "start over" applies to this start only; Stop then Start must resume, not restart.
        self.fresh_check.setChecked(False)
        self.watch = TrainWatch(req)
        self.notice_label.setText("")
        self.notice_label.setVisible(False)
        self.use_button.setEnabled(False)
        self._lines, self._stopping = EventLines(), False
        proc = QProcess(self)
        env = QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")
        proc.setProcessEnvironment(env)
        proc.readyReadStandardOutput.connect(self._read_stdout)
        proc.readyReadStandardError.connect(self._read_stderr)
        proc.finished.connect(self._finished)
        proc.errorOccurred.connect(self._process_error)
        self._process = proc
        self._set_running(True)
        self._status("starting…")
        self._draw()
        proc.start(argv[0], argv[1:])

    def stop(self) -> None:
        """Ask the training process to stop; kill it after :data:`STOP_GRACE_S` seconds."""
        proc = self._process
        if proc is None:
            return
        self._stopping = True
        self._status("stopping… (finished epochs are kept; Start resumes)")
        proc.terminate()
        QTimer.singleShot(STOP_GRACE_S * 1000, lambda: self._kill_if_alive(proc))

    def _kill_if_alive(self, proc: QProcess) -> None:
        if self._process is proc and proc.state() != QProcess.ProcessState.NotRunning:
            proc.kill()

    def _read_stdout(self) -> None:
        if self._process is not None:
            for event in self._lines.feed(bytes(self._process.readAllStandardOutput())):
                self.handle_event(event)

    def _read_stderr(self) -> None:
        if self._process is not None:
            data = bytes(self._process.readAllStandardError())
            self.watch.add_stderr(data.decode("utf-8", "replace"))

    def _process_error(self, error: Any) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self._status("could not start the training process")
            show_error(f"could not start {sys.executable} for training")
            self._cleanup()

    def _finished(self, code: int, status: Any) -> None:
        self._read_stdout()
        self._read_stderr()
        end = self.watch.end(code, status == QProcess.ExitStatus.CrashExit, self._stopping)
        self._status(end.status)
        if end.error:
            show_error(f"training failed: {end.error}")
        elif end.finished:
            show_info("training finished")
        self._cleanup()

    def _cleanup(self) -> None:
        proc, self._process = self._process, None
        if proc is not None:
            proc.deleteLater()
        self._set_running(False)
        self._refresh_checkpoint()

    def _set_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.stop_button.setEnabled(running)

    # -- events --------------------------------------------------------------------------
    def handle_event(self, event: dict[str, Any]) -> None:
        """Update progress, status and plot from one JSON event of ``correlax train``."""
        status = self.watch.handle(event)
        if status is not None:
            self._status(status)
        bar = progress_of(event)
        if bar is not None:
            self.progress.update(bar)
        kind = event.get("event")
        if kind == "warning":
            self.notice_label.setText("\n".join(f"⚠ {w}" for w in self.warnings))
            self.notice_label.setVisible(True)
            show_warning(self.warnings[-1])
        elif kind == "epoch":
            self._draw()
            self._refresh_checkpoint()
        elif kind == "done":
            self.progress.flush()
            self.use_button.setEnabled(bool(self.chosen_checkpoint))

    def _status(self, text: str) -> None:
        self.status_label.setText(text)

    def _refresh_checkpoint(self) -> None:
        """Pick up the chosen checkpoint once the run folder holds it."""
        self.watch.find_checkpoint()
        self.use_button.setEnabled(bool(self.chosen_checkpoint) and not self.running)

    def _draw(self) -> None:
        """Loss (top) and validation F1 (bottom) per epoch."""
        series = self.watch.series()
        self.loss_ax.clear()
        self.f1_ax.clear()
        self.loss_ax.plot(*_xy(series["train_loss"]), "o-", label="train", ms=3)
        if series["val_loss"]:
            self.loss_ax.plot(*_xy(series["val_loss"]), "o-", label="validation", ms=3)
        self.loss_ax.set_ylabel("focal loss")
        self.loss_ax.legend(loc="upper right", fontsize="small")
        if series["macro_f1"]:
            self.f1_ax.plot(*_xy(series["macro_f1"]), "o-", color="k", label="macro", ms=3)
            for label in PLOTTED_LABELS:
                if series[label]:
                    self.f1_ax.plot(*_xy(series[label]), "-", lw=1, label=label.split()[-1])
            self.f1_ax.legend(loc="lower right", fontsize="small")
        self.f1_ax.set_ylim(0, 1)
        self.f1_ax.set_ylabel("validation F1")
        self.f1_ax.set_xlabel("epoch")
        self.f1_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        self.canvas.draw_idle()

    # -- hand-over -----------------------------------------------------------------------
    def _analysis_widget(self) -> Any:
        window = self.viewer.window
        for widget in window.dock_widgets.values():
            inner = getattr(widget, "native", widget)
            for candidate in (inner, *inner.findChildren(QWidget)):
                if callable(getattr(candidate, "set_checkpoint", None)):
                    return candidate
        try:
            _, widget = window.add_plugin_dock_widget("napari-correlax", "CorRELAX analysis")
        except Exception:
            log.exception("could not open the CorRELAX analysis dock")
            return None
        return widget

    def use_in_analysis(self) -> None:
        """Set the chosen checkpoint in the CorRELAX analysis dock (opening it if needed)."""
        if not self.chosen_checkpoint:
            return
        target = self._analysis_widget()
        if target is None:
            show_info(f"chosen checkpoint: {self.chosen_checkpoint}")
            return
        target.set_checkpoint(self.chosen_checkpoint)
        show_info(f"analysis dock now uses {self.chosen_checkpoint}")


def _xy(pairs: list[tuple[int, float]]) -> tuple[list[int], list[float]]:
    return [p[0] for p in pairs], [p[1] for p in pairs]
