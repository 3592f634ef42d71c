"""The analysis dock's controls: image and model, map settings, labels, run, progress,
the help line, the peak table and the file buttons, bound to the dock's handlers."""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
)

from ._compare_view import MethodComparison, flip, toggle_side_by_side
from ._exam_view import toggle_analysis_exam
from ._forms import ImageLayerCombo, LabelList, SettingsForm, bind_keys, button_row, path_row
from ._layers import CONTRASTS
from ._peaks import PeakTable
from ._progress import ThrottledProgress
from ._reader_notice import ReaderNotice

__all__ = ["build_dock"]

#: Progress stages as the dock names them.
STAGES = {
    "model": "loading model",
    "prepare": "preparing image",
    "window": "windows",
    "masks": "masks",
    "forward": "masked forward passes",
    "global": "whole breast",
    "coarse window": "coarse pass: windows",
    "coarse masks": "coarse pass: masks",
    "coarse map": "coarse map drawn",
    "refining window": "refining: windows",
    "refining masks": "refining: masks",
}


def build_dock(dock: Any) -> None:
    """Create the dock's controls as attributes of ``dock`` and lay them out."""
    form = QFormLayout()
    dock.image_combo = ImageLayerCombo(dock.viewer)
    form.addRow("Image", dock.image_combo)
    dock.units = QLabel()
    dock.units.setWordWrap(True)
    dock.units.setToolTip("Millimetres when the file gives the pixel spacing; otherwise "
                          "image pixels ('pixel units')")
    form.addRow("", dock.units)
    dock.image_combo.currentIndexChanged.connect(dock._image_changed)
    dock.viewer.layers.events.inserted.connect(dock._image_changed)
    dock.viewer.layers.events.removed.connect(dock._image_changed)
    dock.model_edit, row = path_row("demo model", dock._browse_checkpoint,
                                    "Classifier checkpoint (.safetensors); empty: demo model")
    dock.model_edit.editingFinished.connect(dock._model_changed)
    form.addRow("Model", row)
    dock.model_badge = QLabel()
    dock.model_badge.setWordWrap(True)
    dock.model_badge.setOpenExternalLinks(True)
    dock.model_badge.setToolTip("What the model is; read its model card before trusting maps")
    form.addRow("", dock.model_badge)
    dock.form = SettingsForm(
        form, ("method", "mode", "cam", "retrieval_cam", "laterality", "device", "engine",
               "batch_size", "stride",
               "masks", "adaptive", "focus"))
    dock.method_combo = dock.form.method
    dock.device_combo = dock.form.device
    dock.batch_spin = dock.form.batch_size
    dock.stride_spin = dock.form.stride
    dock.masks_spin = dock.form.masks
    dock.adaptive_check = dock.form.adaptive
    dock.focus_check = dock.form.focus
    dock.method_combo.currentIndexChanged.connect(dock._method_changed)
    dock.form.on_change(dock._settings_changed)
    dock.contrast_combo = QComboBox()
    for key, text in CONTRASTS.items():
        dock.contrast_combo.addItem(text, key)
    dock.contrast_combo.setToolTip(
        "Colour range of correlation, product and distance maps. Fixed −1…1 (default) "
        "compares images and methods. 'This image: ±max |ρ|' stretches −m…m to the map's "
        "largest |value| m (0 stays transparent). 'This image: 2–98 %' spans the map's "
        "2nd to 98th percentile, showing structure in a map that is high everywhere; its "
        "transparent middle is then the image's middle value, not 0, and blue means "
        "'lower than the rest', not negative. The colour bar shows the range used.")
    dock.contrast_combo.currentIndexChanged.connect(dock._contrast_changed)
    form.addRow("Correlation scale", dock.contrast_combo)
    dock.labels_list = LabelList()
    dock.labels_list.itemChanged.connect(dock._labels_changed)
    form.addRow("Show labels", dock.labels_list)

    dock.run_button = QPushButton("Run")
    dock.run_button.setToolTip("Compute the maps; while running: cancel at the next batch")
    dock.run_button.clicked.connect(dock._run_or_cancel)
    dock.status = QLabel("Ready.")
    dock.status.setWordWrap(True)
    dock.progress_bar = QProgressBar()
    dock.progress = ThrottledProgress(
        dock.progress_bar, dock.status, parent=dock,
        describe=lambda stage, done, total: (
            f"{STAGES.get(stage, stage).capitalize()}: {done} / {total}"),
        bar_format=lambda stage: f"{STAGES.get(stage, stage)} %v / %m",
    )
    dock.progress.reset()
    files = button_row((
        ("Boxes…", dock._pick_boxes, "Ground-truth boxes from a VinDr finding_annotations.csv"),
        ("Save…", dock._pick_save, "Save the maps (.npz), per-window CSV and a PNG figure"),
        ("Open…", dock._pick_open, "Open saved results as layers without recomputing"),
        ("Save as DICOM…", dock._pick_dicom, "The maps as DICOM Parametric Maps over the "
         "source image (a DICOM file), into a folder"),
    ))
    layout = QVBoxLayout(dock)
    dock.reader_notice = ReaderNotice()
    layout.addWidget(dock.reader_notice)
    layout.addLayout(form)
    layout.addWidget(dock.run_button)
    layout.addWidget(dock.progress_bar)
    layout.addWidget(dock.status)
    dock.help = QLabel("Select a map layer to read what it shows.")
    dock.help.setWordWrap(True)
    dock.help.setToolTip("What the selected map layer means and its fixed colour scale")
    layout.addWidget(dock.help)
    dock.peaks = PeakTable(dock.viewer)
    layout.addWidget(dock.peaks)
    layout.addLayout(files)
    dock.comparison = MethodComparison(dock.viewer)
    layout.addLayout(button_row((
        ("Next method (N)", lambda: flip(dock),
         "Show the next method's map of the selected map's label (CorRELAX, each CAM "
         "run, prediction), hiding the others"),
        ("Side by side", lambda: toggle_side_by_side(dock),
         "Every method's map of the selected map's label side by side over the image, "
         "with linked zoom and pan (napari grid); press again to go back"),
    )))
    bind_keys(dock, dock.viewer, {"N": lambda: flip(dock)})
    dock.exam_button = QPushButton("Exam view")
    dock.exam_button.setToolTip("The open images of the chosen image's study hung R-CC | L-CC "
                                "over R-MLO | L-MLO with their maps; press again to go back")
    dock.exam_button.clicked.connect(lambda: toggle_analysis_exam(dock))
    layout.addWidget(dock.exam_button)
    layout.addStretch(1)
