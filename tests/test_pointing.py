"""Pointing game (docs/method.md §10): tolerance, thresholds, one count per label, weighted mean."""

from __future__ import annotations

import numpy as np
import pytest

from napari_correlax.errors import CorrelaxError
from napari_correlax.evaluate.pointing import (
    GROW_PX,
    RULES,
    pointing_table,
    pointing_verdicts,
)
from napari_correlax.maps.result import MapResult
from napari_correlax.windows import WindowGrid

LABELS = ["No Finding", "Mass", "Suspicious Calcification", "Asymmetries"]
GRID = WindowGrid(window=256, stride=48, origin=(-20, 10), shape=(6, 5), image_shape=(500, 400))


def make_result(prediction, correlation=None, mask=None, grid=GRID, labels=LABELS):
    prediction = np.asarray(prediction, dtype=np.float32)
    return MapResult(
        labels=list(labels), grid=grid, prediction=prediction,
        window_mask=np.ones(grid.shape, bool) if mask is None else mask,
        correlation=None if correlation is None else np.asarray(correlation, np.float32),
    )


def one_hot_maps(cell, value, label="Mass", corr_value=None):
    """Prediction (and correlation) maps that are 0 except ``value`` at ``cell`` for ``label``."""
    pred = np.zeros((len(LABELS), *GRID.shape), np.float32)
    pred[LABELS.index(label)][cell] = value
    corr = None
    if corr_value is not None:
        corr = np.full((len(LABELS), *GRID.shape), -0.5, np.float32)
        corr[LABELS.index(label)][cell] = corr_value
    return pred, corr


def centre_in_box_frame(cell):
    """Window centre of ``cell`` in the VinDr box frame, computed from the grid definition.

    Window (i, j) covers rows origin_y + 48 i … + 255, so in a frame where pixel k spans
    [k, k + 1) its centre is at origin + 48 i + 128.
    """
    i, j = cell
    return GRID.origin[1] + 48 * j + 128.0, GRID.origin[0] + 48 * i + 128.0  # (x, y)


def verdict(result, boxes, rule):
    found = [v for v in pointing_verdicts(result, boxes, "img") if v.rule == rule]
    assert len(found) == 1
    return found[0]


@pytest.mark.parametrize("side", ["left", "right", "top", "bottom"])
def test_48_px_tolerance_is_inclusive_on_every_side(side):
    cell = (2, 3)
    x, y = centre_in_box_frame(cell)
    pred, _ = one_hot_maps(cell, 0.9)
    result = make_result(pred)

    def box_at(gap):
        # A 30×30 box whose nearest edge is ``gap`` px from the peak, on ``side``.
        if side == "left":  # box lies left of the peak: its xmax is x - gap
            return ("Mass", x - gap - 30, y - 15, x - gap, y + 15)
        if side == "right":
            return ("Mass", x + gap, y - 15, x + gap + 30, y + 15)
        if side == "top":
            return ("Mass", x - 15, y - gap - 30, x + 15, y - gap)
        return ("Mass", x - 15, y + gap, x + 15, y + gap + 30)

    assert verdict(result, [box_at(48.0)], "prediction>=0.25").hit
    assert verdict(result, [box_at(47.5)], "prediction>=0.25").hit
    missed = verdict(result, [box_at(48.01)], "prediction>=0.25")
    assert not missed.hit and not missed.inside
    assert GROW_PX == 48.0


def test_peak_location_is_the_window_centre_in_image_pixels():
    cell = (4, 1)
    pred, _ = one_hot_maps(cell, 0.7)
    v = verdict(make_result(pred), [("Mass", 0, 0, 10, 10)], "prediction>=0.25")
    # pixel-centre convention: centre of pixels a … a+255 is a + 127.5
    assert (v.row, v.col) == (-20 + 4 * 48 + 127.5, 10 + 1 * 48 + 127.5)
    assert v.value == pytest.approx(0.7)


@pytest.mark.parametrize(
    ("value", "hit25", "hit50"),
    [(0.2499, False, False), (0.25, True, False), (0.4999, True, False), (0.5, True, True),
     (0.97, True, True)],
)
def test_prediction_thresholds_are_at_least_25_and_50_percent(value, hit25, hit50):
    cell = (1, 1)
    x, y = centre_in_box_frame(cell)
    pred, _ = one_hot_maps(cell, value)
    result = make_result(pred)
    box = [("Mass", x - 5, y - 5, x + 5, y + 5)]
    v25 = verdict(result, box, "prediction>=0.25")
    v50 = verdict(result, box, "prediction>=0.50")
    assert v25.inside and v50.inside
    assert (v25.hit, v50.hit) == (hit25, hit50)


@pytest.mark.parametrize(("value", "hit"), [(0.0, False), (1e-6, True), (0.8, True)])
def test_correlation_counts_only_when_positive(value, hit):
    cell = (3, 2)
    x, y = centre_in_box_frame(cell)
    pred, corr = one_hot_maps(cell, 0.9, corr_value=value)  # -0.5 elsewhere
    v = verdict(make_result(pred, corr), [("Mass", x - 5, y - 5, x + 5, y + 5)],
                "correlation>0")
    assert v.inside
    assert v.hit is hit


def test_negative_correlation_maximum_is_a_miss_even_inside_the_box():
    corr = np.full((len(LABELS), *GRID.shape), -0.3, np.float32)
    pred = np.zeros_like(corr)
    x, y = centre_in_box_frame((0, 0))
    v = verdict(make_result(pred, corr), [("Mass", x - 5, y - 5, x + 5, y + 5)],
                "correlation>0")
    assert v.inside and not v.hit


def test_several_boxes_of_one_label_count_once():
    cell = (2, 2)
    x, y = centre_in_box_frame(cell)
    pred, corr = one_hot_maps(cell, 0.6, corr_value=0.4)
    boxes = [("Mass", 0, 0, 20, 20), ("Mass", x - 3, y - 3, x + 3, y + 3),
             ("Mass", 300, 400, 320, 420)]
    found = pointing_verdicts(make_result(pred, corr), boxes, "img")
    assert sorted(v.rule for v in found) == sorted(r.name for r in RULES)
    assert all(v.boxes == 3 and v.hit for v in found)
    table = pointing_table(found, LABELS)
    assert table.support("Mass") == 1
    assert table.accuracy("Mass", "prediction>=0.25") == 1.0


def test_no_finding_and_unknown_labels_are_not_scored():
    pred, corr = one_hot_maps((1, 1), 0.9, corr_value=0.5)
    boxes = [("No Finding", 0, 0, 400, 500), ("Nodule", 0, 0, 400, 500)]
    assert pointing_verdicts(make_result(pred, corr), boxes, "img") == []
    table = pointing_table([], LABELS)
    assert "No Finding" not in table.labels
    assert table.weighted_mean("prediction>=0.25") is None


def test_prediction_only_result_gives_no_correlation_verdicts():
    pred, _ = one_hot_maps((1, 1), 0.9)
    found = pointing_verdicts(make_result(pred), [("Mass", 0, 0, 400, 500)], "img")
    assert {v.rule for v in found} == {"prediction>=0.25", "prediction>=0.50"}


def test_maximum_ignores_windows_outside_the_tissue_mask():
    pred = np.zeros((len(LABELS), *GRID.shape), np.float32)
    mass = LABELS.index("Mass")
    pred[mass, 0, 0] = 0.99  # not evaluated
    pred[mass, 5, 4] = 0.4
    mask = np.ones(GRID.shape, bool)
    mask[0, 0] = False
    x, y = centre_in_box_frame((5, 4))
    v = verdict(make_result(pred, mask=mask), [("Mass", x - 1, y - 1, x + 1, y + 1)],
                "prediction>=0.25")
    assert v.hit and v.value == pytest.approx(0.4)


# -- brute force -----------------------------------------------------------------------
def brute_force_table(images):
    """Independent count: loops over windows and boxes, dicts of lists, no library code."""
    stride, window = GRID.stride, GRID.window
    counts = {}  # (label, rule) -> [hits, pairs]
    for pred, corr, mask, boxes in images:
        for label in sorted({b[0] for b in boxes}):
            if label == "No Finding":
                continue
            c = LABELS.index(label)
            for rule, maps, test in (
                ("prediction>=0.25", pred, lambda v: v >= 0.25),
                ("prediction>=0.50", pred, lambda v: v >= 0.5),
                ("correlation>0", corr, lambda v: v > 0),
            ):
                best, where = None, None
                for i in range(GRID.shape[0]):
                    for j in range(GRID.shape[1]):
                        if mask[i][j] and (best is None or maps[c][i][j] > best):
                            best, where = maps[c][i][j], (i, j)
                # centre in the box frame: first pixel + window / 2
                y = GRID.origin[0] + stride * where[0] + window / 2
                x = GRID.origin[1] + stride * where[1] + window / 2
                inside = False
                for lab, x0, y0, x1, y1 in boxes:
                    if lab == label and x0 - 48 <= x <= x1 + 48 and y0 - 48 <= y <= y1 + 48:
                        inside = True
                entry = counts.setdefault((label, rule), [0, 0])
                entry[0] += int(inside and test(best))
                entry[1] += 1
    return counts


def test_table_and_weighted_mean_match_a_brute_force_count():
    rng = np.random.default_rng(7)
    images, verdicts = [], []
    for k in range(60):
        pred = rng.random((len(LABELS), *GRID.shape)).astype(np.float32) * rng.uniform(0.3, 1.0)
        corr = (rng.random((len(LABELS), *GRID.shape)) * 2 - 1).astype(np.float32)
        mask = rng.random(GRID.shape) > 0.2
        mask[0, 0] = True
        boxes = []
        for _ in range(rng.integers(0, 4)):
            label = LABELS[rng.integers(0, len(LABELS))]
            x0, y0 = rng.uniform(0, 350), rng.uniform(0, 450)
            w, h = rng.uniform(5, 120, 2)
            boxes.append((label, float(x0), float(y0), float(x0 + w), float(y0 + h)))
        images.append((pred, corr, mask, boxes))
        verdicts += pointing_verdicts(make_result(pred, corr, mask), boxes, f"img{k}")
    table = pointing_table(verdicts, LABELS)
    expected = brute_force_table(images)
    assert table.labels == LABELS[1:]
    assert any(h for h, _ in expected.values()) and any(h < n for h, n in expected.values())
    for (label, rule), (hits, pairs) in expected.items():
        assert table.accuracy(label, rule) == pytest.approx(hits / pairs)
        assert table.support(label) == pairs
    for rule in ("prediction>=0.25", "prediction>=0.50", "correlation>0"):
        num = sum(h / n * n for (lab, r), (h, n) in expected.items() if r == rule)
        den = sum(n for (lab, r), (h, n) in expected.items() if r == rule)
        assert table.weighted_mean(rule) == pytest.approx(num / den)
    assert table.total_support() == sum(n for (lab, r), (h, n) in expected.items()
                                        if r == "prediction>=0.25")


def test_weighted_mean_weights_labels_by_support():
    # Hand-worked: Mass 3 hits of 4 pairs, Calcification 0 of 1 → (0.75·4 + 0·1) / 5 = 0.6,
    # while the unweighted mean would be 0.375.
    from napari_correlax.evaluate.pointing import Verdict

    def v(image, label, hit):
        return Verdict(image, label, "prediction>=0.25", "prediction", 0.9, 0, 0, hit, hit, 1)

    found = [v("a", "Mass", True), v("b", "Mass", True), v("c", "Mass", True),
             v("d", "Mass", False), v("a", "Suspicious Calcification", False)]
    table = pointing_table(found, LABELS)
    assert table.weighted_mean("prediction>=0.25") == pytest.approx(0.6)
    assert table.accuracy("Asymmetries", "prediction>=0.25") is None
    assert table.total_support() == 5


# -- the two summary rows ----------------------------------------------------------------
def rule_verdict(image, label, hit, rule="prediction>=0.25"):
    from napari_correlax.evaluate.pointing import Verdict

    name = rule.split(">")[0]
    return Verdict(image, label, rule, name, 0.9, 0, 0, hit, hit, 1)


def test_both_means_on_a_hand_worked_set_of_five_images():
    # image: {label: hit}. Mass hits 3 of 4 pairs, Calcification 3 of 3; 6 hits over
    # 7 (image, label) pairs from 5 images.
    by_image = {
        "a": {"Mass": True},
        "b": {"Mass": False, "Suspicious Calcification": True},
        "c": {"Suspicious Calcification": True},
        "d": {"Mass": True, "Suspicious Calcification": True},
        "e": {"Mass": True},
    }
    found = [rule_verdict(img, lab, hit) for img, labs in by_image.items()
             for lab, hit in labs.items()]
    table = pointing_table(found, LABELS)
    rule = "prediction>=0.25"
    # weighted by support: (3/4 · 4 + 3/3 · 3) / (4 + 3) = 6 / 7
    assert table.weighted_mean(rule) == pytest.approx((0.75 * 4 + 1.0 * 3) / 7)
    # the paper's figure: 6 hits / 5 images with a lesion, above 1
    assert table.images_with_lesion(rule) == 5
    assert table.hits_per_lesion_image(rule) == pytest.approx(6 / 5)
    assert table.hits_per_lesion_image(rule) > 1
    # a rule with no verdicts has neither mean
    assert table.hits_per_lesion_image("correlation>0") is None
    assert table.weighted_mean("correlation>0") is None


def test_pointing_report_names_both_means_in_csv_and_markdown():
    import csv
    import io

    from napari_correlax.evaluate.report import HITS_PER_IMAGE, MEAN_BY_SUPPORT, pointing_report

    found = []
    for img, mass, calc in (("a", True, None), ("b", False, True), ("c", None, False),
                            ("d", True, True)):
        for label, hit in (("Mass", mass), ("Suspicious Calcification", calc)):
            if hit is None:
                continue
            found.append(rule_verdict(img, label, hit, "prediction>=0.25"))
            found.append(rule_verdict(img, label, not hit, "correlation>0"))
    report = pointing_report(pointing_table(found, LABELS))
    rows = list(csv.DictReader(io.StringIO(report.to_csv())))
    assert [r["Finding"] for r in rows] == [*LABELS[1:], MEAN_BY_SUPPORT, HITS_PER_IMAGE]
    # pairs: Mass a b d, Calcification b c d → 6 pairs in 4 images.
    # prediction: hits a, d (Mass), b, d (Calc) = 4; correlation: b (Mass), c (Calc) = 2.
    by_support, per_image = rows[-2], rows[-1]
    assert by_support["Support"] == "6" and per_image["Support"] == "4"
    assert by_support["Prediction Map (≥ 25%)"] == f"{4 / 6:.4f}"
    assert per_image["Prediction Map (≥ 25%)"] == f"{4 / 4:.4f}"
    assert by_support["Correlation Map"] == f"{2 / 6:.4f}"
    assert per_image["Correlation Map"] == f"{2 / 4:.4f}"
    assert by_support["Prediction Map (≥ 50%)"] == per_image["Prediction Map (≥ 50%)"] == ""
    markdown = report.to_markdown()
    assert f"| {MEAN_BY_SUPPORT} | 0.6667 |" in markdown
    assert f"| {HITS_PER_IMAGE} | 1.0000 |" in markdown
    assert "exceed 1" in markdown


# Paper Table 4: support and hits per label (hits = accuracy × support, rounded), for the
# prediction map at ≥ 25 % and the correlation map.
PAPER_TABLE_4 = {
    "Mass": (219, 114, 92),
    "Suspicious Calcification": (105, 81, 76),
    "Asymmetries": (78, 21, 27),
    "Architectural Distortion": (24, 0, 0),
    "Suspicious Lymph Node": (10, 4, 0),
    "Skin Thickening": (12, 7, 5),
    "Retractions": (8, 0, 0),
}
PAPER_ACCURACY = {"Mass": (0.5205, 0.4201), "Suspicious Calcification": (0.7714, 0.7238),
                  "Asymmetries": (0.2692, 0.3462), "Architectural Distortion": (0.0, 0.0),
                  "Suspicious Lymph Node": (0.4, 0.0), "Skin Thickening": (0.5833, 0.4167),
                  "Retractions": (0.0, 0.0)}


def test_paper_table_4_weighted_mean_is_hits_per_image_with_a_lesion():
    labels = ["No Finding", *PAPER_TABLE_4]
    n_images = 357
    found, k = [], 0
    for label, (support, hits_pred, hits_corr) in PAPER_TABLE_4.items():
        for i in range(support):
            image = f"img{k % n_images}"  # support ≤ 357: one pair per (image, label)
            k += 1
            found.append(rule_verdict(image, label, i < hits_pred, "prediction>=0.25"))
            found.append(rule_verdict(image, label, i < hits_corr, "correlation>0"))
    table = pointing_table(found, labels)
    for label, (pred, corr) in PAPER_ACCURACY.items():
        assert round(table.accuracy(label, "prediction>=0.25"), 4) == pred
        assert round(table.accuracy(label, "correlation>0"), 4) == corr
    total_support = sum(s for s, _, _ in PAPER_TABLE_4.values())
    hits_pred = sum(h for _, h, _ in PAPER_TABLE_4.values())
    hits_corr = sum(h for _, _, h in PAPER_TABLE_4.values())
    assert (total_support, hits_pred, hits_corr) == (456, 227, 200)
    assert table.images_with_lesion("prediction>=0.25") == n_images
    # the paper's "Weighted Mean Accuracy" row: 0.6358 and 0.5602 (227 / 357 = 0.63585
    # is printed cut, not rounded, in the paper; hence the 1e-4 tolerance)
    assert table.hits_per_lesion_image("prediction>=0.25") == pytest.approx(hits_pred / n_images)
    assert table.hits_per_lesion_image("prediction>=0.25") == pytest.approx(0.6358, abs=1e-4)
    assert table.hits_per_lesion_image("correlation>0") == pytest.approx(0.5602, abs=1e-4)
    # weighted by support, from the paper's own rows: 0.4978 and 0.4386
    num = sum(PAPER_ACCURACY[lab][0] * s for lab, (s, _, _) in PAPER_TABLE_4.items())
    assert table.weighted_mean("prediction>=0.25") == pytest.approx(num / total_support,
                                                                    abs=1e-4)
    assert table.weighted_mean("prediction>=0.25") == pytest.approx(0.4978, abs=1e-4)
    assert table.weighted_mean("correlation>0") == pytest.approx(0.4386, abs=1e-4)


def test_a_one_cell_prediction_map_has_no_location_to_score():
    """A global-mode CAM run keeps the image-level prediction as one cell: no verdicts."""
    from napari_correlax.evaluate.pointing import normal_verdicts, rules_for

    labels = ["No Finding", "Mass"]
    saliency = np.zeros((2, 50, 40), dtype=np.float32)
    saliency[1, 10, 20] = 1.0
    result = MapResult(labels=labels, grid=WindowGrid(50, 50, (0, 0), (1, 1), (50, 40)),
                       prediction=np.full((2, 1, 1), 0.9), window_mask=np.ones((1, 1), bool),
                       extra={"saliency": saliency})
    found = pointing_verdicts(result, [("Mass", 15.0, 5.0, 25.0, 15.0)], "x")
    assert found == []  # the default rules score prediction and correlation only
    rules = rules_for(("saliency", "prediction"))
    found = pointing_verdicts(result, [("Mass", 15.0, 5.0, 25.0, 15.0)], "x", rules=rules)
    assert [(v.rule, v.row, v.col, v.hit) for v in found] == [("saliency", 10.0, 20.0, True)]
    assert [v.rule for v in normal_verdicts(result, "y", rules=rules)] == ["saliency"]


# --------------------------------------------------------------------------- uncertainty


class _FixedRedraw:
    """A stage-2 draw by hand: fixed fresh (correlation, half-width) per grid cell for
    label ``c``, and the cells it was asked for."""

    def __init__(self, n_labels, c, values):
        self.c, self.n, self.values, self.asked = c, n_labels, values, []

    def check_grid(self, result):
        pass

    def __call__(self, cells):
        self.asked.append(list(cells))
        out = []
        for cell in cells:
            rho, half = np.zeros(self.n), np.full(self.n, 0.05)
            rho[self.c], half[self.c] = self.values[cell]
            out.append((rho, half))
        return out


def test_correlation_verdicts_say_whether_the_peak_stands_out():
    """Interval fields by hand: GRID is 6 × 5 windows of 256 px at stride 48, so windows
    share no pixel once 6 cells apart; the runner-up is searched in a 12 × 12 grid."""
    grid = WindowGrid(window=256, stride=48, origin=(0, 0), shape=(12, 12),
                      image_shape=(900, 900))
    c = LABELS.index("Mass")
    pred = np.zeros((len(LABELS), 12, 12), np.float32)
    corr = np.zeros_like(pred)
    half = np.full_like(pred, 0.05)
    corr[c, 2, 2], half[c, 2, 2] = 0.6, 0.1  # the peak: interval 0.5–0.7
    corr[c, 2, 7] = 0.58  # overlaps the peak's window (5 cells apart): not a competitor
    corr[c, 9, 3], half[c, 9, 3] = 0.42, 0.05  # 7 cells apart: runner-up, interval ≤ 0.47
    corr[c, 10, 10] = 0.30
    corr[c, 11, 0] = 0.55  # far away but not evaluated (no tissue): not a competitor
    mask = np.ones((12, 12), bool)
    mask[11, 0] = False
    result = MapResult(labels=list(LABELS), grid=grid, prediction=pred, window_mask=mask,
                       correlation=corr, extra={"correlation_ci": half})
    box = [("Mass", 0, 0, 300, 300)]
    v = next(x for x in pointing_verdicts(result, box, "img") if x.map == "correlation")
    assert v.value == pytest.approx(0.6) and v.ci == pytest.approx(0.1)
    assert (v.runner_up, v.runner_up_ci) == (pytest.approx(0.42), pytest.approx(0.05))
    # The flags are never tested on the masks that selected the peak: no second draw,
    # no flags, however clear the first draw looks.
    assert v.nonzero is None and v.separated is None
    # Stage 2: fresh values at the two selected windows decide. Peak 0.55 ± 0.1 vs
    # runner-up 0.30 ± 0.1: 0.45 > 0.40, apart; peak interval 0.45–0.65 excludes 0.
    redraw = _FixedRedraw(len(LABELS), c, {(2, 2): (0.55, 0.1), (9, 3): (0.30, 0.1)})
    v = next(x for x in pointing_verdicts(result, box, "img", redraw=redraw)
             if x.map == "correlation")
    assert redraw.asked == [[(2, 2), (9, 3)]]  # the map's peak and runner-up windows
    assert v.nonzero is True and v.separated is True
    assert v.value == pytest.approx(0.6) and v.ci == pytest.approx(0.1)  # the map's
    # Fresh values that overlap (0.45 − 0.2 = 0.25 < 0.40 + 0.05) and reach 0: both False.
    redraw = _FixedRedraw(len(LABELS), c, {(2, 2): (0.15, 0.2), (9, 3): (0.40, 0.05)})
    v = next(x for x in pointing_verdicts(result, box, "img", redraw=redraw)
             if x.map == "correlation")
    assert v.separated is False and v.nonzero is False
    p = next(x for x in pointing_verdicts(result, box, "img", redraw=redraw)
             if x.map == "prediction")
    assert np.isnan(p.ci) and p.nonzero is None and p.separated is None


def test_peak_redraw_is_an_independent_draw_at_the_chosen_windows(small_phantom):
    import torch

    from napari_correlax.evaluate.pointing import REDRAW_STREAM, PeakRedraw
    from napari_correlax.maps import explain, explain_windows
    from napari_correlax.maps.settings import MapSettings
    from napari_correlax.maps.sliding import prepare_image
    from napari_correlax.models.classifier import Classifier

    torch.manual_seed(0)
    model = Classifier("tiny", input_size=64).eval()
    settings = MapSettings(method="correlax", masks=64, min_masks=64, adaptive=False,
                           focus=False, stride=64, seed=3, device="cpu")
    result = explain(small_phantom, model, masks=64, min_masks=64, adaptive=False,
                     focus=False, stride=64, seed=3, device="cpu")
    redraw = PeakRedraw(small_phantom, model, settings)
    redraw.check_grid(result)
    cells = [result.peak_cell("correlation", "Mass"), (0, 0)]
    fresh = redraw(cells)
    # Independently: the two windows cut by hand, explain_windows with the first draw's
    # seed and with the seed of the second stream.
    prep = prepare_image(small_phantom, model, stride=64)
    gx = prep.grid.shape[1]
    flat = np.asarray([i * gx + j for i, j in cells])
    crops = torch.from_numpy(prep.windows(flat)).permute(0, 3, 1, 2)
    seed2 = int(np.random.SeedSequence((3, REDRAW_STREAM)).generate_state(1)[0])
    second = explain_windows(model, crops, masks=64, seed=seed2, min_masks=64)
    first = explain_windows(model, crops, masks=64, seed=3, min_masks=64)
    for k in range(2):
        np.testing.assert_allclose(fresh[k][0], second.correlation[k], atol=1e-6)
        np.testing.assert_allclose(fresh[k][1], second.correlation_ci[k], atol=1e-6)
    assert np.abs(fresh[0][0] - first.correlation[0]).max() > 1e-3  # other masks
    other = MapSettings(method="correlax", masks=64, min_masks=64, adaptive=False,
                        stride=48, seed=3, device="cpu")
    with pytest.raises(CorrelaxError, match="another window grid"):
        PeakRedraw(small_phantom, model, other).check_grid(result)


def test_no_interval_fields_without_a_confidence_map():
    pred, corr = one_hot_maps((2, 2), 0.9, corr_value=0.4)
    v = verdict(make_result(pred, corr), [("Mass", 0, 0, 400, 400)], "correlation>0")
    assert np.isnan(v.ci) and v.nonzero is None and np.isnan(v.runner_up)
