"""A map method defined only here reaches the dock, export and ``correlax evaluate``.

The method registry is the one place a new map method is added: this test registers a
"constant" method (a per-label map of 0.7 on every evaluated window, plus the prediction)
and finds its maps in the per-window CSV and the saved result, its column in the
evaluation's pointing table and its entry in the analysis dock's method list, without
any of those modules naming it.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest

from napari_correlax.maps.kinds import KINDS, MapKind, register_kind
from napari_correlax.maps.methods import METHODS, MapMethod, register_method

CONSTANT = 0.7


@pytest.fixture
def constant_method():
    register_kind(MapKind("constant", "constant", True, "grid", "sequential", (0.0, 1.0),
                          "A test map: 0.7 everywhere.", pointing_thresholds=(0.5,)))

    @register_method
    class Constant(MapMethod):
        name, title, kinds = "constant", "Constant map", ("prediction", "constant")

        def steps(self, image, model, settings):
            from napari_correlax.maps.sliding import predict_steps

            result = yield from predict_steps(image, model, settings)
            result.extra["constant"] = np.where(result.window_mask, CONSTANT, 0.0)[None].repeat(
                len(result.labels), axis=0).astype(np.float32)
            return result

    yield Constant
    METHODS.pop("constant")
    KINDS.pop("constant")


def test_toy_method_maps_reach_export_and_the_saved_file(constant_method, small_phantom,
                                                         tiny_checkpoint, tmp_path):
    from napari_correlax.export import window_rows
    from napari_correlax.maps import drain, load_result
    from napari_correlax.maps.methods import run_method
    from napari_correlax.maps.settings import MapSettings
    from napari_correlax.models import load_classifier

    model = load_classifier(tiny_checkpoint)
    result = drain(run_method(small_phantom, model,
                              MapSettings(method="constant", stride=128, device="cpu")))
    header, rows = window_rows(result)
    column = header.index("constant:Mass")
    evaluated = header.index("evaluated")
    assert [float(r[column]) for r in rows if r[evaluated]] == pytest.approx(
        [CONSTANT] * int(result.window_mask.sum()))
    back = load_result(result.save(tmp_path / "r.npz"))
    np.testing.assert_array_equal(back.extra["constant"], result.extra["constant"])
    assert back.stats.method == "constant"


def test_toy_method_gets_its_own_pointing_column_in_evaluate(constant_method, small_model,
                                                            tmp_path):
    from napari_correlax.cli import main
    from napari_correlax.synth import write_vindr_dataset

    data = write_vindr_dataset(tmp_path / "data", 4, seed=5, shape=(384, 256),
                               test_fraction=1.0)
    out = tmp_path / "eval"
    assert main(["evaluate", str(data), "--out", str(out), "--model", str(small_model),
                 "--method", "constant", "--stride", "128", "--device", "cpu",
                 "--threads", "1", "--no-froc"]) == 0
    with open(out / "pointing.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert "Constant Map (≥ 50%)" in rows[0]
    assert "Correlation Map" not in rows[0]  # the method makes no correlation maps
    # Every scored (image, label) pair has a constant-map verdict, hit or miss.
    with open(out / "pointing-verdicts.csv", newline="", encoding="utf-8") as fh:
        verdicts = list(csv.DictReader(fh))
    rules = {v["map"] for v in verdicts}
    assert "constant>=0.50" in rules
    pairs = {(v["image_id"], v["label"]) for v in verdicts}
    constant_pairs = {(v["image_id"], v["label"]) for v in verdicts
                      if v["map"] == "constant>=0.50"}
    assert constant_pairs == pairs and pairs


@pytest.mark.gui
def test_toy_method_is_offered_in_the_analysis_dock(constant_method, make_napari_viewer):
    pytest.importorskip("napari")
    from napari_correlax._napari._analysis_widget import AnalysisWidget

    widget = AnalysisWidget(make_napari_viewer())
    names = [widget.method_combo.itemData(k) for k in range(widget.method_combo.count())]
    assert names == list(METHODS) and "constant" in names
    widget.method_combo.setCurrentIndex(names.index("constant"))
    assert widget.settings().method == "constant"
