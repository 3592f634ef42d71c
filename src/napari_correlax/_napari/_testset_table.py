"""The test-set reader's verdict panel: the table of the current image's findings (one
line per finding label, judged on the map kind being viewed, with the automatic verdicts
of that kind's rules beside the reader's; marked false positives below), the hit / miss /
unsure buttons, the false-positive marker and the comment box, bound to a
:class:`~napari_correlax.evaluate.review.Review`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..evaluate.review import Review

COLUMNS = ("Finding", "Boxes", "Max", "Auto", "Reader", "Comment")
_AUTO = COLUMNS.index("Auto")
#: Milliseconds after the last key press before a typed comment is saved.
COMMENT_DELAY_MS = 300


class VerdictTable(QTableWidget):
    """Read-only table of :class:`~napari_correlax.evaluate.review.Finding` s, selected
    by whole rows; the automatic verdict is green (all hits), red (all misses) or amber."""

    def __init__(self) -> None:
        super().__init__(0, len(COLUMNS))
        self.setHorizontalHeaderLabels(list(COLUMNS))
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.verticalHeader().setVisible(False)
        self.horizontalHeader().setStretchLastSection(True)

    def fill(self, rows: Sequence[Any]) -> None:
        """Show ``rows``, keeping the selected row; emits no selection signal."""
        current = self.currentRow()
        self.blockSignals(True)
        self.setRowCount(len(rows))
        for k, row in enumerate(rows):
            name = f"✗ false positive ({row.label})" if row.is_mark else row.label
            cells = (name, "" if row.is_mark else str(row.boxes), f"{row.max_value:.3f}",
                     row.automatic(), row.reader_verdict, row.comment)
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if c == _AUTO and text:
                    words = set(text.split()) & {"hit", "miss"}
                    item.setForeground(Qt.GlobalColor.green if words == {"hit"} else
                                       Qt.GlobalColor.red if words == {"miss"} else
                                       Qt.GlobalColor.yellow)
                self.setItem(k, c, item)
        self.resizeColumnsToContents()
        if 0 <= current < len(rows):
            self.setCurrentCell(current, 0)
        self.blockSignals(False)


class VerdictPanel(QWidget):
    """Table, verdict buttons and comment box of a review's current image.

    ``guard(action, *args)`` runs a change and reports its errors (the dock's error
    notice); ``changed()`` is called after a verdict was saved (the image's status may
    have changed). A typed comment is saved :data:`COMMENT_DELAY_MS` after the last key,
    on leaving the box or the row, and before any verdict.
    """

    def __init__(self, review: Review, guard: Callable[..., Any],
                 changed: Callable[[], None], mark: Callable[[], None]) -> None:
        super().__init__()
        self.review = review
        self._guard = guard
        self._changed = changed
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(COMMENT_DELAY_MS)
        self._timer.timeout.connect(lambda: self.commit_comment())
        self.table = VerdictTable()
        self.table.currentCellChanged.connect(self._cell_changed)
        buttons = QHBoxLayout()
        for text, verdict in (("Hit (H)", "hit"), ("Miss (M)", "miss"),
                              ("Unsure (U)", "unsure"), ("Clear", "")):
            button = QPushButton(text)
            button.setToolTip(f"Your verdict for the selected finding: {verdict or 'none'}")
            button.clicked.connect(lambda _=False, v=verdict: self._guard(self.set_verdict, v))
            buttons.addWidget(button)
        self.mark_button = QPushButton("Mark FP (F)")
        self.mark_button.setCheckable(True)
        self.mark_button.setToolTip(
            "Mark a false positive: press, then click on the map near the wrong peak (the "
            "mark snaps to the highest window within 48 px). Clear on a mark removes it.")
        self.mark_button.clicked.connect(lambda _=False: mark())
        buttons.addWidget(self.mark_button)
        self.view_label = QLabel("")
        self.view_label.setToolTip("P / C switch the map kind you judge; the automatic "
                                   "verdicts of that kind's rules stand beside yours")
        self.comment_edit = QLineEdit()
        self.comment_edit.setToolTip("Saved with the verdict of the selected row")
        self.comment_edit.setPlaceholderText("comment on the selected row")
        self.comment_edit.textEdited.connect(lambda _: self._timer.start())
        self.comment_edit.editingFinished.connect(lambda: self.commit_comment())
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.view_label)
        layout.addWidget(self.table, 1)
        layout.addLayout(buttons)
        layout.addWidget(self.comment_edit)

    def show_rows(self) -> None:
        """Show the current image's rows and select the first without a reader verdict."""
        rows = self.review.rows()
        self.view_label.setText(f"Your verdicts on the <b>{self.review.viewed_kind()}</b> "
                                "maps (P / C to switch):")
        self.table.fill(rows)
        if rows:
            self.select_row(self.review.first_open_row())

    def selected_label(self) -> str:
        """The label of the selected line ("" when none)."""
        lines, k = self.review.rows(), self.table.currentRow()
        return lines[k].label if 0 <= k < len(lines) else ""

    def clear(self) -> None:
        """Show no rows."""
        self.table.setRowCount(0)

    def select_row(self, row: int) -> None:
        """Select a row of the table."""
        self.table.setCurrentCell(row, 0)

    def set_verdict(self, verdict: str) -> None:
        """The reader's verdict on the selected row, saved at once; select the next open row.

        Raises CorrelaxError when no row is selected."""
        self.commit_comment()
        following = self.review.set_verdict(self.table.currentRow(), verdict)
        self.table.fill(self.review.rows())
        self._changed()
        self.select_row(following)

    def set_comment(self, text: str) -> None:
        """Set the comment of the selected row (saved at once)."""
        self.comment_edit.setText(text)
        self.commit_comment()

    def commit_comment(self, row: int | None = None) -> None:
        """Save the comment box into ``row`` (default: the selected row) if it changed."""
        self._timer.stop()
        k = self.table.currentRow() if row is None else row
        if self._guard(self.review.set_comment, k, self.comment_edit.text()):
            self.table.fill(self.review.rows())

    def _cell_changed(self, row: int, _column: int = 0, previous: int = -1, *_: Any) -> None:
        if self._timer.isActive():  # typed for the row being left
            self.commit_comment(previous)
        rows = self.review.rows()
        self.comment_edit.setText(rows[row].comment if 0 <= row < len(rows) else "")
