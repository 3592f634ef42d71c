"""What the analysis dock says about a model and an image: the model badge of classifier
and GMIC checkpoints, DICOM case names and pixel units (no viewer needed)."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_a_gmic_checkpoint_gets_a_gmic_badge_not_an_error(tmp_path):
    torch = pytest.importorskip("torch")
    from napari_correlax._napari._analysis_jobs import checkpoint_summary, model_badge
    from napari_correlax.gmic import GMIC, GMICConfig, save_gmic

    torch.manual_seed(0)
    config = GMICConfig(num_classes=2, class_names=("Mass", "Suspicious Calcification"),
                        global_filters=8, global_stages=2, local_width=8, K=3,
                        crop_shape=(32, 32), percent_t=0.05, input_size=(256, 160),
                        fit="resize")
    # what the training dock writes: a GMIC checkpoint with its training settings
    path = save_gmic(GMIC(config).eval(), tmp_path / "best.safetensors",
                     {"training": {"epochs": 1, "train_cam": "cam"}})
    summary = checkpoint_summary(str(path))
    assert not isinstance(summary, str), summary
    assert summary.kind == "GMIC"
    assert summary.labels == ["Mass", "Suspicious Calcification"]
    badge = model_badge(summary)
    assert "not a napari-correlax classifier" not in badge and "⚠" not in badge
    assert "GMIC" in badge and "2 labels" in badge


def test_the_demo_classifier_keeps_its_phantom_warning():
    pytest.importorskip("safetensors")
    from napari_correlax._napari._analysis_jobs import checkpoint_summary, model_badge

    summary = checkpoint_summary(None)
    assert summary.kind == "classifier" and summary.phantoms_only
    assert "synthetic phantoms" in model_badge(summary)


def test_a_file_that_is_no_checkpoint_still_gets_a_red_badge(tmp_path):
    from napari_correlax._napari._analysis_jobs import checkpoint_summary, model_badge

    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"not safetensors")
    summary = checkpoint_summary(str(bad))
    assert isinstance(summary, str) and "⚠" in model_badge(summary)


def _dicom(tmp_path: Path, *, spacing: bool, patient: str | None) -> Path:
    import pydicom

    from napari_correlax.synth import make_phantom, write_dicom

    path = write_dicom(tmp_path / "0f312afd26d19c80a978.dcm",
                       make_phantom(2, shape=(160, 128), laterality="R", view="MLO"))
    ds = pydicom.dcmread(path)
    if not spacing:
        del ds.ImagerPixelSpacing
    if patient is None:
        del ds.PatientID
        ds.StudyDescription = "screening"
    else:
        ds.PatientID = patient
    ds.save_as(path)
    return path


def test_dicom_layer_is_named_by_its_case_and_view_not_its_file(tmp_path):
    from napari_correlax._napari._reader import read_layers

    (layer,) = read_layers(str(_dicom(tmp_path, spacing=True, patient="P_00017")))
    assert layer[1]["name"] == "P_00017 · R MLO"
    assert layer[1]["metadata"]["mammogram"]["patient_id"] == "P_00017"
    (layer,) = read_layers(str(_dicom(tmp_path, spacing=True, patient=None)))
    assert layer[1]["name"] == "screening · R MLO"  # no PatientID: the study description


def test_dicom_without_spacing_says_pixel_units(tmp_path):
    from napari_correlax._napari._reader import read_layers
    from napari_correlax.io import read_mammogram

    path = _dicom(tmp_path, spacing=False, patient="P_00017")
    assert read_mammogram(path).spacing_mm is None
    (layer,) = read_layers(str(path))
    assert layer[1]["name"] == "P_00017 · R MLO (pixel units)"
    assert layer[1]["scale"] == (1.0, 1.0) and layer[1]["metadata"]["spacing_mm"] is None
    (with_mm,) = read_layers(str(_dicom(tmp_path, spacing=True, patient="P_00017")))
    assert "pixel units" not in with_mm[1]["name"]
