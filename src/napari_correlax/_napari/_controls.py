"""Small pieces the docks share besides :mod:`._forms`: a path box with a browse button,
and keyboard shortcuts that work in a dock and on the napari canvas alike."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtGui import QKeySequence
from qtpy.QtWidgets import QHBoxLayout, QLineEdit, QPushButton, QShortcut, QWidget

log = logging.getLogger(__name__)


def path_row(placeholder: str, browse: Callable[[], Any], tip: str = ""
             ) -> tuple[QLineEdit, QWidget]:
    """A line edit for a path with a "…" button that calls ``browse``; (edit, row)."""
    edit = QLineEdit()
    edit.setPlaceholderText(placeholder)
    edit.setToolTip(tip)
    button = QPushButton("…")
    button.setMaximumWidth(32)
    button.clicked.connect(lambda: browse())
    row = QWidget()
    box = QHBoxLayout(row)
    box.setContentsMargins(0, 0, 0, 0)
    box.addWidget(edit)
    box.addWidget(button)
    return edit, row


def dock_key(dock: QWidget, key: str, action: Callable[[], Any]) -> QShortcut:
    """Run ``action`` on ``key`` while the dock or one of its children has the focus."""
    shortcut = QShortcut(QKeySequence(key), dock)
    shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
    shortcut.activated.connect(action)
    return shortcut


def bind_keys(dock: QWidget, viewer: Any, actions: dict[str, Callable[[], Any]]) -> None:
    """The same keys in the dock (:func:`dock_key`) and on the viewer's canvas (its
    keymap, replacing earlier bindings); the canvas keys go when the dock is destroyed."""
    for key, action in actions.items():
        dock_key(dock, key, action)
        viewer.bind_key(key, lambda _viewer, a=action: a(), overwrite=True)
    keys = list(actions)
    dock.destroyed.connect(lambda *_: unbind_keys(viewer, keys))


def unbind_keys(viewer: Any, keys: list[str]) -> None:
    """Remove canvas keys (a viewer already closed is fine)."""
    for key in keys:
        try:
            viewer.bind_key(key, None, overwrite=True)
        except Exception:
            log.debug("could not unbind %s", key)
