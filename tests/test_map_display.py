"""Where maps are drawn and how they are named and scaled: the analysed-area geometry
against brute-force pixel loops, maps clipped at the image's edge, short layer names,
the per-image contrast option (no viewer needed)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_correlax.maps import MapResult
from napari_correlax.windows import WindowGrid, mask_outline

LABELS = ["No Finding", "Mass", "Suspicious Calcification"]


def overhanging_grid() -> WindowGrid:
    """Window 40, stride 16, 5 × 6 windows from (-25, -12) over a 70 × 90 image: the
    first and last cells hang over the image's edges."""
    return WindowGrid(40, 16, (-25, -12), (5, 6), (70, 90))


def some_evaluated(shape: tuple[int, int]) -> np.ndarray:
    rng = np.random.default_rng(3)
    evaluated = rng.random(shape) > 0.35
    evaluated[0, 0] = True
    return evaluated


def test_window_coverage_matches_a_pixel_loop():
    grid = overhanging_grid()
    evaluated = some_evaluated(grid.shape)
    got = grid.coverage(evaluated)
    h, w = grid.image_shape
    expected = np.zeros((h, w), bool)
    for r in range(h):
        for c in range(w):
            for i in range(grid.shape[0]):
                for j in range(grid.shape[1]):
                    top = grid.origin[0] + i * grid.stride
                    left = grid.origin[1] + j * grid.stride
                    if evaluated[i, j] and top <= r < top + 40 and left <= c < left + 40:
                        expected[r, c] = True
    np.testing.assert_array_equal(got, expected)


def test_cell_coverage_matches_a_pixel_loop():
    grid = overhanging_grid()
    evaluated = some_evaluated(grid.shape)
    got = grid.coverage(evaluated, cells=True)
    h, w = grid.image_shape
    expected = np.zeros((h, w), bool)
    for r in range(h):
        for c in range(w):
            for i in range(grid.shape[0]):
                for j in range(grid.shape[1]):
                    cy = grid.origin[0] + i * 16 + 19.5  # window centre, pixel centres at ints
                    cx = grid.origin[1] + j * 16 + 19.5
                    if evaluated[i, j] and cy - 8 <= r < cy + 8 and cx - 8 <= c < cx + 8:
                        expected[r, c] = True
    np.testing.assert_array_equal(got, expected)


def _on_segment(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> bool:
    ab, ap = b - a, p - a
    cross = ab[0] * ap[1] - ab[1] * ap[0]
    t = np.dot(ap, ab) / max(np.dot(ab, ab), 1e-12)
    return abs(cross) < 1e-9 and -1e-9 <= t <= 1 + 1e-9


def test_outline_runs_through_every_boundary_pixel_and_only_those():
    mask = np.zeros((30, 40), bool)
    mask[3:20, 5:30] = True
    mask[8:12, 10:16] = False  # a hole
    mask[20:28, 0:9] = True  # touches the image edge
    outlines = mask_outline(mask)
    assert all(np.array_equal(o[0], o[-1]) for o in outlines)  # closed
    padded = np.pad(mask, 1)
    boundary = mask & ~(padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2]
                        & padded[1:-1, 2:])
    vertices = np.concatenate(outlines).astype(int)
    assert boundary[vertices[:, 0], vertices[:, 1]].all()
    for r, c in zip(*np.nonzero(boundary)):
        p = np.array([r, c], float)
        assert any(_on_segment(p, o[k], o[k + 1]) for o in outlines for k in range(len(o) - 1)), \
            (r, c)


def test_grid_cells_are_clipped_at_the_image_edge():
    grid = overhanging_grid()
    values = np.arange(30, dtype=np.float32).reshape(5, 6)
    k = 4
    data, scale, translate = grid.cells_on_image(values, k)
    assert data.shape == (20, 24) and scale == (4.0, 4.0)
    centres = grid.centres()
    h, w = grid.image_shape
    for a in range(data.shape[0]):
        for b in range(data.shape[1]):
            y, x = translate[0] + 4 * a, translate[1] + 4 * b
            if not (-0.5 <= y < h - 0.5 and -0.5 <= x < w - 0.5):
                assert np.isnan(data[a, b])
                continue
            # the cell whose centre is nearest the sub-cell's centre (brute force)
            d = np.abs(centres[..., 0] - y) + np.abs(centres[..., 1] - x)
            i, j = np.unravel_index(np.argmin(d), d.shape)
            assert data[a, b] == values[i, j]
    # every drawn sub-cell is centred on the image: it reaches at most half a sub-cell
    # (2 px) beyond the edge, where the unclipped cells hung over by up to 8 px
    rows = translate[0] + 4 * np.nonzero(np.isfinite(data).any(axis=1))[0]
    assert rows.min() >= -0.5 and rows.max() < h - 0.5
    assert translate[0] < -0.5 - 2  # the unclipped first row did overhang
    assert np.isnan(data[0]).all()  # the first row of sub-cells lies above the image


def hand_result() -> MapResult:
    grid = overhanging_grid()
    prediction = np.full((3, 5, 6), 0.5, np.float32)
    correlation = np.linspace(0.8, 0.95, 90, dtype=np.float32).reshape(3, 5, 6)
    mask = some_evaluated(grid.shape)
    return MapResult(LABELS, grid, prediction, mask, None, correlation=correlation)


def test_analysed_area_of_a_grid_result_is_the_cells_of_evaluated_windows_in_the_breast():
    napari = pytest.importorskip("napari")  # noqa: F841
    from napari_correlax._napari import _layers

    result = hand_result()
    breast = np.zeros(result.image_shape, bool)
    breast[:, :50] = True
    area = _layers.analysed_area(result, breast)
    centres = result.grid.centres()
    h, w = result.image_shape
    expected = np.zeros((h, w), bool)
    for i, j in np.ndindex(*result.grid.shape):
        cy, cx = centres[i, j]
        in_breast = 0 <= np.floor(cy + 0.5) < h and 0 <= np.floor(cx + 0.5) < 50
        if not (result.window_mask[i, j] and in_breast):
            continue
        for r in range(h):
            for c in range(w):
                if cy - 8 <= r < cy + 8 and cx - 8 <= c < cx + 8:
                    expected[r, c] = True
    np.testing.assert_array_equal(area, expected)
    data, kwargs, kind = _layers.outline_layer(result, "scan", breast=breast)
    assert kind == "shapes" and kwargs["shape_type"] == "path" and data
    assert kwargs["name"] == "analysed area · scan"


def test_layer_names_put_label_and_kind_first_and_shorten_long_image_names():
    pytest.importorskip("napari")
    from napari_correlax._napari import _layers

    vindr = "850eb9c9072720d8c6f4b3a1e2d5c907272"
    name = _layers.layer_name(vindr, "correlation", "Suspicious Calcification")
    assert name.startswith("Suspicious Calcification · corr · ")
    assert len(name) - len("Suspicious Calcification · corr · ") <= _layers.TAG_CHARS
    assert name.endswith(vindr[-6:])
    ci = _layers.layer_name("scan", "correlation_ci", "Mass")
    assert ci == "Mass · corr 95% CI ± · scan"
    assert ci != _layers.layer_name("scan", "correlation", "Mass")
    assert _layers.layer_name("scan", "prediction", "Mass") == "Mass · pred · scan"
    assert _layers.boxes_layer_name(vindr) == f"ground truth · {_layers.image_tag(vindr)}"


def test_contrast_option_fixed_symmetric_and_percentile():
    pytest.importorskip("napari")
    from napari_correlax._napari import _layers

    values = np.linspace(0.8, 0.95, 200, dtype=np.float32)
    values[0] = np.nan
    assert _layers.contrast_limits("correlation", values) == (-1.0, 1.0)
    lo, hi = _layers.contrast_limits("correlation", values, "symmetric")
    assert hi == pytest.approx(0.95) and lo == pytest.approx(-0.95)
    lo, hi = _layers.contrast_limits("correlation", values, "percentile")
    finite = values[1:]
    assert lo == pytest.approx(np.percentile(finite, 2)) and hi == pytest.approx(
        np.percentile(finite, 98))
    # predictions keep their fixed 0–1 whatever the option
    assert _layers.contrast_limits("prediction", values, "percentile") == (0.0, 1.0)
    # GMIC's saliency is a probability: fixed 0–1, not its own tiny range
    saliency = np.full((10, 10), 0.5, np.float32)
    saliency[0, 0] = 0.5004
    assert _layers.contrast_limits("saliency", saliency, method="gmic") == (0.0, 1.0)
    assert _layers.contrast_limits("saliency", saliency, method="gradcam") != (0.0, 1.0)
