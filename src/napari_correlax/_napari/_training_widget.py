"""The "Train classifier" dock: runs ``correlax train`` (or ``correlax gmic train``) in a
child process and watches it.

Training happens in a separate Python process (``python -m napari_correlax.cli train
... --progress json``) started with ``QProcess``, so a crash or an out-of-memory kill
there never takes napari down, and the event loop never waits on it. The child prints
one JSON object per line (see :class:`~napari_correlax.train.TrainEvent`);
:class:`~napari_correlax.train.watch.TrainWatch` reads them (no Qt there) and the dock
shows a progress bar, a status line, a notice line for warnings (no ImageNet weights
found, so training starts from random weights) and a plot of the training / validation
loss and the validation F1 per epoch. Stop sends SIGTERM (the run keeps every
finished epoch; Start on the same output folder resumes it) and kills the process if it
has not exited 10 s later. Closing napari while a run trains asks first; ending the run
stops the child the same way (finished epochs kept, resumable), closing is otherwise
cancelled.

"Model" picks the family: the classifier or GMIC. Each has its own form, bound to its
settings (:class:`~napari_correlax.train.settings.TrainConfig`,
:class:`~napari_correlax.gmic.config.GMICTrainConfig`: :class:`~._forms.TrainingForm`),
so the controls start at that family's defaults and the command line is written from the
settings (:func:`~napari_correlax.train.watch.train_command`).

"Keep" chooses the classifier's checkpoint: the best validation macro F1 on a held-out
share of the training studies (``--select best``) or the last epoch (``--select
last``); the test split is never read. When the data set has too few training studies to
hold out a share, the dock switches Keep to the last epoch and says so in its status
line. Errors are shown in the status line in the dock's terms (Keep, Output, …), not the
command line's. When the chosen checkpoint exists, "Use in analysis" hands it to the
CorRELAX analysis dock (opened if needed).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from matplotlib.ticker import MaxNLocator
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QEvent, QObject, QProcess, QProcessEnvironment, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from ..errors import CorrelaxError
from ..gmic.config import GMICTrainConfig
from ..train.settings import TrainConfig
from ..train.watch import (
    PLOTTED_LABELS,
    SELECTIONS,
    EventLines,
    TrainWatch,
    in_dock_terms,
    progress_of,
    train_command,
)
from ._forms import TrainingForm, path_row
from ._progress import ThrottledProgress

#: Model families, as the "Model" choice shows them (each has its form, in this order).
FAMILIES = ("classifier", "GMIC")

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
        self.data_edit.editingFinished.connect(lambda: self.fit_keep_to_data())
        self.fresh_check = QCheckBox("start over (ignore a run in the output folder)")
        self.fresh_check.setToolTip("Off: an interrupted run in the output folder resumes")
        self.out_edit, out_row = path_row("run folder (resumed if it holds a run)",
                                          self._browse_out,
                                          "Where checkpoints and the training log go")
        self.family_combo = QComboBox()
        self.family_combo.setToolTip("The model to train: the classifier (the paper's recipe, "
                                     "box crops) or GMIC (from image-level labels, normal vs "
                                     "mass; the CAM-GMIC recipe)")
        self.family_combo.addItems(list(FAMILIES))
        self.pages = QStackedWidget()
        self.forms = {"classifier": self._classifier_form(), "GMIC": self._gmic_form()}
        self.family_combo.currentIndexChanged.connect(self.pages.setCurrentIndex)

        form = QFormLayout()
        for label, control in (("Data", data_row), ("Model", self.family_combo),
                               ("", self.pages), ("Output", out_row), ("", self.fresh_check)):
            form.addRow(label, control)

        self.start_button = QPushButton("Start")
        self.start_button.setToolTip("Train in a separate process (napari stays responsive)")
        self.start_button.clicked.connect(lambda: self.start())
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop now: the finished epochs stay in the output folder "
                                    "and Start resumes after them")
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

        self._make_plot()
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status_label)
        layout.addWidget(self.notice_label)
        layout.addWidget(self.canvas)
        layout.addStretch(1)
        window = getattr(self.viewer.window, "_qt_window", None)
        if window is not None:
            window.installEventFilter(self)

    def _make_plot(self) -> None:
        """The loss and F1 plot (:meth:`_draw`)."""
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(4, 4), layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(260)
        self.loss_ax, self.f1_ax = self.figure.subplots(2, 1, sharex=True)
        self._draw()

    def _page(self) -> QFormLayout:
        page = QWidget()
        layout = QFormLayout(page)
        layout.setContentsMargins(0, 0, 0, 0)
        self.pages.addWidget(page)
        return layout

    def _classifier_form(self) -> TrainingForm:
        backbones = [(name, name) for name in _backbones()]
        return TrainingForm(
            self._page(), TrainConfig,
            (("backbone", "Backbone"), ("epochs", "Epochs"), ("batch_size", "Batch"),
             ("pretrained", "Pretrained"), ("select", "Keep"), ("device", "Device")),
            choices={"backbone": backbones, "select": SELECTIONS},
            paths={"pretrained": "Backbone weights"})

    def _gmic_form(self) -> TrainingForm:
        from ..gmic.cams import TRAIN_CAMS

        return TrainingForm(
            self._page(), GMICTrainConfig,
            (("train_cam", "Patches by"), ("epochs", "Epochs"), ("batch_size", "Batch"),
             ("init", "Initial weights"), ("device", "Device")),
            choices={"train_cam": [(c, c) for c in TRAIN_CAMS]},
            paths={"init": "GMIC weights"})

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
            self.fit_keep_to_data()

    def _browse_out(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Run folder")
        if path:
            self.out_edit.setText(path)

    @property
    def family(self) -> str:
        """The model family chosen: ``"classifier"`` or ``"GMIC"``."""
        return self.family_combo.currentText()

    @property
    def form(self) -> TrainingForm:
        """The chosen family's form."""
        return self.forms[self.family]

    # The chosen family's controls, by what they set.
    @property
    def backbone_combo(self) -> QComboBox:
        return self.forms["classifier"].widgets["backbone"]

    @property
    def select_combo(self) -> QComboBox:
        return self.forms["classifier"].widgets["select"]

    @property
    def epochs_spin(self) -> Any:
        return self.form.widgets["epochs"]

    @property
    def batch_spin(self) -> Any:
        return self.form.widgets["batch_size"]

    @property
    def device_combo(self) -> QComboBox:
        return self.form.widgets["device"]

    def settings(self) -> TrainConfig | GMICTrainConfig:
        """The chosen family's settings from the controls; CorrelaxError for values the
        settings refuse."""
        return self.form.settings(data=self.data_edit.text().strip(),
                                  out=self.out_edit.text().strip(),
                                  fresh=self.fresh_check.isChecked())

    def command(self, settings: TrainConfig | GMICTrainConfig) -> list[str]:
        """The child's argv: the form's fields always written, then :attr:`extra_args`."""
        return train_command(settings, self.form.fields) + list(self.extra_args)

    def fit_keep_to_data(self) -> str | None:
        """Switch Keep to the last epoch when the data set cannot give the best epoch a
        validation share (too few training studies); the note shown, if any."""
        data = self.data_edit.text().strip()
        if self.family != "classifier" or self.select_combo.currentData() != "best" or \
                not data or not Path(data).is_dir():
            return None
        from ..io.vindr import load_vindr
        from ..train.fit import NoValidationError, split_records

        try:
            split_records(load_vindr(data), self.form.settings(data=data, out=""))
        except NoValidationError as exc:
            self.select_combo.setCurrentIndex(self.select_combo.findData("last"))
            note = f"Keep set to “last epoch”: {exc.reason.split(';')[0]}"
            self._status(note)
            return note
        except CorrelaxError:
            return None  # the run reports it
        return None

    # -- process -------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """True while the training process is alive."""
        return self._process is not None

    def _refuse(self, message: str) -> None:
        """A start refused: the whole message in the status line, and as a notification."""
        self._status(message)
        show_error(message)

    def start(self) -> None:
        """Start the chosen family's training with the dock's settings (plus
        :attr:`extra_args`)."""
        if self.running:
            return
        data = self.data_edit.text().strip()
        if not data or not Path(data).is_dir():
            self._refuse(f"data folder not found: {data or '(none given)'}")
            return
        if not self.out_edit.text().strip():
            self._refuse("choose an output folder for the run")
            return
        note = self.fit_keep_to_data()
        try:
            settings = self.settings()
        except CorrelaxError as exc:
            self._refuse(in_dock_terms(str(exc)))
            return
        argv = self.command(settings)
        # "start over" applies to this start only; Stop then Start must resume, not restart.
        self.fresh_check.setChecked(False)
        self.watch = TrainWatch(settings)
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
        self._status(f"{note}\nstarting…" if note else "starting…")
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
        self._status(end.status)  # the whole reason: a notification may cut it off
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

    def stop_and_wait(self) -> None:
        """Stop the run as Stop does and wait for the child to exit (killed after
        :data:`STOP_GRACE_S` seconds); its finished epochs stay resumable."""
        proc = self._process
        if proc is None:
            return
        self._stopping = True
        proc.terminate()
        if not proc.waitForFinished(STOP_GRACE_S * 1000):
            proc.kill()
            proc.waitForFinished(5000)
        if self._process is proc:  # finished was not delivered while waiting
            self._finished(proc.exitCode(), proc.exitStatus())

    def confirm_close(self) -> bool:
        """Closing napari during a run: ask; on yes stop the run (:meth:`stop_and_wait`).
        True when napari may close."""
        if not self.running:
            return True
        epochs = self.watch.last_epoch
        answer = QMessageBox.question(
            self, "Training is running",
            f"Closing napari ends the training run in {self.watch.out}.\n\n"
            f"The finished epochs ({epochs} so far) stay in the run folder, and Start on "
            "it resumes from there; the epoch in progress is lost.\n\nEnd the run and close?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No)
        if answer != QMessageBox.StandardButton.Yes:
            return False
        self.stop_and_wait()
        return True

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        """Ask before napari's main window closes during a run (:meth:`confirm_close`)."""
        if event.type() == QEvent.Type.Close and self.running and not self.confirm_close():
            event.ignore()
            return True
        return super().eventFilter(watched, event)

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
