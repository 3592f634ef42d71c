"""GMIC on single images (method §9): the predictions table, the ensemble as the NaN-mean
of single-model runs, and the official runner's figure."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from napari_correlax.errors import CorrelaxError
from napari_correlax.gmic import GMIC, GMICConfig
from napari_correlax.gmic.method import analyse
from napari_correlax.gmic.predict import predict_image, save_gmic_figure, write_predictions
from napari_correlax.synth import make_phantom

TINY = {"global_filters": 8, "global_stages": 2, "local_width": 8, "K": 3,
        "crop_shape": (32, 32), "percent_t": 0.05, "input_size": (256, 160)}
CLASSES = ("Mass", "Suspicious Calcification")


def _model(seed: int, classes: tuple[str, ...] = CLASSES) -> GMIC:
    torch.manual_seed(seed)
    return GMIC(GMICConfig(num_classes=len(classes), class_names=classes, **TINY)).eval()


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(5, shape=(256, 160), laterality="L").pixels


def test_ensemble_is_the_nan_mean_of_single_model_runs(phantom):
    models = [_model(s) for s in (1, 2, 3)]
    single = [analyse(phantom, m) for m in models]
    got = predict_image(phantom, models, name="p5")
    for key in ("y_global", "y_local", "y_fusion"):
        by_hand = [sum(float(getattr(a, key)[c]) for a in single) / 3 for c in range(2)]
        np.testing.assert_allclose(getattr(got, key), by_hand, rtol=1e-6)


def test_a_model_with_nan_outputs_does_not_count(phantom, monkeypatch):
    models = [_model(1), _model(2)]
    good = predict_image(phantom, models[:1])
    import napari_correlax.gmic.method as method

    real = method.analyse

    def with_nan(image, model, *args, **kwargs):
        a = real(image, model, *args, **kwargs)
        if model is models[1]:
            object.__setattr__(a, "y_fusion", np.full_like(a.y_fusion, np.nan))
        return a

    monkeypatch.setattr(method, "analyse", with_nan)
    got = predict_image(phantom, models)
    np.testing.assert_allclose(got.y_fusion, good.y_fusion, rtol=1e-6)


def test_models_with_other_outputs_are_refused(phantom):
    with pytest.raises(CorrelaxError, match="same outputs"):
        predict_image(phantom, [_model(1), _model(2, ("Mass",))])


def test_predictions_csv_has_one_row_per_image_and_three_outputs_per_class(phantom, tmp_path):
    p = predict_image(phantom, [_model(1)], name="p5")
    path = write_predictions(tmp_path / "predictions.csv", [p])
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 1 and rows[0]["image"] == "p5"
    for c, name in enumerate(CLASSES):
        for key in ("y_global", "y_local", "y_fusion"):
            assert float(rows[0][f"{name} {key}"]) == pytest.approx(
                float(getattr(p, key)[c]), abs=1e-6)


def test_figure_draws_every_panel_and_crop(phantom, tmp_path):
    import matplotlib.image as mpimg

    p = predict_image(phantom, [_model(1)], name="p5")
    path = save_gmic_figure(tmp_path / "p5.png", phantom, p,
                            boxes=[("Mass", 40.0, 60.0, 90.0, 120.0)], title="p5")
    picture = mpimg.imread(path)
    assert picture.ndim == 3 and picture.shape[0] > 100
    # the ground-truth box is drawn in lime somewhere on the figure
    rgb = picture[..., :3]
    lime = (rgb[..., 0] < 0.2) & (rgb[..., 1] > 0.8) & (rgb[..., 2] < 0.2)
    assert lime.sum() > 20


def test_cli_gmic_predict_writes_the_table_and_a_figure_per_image(small_mass_phantoms, tmp_path,
                                                                  capsys):
    from napari_correlax.cli import main
    from napari_correlax.gmic import save_gmic
    from napari_correlax.io import read_mammogram
    from napari_correlax.io.vindr import load_vindr

    records = [r for r in load_vindr(small_mass_phantoms).split("test")][:2]
    models = [save_gmic(_model(s, ("Mass",)), tmp_path / f"m{s}.safetensors") for s in (1, 2)]
    out = tmp_path / "out"
    assert main(["gmic", "predict", *(str(r.path) for r in records), "--model",
                 *map(str, models), "--out", str(out), "--data", str(small_mass_phantoms),
                 "--device", "cpu"]) == 0
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert [r["image"] for r in rows] == [r.path.stem for r in records]
    for row, record in zip(rows, records):
        assert (out / f"{record.path.stem}.png").read_bytes()[:4] == b"\x89PNG"
        single = [analyse(read_mammogram(record.path), _model(s, ("Mass",)),
                          laterality=record.laterality or None) for s in (1, 2)]
        assert float(row["Mass y_fusion"]) == pytest.approx(
            np.mean([float(a.y_fusion[0]) for a in single]), abs=2e-6)
    assert "predictions.csv" in capsys.readouterr().out


def test_cli_gmic_predict_names_a_missing_image(tmp_path, capsys):
    from napari_correlax.cli import main

    assert main(["gmic", "predict", str(tmp_path / "nope.dcm"), "--model",
                 str(tmp_path / "m.safetensors"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "nope.dcm" in err and len(err.strip().splitlines()) == 1
