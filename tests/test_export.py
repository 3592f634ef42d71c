"""Per-window CSV, map files (NPZ/TIFF) and whole-analysis export (no napari)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from napari_correlax.errors import CorrelaxError
from napari_correlax.export import (
    MapArray,
    export_analysis,
    read_maps,
    window_rows,
    write_maps_npz,
    write_maps_tiff,
    write_window_csv,
)
from napari_correlax.maps import MapResult, load_result
from napari_correlax.windows import WindowGrid


def small_result(spacing=(0.1, 0.2)) -> MapResult:
    grid = WindowGrid(64, 16, (-4, 8), (2, 3), (100, 90))
    rng = np.random.default_rng(0)
    prediction = rng.random((2, 2, 3)).astype(np.float32)
    correlation = rng.uniform(-1, 1, (2, 2, 3)).astype(np.float32)
    mask = np.array([[True, False, True], [True, True, True]])
    return MapResult(
        ["Mass", "Calc"],
        grid,
        prediction,
        mask,
        spacing,
        correlation=correlation,
        product=prediction * correlation,
        distance=rng.uniform(-1, 1, (2, 3)).astype(np.float32),
        masks_used=np.array([[64, 0, 128], [64, 64, 96]]),
        relevance=rng.random((100, 90)).astype(np.float32),
        meta={"image_layer": "scan"},
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_window_csv_has_one_row_per_window_with_centres_and_values(tmp_path):
    result = small_result()
    rows = read_csv(write_window_csv(result, tmp_path / "w.csv"))
    assert len(rows) == 6
    for row in rows:
        i, j = int(row["row"]), int(row["col"])
        # window (i, j) covers pixels origin + 16·(i, j) … + 63, centred 31.5 in
        assert float(row["centre_row_px"]) == -4 + 16 * i + 31.5
        assert float(row["centre_col_px"]) == 8 + 16 * j + 31.5
        assert float(row["centre_row_mm"]) == pytest.approx(0.1 * (-4 + 16 * i + 31.5))
        assert float(row["centre_col_mm"]) == pytest.approx(0.2 * (8 + 16 * j + 31.5))
        assert row["evaluated"] == ("0" if (i, j) == (0, 1) else "1")
        assert int(row["masks_used"]) == result.masks_used[i, j]
        assert float(row["distance"]) == pytest.approx(result.distance[i, j], rel=1e-6)
        for c, label in enumerate(["Mass", "Calc"]):
            assert float(row[f"prediction:{label}"]) == pytest.approx(
                result.prediction[c, i, j], rel=1e-6
            )
            assert float(row[f"correlation:{label}"]) == pytest.approx(
                result.correlation[c, i, j], rel=1e-6
            )
            assert float(row[f"product:{label}"]) == pytest.approx(
                result.prediction[c, i, j] * result.correlation[c, i, j], rel=1e-5
            )


def test_window_csv_of_a_prediction_only_result_without_spacing():
    r = small_result(spacing=None)
    plain = MapResult(r.labels, r.grid, r.prediction, r.window_mask)
    header, rows = window_rows(plain)
    assert header == [
        "row",
        "col",
        "centre_row_px",
        "centre_col_px",
        "evaluated",
        "prediction:Mass",
        "prediction:Calc",
    ]
    assert len(rows) == 6


def test_npz_map_file_round_trip_keeps_order_and_geometry(tmp_path):
    maps = [
        MapArray(
            "Mass · prediction · a",
            np.arange(6, dtype=np.float32).reshape(2, 3),
            (4.8, 4.8),
            (1.0, -2.0),
            {"map": "prediction", "label": "Mass"},
        ),
        MapArray(
            "relevance · a",
            np.ones((5, 4), np.float32),
            (0.1, 0.1),
            (0.0, 0.0),
            {"map": "relevance"},
        ),
    ]
    path = write_maps_npz(tmp_path / "m.npz", maps)
    back = read_maps(path)
    assert [m.name for m in back] == [m.name for m in maps]
    for a, b in zip(maps, back):
        np.testing.assert_array_equal(a.data, b.data)
        assert a.scale == b.scale and a.translate == b.translate and a.attrs == b.attrs
    with np.load(path, allow_pickle=False) as z:  # other tools read it by name
        np.testing.assert_array_equal(z["relevance · a"], maps[1].data)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]  # no temp file left


def test_tiff_map_files_round_trip(tmp_path):
    one = MapArray("x", np.eye(3, dtype=np.float32), (2.0, 3.0), (0.5, 0.25), {"map": "distance"})
    (path,) = write_maps_tiff(tmp_path / "one.tif", [one])
    (back,) = read_maps(path)
    np.testing.assert_array_equal(back.data, one.data)
    assert back.scale == (2.0, 3.0) and back.translate == (0.5, 0.25) and back.attrs == one.attrs
    import tifffile

    assert tifffile.imread(path).dtype == np.float32  # plain TIFF any tool opens


def test_reading_something_else_is_a_correlax_error(tmp_path):
    result_file = small_result().save(tmp_path / "result.npz")
    with pytest.raises(CorrelaxError, match="map index"):
        read_maps(result_file)
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"nope")
    with pytest.raises(CorrelaxError, match=r"bad\.tif"):
        read_maps(bad)
    with pytest.raises(CorrelaxError, match="unique"):
        write_maps_npz(
            tmp_path / "d.npz", [MapArray("a", np.zeros((2, 2))), MapArray("a", np.zeros((2, 2)))]
        )


def test_export_analysis_writes_result_csv_and_figure(tmp_path):
    result = small_result()
    pixels = np.random.default_rng(1).random((100, 90)).astype(np.float32)
    written = export_analysis(
        result,
        tmp_path / "scan.npz",
        pixels=pixels,
        labels=["Mass"],
        boxes=[("Mass", 10.0, 10.0, 30.0, 40.0)],
    )
    assert [p.name for p in written] == ["scan.npz", "scan-windows.csv", "scan.png"]
    back = load_result(written[0])
    for name in ("prediction", "correlation", "product", "distance", "masks_used", "relevance"):
        np.testing.assert_array_equal(getattr(back, name), getattr(result, name))
    assert back.meta["image_layer"] == "scan"
    assert len(read_csv(written[1])) == 6
    assert written[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
