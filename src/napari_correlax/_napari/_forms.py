"""Form pieces the docks share: spin boxes, the device list, tooltips, a path box with a
browse button, keyboard shortcuts, and the controls
bound to :class:`~napari_correlax.maps.settings.MapSettings` (both ways) or to a training
settings class (:class:`TrainingForm`).

The binding is the only place where widget values become settings: a dock builds a
:class:`SettingsForm` for the fields it offers, :meth:`SettingsForm.settings` reads them
into a copy of a base :class:`MapSettings` (the fields it does not offer keep the base's
values) and :meth:`SettingsForm.show` writes settings back into the controls.
:class:`TrainingForm` does the same for the frozen training settings
(:class:`~napari_correlax.train.settings.TrainConfig`,
:class:`~napari_correlax.gmic.config.GMICTrainConfig`): its controls start at the
fields' defaults and their tooltips are the fields' help texts.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtGui import QKeySequence
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QShortcut,
    QSpinBox,
    QWidget,
)

from ..gmic.cams import TRAIN_CAMS
from ..labels import HEADLINE_LABELS, lesion_labels
from ..maps.engines import ENGINES
from ..maps.methods import METHODS
from ..maps.settings import MapSettings
from ..train.settings import default_of, help_of

__all__ = [
    "TOOLTIPS",
    "ImageLayerCombo",
    "LabelList",
    "SettingsForm",
    "TrainingForm",
    "ask_path",
    "bind_keys",
    "button_row",
    "devices",
    "dock_key",
    "path_row",
    "spin",
]

log = logging.getLogger(__name__)

#: Help texts of the controls, shared by the docks.
TOOLTIPS: dict[str, str] = {
    "method": "Which maps to compute: prediction maps only, CorRELAX (prediction, "
              "correlation, product, distance, relevance), or a method of the Grad-CAM "
              "family (a saliency map per label)",
    "cam": "GMIC: the map shown, GMIC's own saliency (cam) or a gradient CAM of its global "
           "network (the second paper's test-time CAM)",
    "retrieval_cam": "GMIC: the map that picks the K patches the local network looks at "
                     "(and so the local and fusion outputs); trained: the CAM the model was "
                     "trained with",
    "laterality": "GMIC: which breast (GMIC mirrors right breasts); auto reads the file's "
                  "laterality, else finds the chest wall side",
    "mode": "Grad-CAM family: per 256 px window at full resolution, stitched (windowed), "
            "or once on the whole breast resized to 512 px: global (512 px, out of the "
            "model's training scale), as in the literature",
    "device": "Where the model runs: auto picks a GPU when there is one",
    "engine": "What runs the model on a CPU for the prediction pass and CorRELAX's masked "
              "passes: PyTorch, or ONNX Runtime / OpenVINO when installed (the graph is "
              "exported once per checkpoint; maps agree to 1e-3). The CAMs always use "
              "PyTorch (they need its gradients); without the runtime PyTorch runs",
    "batch_size": "Windows per forward pass of the prediction pass (larger: faster on GPUs, "
                  "more memory)",
    "stride": "Window step in pixels (docs/method.md §6: 48). Larger is faster and coarser",
    "masks": "Masks per window (the most, when adaptive); the paper uses 2560",
    "adaptive": "Stop masking a window once its correlations are stable (never below the "
                "minimum of 128 masks)",
    "focus": "Full CorRELAX only around windows where a lesion label reaches the focus "
             "threshold; the other tissue windows get the minimum number of masks",
    "focus_share": "Share of tissue windows, those with the highest lesion probability, that "
                   "get full CorRELAX in focus mode (with their neighbours)",
    "seed": "Seed of the masks: the same seed gives the same maps",
    "min_masks": "Fewest masks per window (128 balanced masks: as stable as the 256 "
                 "i.i.d. masks of the paper's Fig. 7)",
}


def spin(lo: int, hi: int, value: int, tip: str, step: int = 1) -> QSpinBox:
    """An integer spin box with range, value, step and tooltip."""
    box = QSpinBox()
    box.setRange(lo, hi)
    box.setValue(value)
    box.setSingleStep(step)
    box.setToolTip(tip)
    return box


def devices() -> list[str]:
    """Device choices; filtered by what torch sees only when torch is already loaded."""
    torch = sys.modules.get("torch")
    if torch is None:
        return ["auto", "cpu", "cuda", "mps"]
    out = ["auto", "cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{k}" if k else "cuda" for k in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


#: Method options (:attr:`MapSettings.options`) with a control: name -> choices.
OPTION_CHOICES: dict[str, tuple[str, ...]] = {
    "mode": ("windowed", "global"),
    "cam": TRAIN_CAMS,
    "retrieval_cam": ("trained", *TRAIN_CAMS),
    "laterality": ("auto", "L", "R"),
}

#: Choices that leave an option to its default (the file's laterality, the model's own
#: training CAM).
_UNSET = ("auto", "trained")


class SettingsForm:
    """Controls for some :class:`MapSettings` fields, added to a ``QFormLayout``.

    ``fields`` picks and orders them among ``method``, ``device``, ``engine``, ``batch_size``,
    ``stride``, ``masks``, ``adaptive``, ``focus``, ``focus_share``, ``seed``,
    ``min_masks`` and the method options of :data:`OPTION_CHOICES` (``mode``; set only for
    methods that read it). Controls are attributes named ``<field>`` (``form.stride``).
    """

    def __init__(self, layout: QFormLayout, fields: Sequence[str],
                 initial: MapSettings | None = None) -> None:
        self.fields = list(fields)
        self.widgets: dict[str, Any] = {}
        for name in self.fields:
            widget, label = self._make(name)
            widget.setToolTip(TOOLTIPS.get(name, ""))
            self.widgets[name] = widget
            layout.addRow(label, widget)
        self.show(initial or MapSettings())

    def on_change(self, slot: Callable[[], Any]) -> None:
        """Call ``slot`` whenever any control's value changes."""
        for widget in self.widgets.values():
            if isinstance(widget, QComboBox):
                widget.currentIndexChanged.connect(lambda *_: slot())
            elif isinstance(widget, QCheckBox):
                widget.toggled.connect(lambda *_: slot())
            else:
                widget.valueChanged.connect(lambda *_: slot())

    def __getattr__(self, name: str) -> Any:
        widgets = self.__dict__.get("widgets", {})
        if name in widgets:
            return widgets[name]
        raise AttributeError(name)

    @staticmethod
    def _make(name: str) -> tuple[Any, str]:
        if name == "method":
            box = QComboBox()
            for method in METHODS.values():
                box.addItem(method.title, method.name)
            return box, "Maps"
        if name == "device":
            box = QComboBox()
            box.addItems(devices())
            return box, "Device"
        if name == "engine":
            box = QComboBox()
            box.addItems(list(ENGINES))
            return box, "Engine"
        if name in OPTION_CHOICES:
            box = QComboBox()
            box.addItems(list(OPTION_CHOICES[name]))
            return box, {"retrieval_cam": "Patches by"}.get(
                name, name.replace("_", " ").capitalize())
        if name == "focus_share":
            dbl = QDoubleSpinBox()
            dbl.setRange(0.0, 1.0)
            dbl.setSingleStep(0.05)
            dbl.setDecimals(2)
            return dbl, "Focus share"
        if name in ("adaptive", "focus"):
            text = {"adaptive": "adaptive (stop when stable)", "focus": "focus"}[name]
            return QCheckBox(text), name.capitalize()
        ranges = {"batch_size": (1, 4096, 1, "Batch size"), "stride": (8, 4096, 8, "Stride (px)"),
                  "masks": (2, 100000, 128, "Masks"), "seed": (0, 2**31 - 1, 1, "Seed"),
                  "min_masks": (2, 100000, 64, "Minimum masks")}
        if name not in ranges:
            raise ValueError(f"no control for settings field {name!r}")
        lo, hi, step, label = ranges[name]
        return spin(lo, hi, lo, "", step), label

    def settings(self, base: MapSettings | None = None) -> MapSettings:
        """``base`` (default :class:`MapSettings()`) with the controls' values."""
        values: dict[str, Any] = {}
        options: dict[str, Any] = {}
        for name, widget in self.widgets.items():
            if name in OPTION_CHOICES:
                if widget.currentText() not in _UNSET:
                    options[name] = widget.currentText()
            elif isinstance(widget, QComboBox):
                data = widget.currentData()
                values[name] = data if data is not None else widget.currentText()
            elif isinstance(widget, QCheckBox):
                values[name] = widget.isChecked()
            else:
                values[name] = widget.value()
        base = base or MapSettings()
        accepted = METHODS[values.get("method", base.method)].options \
            if values.get("method", base.method) in METHODS else frozenset()
        merged = {**dict(base.options), **{k: v for k, v in options.items() if k in accepted}}
        return base.with_(**values, options={k: v for k, v in merged.items()
                                             if k in accepted or k not in OPTION_CHOICES})

    def show(self, settings: MapSettings) -> None:
        """Put ``settings``' values into the controls."""
        for name, widget in self.widgets.items():
            if name in OPTION_CHOICES:
                widget.setCurrentText(str(settings.option(name, OPTION_CHOICES[name][0])))
                continue
            value = getattr(settings, name)
            if isinstance(widget, QComboBox):
                index = widget.findData(value)
                if index < 0:
                    index = widget.findText(str(value))
                if index < 0:
                    widget.addItem(str(value), value)
                    index = widget.count() - 1
                widget.setCurrentIndex(index)
            elif isinstance(widget, QCheckBox):
                widget.setChecked(bool(value))
            else:
                widget.setValue(value)


class TrainingForm:
    """Controls for some fields of a frozen training settings class, added to a
    ``QFormLayout`` and bound both ways (:meth:`settings`, :meth:`show`).

    ``fields``: ``(field name, row label)`` pairs in order. A field becomes a combo box
    when ``choices`` gives it ``(shown text, value)`` pairs or its metadata has choices,
    a device list for ``device``, a path box with a browse button for the ``paths``
    (empty text: None), otherwise a spin box. Controls are in :attr:`widgets`; a path
    field's line edit is the control, its row in :attr:`rows`.
    """

    def __init__(self, layout: QFormLayout, cls: type, fields: Sequence[tuple[str, str]], *,
                 choices: dict[str, Sequence[tuple[str, Any]]] | None = None,
                 paths: dict[str, str] | None = None) -> None:
        import dataclasses

        self.cls = cls
        self.fields = [name for name, _ in fields]
        self.widgets: dict[str, Any] = {}
        self.rows: dict[str, QWidget] = {}
        known = {f.name: f for f in dataclasses.fields(cls)}
        for name, label in fields:
            f = known[name]
            row = self._make(name, f, (choices or {}).get(name), (paths or {}).get(name))
            layout.addRow(label, row)
        self.show(cls(data="", out=""))

    def _make(self, name: str, f: Any, choices: Sequence[tuple[str, Any]] | None,
              path_title: str | None) -> QWidget:
        tip = help_of(f)
        if path_title is not None:
            edit, row = path_row("", lambda: self._browse(name, path_title), tip)
            self.widgets[name], self.rows[name] = edit, row
            return row
        if name == "device" or choices or f.metadata.get("choices"):
            box = QComboBox()
            pairs = choices or [(str(c), c) for c in (devices() if name == "device"
                                                       else f.metadata["choices"])]
            for text, value in pairs:
                box.addItem(text, value)
            widget: QWidget = box
        else:
            widget = spin(1, 100_000, int(default_of(f)), "")
        widget.setToolTip(tip)
        self.widgets[name] = widget
        return widget

    def _browse(self, name: str, title: str) -> None:
        path = ask_path(self.widgets[name], title, "Weights (*.safetensors *.pth *.pt *.p);;"
                        "All files (*)")
        if path:
            self.widgets[name].setText(path)

    def settings(self, **given: Any) -> Any:
        """The settings class with the controls' values and ``given`` (``data``, ``out``,
        ``fresh``, ...); CorrelaxError for values the settings refuse."""
        values: dict[str, Any] = {}
        for name, widget in self.widgets.items():
            if isinstance(widget, QLineEdit):
                values[name] = widget.text().strip() or None
            elif isinstance(widget, QComboBox):
                data = widget.currentData()
                values[name] = data if data is not None else widget.currentText()
            else:
                values[name] = widget.value()
        return self.cls(**given, **values)

    def show(self, settings: Any) -> None:
        """Put ``settings``' values into the controls."""
        for name, widget in self.widgets.items():
            value = getattr(settings, name)
            if isinstance(widget, QLineEdit):
                widget.setText("" if value is None else str(value))
            elif isinstance(widget, QComboBox):
                index = widget.findData(value)
                if index < 0:
                    widget.addItem(str(value), value)
                    index = widget.count() - 1
                widget.setCurrentIndex(index)
            else:
                widget.setValue(int(value))


def path_row(placeholder: str, browse: Callable[[], Any], tip: str = ""
             ) -> tuple[QLineEdit, QWidget]:
    """A line edit for a path with a "…" button that calls ``browse``; (edit, row)."""
    edit = QLineEdit()
    edit.setPlaceholderText(placeholder)
    edit.setToolTip(tip)
    button = QPushButton("…")
    button.setToolTip("Browse…")
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


def ask_path(parent: QWidget, title: str, pattern: str, *, save: bool = False) -> str:
    """A file dialog; the chosen path, or "" when cancelled."""
    ask = QFileDialog.getSaveFileName if save else QFileDialog.getOpenFileName
    path, _ = ask(parent, title, "", pattern)
    return path


class LabelList(QListWidget):
    """A checkable list of label names."""

    def __init__(self) -> None:
        super().__init__()
        self.setMaximumHeight(150)
        self.setToolTip("Labels whose maps are shown")

    def set_labels(self, labels: Sequence[str], checked: Sequence[str] | None = None) -> None:
        """Show ``labels``; check ``checked`` (default: Mass and calcification, else the
        first lesion label). Emits no ``itemChanged``."""
        chosen = list(checked or [])
        if not chosen:
            chosen = [lab for lab in HEADLINE_LABELS if lab in labels]
            chosen = chosen or lesion_labels(labels)[:1]
        self.blockSignals(True)
        self.clear()
        for label in labels:
            item = QListWidgetItem(label)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if label in chosen
                               else Qt.CheckState.Unchecked)
            self.addItem(item)
        self.blockSignals(False)

    def checked(self) -> list[str]:
        """The checked labels, in list order."""
        items = (self.item(k) for k in range(self.count()))
        return [it.text() for it in items if it.checkState() == Qt.CheckState.Checked]


class ImageLayerCombo(QComboBox):
    """The viewer's 2-D grey image layers that are not the plugin's own maps, kept up to
    date as layers come, go and are renamed; a newly opened image is chosen."""

    def __init__(self, viewer: Any) -> None:
        super().__init__()
        self.viewer = viewer
        self.setToolTip("The mammogram (a 2-D image layer) to analyse")
        viewer.layers.events.inserted.connect(self.refresh)
        viewer.layers.events.removed.connect(self.refresh)
        self.refresh()

    def refresh(self, event: Any = None) -> None:
        """Re-list the image layers (keeps the choice; picks a newly inserted image)."""
        from napari.layers import Image

        from . import _layers

        for layer in self.viewer.layers:
            layer.events.name.connect(self.refresh)  # connecting twice is a no-op
        current = self.currentText()
        names = [layer.name for layer in self.viewer.layers
                 if isinstance(layer, Image) and not _layers.is_correlax_output(layer)
                 and not getattr(layer, "rgb", False) and layer.ndim == 2]
        self.blockSignals(True)
        self.clear()
        self.addItems(names)
        inserted = getattr(event, "value", None) if getattr(event, "type", "") == "inserted" \
            else None
        if inserted is not None and getattr(inserted, "name", None) in names:
            self.setCurrentText(inserted.name)
        elif current in names:
            self.setCurrentText(current)
        self.blockSignals(False)


def button_row(buttons: Sequence[tuple[str, Callable[[], Any], str]]) -> QHBoxLayout:
    """A row of push buttons from ``(text, slot, tooltip)`` triples."""
    row = QHBoxLayout()
    for text, slot, tip in buttons:
        button = QPushButton(text)
        button.setToolTip(tip)
        button.clicked.connect(lambda _=False, f=slot: f())
        row.addWidget(button)
    return row
