"""The settings form of the test-set reader: data, work folder, split, filter, model, map
settings and the follow option, bound to the dock's handlers."""

from __future__ import annotations

from typing import Any

from napari.utils.notifications import show_info
from qtpy.QtWidgets import QCheckBox, QComboBox, QFileDialog, QFormLayout, QLineEdit

from ..evaluate.review import FILTERS
from ._forms import SettingsForm, ask_path, path_row

__all__ = ["build_form", "pick_report"]


def build_form(dock: Any) -> QFormLayout:
    """Create the reader's form controls as attributes of ``dock`` and return the layout."""
    form = QFormLayout()
    dock.data_edit, row = path_row("folder with finding_annotations.csv", lambda: browse_data(dock),
                                   "A data set in the VinDr-Mammo layout (CSV + images/)")
    dock.data_edit.returnPressed.connect(lambda: dock._guard(dock.open_dataset,
                                                             dock.data_edit.text()))
    form.addRow("Data", row)
    dock.work_edit = QLineEdit()
    dock.work_edit.setPlaceholderText("<data>/correlax")
    dock.work_edit.setToolTip("Where maps are cached and verdicts.csv is written")
    form.addRow("Work folder", dock.work_edit)
    dock.split_combo = QComboBox()
    dock.split_combo.setToolTip("Which split of the data set to review (test by default)")
    dock.split_combo.currentTextChanged.connect(dock._list_changed)
    form.addRow("Split", dock.split_combo)
    dock.filter_combo = QComboBox()
    dock.filter_combo.setToolTip("All images, images with findings, or one label's images")
    dock.filter_combo.addItems(list(FILTERS))
    dock.filter_combo.currentTextChanged.connect(dock._list_changed)
    form.addRow("Show", dock.filter_combo)
    dock.model_edit, row = path_row("demo model", lambda: browse_model(dock),
                                    "Classifier checkpoint (.safetensors); empty: demo model")
    dock.model_edit.editingFinished.connect(dock._settings_changed)
    form.addRow("Model", row)
    dock.form = SettingsForm(form, ("method", "mode", "device", "stride", "masks"))
    dock.form.method.activated.connect(lambda _: dock._settings_changed())
    dock.form.mode.activated.connect(lambda _: dock._settings_changed())
    dock.device_combo = dock.form.device
    dock.stride_spin = dock.form.stride
    dock.masks_spin = dock.form.masks
    for spin in (dock.stride_spin, dock.masks_spin):
        spin.editingFinished.connect(dock._settings_changed)
    dock.device_combo.currentTextChanged.connect(lambda _: dock._settings_changed())
    dock.follow_check = QCheckBox("show the maps of this image's findings only")
    dock.follow_check.setChecked(True)
    dock.follow_check.setToolTip("The maps you judge (P / C) of each image's findings are "
                                 "always shown; checked, every other map is hidden, "
                                 "unchecked, the others keep the visibility you gave them")
    form.addRow("Follow", dock.follow_check)
    return form


def pick_report(dock: Any) -> None:
    """Ask where to save the reader's report and write it (CSV + Markdown)."""
    path = ask_path(dock, "Save the reader's report", "Report (*.csv *.md)", save=True)
    written = dock._guard(dock.review.export_report, path) if path else None
    if written:
        show_info("saved " + ", ".join(p.name for p in written))


def browse_data(dock: Any) -> None:
    """Pick a VinDr-layout folder and open it."""
    path = QFileDialog.getExistingDirectory(dock, "VinDr-Mammo folder")
    if path:
        dock._guard(dock.open_dataset, path)


def browse_model(dock: Any) -> None:
    """Pick a classifier checkpoint."""
    path = ask_path(dock, "Classifier checkpoint", "Checkpoints (*.safetensors)")
    if path:
        dock.model_edit.setText(path)
        dock._settings_changed()
