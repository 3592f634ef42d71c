"""Model-randomisation sanity check (Adebayo et al., 2018; docs/method.md §10)."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from scipy import stats

from napari_correlax.evaluate.sanity import cascade, sanity, spearman, stages
from napari_correlax.maps.methods import METHODS, MapMethod, get_method, register_method
from napari_correlax.maps.settings import MapSettings


@pytest.fixture
def image_method():
    """A map method that ignores the model: its saliency map is the image itself."""

    @register_method
    class ImageItself(MapMethod):
        name, title, kinds = "image-itself", "The image", ("saliency", "prediction")

        def steps(self, image, model, settings):
            result = yield from get_method("prediction").steps(image, model, settings)
            pixels = np.asarray(getattr(image, "pixels", image), dtype=np.float32)
            result.extra["saliency"] = np.repeat(pixels[None], len(result.labels), axis=0)
            return result

    yield ImageItself
    METHODS.pop("image-itself")


@pytest.fixture
def tiny128():
    import torch

    from napari_correlax.models.classifier import Classifier

    torch.manual_seed(0)
    return Classifier("tiny", input_size=128).eval()


def test_spearman_matches_scipy_on_the_finite_pairs():
    rng = np.random.default_rng(1)
    a = np.round(rng.normal(size=(30, 40)), 1)  # rounding makes ties
    b = a + rng.normal(scale=0.8, size=a.shape)
    a[rng.random(a.shape) < 0.1] = np.nan
    b[:3] = np.nan
    keep = np.isfinite(a) & np.isfinite(b)
    expected = stats.spearmanr(a[keep], b[keep]).statistic
    assert spearman(a, b) == pytest.approx(expected, abs=1e-12)
    assert spearman(a, -b) == pytest.approx(-expected, abs=1e-12)
    assert math.isnan(spearman(np.ones(10), np.arange(10.0)))
    assert math.isnan(spearman(np.array([1.0, np.nan]), np.array([np.nan, 2.0])))


def test_stages_group_each_convolution_with_its_batchnorm(tiny128):
    found = stages(tiny128)
    assert [name for name, _ in found] == ["encoder.body.0", "encoder.body.3", "encoder.body.6"]
    assert [type(m).__name__ for m in found[0][1]] == ["Conv2d", "BatchNorm2d"]


def test_cascade_reinitialises_the_head_then_ever_deeper_stages(tiny128):
    import torch

    with torch.no_grad():  # "trained": no weight or statistic left at its initial value
        for value in tiny128.state_dict().values():
            if value.is_floating_point():
                value.add_(0.1 + 0.01 * torch.rand_like(value))
    before = {k: v.clone() for k, v in tiny128.state_dict().items()}
    prefixes = ["classifier.", "encoder.body.6.", "encoder.body.3.", "encoder.body.4.",
                "encoder.body.0.", "encoder.body.1."]
    random_after = [[], prefixes[:1], prefixes[:2], prefixes[:4], prefixes]
    steps = []
    for k, (name, model) in enumerate(cascade(tiny128, seed=3)):
        steps.append(name)
        state = model.state_dict()
        for key, value in before.items():
            if "num_batches_tracked" in key:
                continue
            changed = not np.array_equal(state[key].numpy(), value.numpy())
            assert changed == key.startswith(tuple(random_after[k])), (name, key)
    assert steps == ["original", "head", "head … encoder.body.6", "head … encoder.body.3",
                     "head … encoder.body.0"]
    for key, value in tiny128.state_dict().items():  # the trained model is left alone
        assert np.array_equal(value.numpy(), before[key].numpy())
    again = [dict(m.state_dict()) for _, m in cascade(tiny128, seed=3)][-1]
    assert all(np.array_equal(again[k].numpy(), state[k].numpy()) for k in state)  # seeded


def test_a_map_of_the_image_is_flagged_and_gradcam_passes(image_method, tiny128, small_phantom):
    report = sanity(small_phantom, tiny128, ["image-itself", "gradcam"],
                    MapSettings(stride=64, device="cpu"))
    assert report.steps[0] == "original" and len(report.steps) == 5
    assert report.flagged == ["image-itself"]
    np.testing.assert_allclose(report.rho["image-itself"], 1.0)
    assert report.final("gradcam") < report.threshold
    assert report.rho["gradcam"][0] == pytest.approx(1.0)
    table = report.table()
    verdicts = {row[0]: row[-1] for row in table.rows}
    assert verdicts["image-itself"].startswith("FLAGGED") and verdicts["gradcam"] == "passes"


def test_sanity_command_writes_tables_and_refuses_a_bad_threshold(small_model, phantom_dicom,
                                                                   tmp_path, capsys):
    from napari_correlax.cli import main

    out = tmp_path / "sanity"
    assert main(["sanity", str(phantom_dicom), "--model", str(small_model), "--methods",
                 "prediction,cam", "--stride", "128", "--device", "cpu", "--out",
                 str(out)]) == 0
    with open(out / "sanity.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 5 * 8 and {r["method"] for r in rows} == {"prediction"}
    assert (out / "sanity.md").read_text().count("| prediction |") == 1
    captured = capsys.readouterr()
    assert "left out cam" in captured.err
    assert main(["sanity", str(phantom_dicom), "--threshold", "2", "--out", str(out)]) == 2
