"""The "Test-set reader" dock: click through a VinDr-layout split and judge the maps.

For each image the dock shows the mammogram, its ground-truth boxes, the maps of the
labels it holds and, for every finding label × pointing-game rule (docs/method.md §10), the
maximum as a point with its value and the automatic verdict. The reader answers hit /
miss / unsure per row, with a comment.

Where things live (all core, shared with ``correlax evaluate``):

- the data set index: :func:`~napari_correlax.io.vindr.load_vindr` (missing files are
  marked ✗ at once; a quick :func:`~napari_correlax.io.vindr.check_readable` pass runs in
  the background and marks unreadable ones);
- maps: :func:`~napari_correlax.evaluate.runner.load_image_steps`, run in a napari worker
  (one at a time; the image after the current one is prefetched), cached on disk under
  ``<work folder>/cache/<key>/`` exactly as ``correlax evaluate --out <work folder>``
  does, so a batch run beforehand makes reading instant;
- verdicts: :class:`~napari_correlax.evaluate.verdicts.VerdictStore` at
  ``<work folder>/verdicts.csv``, rewritten atomically after every change (nothing to
  save, nothing lost when napari is killed); ``reader-state.json`` beside it remembers
  the split, filter, model, settings and image, so opening the folder again resumes.

Keys (napari canvas, and this dock when it has the focus): PageDown / PageUp next /
previous image, H / M / U hit / miss / unsure for the selected row (the selection then
moves to the next row without a verdict), Ctrl+J to the "go to" box.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt, QTimer
from qtpy.QtGui import QKeySequence
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QShortcut,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..errors import CorrelaxError
from ..evaluate.pointing import RULES, lesion_labels, pointing_verdicts
from ..evaluate.runner import load_image_steps
from ..evaluate.verdicts import STATE_FILE, VERDICTS_FILE, ReaderState, VerdictStore
from ..labels import LABELS
from ..maps.cache import settings_key
from ..maps.settings import MapSettings
from . import _layers
from ._progress import ThrottledProgress

log = logging.getLogger(__name__)

PREFIX = "test set"
ALL, WITH_FINDINGS = "All images", "Images with findings"
_SYMBOL = {"none": "○", "open": "○", "partial": "◐", "done": "●"}
_COLUMNS = ("Label", "Map", "Max", "Auto", "Reader", "Comment")
_PER_LABEL = ("prediction", "correlation")
_SHOWN = ("distance", *_PER_LABEL)
_KEYS = {"PageDown": "next_image", "PageUp": "previous_image", "H": "hit", "M": "miss",
         "U": "unsure"}


@dataclass
class _Failed:
    """A load that failed: ``image`` True when the image file is at fault (marked ✗)."""

    image_id: str
    message: str
    image: bool = True


def _load(record: Any, checkpoint: str | None, settings: MapSettings, root: Path) -> Any:
    """Worker body: the image and its maps, or :class:`_Failed` (never raises)."""
    try:
        return (yield from load_image_steps(record, checkpoint, settings, root))
    except CorrelaxError as exc:
        return _Failed(record.image_id, str(exc), exc.path == str(record.path))
    except MemoryError:
        return _Failed(record.image_id, "out of memory: lower the batch size or raise the stride",
                       False)
    except Exception as exc:
        log.exception("test-set reader: loading %s failed", record.image_id)
        return _Failed(record.image_id, f"{type(exc).__name__}: {exc}", False)


def _check(records: list[Any]) -> Any:
    """Worker body: quick readability check, yielding ``(image_id, reason)`` per bad file."""
    from ..io.vindr import check_readable

    for start in range(0, len(records), 64):
        for record, reason in check_readable(records[start : start + 64]):
            yield (record.image_id, reason)


def default_work_folder(data: Path) -> Path:
    """``<data>/correlax`` when the data folder is writable, else a per-data-set user folder."""
    if os.access(data, os.W_OK):
        return data / "correlax"
    slug = "_".join(p for p in data.resolve().parts[-2:] if p.strip("/"))
    return Path.home() / ".cache" / "napari-correlax" / "review" / slug


class TestSetReaderWidget(QWidget):
    """Dock widget "Test-set reader" (see the module docstring)."""

    __test__ = False  # not a pytest test class, despite its name

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.index: Any = None
        self.store: VerdictStore | None = None
        self.work: Path | None = None
        self.records: list[Any] = []
        self.position = -1
        self.key = ""
        self.bad: dict[str, str] = {}
        self._loaded: dict[str, Any] = {}
        self._worker: Any = None
        self._worker_id = ""
        self._checker: Any = None
        self._shown = ""
        self._opening = False
        self._auto_work = ""
        self._findings: list[str] = []
        self._pending: dict[str, Any] = {}
        self._halted = ""
        self._kinds: set[str] = {"correlation"}
        self._comment_timer = QTimer(self)
        self._comment_timer.setSingleShot(True)
        self._comment_timer.setInterval(300)
        self._comment_timer.timeout.connect(lambda: self._commit_comment())
        self._build()
        self._bind_keys()

    # -- construction ------------------------------------------------------------------
    def _build(self) -> None:
        form = QFormLayout()
        self.data_edit = QLineEdit()
        self.data_edit.setPlaceholderText("folder with finding_annotations.csv")
        self.data_edit.returnPressed.connect(lambda: self._guard(self.open_dataset,
                                                                 self.data_edit.text()))
        form.addRow("Data", _with_button(self.data_edit, self._browse_data))
        self.work_edit = QLineEdit()
        self.work_edit.setPlaceholderText("<data>/correlax")
        self.work_edit.setToolTip("Where maps are cached and verdicts.csv is written")
        form.addRow("Work folder", self.work_edit)
        self.split_combo = QComboBox()
        self.split_combo.currentTextChanged.connect(self._list_changed)
        form.addRow("Split", self.split_combo)
        self.filter_combo = QComboBox()
        self.filter_combo.addItems([ALL, WITH_FINDINGS, *lesion_labels(LABELS)])
        self.filter_combo.currentTextChanged.connect(self._list_changed)
        form.addRow("Show", self.filter_combo)
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("demo model")
        self.model_edit.editingFinished.connect(self._settings_changed)
        form.addRow("Model", _with_button(self.model_edit, self._browse_model))
        self.stride_spin = _spin(8, 512, 48, "Window step in pixels (docs/method.md §6: 48)")
        self.masks_spin = _spin(16, 100000, 2560, "Masks per window (maximum; adaptive)")
        for spin in (self.stride_spin, self.masks_spin):
            spin.editingFinished.connect(self._settings_changed)
        row = QHBoxLayout()
        row.addWidget(self.stride_spin)
        row.addWidget(QLabel("masks"))
        row.addWidget(self.masks_spin)
        form.addRow("Stride", row)
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", "cpu", "cuda", "mps"])
        form.addRow("Device", self.device_combo)
        self.follow_check = QCheckBox("show the maps of this image's findings only")
        self.follow_check.setChecked(True)
        self.follow_check.setToolTip("Keep the map kinds you made visible, for each new "
                                     "image's findings; hide the other labels' maps")
        form.addRow("Follow", self.follow_check)

        self.summary = QLabel("Pick a data folder.")
        self.summary.setWordWrap(True)
        self.image_list = QListWidget()
        self.image_list.currentRowChanged.connect(self._row_picked)
        nav = QHBoxLayout()
        for text, slot, tip in (("◀ Previous", self.previous_image, "PageUp"),
                                ("Next ▶", self.next_image, "PageDown")):
            button = QPushButton(text)
            button.setToolTip(tip)
            button.clicked.connect(slot)
            nav.addWidget(button)
        self.jump_edit = QLineEdit()
        self.jump_edit.setPlaceholderText("go to: number or image id (Ctrl+J)")
        self.jump_edit.returnPressed.connect(lambda: self.jump(self.jump_edit.text()))
        nav.addWidget(self.jump_edit)
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.progress.hide()
        self._progress_view = ThrottledProgress(self.progress, parent=self)
        self.image_label = QLabel("")
        self.image_label.setWordWrap(True)

        self.table = QTableWidget(0, len(_COLUMNS))
        self.table.setHorizontalHeaderLabels(list(_COLUMNS))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.currentCellChanged.connect(self._cell_changed)
        verdicts = QHBoxLayout()
        for text, verdict in (("Hit (H)", "hit"), ("Miss (M)", "miss"),
                              ("Unsure (U)", "unsure"), ("Clear", "")):
            button = QPushButton(text)
            button.clicked.connect(lambda _=False, v=verdict: self._guard(self.set_verdict, v))
            verdicts.addWidget(button)
        self.comment_edit = QLineEdit()
        self.comment_edit.setPlaceholderText("comment on the selected row")
        self.comment_edit.textEdited.connect(lambda _: self._comment_timer.start())
        self.comment_edit.editingFinished.connect(lambda: self._commit_comment())

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.summary)
        layout.addWidget(self.image_list, 2)
        layout.addLayout(nav)
        layout.addWidget(self.progress)
        layout.addWidget(self.image_label)
        layout.addWidget(self.table, 2)
        layout.addLayout(verdicts)
        layout.addWidget(self.comment_edit)

    def _bind_keys(self) -> None:
        """The same keys on the napari canvas (viewer keymap) and in this dock (QShortcut)."""
        for key, name in _KEYS.items():
            shortcut = QShortcut(QKeySequence(key), self)
            shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            shortcut.activated.connect(lambda n=name: self._key(n))
            self.viewer.bind_key(key, lambda _viewer, n=name: self._key(n), overwrite=True)
        jump = QShortcut(QKeySequence("Ctrl+J"), self)
        jump.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        jump.activated.connect(self.jump_edit.setFocus)
        viewer = self.viewer
        self.destroyed.connect(lambda *_: _unbind(viewer))

    def _key(self, name: str) -> None:
        if name in ("hit", "miss", "unsure"):
            self._guard(self.set_verdict, name)
        else:
            getattr(self, name)()

    # -- public ------------------------------------------------------------------------
    def open_dataset(self, data: str | os.PathLike[str], work: str | os.PathLike[str] | None = None
                     ) -> None:
        """Open a VinDr-layout folder; resume the last position saved in its work folder."""
        from ..io.vindr import load_vindr

        data = Path(str(data)).expanduser()
        index = load_vindr(data)
        typed = self.work_edit.text().strip()
        if work:
            work_dir = Path(work)
        elif typed and typed != self._auto_work:
            work_dir = Path(typed).expanduser()
        else:
            work_dir = default_work_folder(data)
        store = VerdictStore(work_dir / VERDICTS_FILE)
        self._stop_workers()
        self.index, self.store, self.work = index, store, work_dir
        missing = set(index.missing)
        self.bad = {r.image_id: f"{r.path}: file not found" for r in index.images
                    if r.path in missing}
        self._loaded.clear()
        self._shown = ""
        self._halted = ""
        state = ReaderState.load(work_dir / STATE_FILE)
        self._opening = True
        self.data_edit.setText(str(data))
        self.work_edit.setText(str(work_dir))
        self._auto_work = str(work_dir)
        splits = sorted({r.split for r in index.images})
        self.split_combo.clear()
        self.split_combo.addItems(splits)
        if state is not None and state.data and Path(state.data).resolve() == data.resolve():
            self._apply_state(state)
        elif "test" in splits:
            self.split_combo.setCurrentText("test")
        self._opening = False
        self.key = self._current_key()
        self._rebuild_list(state.image_id if state is not None else "")
        self._start_check()

    def settings(self) -> MapSettings:
        """Map settings from the dock (adaptive, focused CorRELAX as in the paper's method)."""
        return MapSettings(masks=self.masks_spin.value(), stride=self.stride_spin.value(),
                           device=self.device_combo.currentText())

    @property
    def checkpoint(self) -> str | None:
        """The chosen checkpoint path (None: demo model)."""
        return self.model_edit.text().strip() or None

    @property
    def current(self) -> Any:
        """The image record shown (None when there is none)."""
        return self.records[self.position] if 0 <= self.position < len(self.records) else None

    @property
    def busy(self) -> bool:
        """True while maps are being computed or files checked."""
        return self._worker is not None or self._checker is not None

    def show_image(self, position: int) -> None:
        """Show the image at ``position`` in the list (clipped); computes maps if needed."""
        if not self.records:
            return
        position = min(max(int(position), 0), len(self.records) - 1)
        self._commit_comment()
        if position != self.image_list.currentRow():
            self.image_list.setCurrentRow(position)  # comes back through _row_picked
            return
        self.position = position
        self._save_state()
        self._draw_current()
        self._schedule()

    def next_image(self) -> None:
        """Show the next image of the list."""
        self.show_image(self.position + 1)

    def previous_image(self) -> None:
        """Show the previous image of the list."""
        self.show_image(self.position - 1)

    def jump(self, text: str) -> None:
        """Go to a list number (1-based) or the first image whose id starts with ``text``."""
        text = text.strip()
        if text.isdigit():
            self.show_image(int(text) - 1)
            return
        for k, record in enumerate(self.records):
            if record.image_id.startswith(text) or record.study_id.startswith(text):
                self.show_image(k)
                return
        show_info(f"no image {text!r} in this list")

    def visible_rows(self) -> list[Any]:
        """Verdict rows of the current image (table order)."""
        record = self.current
        if record is None or self.store is None:
            return []
        return self.store.for_image(record.image_id, self.key)

    def select_row(self, row: int) -> None:
        """Select a verdict row of the table."""
        self.table.setCurrentCell(row, 0)

    def set_verdict(self, verdict: str) -> None:
        """Set the reader's verdict on the selected row, saved at once; select the next open row."""
        self._commit_comment()
        rows = self.visible_rows()
        k = self.table.currentRow()
        if self.store is None or not 0 <= k < len(rows):
            raise CorrelaxError("select a finding row first (maps must be ready)")
        self.store.set_reader(rows[k].key, verdict)
        self._fill_table()
        self._refresh_item(self.position)
        rows = self.visible_rows()
        later = [j for j in range(k + 1, len(rows)) if not rows[j].reader_verdict]
        self.select_row(later[0] if later else k)

    def set_comment(self, text: str) -> None:
        """Set the comment of the selected row (saved at once)."""
        self.comment_edit.setText(text)
        self._commit_comment()

    # -- list --------------------------------------------------------------------------
    def _filtered(self) -> list[Any]:
        if self.index is None:
            return []
        records = self.index.split(self.split_combo.currentText()) \
            if self.split_combo.currentText() else []
        choice = self.filter_combo.currentText()
        if choice == WITH_FINDINGS:
            return [r for r in records if lesion_labels(r.labels)]
        if choice != ALL:
            return [r for r in records if choice in r.labels]
        return records

    def _rebuild_list(self, keep: str = "") -> None:
        keep = keep or (self.current.image_id if self.current is not None else "")
        self.records = self._filtered()
        self.image_list.blockSignals(True)
        self.image_list.clear()
        for k in range(len(self.records)):
            self.image_list.addItem(QListWidgetItem())
            self._refresh_item(k)
        self.image_list.blockSignals(False)
        ids = [r.image_id for r in self.records]
        if keep in ids:
            start = ids.index(keep)
        else:
            start = next((k for k, r in enumerate(self.records) if self._status(r) in
                          ("none", "open", "partial") and lesion_labels(r.labels)), 0)
        self._update_summary()
        self.position = -1
        if self.records:
            self.show_image(start)
        else:
            self._clear_view()

    def _status(self, record: Any) -> str:
        if record.image_id in self.bad:
            return "bad"
        if not lesion_labels(record.labels):
            return "normal"
        return self.store.status(record.image_id, self.key) if self.store else "none"

    def _refresh_item(self, k: int) -> None:
        if not 0 <= k < len(self.records):
            return
        record = self.records[k]
        status = self._status(record)
        symbol = {"bad": "✗", "normal": "·"}.get(status) or _SYMBOL[status]
        labels = ", ".join(lesion_labels(record.labels)) or "no finding"
        item = self.image_list.item(k)
        item.setText(f"{symbol} {k + 1}. {record.image_id[:12]} {record.laterality}"
                     f" {record.view} · {labels}")
        item.setToolTip(self.bad.get(record.image_id, f"study {record.study_id}\n"
                                                      f"image {record.image_id}"))

    def _update_summary(self) -> None:
        if self.index is None:
            return
        done = sum(1 for r in self.records if self._status(r) == "done")
        todo = sum(1 for r in self.records if self._status(r) in ("none", "open", "partial"))
        bad = sum(1 for r in self.records if r.image_id in self.bad)
        checking = " (checking files…)" if self._checker is not None else ""
        self.summary.setText(f"{len(self.records)} images: {done} reviewed, {todo} to review, "
                             f"{bad} missing or unreadable{checking}.")

    # -- computing ---------------------------------------------------------------------
    def _schedule(self) -> None:
        """Start the next job: the current image if its maps are missing, else the next one."""
        if self._halted:
            return
        wanted = [r for r in (self.current, self._neighbour(1)) if r is not None
                  and r.image_id not in self._loaded and r.image_id not in self.bad]
        if self._worker is not None:
            if self._worker_id not in {r.image_id for r in wanted}:
                self._worker.quit()
            return
        if not wanted:
            return
        from napari.qt.threading import create_worker

        record = wanted[0]
        worker = create_worker(_load, record, self.checkpoint, self.settings(),
                               self.work / "cache", _start_thread=False)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_loaded)
        worker.finished.connect(self._on_finished)
        self._worker, self._worker_id = worker, record.image_id
        worker.start()

    def _neighbour(self, step: int) -> Any:
        k = self.position + step
        return self.records[k] if 0 <= k < len(self.records) else None

    def _on_progress(self, event: Any) -> None:
        if self.current is None or self._worker_id != self.current.image_id:
            return
        self.progress.show()
        self._progress_view.update(event)  # shown at most twice a second (see _progress)

    def _on_loaded(self, outcome: Any) -> None:
        if isinstance(outcome, _Failed):
            image_id = outcome.image_id
            if not outcome.image:  # the model or the machine: stop until settings change
                self._halted = outcome.message
                self.image_label.setText(f"✗ {outcome.message}")
                show_error(outcome.message)
                return
            self.bad[image_id] = outcome.message
        else:
            image_id = outcome.record.image_id
            if self.key and outcome.key != self.key:
                return  # made with settings that have changed since
            self._loaded[image_id] = outcome
            self.key = outcome.key
        keep = {r.image_id for r in (self.current, self._neighbour(1), self._neighbour(-1)) if r}
        for old in [i for i in self._loaded if i not in keep]:
            del self._loaded[old]
        ids = [r.image_id for r in self.records]
        if image_id in ids:
            self._refresh_item(ids.index(image_id))
        if self.current is not None and self.current.image_id == image_id:
            if isinstance(outcome, _Failed):
                show_error(outcome.message)
            self._draw_current()

    def _on_finished(self) -> None:
        self._worker, self._worker_id = None, ""
        self._progress_view.stop()
        self.progress.hide()
        if self.index is not None:
            self._schedule()

    def _start_check(self) -> None:
        from napari.qt.threading import create_worker

        records = [r for r in self.index.images if r.image_id not in self.bad]
        worker = create_worker(_check, records, _start_thread=False)
        worker.yielded.connect(lambda found, w=worker: self._on_bad_file(found, w))
        worker.finished.connect(lambda w=worker: self._on_check_done(w))
        self._checker = worker
        self._update_summary()
        worker.start()

    def _on_bad_file(self, found: tuple[str, str], worker: Any) -> None:
        if worker is not self._checker:
            return
        self.bad[found[0]] = found[1]
        for k, record in enumerate(self.records):
            if record.image_id == found[0]:
                self._refresh_item(k)
                if k == self.position:
                    self._draw_current()

    def _on_check_done(self, worker: Any) -> None:
        if worker is self._checker:
            self._checker = None
            self._update_summary()

    def _stop_workers(self) -> None:
        for worker in (self._worker, self._checker):
            if worker is not None:
                worker.quit()

    # -- drawing -----------------------------------------------------------------------
    def _draw_current(self) -> None:
        record = self.current
        if record is None:
            return
        self.table.setRowCount(0)
        labels = ", ".join(lesion_labels(record.labels)) or "No Finding"
        head = f"<b>{self.position + 1} / {len(self.records)}</b> · study {record.study_id} · " \
               f"image {record.image_id} · {record.laterality} {record.view} · {labels}"
        if record.image_id in self.bad:
            self.image_label.setText(f"{head}<br>✗ {self.bad[record.image_id]}")
            return
        loaded = self._loaded.get(record.image_id)
        if loaded is None:
            self.image_label.setText(f"{head}<br>computing maps…")
            return
        self.image_label.setText(head)
        verdicts = pointing_verdicts(loaded.result, record.boxes, record.image_id)
        if self.store is not None:
            self.store.add_automatic(verdicts, study_id=record.study_id, split=record.split,
                                     model=loaded.model_name, settings=loaded.key)
        if self._shown != record.image_id:
            self._draw_layers(loaded, verdicts)
            self._shown = record.image_id
        self._fill_table()
        rows = self.visible_rows()
        first = next((k for k, r in enumerate(rows) if not r.reader_verdict), 0)
        if rows:
            self.select_row(first)
        self._refresh_item(self.position)
        self._update_summary()

    def _draw_layers(self, loaded: Any, verdicts: list[Any]) -> None:
        """Show the image, its maps, boxes and maxima, updating same-named layers in place.

        The prediction and correlation maps of every lesion label are shown (the result
        has them all; product and masks-used maps are left to the analysis dock) plus the
        distance map, and the layers are kept between images: adding and removing napari
        layers costs far more than the maps. A hidden map layer gets its new data only
        when it is made visible. With "follow findings" on, the map kinds the reader had
        visible for the previous image's findings are shown for this image's findings and
        the other labels' maps are hidden.
        """
        record, result = loaded.record, loaded.result
        scale = tuple(loaded.spacing_mm or (1.0, 1.0))
        old = self.viewer.layers[PREFIX] if PREFIX in self.viewer.layers else None
        reset = old is None or old.data.shape != loaded.pixels.shape
        follow = self.follow_check.isChecked()
        kinds = self._visible_kinds()
        findings = lesion_labels(record.labels)
        image = (loaded.pixels, {"name": PREFIX, "scale": scale, "translate": (0.0, 0.0),
                                 "colormap": "gray", "contrast_limits": (0.0, 1.0),
                                 "metadata": {"path": str(record.path),
                                              "image_id": record.image_id,
                                              "spacing_mm": loaded.spacing_mm}}, "image")
        _layers.add_or_update(self.viewer, [image])
        maps = [m for m in _layers.result_layers(result, PREFIX, lesion_labels(result.labels),
                                                 image_scale=scale)
                if m[1]["metadata"]["correlax"]["map"] in _SHOWN]
        for data, kwargs, kind in maps:
            name = kwargs["name"]
            info = kwargs["metadata"]["correlax"]
            if follow:
                kwargs["visible"] = (info["map"] == "distance" and "distance" in kinds) or (
                    info["label"] in findings and info["map"] in kinds)
            layer = self.viewer.layers[name] if name in self.viewer.layers else None
            show = kwargs["visible"] if follow or layer is None else layer.visible
            if layer is not None and not show:
                self._pending[name] = (data, kwargs, kind)
                layer.visible = False
                continue
            self._pending.pop(name, None)
            (made,) = _layers.add_or_update(self.viewer, [(data, kwargs, kind)])
            made.visible = show
            if layer is None:
                made.events.visible.connect(self._apply_pending)
        _put_boxes(self.viewer, _layers.boxes_layer(record.boxes, PREFIX, image_scale=scale,
                                                    image_shape=loaded.pixels.shape))
        _put_points(self.viewer, _maxima_layer(verdicts, scale))
        self._findings = findings
        if self.viewer.layers.selection.active is not self.viewer.layers[PREFIX]:
            self.viewer.layers.selection.active = self.viewer.layers[PREFIX]
        if reset:
            self.viewer.reset_view()

    def _apply_pending(self, event: Any) -> None:
        """A hidden map layer was made visible: give it the current image's data."""
        layer = event.source
        pending = self._pending.pop(getattr(layer, "name", ""), None)
        if pending is not None and layer.visible:
            _layers.add_or_update(self.viewer, [pending])

    def _visible_kinds(self) -> set[str]:
        """Map kinds visible for the previous image's findings (first image: correlation)."""
        names = {kind: [_layers.layer_name(PREFIX, kind, lab) for lab in self._findings]
                 for kind in _PER_LABEL}
        names["distance"] = [_layers.layer_name(PREFIX, "distance")]
        layers = self.viewer.layers
        if any(n in layers for group in names.values() for n in group):
            self._kinds = {kind for kind, group in names.items()
                           if any(n in layers and layers[n].visible for n in group)}
        return self._kinds

    def _fill_table(self) -> None:
        rows = self.visible_rows()
        current = self.table.currentRow()
        self.table.blockSignals(True)
        self.table.setRowCount(len(rows))
        for k, row in enumerate(rows):
            cells = (row.label, row.map, f"{row.max_value:.3f}", row.auto_verdict,
                     row.reader_verdict, row.comment)
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if c == 3:
                    item.setForeground(Qt.GlobalColor.green if text == "hit"
                                       else Qt.GlobalColor.red)
                self.table.setItem(k, c, item)
        self.table.resizeColumnsToContents()
        if 0 <= current < len(rows):
            self.table.setCurrentCell(current, 0)
        self.table.blockSignals(False)

    def _clear_view(self) -> None:
        self.table.setRowCount(0)
        self.image_label.setText("No image in this list.")

    # -- form glue ---------------------------------------------------------------------
    def _current_key(self) -> str:
        try:
            return settings_key(self.checkpoint, self.settings())
        except CorrelaxError as exc:
            show_error(str(exc))
            return ""

    def _apply_state(self, state: ReaderState) -> None:
        if state.split:
            self.split_combo.setCurrentText(state.split)
        if state.filter:
            self.filter_combo.setCurrentText(state.filter)
        self.model_edit.setText(state.model)
        settings = state.settings or {}
        self.stride_spin.setValue(int(settings.get("stride", self.stride_spin.value())))
        self.masks_spin.setValue(int(settings.get("masks", self.masks_spin.value())))

    def _save_state(self) -> None:
        if self.work is None or self.index is None or self.current is None:
            return
        state = ReaderState(data=str(self.index.root), split=self.split_combo.currentText(),
                            filter=self.filter_combo.currentText(), model=self.model_edit.text(),
                            settings=self.settings().as_dict(), image_id=self.current.image_id)
        try:
            state.save(self.work / STATE_FILE)
        except OSError as exc:
            log.warning("could not save the reader state: %s", exc)

    def _list_changed(self, _text: str = "") -> None:
        if not self._opening and self.index is not None:
            self._rebuild_list()

    def _settings_changed(self) -> None:
        if self._opening or self.index is None:
            return
        key = self._current_key()
        if key and (key != self.key or self._halted):
            self.key = key
            self._halted = ""
            self._loaded.clear()
            self._shown = ""
            self._rebuild_list()

    def _row_picked(self, row: int) -> None:
        if row >= 0 and row != self.position:
            self.show_image(row)

    def _cell_changed(self, row: int, _column: int = 0, previous: int = -1, *_: Any) -> None:
        if self._comment_timer.isActive():  # typed for the row being left
            self._commit_comment(previous)
        rows = self.visible_rows()
        self.comment_edit.setText(rows[row].comment if 0 <= row < len(rows) else "")

    def _commit_comment(self, row: int | None = None) -> None:
        """Save the comment box into ``row`` (default: the selected row) if it changed."""
        self._comment_timer.stop()
        rows = self.visible_rows()
        k = self.table.currentRow() if row is None else row
        if self.store is None or not 0 <= k < len(rows):
            return
        text = self.comment_edit.text()
        if text != rows[k].comment:
            self._guard(self.store.set_reader, rows[k].key, None, text)
            self._fill_table()

    def _browse_data(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "VinDr-Mammo folder")
        if path:
            self._guard(self.open_dataset, path)

    def _browse_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Classifier checkpoint", "",
                                              "Checkpoints (*.safetensors)")
        if path:
            self.model_edit.setText(path)
            self._settings_changed()

    def _guard(self, action: Any, *args: Any) -> Any:
        try:
            return action(*args)
        except (CorrelaxError, OSError) as exc:
            show_error(str(exc))
            return None


def _maxima_layer(verdicts: list[Any], scale: tuple[float, float]) -> Any:
    """Points at each (label, map) maximum, ringed by the automatic verdict of its map.

    One point per (label, map): the two prediction rules share a location, and the ring
    follows the map's first rule (prediction ≥ 25 %, correlation > 0). Discs are prediction
    maxima, diamonds correlation maxima, filled with the label's box colour. Coordinates
    are image pixels (pixel-centre convention), shown with the image layer's scale.
    """
    first: dict[tuple[str, str], Any] = {}
    order = [r.name for r in RULES]
    for v in sorted(verdicts, key=lambda v: order.index(v.rule) if v.rule in order else 99):
        first.setdefault((v.label, v.map), v)
    chosen = list(first.values())
    data = np.array([[v.row, v.col] for v in chosen], dtype=float).reshape(-1, 2)
    features = {"label": [v.label for v in chosen], "map": [v.map for v in chosen],
                "value": [round(v.value, 3) for v in chosen],
                "verdict": ["hit" if v.hit else "miss" for v in chosen]}
    kwargs = {
        "name": f"{PREFIX}{_layers.SEP}maxima",
        "scale": tuple(scale),
        "features": features,
        "symbol": ["disc" if v.map == "prediction" else "diamond" for v in chosen] or "disc",
        "face_color": [_layers.label_colour(v.label) for v in chosen] or "white",
        "border_color": ["#30e030" if v.hit else "#ff3030" for v in chosen] or "white",
        "border_width": 0.25,
        "size": 24,
        "text": {"string": "{map} {value:.2f}", "anchor": "upper_left", "color": "white",
                 "size": 9},
        "metadata": {"correlax": {"image": PREFIX, "map": "maxima"}},
    }
    return (data, kwargs, "points")


def _put_boxes(viewer: Any, layer_data: Any) -> None:
    """Create the ground-truth Shapes layer, or replace its rectangles in place."""
    data, kwargs, _ = layer_data
    name = kwargs["name"]
    if name not in viewer.layers:
        viewer.add_shapes(data, **kwargs)
        return
    layer = viewer.layers[name]
    layer.scale = kwargs["scale"]
    layer.data = []
    if data:
        layer.add(data, shape_type="rectangle", edge_color=kwargs["edge_color"],
                  edge_width=kwargs["edge_width"], face_color="transparent")
    layer.features = kwargs["features"]


def _put_points(viewer: Any, layer_data: Any) -> None:
    """Create the maxima Points layer, or replace its points in place."""
    data, kwargs, _ = layer_data
    name = kwargs["name"]
    if name not in viewer.layers:
        viewer.add_points(data, **kwargs)
        return
    layer = viewer.layers[name]
    layer.scale = kwargs["scale"]
    layer.data = data
    layer.features = kwargs["features"]
    if len(data):
        layer.face_color = kwargs["face_color"]
        layer.border_color = kwargs["border_color"]
        layer.symbol = kwargs["symbol"]


def _with_button(edit: QLineEdit, slot: Any) -> QHBoxLayout:
    row = QHBoxLayout()
    row.addWidget(edit)
    button = QPushButton("…")
    button.clicked.connect(slot)
    row.addWidget(button)
    return row


def _spin(lo: int, hi: int, value: int, tip: str) -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(lo, hi)
    spin.setValue(value)
    spin.setToolTip(tip)
    return spin


def _unbind(viewer: Any) -> None:
    """Remove the reader's canvas keys (the widget is gone)."""
    for key in _KEYS:
        try:
            viewer.bind_key(key, None, overwrite=True)
        except Exception:
            log.debug("could not unbind %s", key)
