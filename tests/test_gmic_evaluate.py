"""GMIC evaluation and inference (method §9, §10): ``correlax gmic evaluate`` writes the
paper's Tables I and II, resumes from its cache and gives the same tables under torchrun;
the ``"gmic"`` map method; ``load_model``; data-parallel training.

Table I is recounted with scikit-learn from the cached outputs; Table II's operating
point is recomputed from the map method's maps with one FROC sweep over all images; the
map method is checked against ``GMIC.run`` and the input transform.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_correlax.cli import main
from napari_correlax.errors import CorrelaxError
from napari_correlax.gmic import GMIC, GMICConfig, gmic_input, save_gmic

TINY = {"global_filters": 8, "global_stages": 2, "local_width": 8, "K": 2,
        "crop_shape": (32, 32), "percent_t": 0.05, "input_size": (256, 160), "fit": "resize"}


def _checkpoint(path: Path, seed: int, train_cam: str | None,
                classes: tuple[str, ...] = ("Mass",), data: Path | None = None) -> Path:
    """A random-weight GMIC saved as a checkpoint; with ``data``, its fusion bias puts
    the median fusion logit of the data set's test images at 0, so both decisions occur."""
    from napari_correlax.io import read_mammogram
    from napari_correlax.io.vindr import load_vindr

    torch.manual_seed(seed)
    model = GMIC(GMICConfig(num_classes=len(classes), class_names=classes,
                            train_cam=train_cam or "cam", **TINY)).eval()
    if data is not None:
        x = torch.cat([gmic_input(read_mammogram(r.path), r.laterality, size=(256, 160),
                                  fit="resize").tensor()
                       for r in load_vindr(data).split("test")])
        with torch.no_grad():
            logits = torch.logit(model(x).y_fusion.double())
            model.fusion_dnn.bias -= logits.median(dim=0).values.float() + 1e-3
    info = {"training": {"train_cam": train_cam}} if train_cam else {"imported": {}}
    return save_gmic(model, path, info)


@pytest.fixture(scope="module")
def checkpoints(small_mass_phantoms, tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("gmic_models")
    return [_checkpoint(folder / "xgrad.safetensors", 1, "xgradcam", data=small_mass_phantoms),
            _checkpoint(folder / "plain.safetensors", 2, "cam", data=small_mass_phantoms)]


def _evaluate(data: Path, models: list[Path], out: Path, *extra: str) -> int:
    return main(["gmic", "evaluate", str(data), "--model", *map(str, models),
                 "--test-cam", "cam,gradcam", "--out", str(out), "--device", "cpu", *extra])


@pytest.fixture(scope="module")
def evaluated(small_mass_phantoms, checkpoints, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gmic_eval")
    torch.set_num_threads(1)
    assert _evaluate(small_mass_phantoms, checkpoints, out) == 0
    return out


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_evaluate_writes_tables_one_and_two_with_the_froc(evaluated):
    for name in ("table1-classification.csv", "table1-classification.md",
                 "table2-detection.csv", "table2-detection.md", "froc.csv", "froc.png",
                 "report.json", "report.md"):
        assert (evaluated / name).is_file(), name
    table2 = _rows(evaluated / "table2-detection.csv")
    assert [r["Training CAM"] for r in table2] == ["XGrad-CAM", "CAM"]
    # each model's patches are picked by the CAM it was trained with
    table1 = _rows(evaluated / "table1-classification.csv")
    assert [r["Patches by"] for r in table1] == ["XGrad-CAM", "CAM"]
    assert list(table2[0])[3:] == ["CAM", "Grad-CAM"]
    assert all("@" in r["CAM"] and "@" in r["Grad-CAM"] for r in table2)
    assert (evaluated / "froc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table_one_equals_sklearn_on_the_cached_outputs(evaluated, small_mass_phantoms):
    from sklearn.metrics import accuracy_score, recall_score, roc_auc_score

    from napari_correlax.io.vindr import load_vindr

    report = json.loads((evaluated / "report.json").read_text())
    truth = {r.image_id: float(any(b.label == "Mass" for b in r.boxes))
             for r in load_vindr(small_mass_phantoms).split("test")}
    rows = _rows(evaluated / "table1-classification.csv")
    assert len(rows) == 2
    for row, model in zip(rows, report["models"]):
        cached = [json.loads(p.read_text()) for p in
                  sorted((evaluated / "cache" / model["cache_key"]).glob("image*.json"))]
        assert len(cached) == len(truth) == 6
        y = np.array([truth[d["image_id"]] for d in cached])
        p = np.array([d["y_fusion"][0] for d in cached])
        pred = (p >= 0.5).astype(float)
        assert 0 < pred.sum() < len(pred)  # both decisions occur, so every number is tested
        expected = {"Accuracy": accuracy_score(y, pred), "AUC": roc_auc_score(y, p),
                    "TPR": recall_score(y, pred), "TNR": recall_score(1 - y, 1 - pred),
                    "FNR": float(((pred == 0) & (y == 1)).sum() / (y == 1).sum())}
        for column, value in expected.items():
            assert float(row[column]) == pytest.approx(value, abs=5e-5), column
        assert int(row["Positives"]) == 3 and int(row["Negatives"]) == 3


def test_table_two_equals_one_froc_sweep_over_the_map_methods_maps(evaluated, checkpoints,
                                                                   small_mass_phantoms):
    from napari_correlax.evaluate.detection import (
        GridMap,
        froc_curve,
        operating_point,
        operating_point_text,
    )
    from napari_correlax.io import read_mammogram
    from napari_correlax.io.vindr import load_vindr
    from napari_correlax.maps.methods import run_method
    from napari_correlax.maps.runtime import drain
    from napari_correlax.maps.settings import MapSettings
    from napari_correlax.models import load_model

    model = load_model(checkpoints[0])
    maps, truth = [], []
    for record in load_vindr(small_mass_phantoms).split("test"):
        if not record.boxes:
            continue  # Table II counts the images with a mass, as the paper
        result = drain(run_method(read_mammogram(record.path), model,
                                  MapSettings(method="gmic", options={"cam": "gradcam"})))
        maps.append(GridMap.from_result(result, "saliency", "Mass"))
        truth.append([(b.xmin, b.ymin, b.xmax, b.ymax) for b in record.boxes])
    expected = operating_point_text(operating_point(froc_curve(maps, truth)))
    assert _rows(evaluated / "table2-detection.csv")[0]["Grad-CAM"] == expected


def test_evaluate_resumes_from_its_cache(evaluated, small_mass_phantoms, checkpoints, tmp_path):
    import shutil

    out = tmp_path / "again"
    shutil.copytree(evaluated, out)
    caches = [p for p in (out / "cache").rglob("image*.json")]
    gone = caches[0]
    gone.unlink()
    stamps = {p: p.stat().st_mtime_ns for p in caches[1:]}
    assert _evaluate(small_mass_phantoms, checkpoints, out) == 0
    assert gone.is_file()  # the missing image was computed again ...
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # ... and only it
    for name in ("table1-classification.csv", "table2-detection.csv", "froc.csv"):
        assert (out / name).read_bytes() == (evaluated / name).read_bytes(), name


def test_two_torchrun_processes_give_the_same_tables_as_one(evaluated, small_mass_phantoms,
                                                            checkpoints, tmp_path):
    out = tmp_path / "two"
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", "-m", "napari_correlax.cli", "gmic", "evaluate", str(small_mass_phantoms),
           "--model", *map(str, checkpoints), "--test-cam", "cam,gradcam", "--out", str(out),
           "--device", "cpu"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("table1-classification.csv", "table2-detection.csv", "froc.csv"):
        assert (out / name).read_bytes() == (evaluated / name).read_bytes(), name


def test_outputs_that_name_no_label_need_positive(small_mass_phantoms, tmp_path, capsys):
    official = _checkpoint(tmp_path / "official.safetensors", 3, None, ("benign", "malignant"))
    assert _evaluate(small_mass_phantoms, [official], tmp_path / "a") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "give --positive LABEL for each output" in err[0]
    assert _evaluate(small_mass_phantoms, [official], tmp_path / "b",
                     "--positive", "Mass", "Mass", "--check", "none") == 0
    rows = _rows(tmp_path / "b" / "table2-detection.csv")
    assert [r["Training CAM"] for r in rows] == ["CAM", "CAM"]  # published weights: GMIC's CAM


# ------------------------------------------------------------------------ the map method


def test_map_method_gives_saliency_prediction_and_patches_in_original_pixels(
        checkpoints, small_mass_phantoms):
    from napari_correlax.io import read_mammogram
    from napari_correlax.io.vindr import load_vindr
    from napari_correlax.maps.methods import METHODS, run_method
    from napari_correlax.maps.runtime import drain
    from napari_correlax.maps.settings import MapSettings
    from napari_correlax.models import load_model

    assert "gmic" in METHODS and METHODS["gmic"].scored == "saliency"
    model = load_model(checkpoints[0])
    record = next(r for r in load_vindr(small_mass_phantoms).split("test") if r.laterality == "R")
    mammogram = read_mammogram(record.path)
    result = drain(run_method(mammogram, model, MapSettings(method="gmic")))

    prepared = gmic_input(mammogram, "R", size=(256, 160), fit="resize")
    reference = model.run(prepared.tensor())
    assert result.labels == ["Mass"]
    np.testing.assert_allclose(result.prediction, reference.y_fusion.reshape(1, 1, 1), atol=1e-6)
    saliency = result.extra["saliency"]
    assert saliency.shape == (1, 256, 160) == (1, *mammogram.pixels.shape)
    np.testing.assert_allclose(saliency, prepared.transform.map_to_original(reference.saliency[0]),
                               atol=1e-6, equal_nan=True)
    gmic = result.meta["gmic"]
    assert gmic["laterality"] == "R" and gmic["laterality_from"] == "metadata"
    assert gmic["y_fusion"] == pytest.approx(reference.y_fusion[0].tolist(), abs=1e-6)
    boxes = prepared.transform.box_to_original(reference.patch_boxes()[0])
    assert len(gmic["patches"]) == 2
    for patch, box, weight in zip(gmic["patches"], boxes, reference.attention[0]):
        top, left, height, width = patch["box"]
        assert [top, left, top + height, left + width] == pytest.approx(box.tolist())
        assert patch["attention"] == pytest.approx(float(weight), abs=1e-6)
    # A right breast: the mirrored input's left edge (chest wall) is the image's right edge.
    assert boxes[:, 3].max() <= 160 and boxes[:, 1].min() >= 0

    # A gradient CAM: the library's own map, scaled by the library to [0, 1] at the
    # layer's resolution (its resize step asked for that same size), then warped.
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from napari_correlax.gmic.network import GlobalScore

    graded = drain(run_method(mammogram, model, MapSettings(
        method="gmic", options={"cam": "xgradcam", "laterality": "R"})))
    assert graded.meta["gmic"]["laterality_from"] == "option"
    cam = pytorch_grad_cam.XGradCAM(model=GlobalScore(model), target_layers=[model.ds_net.relu])
    grid = model.config.cam_size
    cam.get_target_width_height = lambda x: (grid[1], grid[0])
    library = cam(input_tensor=prepared.tensor(), targets=[ClassifierOutputTarget(0)])
    cam.activations_and_grads.release()
    np.testing.assert_allclose(graded.extra["saliency"],
                               prepared.transform.map_to_original(library), atol=1e-5,
                               equal_nan=True)


def test_laterality_is_detected_when_the_image_does_not_say(checkpoints):
    from napari_correlax.gmic.method import analyse, breast_side
    from napari_correlax.models import load_model
    from napari_correlax.synth import make_phantom

    for side in ("L", "R"):
        pixels = make_phantom(3, shape=(256, 160), laterality=side).pixels
        assert breast_side(pixels) == side
    model = load_model(checkpoints[0])
    analysis = analyse(make_phantom(3, shape=(256, 160), laterality="R").pixels, model)
    assert analysis.laterality_source == "detected" and analysis.prepared.laterality == "R"


def test_gmic_method_refuses_a_classifier(tiny_checkpoint):
    from napari_correlax.gmic.method import analyse
    from napari_correlax.models import load_model

    with pytest.raises(CorrelaxError, match="needs a GMIC model"):
        analyse(np.zeros((256, 160), np.float32), load_model(tiny_checkpoint))


def test_load_model_opens_either_kind_and_names_anything_else(checkpoints, tiny_checkpoint,
                                                             tmp_path):
    from safetensors.torch import save_file

    from napari_correlax.models import load_model
    from napari_correlax.models.classifier import Classifier

    assert isinstance(load_model(checkpoints[0]), GMIC)
    assert isinstance(load_model(tiny_checkpoint), Classifier)
    assert isinstance(load_model(None), Classifier)  # the demo model
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(1)}, plain)
    with pytest.raises(CorrelaxError, match="without napari-correlax metadata") as info:
        load_model(plain)
    assert "plain.safetensors" in str(info.value)
    official = tmp_path / "sample_model_1.p"
    torch.save({"w": torch.zeros(1)}, official)
    with pytest.raises(CorrelaxError, match="correlax gmic import"):
        load_model(official)


def test_listing_methods_loads_no_torch():
    code = ("import sys; from napari_correlax.maps.methods import METHODS; "
            "assert 'gmic' in METHODS; print('torch' in sys.modules)")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


# ----------------------------------------------------------------- data-parallel training


def test_training_under_torchrun_with_two_processes(small_mass_phantoms, tmp_path):
    out = tmp_path / "ddp"
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", "-m", "napari_correlax.cli", "gmic", "train", str(small_mass_phantoms),
           "--out", str(out), "--epochs", "1", "--batch-size", "4", "--input-size", "256",
           "160", "--crop-size", "32", "32", "--k", "2", "--global-filters", "8",
           "--global-stages", "2", "--local-width", "8", "--lr", "1e-3", "--device", "cpu",
           "--threads", "1", "--progress", "json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    events = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
    assert [e["event"] for e in events].count("start") == 1  # only rank 0 reports
    assert next(e for e in events if e["event"] == "start")["world_size"] == 2
    epoch = next(e for e in events if e["event"] == "epoch")
    assert epoch["images_per_second"] > 0 and np.isfinite(epoch["train_loss"])
    state = json.loads((out / "last.train.json").read_text())
    assert len(state["rng"]) == 2 and state["epoch"] == 1


def test_retrieval_cam_override_changes_the_fusion_output_as_a_direct_run(
        small_mass_phantoms, checkpoints, tmp_path):
    """--retrieval-cam cam runs the XGrad-CAM-trained model with GMIC's saliency picking
    the patches: Table I's outputs are those of model(x, "cam") computed here."""
    from napari_correlax.gmic import load_gmic
    from napari_correlax.gmic.method import analyse
    from napari_correlax.io import read_mammogram
    from napari_correlax.io.vindr import load_vindr

    out = tmp_path / "override"
    assert _evaluate(small_mass_phantoms, checkpoints[:1], out, "--retrieval-cam", "cam") == 0
    assert [r["Patches by"] for r in _rows(out / "table1-classification.csv")] == ["CAM"]
    model = load_gmic(checkpoints[0])
    assert model.config.train_cam == "xgradcam"
    report = json.loads((out / "report.json").read_text())
    assert report["table1"][0]["retrieval_cam"] == "cam"
    record = next(r for r in load_vindr(small_mass_phantoms).split("test") if r.boxes)
    own = analyse(read_mammogram(record.path), model, laterality=record.laterality)
    picked = analyse(read_mammogram(record.path), model, laterality=record.laterality,
                     retrieval_cam="cam")
    assert own.retrieval_cam == "xgradcam" and picked.retrieval_cam == "cam"
    with torch.no_grad():
        x = gmic_input(read_mammogram(record.path), record.laterality, size=(256, 160),
                       fit="resize").tensor()
        direct = model(x, "cam").y_fusion[0].numpy()
    np.testing.assert_allclose(picked.y_fusion, direct, rtol=1e-6)
