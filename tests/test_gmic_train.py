"""GMIC training (method §9): the loss, the CAMs that pick patches, resuming, starting
from other weights, the command line and the dock's watcher, and a short run that
learns to point at masses from image-level labels.

References are independent: ``torch.nn.functional.binary_cross_entropy`` and loops for
the loss, pytorch-grad-cam called directly on the global network, an uninterrupted run
for a resumed one, random maps for the pointing baseline.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_correlax.cli import main
from napari_correlax.errors import CorrelaxError
from napari_correlax.gmic import GMIC, GMICConfig, save_gmic
from napari_correlax.gmic.cams import TRAIN_CAMS, cam_maps, gradient_cam_maps
from napari_correlax.gmic.network import GlobalScore
from napari_correlax.gmic.train import GMICTrainConfig, gmic_loss, train_gmic, train_gmic_steps

#: A small GMIC: two-stage global network (stride 8), narrow local network, 32 px patches.
TINY = {"global_filters": 8, "global_stages": 2, "local_width": 8, "K": 2,
        "crop_shape": (32, 32), "percent_t": 0.05}


def _tiny_model(seed: int = 0, classes: tuple[str, ...] = ("Mass", "Suspicious Calcification"),
                size: tuple[int, int] = (256, 160)) -> GMIC:
    torch.manual_seed(seed)
    return GMIC(GMICConfig(num_classes=len(classes), class_names=classes, input_size=size,
                           **TINY))


def _config(data, out, **changes) -> GMICTrainConfig:
    model = {("top_t" if k == "percent_t" else k): v for k, v in TINY.items()}
    settings = {"input_size": (256, 160), "lr": 1e-3, "batch_size": 3, "epochs": 2,
                "device": "cpu", "threads": 1, **model, **changes}
    return GMICTrainConfig(data=str(data), out=str(out), **settings)


# ------------------------------------------------------------------------------- the loss


@pytest.mark.parametrize("reg", ["mean", "sum"])
def test_loss_equals_a_hand_computation(reg):
    model = _tiny_model(1).train()
    x = torch.randn(3, 1, 256, 160, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    out = model(x)
    loss, parts = gmic_loss(out, y, beta=3.26, reg=reg)

    expected = 0.0
    for c in range(2):  # sum over classes of the per-class BCE, each averaged over images
        for p in (out.y_global, out.y_local, out.y_fusion):
            expected += float(F.binary_cross_entropy(p[:, c].detach(), y[:, c]))
    a = out.saliency.detach().double().numpy()
    cells = a.shape[2] * a.shape[3]
    l1 = sum(np.abs(a[n, c]).sum() for n in range(3) for c in range(2)) / 3
    expected += 3.26 * (l1 / cells if reg == "mean" else l1)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert sum(parts.values()) == pytest.approx(loss.item(), rel=1e-6)
    loss.backward()  # the loss reaches every parameter
    assert all(p.grad is not None for p in model.parameters())


# ------------------------------------------------------------------- CAMs picking patches


@pytest.mark.parametrize("method", [m for m in TRAIN_CAMS if m != "cam"])
def test_training_cam_equals_pytorch_grad_cam_on_the_global_network(method, monkeypatch):
    import pytorch_grad_cam
    import pytorch_grad_cam.base_cam as base_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = _tiny_model(3).eval()
    with torch.no_grad():  # saliency logits of both signs, so no class map is all zero
        head = model.left_postprocess_net.gn_conv_last.weight
        head.copy_(torch.randn(head.shape, generator=torch.Generator().manual_seed(8)) + 0.2)
    x = torch.randn(2, 1, 256, 160, generator=torch.Generator().manual_seed(4))
    out = model(x, retrieval_map=method)
    ours = gradient_cam_maps(model, out.features, method).numpy()
    assert ours.shape == out.saliency.shape  # the layer's own grid, no upsampling
    np.testing.assert_array_equal(out.retrieval_map.numpy(), ours)  # what picked the patches

    # The library itself, on the global network, with its scaling switched off.
    monkeypatch.setattr(base_cam, "scale_cam_image", lambda cam, target_size=None: cam)
    cls = {"gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "xgradcam": "XGradCAM",
           "layercam": "LayerCAM"}[method]
    cam = getattr(pytorch_grad_cam, cls)(model=GlobalScore(model),
                                         target_layers=[model.ds_net.relu])
    for c in range(2):
        reference = cam(input_tensor=x, targets=[ClassifierOutputTarget(c)] * 2)
        np.testing.assert_allclose(ours[:, c], reference, atol=1e-5, rtol=1e-5)
        assert (ours[:, c] > 0).any()
    cam.activations_and_grads.release()


def test_cam_retrieval_uses_gmic_saliency():
    model = _tiny_model(5).eval()
    x = torch.randn(2, 1, 256, 160, generator=torch.Generator().manual_seed(6))
    out = model(x, retrieval_map="cam")
    np.testing.assert_array_equal(out.retrieval_map.numpy(), out.saliency.detach().numpy())
    np.testing.assert_array_equal(cam_maps(model, out.features, out.saliency, "cam").numpy(),
                                  out.saliency.detach().numpy())
    with pytest.raises(CorrelaxError, match="unknown CAM method 'scorecam'"):
        model(x, retrieval_map="scorecam")


# ------------------------------------------------------------------------------ resuming


def _epochs(events) -> dict[int, dict]:
    return {e.done: e.data for e in events if e.kind == "epoch"}


def test_resume_gives_the_same_next_epoch_as_an_uninterrupted_run(small_mass_phantoms, tmp_path):
    whole = tmp_path / "whole"
    events = list(train_gmic_steps(_config(small_mass_phantoms, whole, epochs=2,
                                           train_cam="xgradcam")))
    split = tmp_path / "split"
    first = list(train_gmic_steps(_config(small_mass_phantoms, split, epochs=1,
                                          train_cam="xgradcam")))
    resumed = list(train_gmic_steps(_config(small_mass_phantoms, split, epochs=2,
                                            train_cam="xgradcam")))
    assert [e.done for e in resumed if e.kind == "epoch"] == [2]  # only the epoch left
    assert resumed[0].data["resumed"] and not first[0].data["resumed"]
    a, b = _epochs(events)[2], _epochs(resumed)[2]
    assert abs(a["train_loss"] - b["train_loss"]) <= 1e-6
    assert abs(_epochs(events)[1]["train_loss"] - _epochs(first)[1]["train_loss"]) <= 1e-6
    from safetensors.torch import load_file

    w1, w2 = load_file(whole / "last.safetensors"), load_file(split / "last.safetensors")
    assert set(w1) == set(w2)
    assert max(float((w1[k].double() - w2[k].double()).abs().max()) for k in w1) <= 1e-6
    history = [json.loads(line) for line in (split / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    info = json.loads((split / "last.json").read_text())["info"]["training"]
    assert info["train_cam"] == "xgradcam" and info["epoch"] == 2

    with pytest.raises(CorrelaxError, match="train_cam: 'xgradcam' there, 'cam' now"):
        train_gmic(_config(small_mass_phantoms, split, epochs=3, train_cam="cam"))


def test_initial_weights_of_another_class_count_keep_all_but_the_class_heads(
        small_mass_phantoms, tmp_path):
    source = _tiny_model(7, classes=("benign", "malignant"))
    path = save_gmic(source, tmp_path / "two-class.safetensors")
    events = list(train_gmic_steps(_config(small_mass_phantoms, tmp_path / "run", epochs=1,
                                           init=str(path), lr=1e-12)))
    warning = [e for e in events if e.kind == "warning"]
    assert warning and "fusion_dnn.weight" in warning[0].data["message"]
    assert events[0].data["pretrained"] == "two-class.safetensors"
    from safetensors.torch import load_file

    trained = load_file(tmp_path / "run" / "last.safetensors")
    before = source.state_dict()
    heads = {"left_postprocess_net.gn_conv_last.weight", "classifier_linear.weight",
             "fusion_dnn.weight", "fusion_dnn.bias"}
    assert trained["classifier_linear.weight"].shape == (1, 64)
    for key in ("ds_net.first_conv.weight", "dn_resnet.layer4.1.conv2.weight",
                "mil_attn_V.weight"):  # copied, then barely moved by lr = 1e-12
        assert key not in heads
        assert torch.allclose(trained[key], before[key], atol=1e-6)


def test_settings_that_cannot_work_are_refused(small_mass_phantoms, tmp_path):
    with pytest.raises(CorrelaxError, match="unknown positive label 'Lump'"):
        _config(small_mass_phantoms, tmp_path, positive=["Lump"])
    with pytest.raises(CorrelaxError, match="unknown CAM method 'eigencam'"):
        _config(small_mass_phantoms, tmp_path, train_cam="eigencam")
    with pytest.raises(CorrelaxError, match="must fit in the input size"):
        _config(small_mass_phantoms, tmp_path, crop_shape=(512, 32))
    with pytest.raises(CorrelaxError, match="needs positive and negative images"):
        train_gmic(_config(small_mass_phantoms, tmp_path, positive=["Skin Thickening"]))


# ------------------------------------------------------------------- CLI and the watcher


def test_cli_progress_json_feeds_the_training_dock_watcher(small_mass_phantoms, tmp_path,
                                                            capsys):
    from napari_correlax.train.watch import EventLines, TrainWatch, train_command

    out = tmp_path / "run"
    request = GMICTrainConfig(str(small_mass_phantoms), str(out), train_cam="gradcam++",
                              epochs=1, batch_size=4, device="cpu")
    argv = train_command(request)
    assert argv[1:5] == ["-m", "napari_correlax.cli", "gmic", "train"]
    extra = ["--input-size", "256", "160", "--crop-size", "32", "32", "--k", "2",
             "--global-filters", "8", "--global-stages", "2", "--local-width", "8",
             "--threads", "1"]
    assert main(argv[3:] + extra) == 0
    watch = TrainWatch(request)
    lines = EventLines()
    statuses = [watch.handle(e) for e in lines.feed(capsys.readouterr().out.encode())]
    assert statuses[0].startswith("GMIC on 8 images (4 Mass, 4 negative), patches by gradcam++")
    assert [h["epoch"] for h in watch.history] == [1]
    assert watch.find_checkpoint() == str(out / "last.safetensors")
    assert watch.end(0, False, False).status.startswith("finished: last epoch 1")
    assert watch.series()["train_loss"][0][0] == 1


def test_cli_train_error_is_one_line(tmp_path, capsys):
    assert main(["gmic", "train", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data folder not found" in err[0]


# ----------------------------------------------------------------- learning to point


def _pointing(data, checkpoint, cam: str, draws: int = 20) -> tuple[int, float, int]:
    """(hits of the trained model's map, mean hits of random maps on the same grid and
    transform, positive images): the map's maximum in original pixels inside a mass box
    grown by 48 px."""
    from napari_correlax.gmic import gmic_input
    from napari_correlax.io import read_mammogram
    from napari_correlax.io.vindr import load_vindr
    from napari_correlax.maps.methods import run_method
    from napari_correlax.maps.runtime import drain
    from napari_correlax.maps.settings import MapSettings
    from napari_correlax.models import load_model

    model = load_model(checkpoint)
    rng = np.random.default_rng(0)
    hits, baseline, n = 0, 0.0, 0
    for record in load_vindr(data).images:
        if not record.boxes:
            continue
        mammogram = read_mammogram(record.path)

        def hit(saliency: np.ndarray, boxes=record.boxes) -> bool:
            r, c = np.unravel_index(int(np.nanargmax(saliency)), saliency.shape)
            return any(b.ymin - 48 <= r + 0.5 <= b.ymax + 48 and
                       b.xmin - 48 <= c + 0.5 <= b.xmax + 48 for b in boxes)

        result = drain(run_method(mammogram, model, MapSettings(method="gmic",
                                                                options={"cam": cam})))
        hits += hit(result.extra["saliency"][0])
        prepared = gmic_input(mammogram, record.laterality, size=model.config.input_size,
                              fit=model.config.fit)
        grid = model.config.cam_size
        baseline += np.mean([hit(prepared.transform.map_to_original(rng.random(grid)))
                             for _ in range(draws)])
        n += 1
    return hits, baseline, n


@pytest.mark.parametrize("cam", ["cam", "gradcam"])
def test_short_training_points_at_masses_more_often_than_random_maps(mass_phantoms, tmp_path,
                                                                     cam):
    # Image-level labels only. At this scale (tiny networks, 48 images, 6 epochs) whether
    # the saliency head finds the masses depends on the initial weights, which the seed
    # fixes (torch's CPU generator is the same on every platform).
    out = tmp_path / cam
    train_gmic(_config(mass_phantoms, out, input_size=(512, 320), epochs=6, batch_size=6,
                       train_cam=cam, flip_p=0.0, crop_noise=0.0, seed=4))
    hits, baseline, n = _pointing(mass_phantoms, out / "last.safetensors", cam)
    assert n == 32
    assert hits >= 2 * baseline and hits - baseline >= 8, (hits, baseline)


def test_top_t_comes_from_the_settings_else_the_initial_weights_else_model_1(
        small_mass_phantoms, tmp_path):
    """The pooling fraction the trained model uses: given, else the initial weights', else
    the first published model's 0.02 (GMIC's official table)."""
    torch.manual_seed(3)
    source = GMIC(GMICConfig(num_classes=1, class_names=("Mass",), input_size=(256, 160),
                             **{**TINY, "percent_t": 0.1}))
    path = save_gmic(source, tmp_path / "start.safetensors")

    def trained_top_t(name, **settings):
        train_gmic(_config(small_mass_phantoms, tmp_path / name, epochs=1, lr=1e-12,
                           **settings))
        doc = json.loads((tmp_path / name / "last.json").read_text())
        assert doc["info"]["training"]["top_t"] == doc["config"]["percent_t"]
        return doc["config"]["percent_t"]

    assert trained_top_t("given", init=str(path), top_t=0.2) == 0.2
    assert trained_top_t("from-init", init=str(path), top_t=None) == 0.1
    assert trained_top_t("default", top_t=None) == 0.02
