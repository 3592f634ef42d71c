"""Every control of the three docks says what it does (a tooltip)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gui

pytest.importorskip("napari")


@pytest.mark.parametrize("dock", ["analysis", "testset", "training"])
def test_every_control_has_a_tooltip(make_napari_viewer, dock):
    from qtpy.QtWidgets import (
        QAbstractSpinBox,
        QCheckBox,
        QComboBox,
        QLineEdit,
        QListWidget,
        QPushButton,
    )

    from napari_correlax._napari._analysis_widget import AnalysisWidget
    from napari_correlax._napari._testset_widget import TestSetReaderWidget
    from napari_correlax._napari._training_widget import TrainingWidget

    cls = {"analysis": AnalysisWidget, "testset": TestSetReaderWidget,
           "training": TrainingWidget}[dock]
    widget = cls(make_napari_viewer())
    missing = []
    for kind in (QComboBox, QAbstractSpinBox, QLineEdit, QCheckBox, QPushButton, QListWidget):
        for control in widget.findChildren(kind):
            if isinstance(control.parent(), QAbstractSpinBox):
                continue  # a spin box's own line edit; the spin box has the tooltip
            if not control.toolTip().strip():
                missing.append(f"{kind.__name__} {getattr(control, 'text', lambda: '')()!r}")
    assert not missing, missing
