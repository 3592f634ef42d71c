"""napari's saved reader preference changes only when the user asks for it.

Importing the napari contribution used to write ``plugins.extension2reader`` (the user's
saved napari setting) by itself. Now the analysis dock shows a notice while a DICOM
pattern has no reader, and only its button writes the preference.
"""

from __future__ import annotations

import importlib

import pytest

PATTERNS = ("*.dcm", "*.dicom", "*.DCM", "*.DICOM")


@pytest.fixture
def plugins(monkeypatch, tmp_path):
    """napari's plugin settings, saved under ``tmp_path`` instead of the user's file."""
    import napari.settings

    monkeypatch.setattr(napari.settings, "_SETTINGS", None)
    settings = napari.settings.get_settings(tmp_path / "settings.yaml")
    assert settings.config_path == (tmp_path / "settings.yaml").resolve()
    return settings.plugins


def test_importing_the_contribution_leaves_the_reader_preference_alone(plugins):
    import napari_correlax._napari as contribution

    plugins.extension2reader = {"*.tif": "napari"}
    importlib.reload(contribution)  # runs the package's import-time code again
    assert dict(plugins.extension2reader) == {"*.tif": "napari"}
    assert contribution.unset_reader_patterns() == list(PATTERNS)


@pytest.mark.gui
def test_the_dock_notice_sets_the_preference_only_when_clicked(qtbot, plugins):
    from napari_correlax._napari._reader_notice import ReaderNotice

    plugins.extension2reader = {"*.DICOM": "napari"}  # the user's own choice for one pattern
    notice = ReaderNotice()
    qtbot.addWidget(notice)
    assert not notice.isHidden()
    assert dict(plugins.extension2reader) == {"*.DICOM": "napari"}  # showing changes nothing

    notice.use_button.click()
    assert dict(plugins.extension2reader) == {"*.DICOM": "napari", "*.dcm": "napari-correlax",
                                              "*.dicom": "napari-correlax",
                                              "*.DCM": "napari-correlax"}
    assert notice.isHidden()
    again = ReaderNotice()
    qtbot.addWidget(again)
    assert again.isHidden()  # nothing left to ask


@pytest.mark.gui
def test_not_now_hides_the_notice_without_saving(qtbot, plugins):
    from napari_correlax._napari._reader_notice import ReaderNotice

    plugins.extension2reader = {}
    notice = ReaderNotice()
    qtbot.addWidget(notice)
    notice.dismiss_button.click()
    assert notice.isHidden() and dict(plugins.extension2reader) == {}
