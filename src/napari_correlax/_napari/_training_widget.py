"""The "Train classifier" dock: runs ``correlax train`` in a child process and watches it.

Training happens in a separate Python process (``python -m napari_correlax.cli train
... --progress json``) started with ``QProcess``, so a crash or an out-of-memory kill
there never takes napari down, and the event loop never waits on it. The child prints
one JSON object per line (see :class:`~napari_correlax.train.TrainEvent`); the dock
turns them into a progress bar, a status line, a notice line for warnings (no ImageNet
weights found, so training starts from random weights) and a plot of the training /
validation loss and the validation F1 per epoch. Stop sends SIGTERM (the run keeps every
finished epoch; Start on the same output folder resumes it) and kills the process if it
has not exited 10 s later.

"Keep" chooses the checkpoint: the best validation macro F1 on a held-out share of the
training studies (``--select best``) or the last epoch (``--select last``); the test
split is never read. When the chosen checkpoint exists, "Use in analysis" hands it to
the CorRELAX analysis dock (opened if needed).
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
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
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ._progress import ThrottledProgress

log = logging.getLogger(__name__)

#: Seconds between Stop's SIGTERM and a hard kill.
STOP_GRACE_S = 10
#: "Keep" choices: (shown text, ``--select`` value).
SELECTIONS = (("best on validation share", "best"), ("last epoch", "last"))
#: Checkpoint file each ``--select`` value leaves in the run folder.
CHECKPOINT_FILES = {"best": "best.safetensors", "last": "last.safetensors"}


@dataclass
class TrainRequest:
    """What the dock passes to ``correlax train`` (copied out of the widgets)."""

    data: str
    out: str
    backbone: str = "efficientnet_v2_s"
    epochs: int = 50
    batch_size: int = 48
    pretrained: str = ""
    select: str = "best"
    device: str = "auto"
    fresh: bool = False

    def command(self) -> list[str]:
        """The child process's argv (``sys.executable`` first)."""
        argv = [
            sys.executable,
            "-m",
            "napari_correlax.cli",
            "train",
            self.data,
            "--out",
            self.out,
            "--backbone",
            self.backbone,
            "--epochs",
            str(self.epochs),
            "--batch-size",
            str(self.batch_size),
            "--select",
            self.select,
            "--device",
            self.device,
            "--progress",
            "json",
        ]
        if self.pretrained:
            argv += ["--pretrained", self.pretrained]
        if self.fresh:
            argv.append("--fresh")
        return argv


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
        self._buffer = b""
        self._stderr: list[str] = []
        self.history: list[dict[str, Any]] = []
        #: The run's chosen checkpoint (best or last epoch, as "Keep" said at Start).
        self.chosen_checkpoint: str | None = None
        self._select = "best"
        self._chosen_epoch = 0
        #: More ``correlax train`` options passed as given (``["--input-size", "128"]``).
        self.extra_args: list[str] = []

        self.data_edit, data_row = self._path_row(
            "folder with finding_annotations.csv", self._browse_data
        )
        self.backbone_combo = QComboBox()
        self.backbone_combo.addItems(_backbones())
        self.backbone_combo.setCurrentText("efficientnet_v2_s")
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(1, 10_000)
        self.epochs_spin.setValue(50)
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(1, 4096)
        self.batch_spin.setValue(48)
        self.pretrained_edit, pretrained_row = self._path_row(
            "default: ImageNet from the torch cache", self._browse_pretrained
        )
        self.pretrained_edit.setToolTip(
            "starting backbone weights (.safetensors/.pth), 'imagenet' or 'none'; empty: "
            "torchvision backbones use the ImageNet file when the torch cache holds it "
            "(never downloaded), else random weights with a warning"
        )
        self.select_combo = QComboBox()
        for text, value in SELECTIONS:
            self.select_combo.addItem(text, value)
        self.select_combo.setToolTip(
            "best on validation share: the epoch with the best validation macro F1 on 10% "
            "of the training studies, held out from training; last epoch: train on all "
            "training studies and keep the last epoch (as the paper's authors did). The "
            "test split is never read."
        )
        self.out_edit, out_row = self._path_row(
            "run folder (resumed if it holds a run)", self._browse_out
        )
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", "cpu", "cuda"])
        self.fresh_check = QCheckBox("start over (ignore a run in the output folder)")

        form = QFormLayout()
        form.addRow("Data", data_row)
        form.addRow("Backbone", self.backbone_combo)
        form.addRow("Epochs", self.epochs_spin)
        form.addRow("Batch", self.batch_spin)
        form.addRow("Pretrained", pretrained_row)
        form.addRow("Keep", self.select_combo)
        form.addRow("Output", out_row)
        form.addRow("Device", self.device_combo)
        form.addRow("", self.fresh_check)

        self.start_button = QPushButton("Start")
        self.start_button.clicked.connect(lambda: self.start())
        self.stop_button = QPushButton("Stop")
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
        self.warnings: list[str] = []

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

    # -- form helpers --------------------------------------------------------------------
    def _path_row(self, placeholder: str, browse: Any) -> tuple[QLineEdit, QWidget]:
        edit = QLineEdit()
        edit.setPlaceholderText(placeholder)
        button = QPushButton("…")
        button.setMaximumWidth(32)
        button.clicked.connect(lambda: browse())
        row = QWidget()
        box = QHBoxLayout(row)
        box.setContentsMargins(0, 0, 0, 0)
        box.addWidget(edit)
        box.addWidget(button)
        return edit, row

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

    def request(self) -> TrainRequest:
        """The current settings."""
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
        self.history = self._previous_history(req)
        self.chosen_checkpoint = None
        self._select = req.select
        self._chosen_epoch = self._chosen_in(self.history)
        self.warnings = []
        self.notice_label.setText("")
        self.notice_label.setVisible(False)
        self.use_button.setEnabled(False)
        self._buffer, self._stderr, self._stopping = b"", [], False
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

    def _previous_history(self, req: TrainRequest) -> list[dict[str, Any]]:
        """Epochs already in the run folder's ``metrics.jsonl`` (a resumed run)."""
        log_file = Path(req.out) / "metrics.jsonl"
        if req.fresh or not log_file.is_file():
            return []
        rows = []
        for line in log_file.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
        return rows

    def _read_stdout(self) -> None:
        if self._process is None:
            return
        self._buffer += bytes(self._process.readAllStandardOutput())
        *lines, self._buffer = self._buffer.split(b"\n")
        for raw in lines:
            text = raw.decode("utf-8", "replace").strip()
            if not text.startswith("{"):
                continue
            try:
                event = json.loads(text)
            except ValueError:
                continue
            self.handle_event(event)

    def _read_stderr(self) -> None:
        if self._process is None:
            return
        text = bytes(self._process.readAllStandardError()).decode("utf-8", "replace")
        self._stderr = (self._stderr + [x for x in text.splitlines() if x.strip()])[-40:]

    def _process_error(self, error: Any) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self._status("could not start the training process")
            show_error(f"could not start {sys.executable} for training")
            self._cleanup()

    def _finished(self, code: int, status: Any) -> None:
        self._read_stdout()
        self._read_stderr()
        crashed = status == QProcess.ExitStatus.CrashExit
        if self._stopping:
            self._status(f"stopped after epoch {self._last_epoch()}; Start resumes the run")
        elif code == 0 and not crashed:
            which = "last" if self._select == "last" else "best"
            self._status(f"finished: {which} epoch {self._chosen_epoch} → "
                         f"{self.chosen_checkpoint}")
            show_info("training finished")
        else:
            reason = self._stderr[-1] if self._stderr else ""
            if crashed:
                reason = "the training process was killed (out of memory?) " + reason
            self._status(f"failed (exit {code}): {reason}")
            show_error(f"training failed: {reason or f'exit status {code}'}")
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
        kind = event.get("event")
        done, total = int(event.get("done", 0)), max(int(event.get("total", 1)), 1)
        if kind == "start":
            split = (event.get("selection") or {}).get("split")
            self._status(
                f"{event['train_samples']} training samples, {event['val_samples']} validation "
                f"samples{f' ({split})' if split else ''} on {event['device']}; starting "
                f"weights: {event.get('pretrained', 'none')}"
            )
        elif kind == "warning":
            message = str(event.get("message", ""))
            self.warnings.append(message)
            self.notice_label.setText("\n".join(f"⚠ {w}" for w in self.warnings))
            self.notice_label.setVisible(True)
            show_warning(message)
        elif kind == "cache":
            self.progress.update(("caching images %v/%m", done, total))
        elif kind == "batch":
            self.progress.update((
                f"epoch {event['epoch']}/{event['epochs']}: batch %v/%m (loss {event['loss']:.4f})",
                done, total))
        elif kind == "epoch":
            self.history = [h for h in self.history if h.get("epoch") != event.get("epoch")]
            self.history.append(event)
            f1 = event.get("macro_f1")
            self._status(
                f"epoch {event['epoch']}/{event['epochs']}: train loss "
                f"{event['train_loss']:.4f}"
                + ("" if f1 is None else f", val loss {event['val_loss']:.4f}, macro F1 {f1:.3f}")
            )
            if event.get("best") or self._select == "last":
                self._chosen_epoch = int(event["epoch"])
            self._draw()
            self._refresh_checkpoint()
        elif kind == "done":
            self.chosen_checkpoint = event.get("checkpoint", event.get("best"))
            self._chosen_epoch = int(event.get("epoch", self._chosen_epoch))
            self._progress(total, total, "done")
            self.use_button.setEnabled(bool(self.chosen_checkpoint))

    def _progress(self, done: int, total: int, fmt: str) -> None:
        """Show ``fmt`` (Qt format: ``%v`` done, ``%m`` total) now."""
        self.progress.update((fmt, done, total))
        self.progress.flush()

    def _status(self, text: str) -> None:
        self.status_label.setText(text)

    def _last_epoch(self) -> int:
        return max((int(h["epoch"]) for h in self.history), default=0)

    def _chosen_in(self, history: list[dict[str, Any]]) -> int:
        """Epoch of the chosen checkpoint among ``history`` (0 when none)."""
        marked = [h for h in history if self._select == "last" or h.get("best")]
        return max((int(h["epoch"]) for h in marked), default=0)

    def _refresh_checkpoint(self) -> None:
        """Pick up the chosen checkpoint once the run folder holds it."""
        out = self.out_edit.text().strip()
        chosen = Path(out) / CHECKPOINT_FILES[self._select] if out else None
        if chosen is not None and chosen.is_file():
            self.chosen_checkpoint = str(chosen)
        self.use_button.setEnabled(bool(self.chosen_checkpoint) and not self.running)

    def _draw(self) -> None:
        """Loss (top) and validation F1 (bottom) per epoch."""
        rows = sorted(self.history, key=lambda h: h["epoch"])
        epochs = [h["epoch"] for h in rows]
        self.loss_ax.clear()
        self.f1_ax.clear()
        self.loss_ax.plot(epochs, [h["train_loss"] for h in rows], "o-", label="train", ms=3)
        val = [(h["epoch"], h["val_loss"]) for h in rows if h.get("val_loss") is not None]
        if val:
            self.loss_ax.plot(*zip(*val), "o-", label="validation", ms=3)
        self.loss_ax.set_ylabel("focal loss")
        self.loss_ax.legend(loc="upper right", fontsize="small")
        f1 = [(h["epoch"], h["macro_f1"]) for h in rows if h.get("macro_f1") is not None]
        if f1:
            self.f1_ax.plot(*zip(*f1), "o-", color="k", label="macro", ms=3)
            for label in ("Mass", "Suspicious Calcification"):
                series = [
                    (h["epoch"], m["f1"])
                    for h in rows
                    for m in h.get("metrics", [])
                    if m["label"] == label
                ]
                if series:
                    self.f1_ax.plot(*zip(*series), "-", lw=1, label=label.split()[-1])
            self.f1_ax.legend(loc="lower right", fontsize="small")
        self.f1_ax.set_ylim(0, 1)
        self.f1_ax.set_ylabel("validation F1")
        self.f1_ax.set_xlabel("epoch")
        self.f1_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        self.canvas.draw_idle()

    # -- hand-over -----------------------------------------------------------------------
    def _analysis_widget(self) -> Any:
        window = self.viewer.window
        docks = getattr(window, "dock_widgets", None)
        if docks is None:
            docks = {k: d.widget() for k, d in window._dock_widgets.items()}
        for widget in docks.values():
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
