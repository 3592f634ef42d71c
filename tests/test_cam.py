"""The CAM family (docs/method.md §8) against pytorch-grad-cam called directly.

Every map is checked against the library itself on the same input tensor, target layer
and label (or against a hand-derived relation or a brute-force loop), on the "tiny"
backbone with random weights at 64 px windows, so each test runs in about a second.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from unittest import mock

import cv2
import numpy as np
import pytest
import torch
from pytorch_grad_cam import (
    AblationCAM,
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from napari_correlax.errors import CorrelaxError
from napari_correlax.maps.cam import cam_steps, cam_windows
from napari_correlax.maps.cam_stitch import Stitcher
from napari_correlax.maps.settings import MapSettings
from napari_correlax.models.classifier import Classifier

LIBRARY = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "xgradcam": XGradCAM,
           "layercam": LayerCAM, "hirescam": HiResCAM, "eigencam": EigenCAM,
           "scorecam": ScoreCAM, "ablationcam": AblationCAM}
GRADIENT_FREE = ("eigencam", "scorecam", "ablationcam")
SIZE = 64  # window side of the test models


class Logits(torch.nn.Module):
    """What the library is handed: normalised images → label logits."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.logits(self.model.features(x))


def tiny(hidden: int = 512) -> Classifier:
    torch.manual_seed(0)
    return Classifier("tiny", input_size=SIZE, hidden=hidden).eval()


@pytest.fixture(scope="module")
def model() -> Classifier:
    return tiny()


def oriented_projection(activation_batch):
    """The library's Eigen-CAM projection, each image's sign chosen so that it correlates
    positively (np.corrcoef) with the activation sum over channels."""
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    out = get_2d_projection(activation_batch)
    for b, acts in enumerate(activation_batch):
        if np.corrcoef(out[b].ravel(), acts.sum(axis=0).ravel())[0, 1] < 0:
            out[b] = -out[b]
    return out


def oriented_library(method):
    """For Eigen-CAM, the library with its projection oriented (method.md §8); else as is."""
    if method != "eigencam":
        return contextlib.nullcontext()
    return mock.patch("pytorch_grad_cam.eigen_cam.get_2d_projection", oriented_projection)


def library(method, model, layer):
    """The library's object, with 8 channels per forward pass (as the runs below);
    ``layer`` is one module or a list of them."""
    layers = list(layer) if isinstance(layer, (list, tuple)) else [layer]
    if method == "ablationcam":
        return AblationCAM(Logits(model), layers, batch_size=8)
    lib = LIBRARY[method](Logits(model), layers)
    if method == "scorecam":
        lib.batch_size = 8
    return lib


def library_raw(method, model, layer, x, label):
    """Per image of ``x``: the library's map after its ReLU, before its scaling, resized as
    the library resizes; and what the library's call returns."""
    lib = library(method, model, layer)
    targets = [ClassifierOutputTarget(label)] * len(x)
    with oriented_library(method):
        returned = lib(x, targets)
        acts = lib.activations_and_grads.activations[0].numpy()
        grads = (None if method in GRADIENT_FREE
                 else lib.activations_and_grads.gradients[0].numpy())
        raw = np.maximum(lib.get_cam_image(x, layer, targets, acts, grads, False), 0)
    lib.activations_and_grads.release()
    size = tuple(x.shape[-2:])[::-1]
    return np.stack([cv2.resize(np.float32(m), size) for m in raw]), returned


def phantom_windows(phantom, model, n=3):
    from napari_correlax.maps.sliding import prepare_image

    prep = prepare_image(phantom, model, stride=SIZE)
    flat = np.flatnonzero(prep.active.ravel())[:n]
    return torch.from_numpy(prep.windows(flat)).permute(0, 3, 1, 2).contiguous()


def drain(steps):
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


# -- global mode -----------------------------------------------------------------------
@pytest.mark.parametrize("method", list(LIBRARY))
def test_global_map_is_what_the_library_returns_on_the_same_input(method, model,
                                                                  small_phantom):
    from napari_correlax import cam
    from napari_correlax.preprocess import breast_roi, preprocessing_of

    result = cam(small_phantom, model, method, mode="global", labels=["Mass"],
                 scale="window", global_size=96, device="cpu", batch_size=8)
    # The input, built here: the fused image's breast region, long side 96 px.
    y0, x0, y1, x1 = breast_roi(small_phantom.pixels).box
    crop = preprocessing_of(model).fuse(small_phantom.pixels)[y0:y1, x0:x1]
    f = 96 / max(crop.shape[:2])
    small = cv2.resize(crop, (round(crop.shape[1] * f), round(crop.shape[0] * f)),
                       interpolation=cv2.INTER_AREA)
    x = model.normalize(torch.from_numpy(small).permute(2, 0, 1)[None])
    names = result.stats.settings.get("layers", [result.target_layer])
    assert len(names) == (3 if method == "layercam" else 1)
    lib = library(method, model, [model.get_submodule(n) for n in names])
    with oriented_library(method):
        returned = lib(x, [ClassifierOutputTarget(model.labels.index("Mass"))])[0]
    lib.activations_and_grads.release()
    expected = cv2.resize(returned, (x1 - x0, y1 - y0))
    saliency = result.get("saliency")
    assert saliency.shape == (1, *small_phantom.pixels.shape) and saliency.dtype == np.float32
    np.testing.assert_allclose(saliency[0, y0:y1, x0:x1], expected, atol=1e-5)
    outside = np.ones(saliency.shape[1:], dtype=bool)
    outside[y0:y1, x0:x1] = False
    assert np.isnan(saliency[0][outside]).all()
    # The prediction is the image-level probability of the same input.
    with torch.no_grad():
        p = torch.sigmoid(Logits(model)(x))[0, model.labels.index("Mass")].item()
    assert result.prediction.shape == (1, 1, 1)
    assert result.prediction[0, 0, 0] == pytest.approx(p, abs=1e-6)


# -- windows ---------------------------------------------------------------------------
@pytest.mark.parametrize("method", list(LIBRARY))
def test_window_maps_are_the_library_maps_of_each_window_alone(method, model, small_phantom):
    windows = phantom_windows(small_phantom, model)
    labels = ["Mass", "Asymmetries"]
    one = {"layers": 1} if method == "layercam" else {}  # several stages: tested below
    raw = cam_windows(model, windows, method, labels=labels, device="cpu", batch_size=8,
                      **one)
    scaled = cam_windows(model, windows, method, labels=labels, scale="window",
                         device="cpu", batch_size=8, **one)
    assert raw.saliency.shape == (len(windows), 2, SIZE, SIZE)
    layer = model.get_submodule(raw.target_layer)
    for b in range(len(windows)):
        x = model.normalize(windows[b : b + 1])
        for k, label in enumerate(labels):
            expected, returned = library_raw(method, model, layer, x,
                                             model.labels.index(label))
            peak = float(np.abs(expected).max())
            assert peak > 0
            np.testing.assert_allclose(raw.saliency[b, k], expected[0], rtol=1e-5,
                                       atol=1e-5 * peak)
            np.testing.assert_allclose(scaled.saliency[b, k], returned[0], atol=1e-5)


def test_layercam_fuses_three_stages_as_the_library_does_on_the_same_layers(model,
                                                                           small_phantom):
    from napari_correlax.maps.cam_layers import stage_layers

    windows = phantom_windows(small_phantom, model)
    labels = ["Mass", "Asymmetries"]
    names = stage_layers(model, "encoder.body.7", 3)
    assert names == ["encoder.body.2", "encoder.body.5", "encoder.body.7"]  # ReLU of each
    layers = [model.get_submodule(n) for n in names]
    scaled = cam_windows(model, windows, "layercam", labels=labels, scale="window",
                         device="cpu", batch_size=8)
    raw = cam_windows(model, windows, "layercam", labels=labels, device="cpu", batch_size=8)
    for b in range(len(windows)):
        x = model.normalize(windows[b : b + 1])
        for k, label in enumerate(labels):
            c = model.labels.index(label)
            # "window": the library called with the three layers returns the fused map.
            lib = LayerCAM(Logits(model), layers)
            returned = lib(x, [ClassifierOutputTarget(c)])[0]
            lib.activations_and_grads.release()
            np.testing.assert_allclose(scaled.saliency[b, k], returned, atol=1e-5)
            # "raw": each layer's own library map (resized), as a density per input pixel
            # (divided by the pixels one of its positions covers), averaged over layers.
            density = []
            for layer in layers:
                up, _ = library_raw("layercam", model, layer, x, c)
                lib1 = LayerCAM(Logits(model), [layer])
                lib1(x, [ClassifierOutputTarget(c)])
                h, w = lib1.activations_and_grads.activations[0].shape[-2:]
                lib1.activations_and_grads.release()
                density.append(up[0] * (h * w) / SIZE**2)
            expected = np.mean(density, axis=0)
            peak = float(expected.max())
            assert peak > 0
            np.testing.assert_allclose(raw.saliency[b, k], expected, rtol=1e-4,
                                       atol=1e-5 * peak)
    single = cam_windows(model, windows, "layercam", labels=labels, scale="window",
                         layers=1, device="cpu", batch_size=8)
    assert np.abs(single.saliency - scaled.saliency).max() > 0.05  # the stages matter


def test_eigencam_map_is_unchanged_when_the_svd_flips_one_window(model, small_phantom):
    import pytorch_grad_cam.eigen_cam as library_eigen

    from napari_correlax import cam
    from napari_correlax.maps import cam_engine

    plain = library_eigen.get_2d_projection

    def flip_first(activation_batch):
        out = plain(activation_batch)
        out[0] = -out[0]  # the other sign of the same SVD, for one window per batch
        return out

    def run():
        return cam(small_phantom, model, "eigencam", labels=["Mass"], stride=32,
                   device="cpu", batch_size=4).get("saliency")

    reference = run()
    with mock.patch.object(library_eigen, "get_2d_projection", flip_first):
        flipped = run()
        with mock.patch.object(cam_engine, "orient_projections", lambda p, a: p):
            unoriented = run()
    np.testing.assert_allclose(flipped, reference, rtol=1e-6, atol=1e-7, equal_nan=True)
    # Without the orientation the same flip changes the map: the test can fail.
    assert np.nanmax(np.abs(unoriented - reference)) > 1e-3


@pytest.mark.parametrize("scale", ["raw", "window"])
def test_windowed_saliency_is_the_overlap_mean_of_library_window_maps(scale, model,
                                                                      small_phantom):
    from napari_correlax import cam
    from napari_correlax.maps.sliding import prepare_image

    label = model.labels.index("Mass")
    result = cam(small_phantom, model, "gradcam", labels=["Mass"], stride=32, scale=scale,
                 device="cpu", batch_size=16)
    prep = prepare_image(small_phantom, model, stride=32)
    assert prep.grid == result.grid
    flat = np.flatnonzero(prep.active.ravel())
    x = model.normalize(torch.from_numpy(prep.windows(flat)).permute(0, 3, 1, 2))
    raw, returned = library_raw("gradcam", model, model.get_submodule(result.target_layer),
                                x, label)
    maps = raw if scale == "raw" else returned
    corners = prep.grid.corners().reshape(-1, 2)[flat]
    saliency = result.get("saliency")[0]
    rng = np.random.default_rng(0)
    h, w = saliency.shape
    points = np.concatenate([rng.integers(0, (h, w), size=(300, 2)), [[0, 0], [h - 1, w - 1]]])
    for r, c in points:
        covering = [maps[k, r - cr, c - cc] for k, (cr, cc) in enumerate(corners)
                    if cr <= r < cr + SIZE and cc <= c < cc + SIZE]
        if covering:
            assert saliency[r, c] == pytest.approx(np.mean(covering), rel=1e-5, abs=1e-9)
        else:
            assert np.isnan(saliency[r, c])


def test_windowed_prediction_is_the_prediction_pass_map(model, small_phantom):
    from napari_correlax import cam, predict

    labels = ["Mass", "Retractions"]
    result = cam(small_phantom, model, "gradcam++", labels=labels, stride=32, device="cpu")
    reference = predict(small_phantom, model, stride=32, device="cpu")
    index = [model.labels.index(label) for label in labels]
    assert result.labels == labels
    np.testing.assert_allclose(result.prediction, reference.prediction[index], atol=1e-5)
    np.testing.assert_array_equal(result.window_mask, reference.window_mask)


def test_stitching_keeps_a_hot_pixel_in_place_and_averages_overlaps():
    stitcher = Stitcher(1, (10, 12), window=4)
    hot = np.zeros((1, 1, 4, 4), dtype=np.float32)
    hot[0, 0, 1, 2] = 5.0
    stitcher.add(np.array([[3, 5]]), hot)
    out = stitcher.result()[0]
    assert out[4, 7] == 5.0
    window = np.zeros((10, 12), dtype=bool)
    window[3:7, 5:9] = True
    assert (out[window & (out != 5.0)] == 0).all() and np.isnan(out[~window]).all()

    stitcher = Stitcher(2, (6, 6), window=4)
    ones = np.ones((2, 2, 4, 4), dtype=np.float32)
    ones[:, 1] *= 3.0
    ones[1] *= 10.0
    # The second window hangs over the bottom-right corner of the image.
    stitcher.add(np.array([[0, 0], [2, 3]]), ones)
    out = stitcher.result()
    assert out[0, 0, 0] == 1.0 and out[0, 5, 5] == 3.0
    assert out[0, 2, 3] == 2.0 and out[0, 3, 3] == 2.0 and out[1, 3, 3] == 20.0
    assert np.isnan(out[0, 0, 5]) and np.isnan(out[0, 5, 0])


# -- plain CAM -------------------------------------------------------------------------
def test_cam_is_gradcam_times_the_feature_positions_for_a_linear_head(small_phantom):
    # Logit z_c = Σ_k w_ck mean_ij A_kij + b_c, so ∂z_c/∂A_kij = w_ck / (u·v): Grad-CAM's
    # weight is w_ck / (u·v) and CAM = Σ_k w_ck A_k = (u·v) · Grad-CAM (before scaling).
    model = tiny(hidden=0)
    windows = phantom_windows(small_phantom, model)
    plain = cam_windows(model, windows, "cam", device="cpu")
    grad = cam_windows(model, windows, "gradcam", device="cpu")
    positions = (SIZE // 8) ** 2  # three stride-2 convolutions: 8 × 8 positions
    assert plain.saliency.max() > 0
    np.testing.assert_allclose(plain.saliency, positions * grad.saliency, rtol=1e-4,
                               atol=1e-6 * plain.saliency.max())


def test_cam_needs_a_one_layer_head(model, small_phantom):
    from napari_correlax import cam

    with pytest.raises(CorrelaxError, match="one linear layer"):
        cam(small_phantom, model, "cam", device="cpu")


def test_a_one_layer_head_round_trips_through_a_checkpoint(tmp_path):
    from napari_correlax.models import load_classifier, save_checkpoint

    model = tiny(hidden=0)
    assert [type(m).__name__ for m in model.classifier] == ["Dropout", "Linear"]
    back = load_classifier(save_checkpoint(model, tmp_path / "linear.safetensors"))
    assert back.config()["hidden"] == 0
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(back(x), model(x))


# -- target layers ---------------------------------------------------------------------
@pytest.mark.parametrize("backbone,name", [
    ("tiny", "encoder.body.7"), ("lite", "encoder.body.8"), ("resnet18", "encoder.layer4"),
    ("efficientnet_v2_s", "encoder.features.7"), ("mobilenet_v3_small", "encoder.features.12"),
])
def test_default_target_layer_is_the_stage_pooled_into_the_features(backbone, name):
    from napari_correlax.maps.cam_layers import default_target_layer

    model = Classifier(backbone, input_size=SIZE).eval()
    assert default_target_layer(model) == name
    seen = []
    handle = model.get_submodule(name).register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        h = model.features(torch.rand(1, 3, SIZE, SIZE))
    handle.remove()
    assert seen[0].ndim == 4 and seen[0].shape[-2:].numel() > 1
    torch.testing.assert_close(seen[0].mean(dim=(2, 3)), h)


def test_target_layer_by_name_is_the_module_the_maps_come_from(model, small_phantom):
    from napari_correlax import cam

    result = cam(small_phantom, model, "layercam", mode="global", labels=["Mass"],
                 target_layer="encoder.body.4", scale="window", global_size=64, device="cpu")
    assert result.target_layer == "encoder.body.4"
    assert result.stats.settings["target_layer"] == "encoder.body.4"
    assert result.stats.settings["mode"] == "global"
    assert result.stats.settings["mode_title"] == \
        "global (64 px, out of the model's training scale)"
    default = cam(small_phantom, model, "layercam", mode="global", labels=["Mass"],
                  scale="window", global_size=64, device="cpu")
    assert default.target_layer == "encoder.body.7"
    a, b = result.get("saliency")[0], default.get("saliency")[0]
    inside = np.isfinite(a)
    assert np.abs(a[inside] - b[inside]).max() > 0.05  # another layer, another map


def test_unknown_target_layer_names_valid_ones(model, small_phantom):
    from napari_correlax import cam

    with pytest.raises(CorrelaxError, match=r"no layer 'encoder\.nope'.*encoder\.body\.7"):
        cam(small_phantom, model, target_layer="encoder.nope", device="cpu")


# -- cost and cancel -------------------------------------------------------------------
@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_closing_a_perturbation_run_stops_within_one_batch(method, small_phantom):
    model = tiny()
    forwards = []
    model.encoder.register_forward_pre_hook(lambda m, i: forwards.append(len(i[0])))
    layer = model.get_submodule("encoder.body.7")
    steps = cam_steps(small_phantom, model,
                      MapSettings(method=method, stride=32, device="cpu", batch_size=4),
                      labels=["Mass", "Asymmetries"])
    seen = []
    for event in steps:
        if event.stage == "forward" and event.done:
            seen.append(event)
        if len(seen) == 5:
            break
    at_close = len(forwards)
    steps.close()
    total = seen[-1].total
    # 32 channels in batches of 4, plus one (Ablation-CAM: two) live passes per label.
    per_window = 8 + 2 * (1 if method == "scorecam" else 2)
    assert total % per_window == 0 and total > 10 * per_window
    # The target layer's probe pass, the 5 passes seen, at most one more waiting to be
    # reported and one running; after closing, at most the one that was starting.
    assert at_close <= 1 + 5 + 2 and len(forwards) <= at_close + 1
    assert model.get_submodule("encoder.body.7") is layer  # Ablation-CAM put it back
    with torch.no_grad():
        assert torch.isfinite(model(torch.rand(1, 3, SIZE, SIZE))).all()


def test_perturbation_progress_counts_every_forward_pass(model, small_phantom):
    forwards = []
    handle = model.encoder.register_forward_pre_hook(lambda m, i: forwards.append(1))
    settings = MapSettings(method="scorecam", device="cpu", batch_size=8,
                           options={"mode": "global", "global_size": 64})
    steps = cam_steps(small_phantom, model, settings, labels=["Mass", "Asymmetries"])
    events = []
    try:
        while True:
            events.append(next(steps))
    except StopIteration as stop:
        result = stop.value
    handle.remove()
    counted = [e for e in events if e.stage == "forward"]
    assert counted[-1].done == counted[-1].total == 2 + 32 // 8
    # The probe pass of the target layer plus the counted ones; the second label's
    # channel passes are replayed (its map is still the library's, see the global test).
    assert len(forwards) == 1 + counted[-1].total
    assert result.get("saliency").shape[0] == 2


# -- results, registry, public API -------------------------------------------------------
def test_result_keeps_saliency_and_target_layer_through_a_file(model, small_phantom, tmp_path):
    from napari_correlax import cam, load_result, predict

    result = cam(small_phantom, model, "eigencam", labels=["Mass", "Asymmetries"], stride=64,
                 device="cpu")
    s = result.get("saliency")
    np.testing.assert_array_equal(s[0], s[1])  # Eigen-CAM does not depend on the label
    back = load_result(result.save(tmp_path / "cam.npz"))
    np.testing.assert_array_equal(back.get("saliency"), s)
    assert back.target_layer == result.target_layer == "encoder.body.7"
    old = load_result(predict(small_phantom, model, stride=64, device="cpu").save(
        tmp_path / "old.npz"))
    assert old.target_layer is None


def test_cam_methods_are_registered_and_record_their_options(model, small_phantom):
    from napari_correlax.builtin import CAM_METHODS
    from napari_correlax.maps.kinds import KINDS
    from napari_correlax.maps.methods import METHODS, run_method
    from napari_correlax.maps.settings import MapSettings

    cam_family = {method.name for method in CAM_METHODS}
    assert set(LIBRARY) | {"cam"} == cam_family <= set(METHODS)
    assert all(METHODS[name].kinds == ("saliency", "prediction") for name in cam_family)
    assert KINDS["saliency"].resolution == "pixel" and KINDS["saliency"].per_label
    settings = MapSettings(method="xgradcam", stride=64, device="cpu",
                           options={"mode": "global", "scale": "window", "global_size": 64})
    result = drain(run_method(small_phantom, model, settings))
    assert result.stats.method == "xgradcam"
    assert {"mode": "global", "scale": "window", "global_size": 64}.items() \
        <= result.stats.settings.items()
    assert result.get("saliency").shape == (len(model.labels), *small_phantom.pixels.shape)


def test_public_cam_signature_and_torch_free_registry():
    import inspect

    from napari_correlax import cam

    params = inspect.signature(cam).parameters
    assert list(params)[:3] == ["image", "model", "method"]
    assert {k: params[k].default for k in ("method", "mode", "labels", "scale", "stride",
                                           "target_layer")} == {
        "method": "gradcam", "mode": "windowed", "labels": None, "scale": "raw",
        "stride": 48, "target_layer": None}
    code = ("import sys, napari_correlax.maps.methods as m; "
            "assert 'gradcam++' in m.METHODS and 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_bad_options_are_one_clear_error(model, small_phantom):
    from napari_correlax import cam

    for options, reason in [({"method": "gradcam+"}, "unknown CAM method"),
                            ({"mode": "tiles"}, "mode must be"),
                            ({"scale": "image"}, "scale must be"),
                            ({"labels": ["Tumour"]}, "unknown labels"),
                            ({"layers": 2}, "only LayerCAM combines stages"),
                            ({"method": "layercam", "layers": 0}, "at least 1 stage")]:
        with pytest.raises(CorrelaxError, match=reason):
            cam(small_phantom, model, **{"device": "cpu", **options})
