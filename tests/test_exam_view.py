"""The exam view, window/level and Save as DICOM in a real napari viewer (Xvfb)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui

napari = pytest.importorskip("napari")

SHAPE = (384, 256)
H, W = SHAPE
#: Hand-worked world placement of pixel (0, 0)'s centre per view: images of the VinDr
#: layout are stored with the chest wall towards the middle of the screen already (a
#: right breast's on the right), so nothing is mirrored and each tile is one image,
#: R on the left: R-CC | L-CC over R-MLO | L-MLO.
ORIGIN = {"R-CC": (0.5, 0.5), "L-CC": (0.5, W + 0.5), "R-MLO": (H + 0.5, 0.5),
          "L-MLO": (H + 0.5, W + 0.5)}


@pytest.fixture
def dataset(tmp_path):
    """Two complete studies (R-CC, L-CC, R-MLO, L-MLO each), all in the test split."""
    from napari_correlax.synth import write_vindr_dataset

    return write_vindr_dataset(tmp_path / "data", 8, seed=5, shape=SHAPE, test_fraction=1.0,
                               no_finding_fraction=0.2)


def open_reader(viewer, model, data, work):
    from napari_correlax._napari._testset_widget import ALL, TestSetReaderWidget

    widget = TestSetReaderWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.device_combo.setCurrentText("cpu")
    widget.model_edit.setText(str(model))
    widget.stride_spin.setValue(64)
    widget.masks_spin.setValue(16)
    widget.filter_combo.setCurrentText(ALL)
    widget.open_dataset(data, work=work)
    return widget


def wait_until_drawn(qtbot, widget):
    qtbot.waitUntil(lambda: widget.current.image_id in widget.review.loaded
                    and widget._shown == widget.current.image_id, timeout=180_000)


def world_of(layer, point):
    return np.asarray(layer.data_to_world(np.asarray(point, float)))[-2:]


def tissue_columns(layer):
    """World x of the image's tissue (pixels above 0.1, the phantom's background is 0)."""
    cols = np.nonzero((np.asarray(layer.data) > 0.1).any(axis=0))[0]
    return sorted(world_of(layer, (0, c))[1] for c in (cols.min(), cols.max()))


def test_exam_view_hangs_the_study_and_follows_the_reader(
    make_napari_viewer, qtbot, small_model, dataset, tmp_path
):
    from napari_correlax._napari._layers import layer_name
    from napari_correlax.io.vindr import load_vindr

    by_id = {r.image_id: r for r in load_vindr(dataset).images}
    viewer = make_napari_viewer(show=True)
    widget = open_reader(viewer, small_model, dataset, tmp_path / "work")
    keymap = {str(k): f for k, f in viewer.keymap.items()}
    studies = [r.study_id for r in widget.records]
    first = widget.records[0]
    for k in range(len(widget.records)):  # every view's maps into the reader's cache
        if studies[k] == first.study_id:
            widget.show_image(k)
            wait_until_drawn(qtbot, widget)
    widget.show_image(0)
    wait_until_drawn(qtbot, widget)
    keymap["E"](viewer)
    assert widget.extras.view.shown
    assert viewer.layers["test set"].opacity == 0  # the single image is hidden
    assert not viewer.canvas.grid.enabled  # one canvas, one camera for the four tiles

    images = {layer.metadata["exam"]["view"]: layer for layer in widget.extras.view.layers()
              if "exam" in layer.metadata}
    assert set(images) == set(ORIGIN)
    for view, layer in images.items():
        image_id = layer.metadata["exam"]["image_id"]
        record = by_id[image_id]
        assert record.study_id == first.study_id
        assert f"{record.laterality}-{record.view}" == view  # right laterality and view
        np.testing.assert_allclose(world_of(layer, (0, 0)), ORIGIN[view])
        np.testing.assert_allclose(world_of(layer, (H - 1, W - 1)),
                                   np.add(ORIGIN[view], (H - 1, W - 1)))
        lo, hi = tissue_columns(layer)  # chest walls meet at the middle, x = W
        assert (hi > W - 2) if view.startswith("R") else (lo < W + 2)

    label = widget.verdicts.selected_label() or widget.layers.labels[0]
    kind = widget.review.viewed_kind()
    for view, layer in images.items():  # the selected label's map on every view
        name = layer_name(f"exam {view}", kind, label)
        assert name in viewer.layers, name
        np.testing.assert_allclose(viewer.layers[name].affine.affine_matrix,
                                   layer.affine.affine_matrix)
    notes = viewer.layers["views · exam"].features
    assert sorted(notes["note"]) == sorted(ORIGIN)  # no tile missing or without maps

    current = f"{first.laterality}-{first.view}"
    (outline,) = viewer.layers["current image · exam"].data
    (y0, x0), (y1, x1) = outline.min(axis=0), outline.max(axis=0)
    oy, ox = np.subtract(ORIGIN[current], 0.5)
    np.testing.assert_allclose((y0, x0, y1, x1), (oy, ox, oy + H, ox + W))

    # Save as DICOM from the reader: the image's maps and its verdicts (SR)
    import pydicom

    out = tmp_path / "dicom"
    out.mkdir()
    written = widget.extras.save_dicom(str(out))
    classes = [str(pydicom.dcmread(p, stop_before_pixels=True).SOPClassUID) for p in written]
    assert classes.count("1.2.840.10008.5.1.4.1.1.88.33") == 1  # Comprehensive SR
    assert classes.count("1.2.840.10008.5.1.4.1.1.30") == len(classes) - 1 >= 1
    assert sorted(out.iterdir()) == sorted(written)
    assert "saved" in widget.image_label.text()

    # window/level: W twice = the dense-breast preset, kept through PageDown
    keymap["W"](viewer)
    keymap["W"](viewer)
    assert tuple(viewer.layers["test set"].contrast_limits) == (0.5, 1.0)
    assert all(tuple(layer.contrast_limits) == (0.5, 1.0) for layer in images.values())
    other = studies.index(next(s for s in studies if s != first.study_id))
    widget.show_image(other - 1)
    wait_until_drawn(qtbot, widget)
    keymap["PageDown"](viewer)  # to the first image of the other study
    assert widget.current.study_id != first.study_id
    wait_until_drawn(qtbot, widget)
    assert tuple(viewer.layers["test set"].contrast_limits) == (0.5, 1.0)
    switched = {layer.metadata["exam"]["image_id"] for layer in widget.extras.view.layers()
                if "exam" in layer.metadata}
    assert {by_id[i].study_id for i in switched} == {widget.current.study_id}
    assert len(switched) == 4
    notes = list(viewer.layers["views · exam"].features["note"])
    assert sum(note.endswith("no maps yet") for note in notes) >= 2  # not visited yet

    # a window dragged by hand is kept too
    viewer.layers["test set"].contrast_limits = (0.2, 0.6)
    keymap["E"](viewer)  # back to the single image
    assert viewer.layers["test set"].opacity == 1 and not widget.extras.view.layers()
    keymap["PageDown"](viewer)
    wait_until_drawn(qtbot, widget)
    np.testing.assert_allclose(viewer.layers["test set"].contrast_limits, (0.2, 0.6))
    qtbot.waitUntil(lambda: not widget.busy, timeout=180_000)


def test_window_presets_cycle_file_full_dense(tmp_path, small_phantom):
    import pydicom

    from napari_correlax._napari._window_level import WindowLevel, file_window
    from napari_correlax.synth import write_dicom

    path = write_dicom(tmp_path / "win.dcm", small_phantom)
    ds = pydicom.dcmread(path)
    stored = ds.pixel_array.astype(float)
    ds.WindowCenter, ds.WindowWidth = 30000, 20000
    ds.save_as(path)
    lo, hi = stored.min(), stored.max()
    expected = np.clip(((20000 - lo) / (hi - lo), (40000 - lo) / (hi - lo)), 0, 1)
    np.testing.assert_allclose(file_window(str(path)), expected, atol=1e-6)
    window = WindowLevel()
    np.testing.assert_allclose(window.limits(str(path)), expected, atol=1e-6)
    assert [window.cycle() for _ in range(3)] == ["full", "dense", "file"]
    window.preset = "dense"
    assert window.limits(str(path)) == (0.5, 1.0)


def test_save_as_dicom_in_the_analysis_dock_writes_a_parametric_map_per_map(
    make_napari_viewer, qtbot, phantom_dicom, tiny_checkpoint, tmp_path, small_phantom
):
    import pydicom

    from napari_correlax._napari._analysis_widget import AnalysisWidget

    viewer = make_napari_viewer()
    (image,) = viewer.open(str(phantom_dicom), plugin="napari-correlax")
    widget = AnalysisWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.set_checkpoint(str(tiny_checkpoint))
    widget.device_combo.setCurrentText("cpu")
    widget.stride_spin.setValue(64)
    widget.method_combo.setCurrentIndex(widget.method_combo.findData("prediction"))
    widget.run()
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)
    result = widget._analyses[image.name].result
    out = tmp_path / "dicom"
    out.mkdir()
    written = widget.save_dicom(out)
    labels = [lab for lab in result.labels if lab in widget.chosen_labels()] or result.labels
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in written)
    assert len(written) >= len(labels)  # one Parametric Map per label at least
    source = pydicom.dcmread(phantom_dicom, stop_before_pixels=True)
    for path in written:
        ds = pydicom.dcmread(path)
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.30"  # Parametric Map Storage
        assert ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0] \
            .ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert widget.status.text().startswith(f"saved {len(written)} DICOM file")

    # a PNG source: one line in the status, nothing written
    import cv2

    png = tmp_path / "phantom.png"
    cv2.imwrite(str(png), (small_phantom.pixels * 255).astype(np.uint8))
    (flat,) = viewer.open(str(png), plugin="napari-correlax")
    widget.image_combo.setCurrentText(flat.name)
    widget.run()
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)
    refused = tmp_path / "refused"
    refused.mkdir()
    assert widget.save_dicom(refused) == []
    assert list(refused.iterdir()) == []
    assert widget.status.text().startswith("not saved as DICOM:")
    assert "\n" not in widget.status.text()


def test_analysis_dock_hangs_the_open_images_of_the_chosen_images_study(
    make_napari_viewer, dataset
):
    import pydicom

    from napari_correlax._napari._analysis_widget import AnalysisWidget
    from napari_correlax.io.vindr import load_vindr

    records = load_vindr(dataset).images
    first = records[0].study_id
    ours = [r for r in records if r.study_id == first]
    stranger = next(r for r in records if r.study_id != first)
    viewer = make_napari_viewer()
    opened = {}
    for record in [*ours, stranger]:
        (layer,) = viewer.open(str(record.path), plugin="napari-correlax")
        opened[layer.name] = record
    widget = AnalysisWidget(viewer)
    viewer.window.add_dock_widget(widget)
    chosen = next(name for name, r in opened.items() if r is ours[-1])
    widget.image_combo.setCurrentText(chosen)
    widget.exam_button.click()
    images = {layer.metadata["exam"]["view"]: layer for layer in widget.exam_view.layers()
              if "exam" in layer.metadata}
    assert set(images) == set(ORIGIN)  # the stranger's study stays out
    sy, sx = (float(v) for v in pydicom.dcmread(ours[0].path).ImagerPixelSpacing)
    for view, layer in images.items():
        record = opened[layer.metadata["exam"]["image_id"]]
        assert record.study_id == first and f"{record.laterality}-{record.view}" == view
        oy, ox = ORIGIN[view]  # in pixels; the exam is in millimetres
        np.testing.assert_allclose(world_of(layer, (0, 0)), (oy * sy, ox * sx))
    assert all(note.endswith("no maps yet") for note in viewer.layers["views · exam"]
               .features["note"])
    assert all(viewer.layers[name].opacity == 0 for name in opened)
    widget.exam_button.click()
    assert not widget.exam_view.layers()
    assert all(viewer.layers[name].opacity == 1 for name in opened)


def test_a_missing_view_is_an_empty_tile_with_its_name():
    from napari_correlax._napari._exam_view import ExamTile, exam_layers
    from napari_correlax.exam import ExamImage, hang

    views = [("R", "CC"), ("L", "CC"), ("R", "MLO")]  # no L-MLO
    images = [ExamImage(f"{lat}{view}", lat, view, SHAPE) for lat, view in views]
    exam = hang(images, current="RMLO")
    tiles = {im.name: ExamTile(np.zeros(SHAPE, np.float32)) for im in images}
    layers = {kwargs["name"]: (data, kwargs, kind)
              for data, kwargs, kind in exam_layers(exam, tiles, "Mass", "correlation")}
    assert {name for name, (_, _, kind) in layers.items() if kind == "image"} == {
        "exam R-CC", "exam L-CC", "exam R-MLO"}
    places, kwargs, _ = layers["views · exam"]
    notes = dict(zip(kwargs["features"]["view"], kwargs["features"]["note"], strict=True))
    assert notes == {"R-CC": "R-CC · no maps yet", "L-CC": "L-CC · no maps yet",
                     "R-MLO": "R-MLO · no maps yet", "L-MLO": "L-MLO · missing"}
    where = dict(zip(kwargs["features"]["view"], places.tolist(), strict=True))
    np.testing.assert_allclose(where["L-MLO"], (H + 0.04 * H, 1.5 * W))  # its tile's top
    (outline,), _, _ = layers["current image · exam"]  # R-MLO: bottom left
    np.testing.assert_allclose(outline.min(axis=0), (H, 0))
    np.testing.assert_allclose(outline.max(axis=0), (2 * H, W))
