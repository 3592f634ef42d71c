"""Mask sensitivity (docs/method.md §7, paper Fig. 7): the distance correlation leads, labels apart.

Expected values come from ``np.corrcoef`` on prefixes of the per-mask series that
:func:`explain_windows` stores for the same windows and seed, and from hand-made ρ arrays.
"""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import torch

from napari_correlax.cli.mask_sensitivity import report_doc, table_csv
from napari_correlax.maps import explain_windows
from napari_correlax.maps.runtime import Runtime
from napari_correlax.maps.sensitivity import (
    MaskSensitivity,
    boxplot_figure,
    mask_sensitivity_windows,
)
from napari_correlax.models.classifier import Classifier

RT = Runtime(device="cpu", threads=1)
COUNTS = (32, 64)
REFERENCE = 96
SEED = 1


@pytest.fixture(scope="module")
def measured():
    """The sensitivity result and, for the same windows and seed, the stored series."""
    torch.manual_seed(0)
    model = Classifier("tiny", input_size=32).eval()
    x = torch.randn((3, 3, 32, 32), generator=torch.Generator().manual_seed(6))
    sens = mask_sensitivity_windows(model, x, counts=COUNTS, reference=REFERENCE, seed=SEED,
                                    runtime=RT)
    full = explain_windows(model, x, masks=REFERENCE, seed=SEED, design="iid",
                           return_series=True, runtime=RT)
    return sens, full.series, list(model.labels)


def prefix_differences(series, column):
    """``(W, len(COUNTS))`` |ρ_N − ρ_REFERENCE| by np.corrcoef on the first N masks.

    ``column`` None: the distance ρ(S_h, S_ŷ); else label ``column``: ρ(S_h, ŷ_M[:, c]).
    """
    out = []
    for s in series:
        other = s.s_yhat if column is None else s.yhat_m[:, column]

        def rho(n, other=other, s=s):
            return np.corrcoef(s.s_h[:n], other[:n])[0, 1]

        out.append([abs(rho(n) - rho(REFERENCE)) for n in COUNTS])
    diffs = np.asarray(out)
    assert np.all(np.isfinite(diffs)) and np.all(diffs > 0)  # no constant series here
    return diffs


def summary(values):
    v = np.asarray(values).ravel()
    return {"values": v.size, "mean": v.mean(), "median": np.median(v),
            "p95": np.percentile(v, 95), "max": v.max()}


def assert_rows(rows, diffs_per_count):
    assert [int(r["masks"]) for r in rows] == list(COUNTS)
    for row, diffs in zip(rows, diffs_per_count):
        expected = summary(diffs)
        assert int(row["values"]) == expected["values"]
        for key in ("mean", "median", "p95", "max"):
            assert float(row[key]) == pytest.approx(expected[key], abs=2e-5), key


def test_distance_rows_equal_corrcoef_differences_on_prefixes(measured):
    sens, series, labels = measured
    distance = prefix_differences(series, None)
    assert_rows(sens.distance_table(), distance.T)
    labels_pooled = np.stack([prefix_differences(series, c) for c in range(len(labels))], -1)
    assert_rows(sens.label_table(), [labels_pooled[:, k] for k in range(len(COUNTS))])
    mass = labels.index("Mass")
    assert_rows(sens.table(["Mass"]), [labels_pooled[:, k, mass] for k in range(len(COUNTS))])


def test_csv_and_json_lead_with_the_distance(measured):
    sens, series, labels = measured
    rows = list(csv.DictReader(io.StringIO(table_csv(sens.sections()))))
    names = [r["correlation"] for r in rows]
    blocks = ["distance", "all labels", *labels]
    assert names == [b for b in blocks for _ in COUNTS]
    distance = prefix_differences(series, None)
    assert_rows(rows[:len(COUNTS)], distance.T)
    calcification = labels.index("Suspicious Calcification")
    block = rows[(2 + calcification) * len(COUNTS):(3 + calcification) * len(COUNTS)]
    assert {r["correlation"] for r in block} == {"Suspicious Calcification"}
    assert_rows(block, prefix_differences(series, calcification).T)

    doc = json.loads(json.dumps(report_doc(sens)))
    keys = list(doc)
    assert keys.index("table_distance") < keys.index("table_labels")
    assert_rows(doc["table_distance"], distance.T)
    assert list(doc["table_per_label"]) == labels


def test_box_plot_shows_the_distance_in_its_first_panel(measured):
    import matplotlib.pyplot as plt

    sens, series, labels = measured
    fig = boxplot_figure(sens)
    try:
        first, second = fig.axes
        assert first.get_title().startswith("distance")
        assert second.get_title().startswith("labels")

        def means(ax):
            (line,) = [ln for ln in ax.get_lines() if ln.get_label() == "mean"]
            return np.asarray(line.get_ydata(), float)

        distance = prefix_differences(series, None)
        np.testing.assert_allclose(means(first), distance.mean(axis=0), rtol=1e-4)
        pooled = np.stack([prefix_differences(series, c) for c in range(len(labels))], -1)
        np.testing.assert_allclose(means(second), pooled.mean(axis=(0, 2)), rtol=1e-4)
    finally:
        plt.close(fig)


def hand_made(distance_means):
    """A result whose distance |Δρ| is ``distance_means[k]`` in every window at count k."""
    counts = (128, 256, 512, 1024)
    rho = np.zeros((4, len(counts) + 1, 2))
    rho[:, -1, 0] = 0.5
    rho[:, :-1, 0] = 0.5 + np.asarray(distance_means)
    rho[:, :-1, 1] = 0.9  # a label 0.9 off its reference (0): must not reach the distance
    return MaskSensitivity(counts, 2560, ["distance", "Mass"], rho, np.arange(4))


@pytest.mark.parametrize("means, expected", [
    ((0.05, 0.02, 0.01, 0.005), 256),
    ((0.01, 0.03, 0.01, 0.005), 512),   # must stay below from N on, not only at N
    ((0.01, 0.01, 0.01, 0.03), None),
    ((0.001, 0.001, 0.001, 0.001), 128),
])
def test_smallest_count_within_the_paper_tolerance(means, expected):
    result = hand_made(means)
    assert result.smallest_count_within(0.025) == expected
    assert [r["mean"] for r in result.distance_table()] == pytest.approx(means)
    assert [r["mean"] for r in result.label_table()] == pytest.approx([0.9] * 4)
