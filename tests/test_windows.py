"""Window geometry and the IoU kernel against brute-force computations (docs/method.md §6)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_correlax.windows import WindowGrid, iou_kernel, smooth_map


def brute_iou(window: int, dy: int, dx: int) -> float:
    """IoU by painting two squares on a pixel canvas and counting pixels."""
    size = 2 * window + abs(dy) + abs(dx)
    a = np.zeros((size, size), bool)
    b = np.zeros((size, size), bool)
    oy, ox = window, window
    a[oy : oy + window, ox : ox + window] = True
    b[oy + dy : oy + dy + window, ox + dx : ox + dx + window] = True
    return (a & b).sum() / (a | b).sum()


@pytest.mark.parametrize(("window", "stride"), [(256, 48), (64, 16), (32, 12), (20, 7)])
def test_kernel_equals_direct_iou_loop(window, stride):
    k = iou_kernel(window, stride)
    offsets = [o for o in range(-window, window + 1, 1) if o % stride == 0 and abs(o) <= window / 2]
    assert k.shape == (len(offsets), len(offsets))
    expected = np.array([[brute_iou(window, dy, dx) for dx in offsets] for dy in offsets])
    np.testing.assert_allclose(k, expected / expected.sum(), rtol=1e-12)
    assert 0 in offsets  # symmetric offsets include the centre window


def test_paper_kernel_is_5x5_and_centred():
    k = iou_kernel(256, 48)
    assert k.shape == (5, 5)
    assert np.unravel_index(np.argmax(k), k.shape) == (2, 2)
    np.testing.assert_allclose(k, k[::-1, ::-1])
    assert k.sum() == pytest.approx(1.0)


def test_single_hot_window_stays_centred():
    g = np.zeros((3, 11, 9))
    g[1, 5, 4] = 1.0
    out = smooth_map(g, iou_kernel(256, 48))
    assert np.unravel_index(np.argmax(out[1]), out[1].shape) == (5, 4)
    # symmetric about the hot cell
    np.testing.assert_allclose(out[1], out[1][::-1, ::-1], atol=1e-7)
    assert out[0].max() == 0 and out[2].max() == 0


def brute_force_normalised(g: np.ndarray, k: np.ndarray, evaluated: np.ndarray) -> np.ndarray:
    """Σ K·G over evaluated neighbours ÷ Σ K over the same neighbours, cell by cell."""
    r = k.shape[0] // 2
    out = np.full(g.shape, np.nan)
    for i in range(g.shape[0]):
        for j in range(g.shape[1]):
            num = den = 0.0
            for a in range(-r, r + 1):
                for b in range(-r, r + 1):
                    y, x = i + a, j + b
                    if 0 <= y < g.shape[0] and 0 <= x < g.shape[1] and evaluated[y, x]:
                        num += k[r + a, r + b] * g[y, x]
                        den += k[r + a, r + b]
            if den > 0:
                out[i, j] = num / den
    return out


def test_smoothing_equals_brute_force_normalised_sum():
    rng = np.random.default_rng(0)
    g = rng.random((9, 8))
    k = iou_kernel(64, 16)
    evaluated = rng.random(g.shape) > 0.4
    evaluated[:, 5:] = False  # a band of skipped windows, wider than the kernel's reach
    g_with_junk = np.where(evaluated, g, 99.0)  # skipped windows' values must not count
    expected = brute_force_normalised(g, k, evaluated)
    out = smooth_map(g_with_junk, k, evaluated)
    assert np.isnan(expected).any()  # the far side of the band is out of reach
    np.testing.assert_array_equal(np.isnan(out), np.isnan(expected))
    np.testing.assert_allclose(out, expected, rtol=1e-6, equal_nan=True)
    # Without a mask every window counts, the grid's edge included.
    full = brute_force_normalised(g, k, np.ones(g.shape, dtype=bool))
    np.testing.assert_allclose(smooth_map(g, k), full, rtol=1e-6)


def test_constant_map_stays_constant_up_to_the_border():
    k = iou_kernel(256, 48)
    evaluated = np.zeros((12, 10), dtype=bool)
    evaluated[2:10, 1:7] = True
    evaluated[2, 1] = False  # a corner of the breast
    g = np.where(evaluated, 0.7, 0.0)
    out = smooth_map(g, k, evaluated)
    reached = np.isfinite(out)
    assert reached[evaluated].all()
    np.testing.assert_allclose(out[reached], 0.7, rtol=1e-6)
    # Cells more than two steps (the kernel's reach) from every evaluated window: empty.
    assert np.isnan(out[:, 9]).all() and not np.isnan(out[:, 8]).any()


def test_layer_transform_puts_each_cell_on_its_window_centre():
    grid = WindowGrid.covering((700, 500), (40, 30, 650, 420), window=256, stride=48)
    scale, translate = grid.layer_transform()
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            rows = grid.origin[0] + i * grid.stride + np.arange(grid.window)
            cols = grid.origin[1] + j * grid.stride + np.arange(grid.window)
            cell = (translate[0] + i * scale[0], translate[1] + j * scale[1])
            assert cell == pytest.approx((rows.mean(), cols.mean()))
    mm_scale, mm_translate = grid.layer_transform((0.1, 0.2))
    assert mm_scale == pytest.approx((48 * 0.1, 48 * 0.2))
    assert mm_translate == pytest.approx((translate[0] * 0.1, translate[1] * 0.2))


@pytest.mark.parametrize("roi", [(0, 0, 700, 500), (40, 30, 650, 420), (10, 10, 100, 90)])
def test_inside_grid_covers_roi_with_balanced_overhang(roi):
    grid = WindowGrid.covering((700, 500), roi, window=256, stride=48, reach="inside")
    y0, x0, y1, x1 = roi
    for axis, (lo, hi) in enumerate(((y0, y1), (x0, x1))):
        start = grid.origin[axis]
        end = start + (grid.shape[axis] - 1) * grid.stride + grid.window
        assert start <= lo and end >= hi
        before, after = lo - start, end - hi
        assert abs(before - after) <= 1
        # one window fewer would not cover the ROI
        if grid.shape[axis] > 1:
            assert (grid.shape[axis] - 2) * grid.stride + grid.window < hi - lo


@pytest.mark.parametrize("roi", [(0, 0, 700, 500), (40, 30, 650, 420), (10, 10, 100, 90)])
def test_border_grid_centres_reach_within_half_a_stride_of_the_roi_edge(roi):
    """reach="border": window centres lie inside the ROI, the first and last within half a
    stride of its edges (balanced), and one more centre would leave the ROI."""
    grid = WindowGrid.covering((700, 500), roi, window=256, stride=48, reach="border")
    centres = grid.centres()
    y0, x0, y1, x1 = roi
    for axis, (lo, hi) in enumerate(((y0, y1), (x0, x1))):
        along = centres[:, 0, 0] if axis == 0 else centres[0, :, 1]
        # pixel r is centred at r: the ROI's pixels lo … hi − 1
        first, last = along[0], along[-1]
        assert lo - 0.5 <= first and last <= hi - 1 + 0.5
        assert first - lo <= 48 / 2 + 0.5 and (hi - 1) - last <= 48 / 2 + 0.5
        assert abs((first - lo) - ((hi - 1) - last)) <= 1.5
        assert last + 48 > hi - 1 + 0.5 or first - 48 < lo - 0.5
    with pytest.raises(ValueError, match="reach"):
        WindowGrid.covering((700, 500), roi, window=256, stride=48, reach="edge")


def test_windows_from_padded_image_match_brute_force_extraction():
    rng = np.random.default_rng(1)
    img = rng.random((120, 90)).astype(np.float32)
    grid = WindowGrid.covering(img.shape, (5, 10, 118, 70), window=64, stride=20)
    padded, (oy, ox) = grid.padded(img)
    for (r, c) in grid.corners().reshape(-1, 2):
        expected = np.zeros((64, 64), np.float32)
        for y in range(64):
            for x in range(64):
                if 0 <= r + y < img.shape[0] and 0 <= c + x < img.shape[1]:
                    expected[y, x] = img[r + y, c + x]
        np.testing.assert_array_equal(padded[r + oy : r + oy + 64, c + ox : c + ox + 64], expected)


def test_fraction_inside_matches_pixel_count():
    rng = np.random.default_rng(2)
    mask = rng.random((150, 110)) > 0.6
    grid = WindowGrid.covering(mask.shape, None, window=50, stride=17)
    frac = grid.fraction_inside(mask)
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            r, c = grid.corners()[i, j]
            count = sum(
                mask[y, x]
                for y in range(max(r, 0), min(r + 50, 150))
                for x in range(max(c, 0), min(c + 50, 110))
            )
            assert frac[i, j] == pytest.approx(count / 2500)


def test_cell_of_inverts_centres():
    grid = WindowGrid.covering((900, 600), None, window=256, stride=48)
    centres = grid.centres()
    for i, j in [(0, 0), (3, 2), (grid.shape[0] - 1, grid.shape[1] - 1)]:
        assert grid.cell_of(*centres[i, j]) == (i, j)


def test_grid_roundtrips_through_dict():
    grid = WindowGrid.covering((900, 600), (10, 20, 800, 500), window=256, stride=48)
    assert WindowGrid.from_dict(grid.to_dict()) == grid
