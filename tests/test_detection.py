"""Detection from maps and FROC (docs/method.md §10, second paper): hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest

from napari_correlax.evaluate.detection import (
    Detection,
    FrocPoint,
    GridMap,
    box_iou,
    detect,
    froc_curve,
    match_detections,
    operating_point,
    operating_point_text,
    tpr_at_fppi,
)

# A map of 10-px cells: cell k covers pixels 10k … 10k+9, whose centres (napari convention)
# are at 10k … 10k+9, so the cell centre is at 10k + 4.5.
CELLS = dict(scale=(10.0, 10.0), translate=(4.5, 4.5))
VALUES = np.array([
    [0.9, 0.9, 0.0, 0.0, 0.0],
    [0.0, 0.0, 0.5, 0.0, 0.0],  # (1, 2) touches (0, 1) at a corner only
    [0.0, 0.0, 0.0, 0.0, 0.3],
    [0.2, 0.0, 0.0, 0.0, 0.3],
])


def boxes(dets):
    return [d.box for d in dets]


def test_box_iou_hand_worked():
    assert box_iou((0, 0, 10, 10), (5, 5, 15, 15)) == pytest.approx(25 / 175)
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0  # touching edges
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert box_iou((0, 0, 10, 10), (0, 0, 3, 10)) == pytest.approx(0.3)


def test_components_are_8_connected_and_boxes_cover_their_cells():
    dets = detect(GridMap(VALUES, **CELLS), 0.3)
    # Corner-touching cells form one component; the cell at the threshold is on.
    assert boxes(dets) == [(0.0, 0.0, 30.0, 20.0), (40.0, 20.0, 50.0, 40.0)]
    assert [d.score for d in dets] == [0.9, 0.3]


def test_threshold_mask_and_clipping():
    assert boxes(detect(GridMap(VALUES, **CELLS), 0.31)) == [(0.0, 0.0, 30.0, 20.0)]
    assert detect(GridMap(VALUES, **CELLS), 0.95) == []
    mask = np.ones(VALUES.shape, bool)
    mask[0, :2] = False
    masked = detect(GridMap(VALUES, mask=mask, **CELLS), 0.4)
    assert boxes(masked) == [(20.0, 10.0, 30.0, 20.0)] and masked[0].score == 0.5
    clipped = detect(GridMap(VALUES, image_shape=(35, 45), **CELLS), 0.3)
    assert boxes(clipped)[1] == (40.0, 20.0, 45.0, 35.0)


def test_grid_map_of_a_result_uses_stride_squares_around_window_centres():
    from napari_correlax.maps.result import MapResult
    from napari_correlax.windows import WindowGrid

    grid = WindowGrid(256, 48, (0, 0), (3, 4), (400, 400))
    pred = np.zeros((2, 3, 4), np.float32)
    pred[1, 1, 2] = 0.8
    result = MapResult(["No Finding", "Mass"], grid, pred, np.ones((3, 4), bool))
    (det,) = detect(GridMap.from_result(result, "prediction", "Mass"), 0.5)
    # Window (1, 2) covers rows 48…303 and columns 96…351: centre 176, 224 (box frame);
    # its cell is the 48 px square around it.
    assert det.box == (200.0, 152.0, 248.0, 200.0)


def test_iou_must_exceed_0_3_and_one_lesion_is_found_once():
    truth = [(0.0, 0.0, 10.0, 10.0)]
    at = [Detection(0, 0, 3, 10, 1.0)]  # IoU exactly 0.3
    over = [Detection(0, 0, 3.1, 10, 1.0)]
    assert match_detections(at, truth) == ([False], [False])
    assert match_detections(over, truth) == ([True], [True])
    two = [Detection(0, 0, 9, 10, 0.9), Detection(1, 0, 10, 10, 0.8), Detection(50, 50, 60, 60, 1)]
    assert match_detections(two, truth) == ([True, True, False], [True])
    assert match_detections([], truth) == ([], [False])


def test_froc_sweep_hand_counted():
    image2 = np.zeros((4, 5))
    image2[3, 0] = 0.6  # a false positive below the threshold 0.7
    maps = [GridMap(VALUES, **CELLS), GridMap(image2, **CELLS)]
    truth = [[(0, 0, 30, 20), (40, 20, 50, 40)], []]
    curve = froc_curve(maps, truth, thresholds=(0.25, 0.4, 0.7, 0.95))
    got = [(p.threshold, p.tpr, p.fppi, p.found, p.false_positives) for p in curve]
    assert got == [
        (0.25, 1.0, 0.5, 2, 1),  # both lesions; image 2's blob is one FP over 2 images
        (0.4, 0.5, 0.5, 1, 1),  # the 0.3 lesion is gone
        # cells ≥ 0.7 give box (0, 0, 20, 10): IoU 200/600 = 1/3 > 0.3 with the first lesion
        (0.7, 0.5, 0.0, 1, 0),
        (0.95, 0.0, 0.0, 0, 0),
    ]
    assert all(p.boxes == 2 and p.images == 2 for p in curve)
    best = operating_point(curve)
    assert best.threshold == 0.25
    assert operating_point_text(best) == "1.00@0.50"
    assert tpr_at_fppi(curve, 0.0) == 0.5
    assert tpr_at_fppi(curve, 0.5) == 1.0
    assert tpr_at_fppi(curve, -1.0) == 0.0


def test_operating_point_text_and_ties():
    assert operating_point_text(FrocPoint(0.5, 0.7, 0.88, 7, 10, 88, 100)) == "0.70@0.88"
    assert operating_point_text(None) == "–"
    tie = [FrocPoint(0.2, 0.6, 1.2, 6, 10, 12, 10), FrocPoint(0.4, 0.6, 0.4, 6, 10, 4, 10)]
    assert operating_point(tie).threshold == 0.4
    assert operating_point([]) is None


def test_froc_counts_match_a_brute_force_pixel_count():
    """Random maps: TPR/FPPI against an independent flood fill and IoU loop."""
    rng = np.random.default_rng(3)
    maps, truth = [], []
    for _ in range(8):
        maps.append(GridMap(rng.random((6, 7)), **CELLS))
        corners = rng.integers(0, 40, (rng.integers(0, 3), 4)) + np.array([0, 0, 8, 8])
        truth.append([(float(x), float(y), float(x + w), float(y + h))
                      for x, y, w, h in corners])
    thresholds = (0.5, 0.8, 0.9)
    curve = froc_curve(maps, truth, thresholds)
    for point, t in zip(curve, thresholds):
        found = fps = 0
        for grid_map, gt in zip(maps, truth):
            on = grid_map.values >= t
            seen = np.zeros_like(on)
            dets = []
            for i0, j0 in zip(*np.nonzero(on)):
                if seen[i0, j0]:
                    continue
                stack, cells = [(i0, j0)], []
                seen[i0, j0] = True
                while stack:
                    i, j = stack.pop()
                    cells.append((i, j))
                    for di in (-1, 0, 1):
                        for dj in (-1, 0, 1):
                            a, b = i + di, j + dj
                            if 0 <= a < on.shape[0] and 0 <= b < on.shape[1] and on[a, b] \
                                    and not seen[a, b]:
                                seen[a, b] = True
                                stack.append((a, b))
                rows = [c[0] for c in cells]
                cols = [c[1] for c in cells]
                dets.append((10 * min(cols), 10 * min(rows), 10 * max(cols) + 10,
                             10 * max(rows) + 10))
            hit = [False] * len(gt)
            for d in dets:
                tp = False
                for k, g in enumerate(gt):
                    iw = min(d[2], g[2]) - max(d[0], g[0])
                    ih = min(d[3], g[3]) - max(d[1], g[1])
                    inter = max(iw, 0) * max(ih, 0)
                    union = (d[2] - d[0]) * (d[3] - d[1]) + (g[2] - g[0]) * (g[3] - g[1]) - inter
                    if inter / union > 0.3:
                        tp = hit[k] = True
                fps += not tp
            found += sum(hit)
        n_boxes = sum(len(g) for g in truth)
        assert (point.found, point.false_positives) == (found, fps)
        assert point.tpr == pytest.approx(found / n_boxes)
        assert point.fppi == pytest.approx(fps / len(maps))
    assert curve[0].found > 0 and curve[0].false_positives > 0
