"""A notice in the analysis dock that offers to make the plugin napari's DICOM reader.

napari's built-in reader also claims ``.dcm`` files, so without a saved preference napari
asks which reader to use each time one is dropped. The plugin never changes that setting
by itself: the notice shows while no reader is chosen for some DICOM pattern, and only
its button writes the preference (:func:`~napari_correlax._napari.prefer_plugin_reader`).
"""

from __future__ import annotations

from qtpy.QtWidgets import QHBoxLayout, QLabel, QPushButton, QWidget

from . import PREFERRED_PATTERNS, prefer_plugin_reader, unset_reader_patterns


class ReaderNotice(QWidget):
    """One line and two buttons; hidden once every DICOM pattern has a reader."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.text = QLabel("napari asks which reader to use for DICOM files. Open them with "
                           "napari-correlax (pixel spacing, VOI window, MONOCHROME1)?")
        self.text.setWordWrap(True)
        self.use_button = QPushButton("Use for DICOM")
        self.use_button.setToolTip("Save napari-correlax as napari's reader for "
                                   f"{', '.join(PREFERRED_PATTERNS)} in napari's preferences "
                                   "(Plugins › File extension readers); a choice already "
                                   "made there is kept")
        self.use_button.clicked.connect(self.accept)
        self.dismiss_button = QPushButton("Not now")
        self.dismiss_button.setToolTip("Hide this notice until napari starts again")
        self.dismiss_button.clicked.connect(self.hide)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.text, 1)
        layout.addWidget(self.use_button)
        layout.addWidget(self.dismiss_button)
        self.setVisible(bool(unset_reader_patterns()))

    def accept(self) -> list[str]:
        """Save the preference for the patterns without one; returns them."""
        chosen = prefer_plugin_reader()
        self.setVisible(bool(unset_reader_patterns()))
        return chosen
