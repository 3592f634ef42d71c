"""The "Test-set reader" dock: click through a VinDr-layout split and judge the maps.

For each image the dock shows the mammogram, its ground-truth boxes, the maps of the
labels it holds and, for every finding label × pointing-game rule (docs/method.md §10), the
maximum as a point with its value and the automatic verdict. The reader answers hit /
miss / unsure per row, with a comment.

The state and every rule (data set, list, navigation, status, prefetch, verdicts, saved
state, cache key; the files in the work folder) live in
:class:`~napari_correlax.evaluate.review.Review`; this dock builds the controls, forwards
clicks and keys to it, runs its loads and the file check in napari workers
(:mod:`._testset_jobs`) and draws what it says (:mod:`._testset_layers`,
:mod:`._testset_table`).

Moving to another image never leaves the previous one on screen: the new image is drawn
at once when it is at hand (its maps, or what its load showed so far), else the reader's
layers are hidden and the image alone is read on a thread of its own and drawn when it
comes (a fraction of a second), well before its maps. Whatever a worker hands back for an
image that is no longer the current one is kept for later, never drawn.

Keys (napari canvas whatever layer is selected, and this dock when it has the focus):
PageDown / PageUp next / previous image, H / M / U hit / miss / unsure for the selected
row (the selection then moves to the next row without a verdict), P / C show the
prediction / correlation maps and switch the map kind the verdicts are about, D shows or
hides the distance map over them, F marks a false positive at the next click on the
shown map, Ctrl+J to the "go to" box, E toggles the exam view (the four views of the
image's study, :mod:`._exam_view`), W cycles the window/level presets
(:mod:`._window_level`). The keys are bound on the viewer and on every layer
the reader makes, so napari's layer shortcuts (Points "P" = add points) cannot take them.

Closing napari stops the work first (:mod:`._closing`): a comment being typed is saved,
the workers are quit and awaited, nothing they still send reaches the dock.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import (
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QProgressBar,
    QVBoxLayout,
    QWidget,
)

from ..errors import CorrelaxError, JobFailure
from ..evaluate.review import ALL, WITH_FINDINGS, Review, saved_settings
from ..evaluate.verdicts import ReaderState
from ..labels import NO_FINDING, lesion_labels
from ..maps.methods import get_method
from ..maps.settings import MapSettings
from ._closing import when_window_closes
from ._exam_view import ReaderExtras
from ._forms import bind_keys, button_row, dock_key
from ._peaks import PeakTable
from ._progress import ThrottledProgress
from ._testset_form import build_form, pick_report
from ._testset_jobs import ReviewJobs
from ._testset_layers import PREFIX, ReviewLayers
from ._testset_marks import FalsePositiveMarker
from ._testset_table import VerdictPanel

__all__ = ["ALL", "PREFIX", "WITH_FINDINGS", "TestSetReaderWidget"]


def describe_step(stage: str, done: int, total: int) -> str:
    """The line under the reader's bar (the bar shows the counts); the time left of the
    step follows it once it can be measured."""
    return f"maps of this image, {stage} step"


class TestSetReaderWidget(QWidget):
    """Dock widget "Test-set reader" (see the module docstring)."""

    __test__ = False  # not a pytest test class, despite its name

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        #: The review this dock shows (state and rules, no Qt).
        self.review = Review()
        self.layers = ReviewLayers(napari_viewer, selected=lambda: self.verdicts.selected_label())
        self.jobs = ReviewJobs(self.review, parent=self)
        self.jobs.progress.connect(self._on_progress)
        self.jobs.loaded.connect(self._on_loaded)
        self.jobs.preview.connect(self._on_preview)
        self.jobs.idle.connect(self._on_idle)
        self.jobs.bad_file.connect(self._on_bad_file)
        self.jobs.checked.connect(self._update_summary)
        self.jobs.image_read.connect(self._on_image_read)
        self._shown = ""
        self._opening = False
        self._auto_work = ""
        self._build()
        self._bind_keys()
        when_window_closes(napari_viewer, self, self.close_down)

    # -- construction ------------------------------------------------------------------
    def _build(self) -> None:
        form = build_form(self)
        self.summary = QLabel("Pick a data folder.")
        self.summary.setWordWrap(True)
        self.image_list = QListWidget()
        self.image_list.setToolTip("○ not reviewed, ◐ partly, ● done, ✗ unreadable; click to open")
        self.image_list.currentRowChanged.connect(self._row_picked)
        nav = button_row((("◀ Previous", self.previous_image, "PageUp"),
                          ("Next ▶", self.next_image, "PageDown"),
                          ("Report…", lambda: pick_report(self), "Save your hit rates beside the "
                           "automatic ones (CSV + Markdown), per label and map")))
        self.jump_edit = QLineEdit()
        self.jump_edit.setToolTip("Type a list number or an image id and press Enter")
        self.jump_edit.setPlaceholderText("go to: number or image id (Ctrl+J)")
        self.jump_edit.returnPressed.connect(lambda: self.jump(self.jump_edit.text()))
        nav.addWidget(self.jump_edit)
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.progress.hide()
        self.eta_label = QLabel("")
        self.eta_label.hide()
        self._progress_view = ThrottledProgress(self.progress, self.eta_label,
                                                describe=describe_step, parent=self)
        self.image_label = QLabel("")
        self.image_label.setWordWrap(True)

        self.marker = FalsePositiveMarker(
            self.viewer, self.review, PREFIX, labels=self.layers.shown_labels,
            selected=lambda: self.verdicts.selected_label(), guard=self._guard,
            changed=lambda: (self._verdicts_changed(), self.verdicts.show_rows()),
            armed=lambda on: self.verdicts.mark_button.setChecked(on))
        self.verdicts = VerdictPanel(self.review, self._guard, self._verdicts_changed,
                                     self.marker.toggle)
        self.table = self.verdicts.table
        self.table.currentCellChanged.connect(lambda *_: self.layers.refresh())

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.summary)
        layout.addWidget(self.image_list, 2)
        layout.addLayout(nav)
        self.extras = ReaderExtras(self)  # exam view, window/level, Save as DICOM
        layout.addLayout(self.extras.buttons())
        layout.addWidget(self.progress)
        layout.addWidget(self.eta_label)
        layout.addWidget(self.image_label)
        self.peaks = PeakTable(self.viewer)
        layout.addWidget(self.peaks)
        layout.addWidget(self.verdicts, 2)

    def _bind_keys(self) -> None:
        """The same keys on the napari canvas (viewer keymap) and in this dock."""
        verdict = {key: (lambda v=v: self._guard(self.set_verdict, v))
                   for key, v in (("H", "hit"), ("M", "miss"), ("U", "unsure"))}
        kinds = {key: (lambda k=k: self.show_kind(k))
                 for key, k in (("P", "prediction"), ("C", "correlation"), ("D", "distance"))}
        keys = {"PageDown": self.next_image, "F": self.marker.toggle,
                "PageUp": self.previous_image, **verdict, **kinds, **self.extras.keys()}
        bind_keys(self, self.viewer, keys)
        self.layers.keys = keys  # on the reader's layers too, ahead of their own keymaps
        dock_key(self, "Ctrl+J", self.jump_edit.setFocus)

    # -- public ------------------------------------------------------------------------
    def open_dataset(self, data: str | os.PathLike[str], work: str | os.PathLike[str] | None = None
                     ) -> None:
        """Open a VinDr-layout folder; resume the last position saved in its work folder.

        Without ``work``, a work folder typed in the dock is used, else the default one.
        """
        typed = self.work_edit.text().strip()
        if not work and typed and typed != self._auto_work:
            work = typed
        state = self.review.open(Path(str(data)), work)
        self.jobs.stop()
        self._shown = ""
        self._opening = True
        self.data_edit.setText(str(self.review.index.root))
        self.work_edit.setText(str(self.review.work))
        self._auto_work = str(self.review.work)
        splits = self.review.splits()
        self.split_combo.clear()
        self.split_combo.addItems(splits)
        if state is not None:
            self._apply_state(state)
        elif "test" in splits:
            self.split_combo.setCurrentText("test")
        self._opening = False
        self._configure()
        self._rebuild_list(state.image_id if state is not None else "")
        self.jobs.check()
        self._update_summary()

    def settings(self) -> MapSettings:
        """Map settings from the dock (adaptive, focused CorRELAX as in the paper's method)."""
        return self.form.settings()

    @property
    def checkpoint(self) -> str | None:
        """The chosen checkpoint path (None: demo model)."""
        return self.model_edit.text().strip() or None

    @property
    def records(self) -> list[Any]:
        """The listed image records."""
        return self.review.records

    @property
    def position(self) -> int:
        """Index of the shown image in :attr:`records` (-1: none)."""
        return self.review.position

    @property
    def current(self) -> Any:
        """The image record shown (None when there is none)."""
        return self.review.current

    @property
    def busy(self) -> bool:
        """True while maps are being computed or files checked."""
        return self.jobs.busy

    def show_image(self, position: int) -> None:
        """Show the image at ``position`` in the list (clipped); computes maps if needed."""
        if not self.review.records:
            return
        position = self.review.clip(position)
        self.verdicts.commit_comment()
        if position != self.image_list.currentRow():
            self.image_list.setCurrentRow(position)  # comes back through _row_picked
            return
        if position != self.position:  # the bar and time left were the previous image's
            self._progress_view.reset("")
            self._on_idle()
        self.extras.remember_window()
        self.review.go(position)
        self.jobs.schedule()  # first: a worker free for this image reads it itself
        self._draw_current()

    def next_image(self) -> None:
        """Show the next image of the list."""
        self.show_image(self.position + 1)

    def previous_image(self) -> None:
        """Show the previous image of the list."""
        self.show_image(self.position - 1)

    def jump(self, text: str) -> None:
        """Go to a list number (1-based) or the first image whose id starts with ``text``."""
        position = self.review.find(text)
        if position is None:
            show_info(f"no image {text.strip()!r} in this list")
        else:
            self.show_image(position)

    def visible_rows(self) -> list[Any]:
        """Verdict rows of the current image (table order)."""
        return self.review.rows()

    def select_row(self, row: int) -> None:
        """Select a verdict row of the table."""
        self.verdicts.select_row(row)

    def set_verdict(self, verdict: str) -> None:
        """Set the reader's verdict on the selected row, saved at once; select the next open row."""
        self.verdicts.set_verdict(verdict)

    def set_comment(self, text: str) -> None:
        """Set the comment of the selected row (saved at once)."""
        self.verdicts.set_comment(text)

    def show_kind(self, kind: str) -> None:
        """Show one map kind for the findings (``correlation``: the method's own map, a
        saliency map for the Grad-CAM family); it also becomes the kind judged.
        ``distance`` shows or hides the distance map over them."""
        if kind == "correlation":  # the method's own map: correlation, a CAM's saliency
            kind = get_method(self.review.settings.method).scored
        if kind != "distance":
            self.review.set_view(kind)
            if self.current is not None and self.current.image_id in self.review.loaded:
                kind = self.review.viewed_kind()  # the rows shown: their maps are shown
                self.verdicts.show_rows()
        self.layers.show_kind(kind)

    def close_down(self) -> None:
        """Before the window closes: save a comment being typed, stop and await the
        workers, and let nothing they still send reach this dock."""
        self.verdicts.commit_comment()
        self._progress_view.stop()
        self.jobs.shutdown()

    def _verdicts_changed(self) -> None:
        self._refresh_item(self.position)
        self._update_summary()
        self.layers.draw_marks(self.review.marks(), self.current)

    # -- list --------------------------------------------------------------------------
    def _rebuild_list(self, keep: str = "") -> None:
        start = self.review.list_images(self.split_combo.currentText(),
                                        self.filter_combo.currentText(), keep)
        self.image_list.blockSignals(True)
        self.image_list.clear()
        for k in range(len(self.review.records)):
            self.image_list.addItem(QListWidgetItem())
            self._refresh_item(k)
        self.image_list.blockSignals(False)
        self._update_summary()
        if start >= 0:
            self.show_image(start)
        else:
            self._clear_view()

    def _refresh_item(self, k: int) -> None:
        if 0 <= k < len(self.review.records):
            text, tip = self.review.describe(k)
            item = self.image_list.item(k)
            item.setText(text)
            item.setToolTip(tip)

    def _update_summary(self) -> None:
        if self.review.index is not None:
            self.summary.setText(self.review.summary(checking=self.jobs.checker is not None))

    # -- computing ---------------------------------------------------------------------
    def _on_progress(self, event: Any) -> None:
        self.progress.show()
        self.eta_label.show()
        self._progress_view.update(event)  # shown at most twice a second (see _progress)

    def _on_preview(self, loaded: Any) -> None:
        """The image (then its prediction maps, then CorRELAX's coarse map) before the
        full maps are done: kept, and drawn when it is the current image's."""
        if self.review.remember_preview(loaded) and self._is_current(loaded.record):
            self._draw_preview(loaded)

    def _on_image_read(self, outcome: Any) -> None:
        """The image alone, read when the reader moved to it (:meth:`ReviewJobs.read`)."""
        self.jobs.read_done(outcome.image_id if isinstance(outcome, JobFailure)
                            else outcome.record.image_id)
        if not isinstance(outcome, JobFailure):
            self._on_preview(outcome)
        elif outcome.bad_image:  # (any other failure: the map worker reports it)
            self._on_bad_file(outcome.image_id, outcome.message)

    def _is_current(self, record: Any) -> bool:
        current = self.current
        return current is not None and current.image_id == record.image_id \
            and current.image_id not in self.review.loaded

    def _draw_preview(self, loaded: Any) -> None:
        self.layers.draw(loaded, [], follow=self.follow_check.isChecked(),
                         kind=self.review.view)
        self.extras.after_draw()
        self._shown = ""  # the final maps replace these when they come
        result = loaded.result
        if result is None:
            step = "computing maps…"
        elif result.correlation is not None:  # CorRELAX's coarse map (maps/coarse.py)
            step = f"coarse CorRELAX map shown ({result.stride} px stride); refining…"
        else:
            step = "prediction maps shown; CorRELAX refining…"
        self.image_label.setText(self.image_label.text().split("<br>")[0] + f"<br>{step}")

    def _on_loaded(self, outcome: Any) -> None:
        image_id = self.review.accept(outcome)
        failed = isinstance(outcome, JobFailure)
        if failed and not outcome.bad_image:  # the model or the machine: halted
            self.image_label.setText(f"✗ {outcome.message}")
            show_error(outcome.message)
            return
        if not image_id:
            return
        self._refresh_item(self.review.position_of(image_id))
        if self.current is not None and self.current.image_id == image_id:
            if failed:
                show_error(outcome.message)
            self._draw_current()

    def _on_idle(self) -> None:
        self._progress_view.stop()
        self.progress.hide()
        self.eta_label.hide()

    def _on_bad_file(self, image_id: str, reason: str) -> None:
        k = self.review.mark_bad(image_id, reason)
        self._refresh_item(k)
        if k >= 0 and k == self.position:
            self._draw_current()

    # -- drawing -----------------------------------------------------------------------
    def _draw_current(self) -> None:
        record = self.current
        if record is None:
            return
        self.verdicts.clear()
        labels = ", ".join(lesion_labels(record.labels)) or NO_FINDING
        head = f"<b>{self.position + 1} / {len(self.records)}</b> · study {record.study_id} · " \
               f"image {record.image_id} · {record.laterality} {record.view} · {labels}"
        if record.image_id in self.review.bad:
            self._blank()
            self.image_label.setText(f"{head}<br>✗ {self.review.bad[record.image_id]}")
            return
        loaded = self.review.loaded.get(record.image_id)
        if loaded is None:
            self.image_label.setText(f"{head}<br>computing maps…")
            preview = self.review.previews.get(record.image_id)
            if preview is not None:
                self._draw_preview(preview)
            else:  # nothing of this image yet: no other image under its header
                self._blank()
                self.jobs.read(record)
            return
        self.image_label.setText(head)
        verdicts = self.review.automatic_verdicts(loaded)
        if self._shown != record.image_id:
            self.layers.draw(loaded, verdicts, follow=self.follow_check.isChecked(),
                             kind=self.review.viewed_kind())
            self._shown = record.image_id
            self.peaks.show_result(loaded.result, self.viewer.layers[PREFIX],
                                   lesion_labels(loaded.result.labels))
            self.extras.apply_window()
        self.verdicts.show_rows()
        if self._shown == record.image_id:
            self.layers.refresh()  # the selected row's finding decides the map shown
        self._verdicts_changed()
        self._update_summary()
        self.extras.refresh_exam()

    def _blank(self) -> None:
        """Show no image (and no peaks) until the current one is drawn."""
        self._shown = ""
        self.layers.clear()
        self.peaks.setRowCount(0)

    def _clear_view(self) -> None:
        self.verdicts.clear()
        self._blank()
        self.image_label.setText("No image in this list.")

    # -- form glue ---------------------------------------------------------------------
    def _configure(self) -> bool:
        """Hand the model and settings to the review; True when its maps change."""
        try:
            return self.review.configure(self.checkpoint, self.settings())
        except CorrelaxError as exc:
            show_error(str(exc))
            return False

    def _apply_state(self, state: ReaderState) -> None:
        if state.split:
            self.split_combo.setCurrentText(state.split)
        if state.filter:
            self.filter_combo.setCurrentText(state.filter)
        self.model_edit.setText(state.model)
        self.form.show(saved_settings(state, self.settings()))

    def _list_changed(self, _text: str = "") -> None:
        if not self._opening and self.review.index is not None:
            self._rebuild_list()

    def _settings_changed(self) -> None:
        if self._opening or self.review.index is None:
            return
        question = self.review.hides_verdicts(self.checkpoint, self.settings())
        if question and not self.confirm(question):
            self.form.show(self.review.settings)  # back to the maps the verdicts belong to
            self.model_edit.setText(self.review.checkpoint or "")
            return
        if self._configure():
            self._shown = ""
            self._rebuild_list()

    def confirm(self, question: str) -> bool:
        """Ask the reader (Yes/No); a method so scripts and tests can answer."""
        answer = QMessageBox.question(self, "Change the map settings?", question)
        return answer == QMessageBox.StandardButton.Yes

    def _row_picked(self, row: int) -> None:
        if row >= 0 and row != self.position:
            self.show_image(row)

    def _guard(self, action: Any, *args: Any) -> Any:
        try:
            return action(*args)
        except (CorrelaxError, OSError) as exc:
            show_error(str(exc))
            return None

