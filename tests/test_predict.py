"""Sliding-window prediction against a brute-force loop (docs/method.md §6, §12)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from napari_correlax.errors import CorrelaxError
from napari_correlax.maps import load_result, predict, predict_steps
from napari_correlax.maps.settings import MapSettings
from napari_correlax.models.classifier import Classifier
from napari_correlax.preprocess import breast_roi, fuse_channels
from napari_correlax.windows import iou_kernel


def ellipse_image(h=300, w=220, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    inside = ((yy - h / 2) / (h * 0.42)) ** 2 + ((xx - 10) / (w * 0.8)) ** 2 < 1
    img = np.where(inside, 0.5 + 0.2 * rng.random((h, w)), 0.0)
    return (img / img.max()).astype(np.float32)  # already min-max scaled, as read_mammogram gives


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return Classifier("tiny", ["No Finding", "Mass", "Calc"], input_size=64).eval()


def brute_force_maps(img, model, stride, min_tissue, reach="border"):
    fused = fuse_channels(img)
    roi = breast_roi(img)
    y0, x0, y1, x1 = roi.box
    s = model.input_size

    def axis(lo, hi):
        """Top-left corners along one axis, written out for each layout."""
        size = hi - lo
        if reach == "border":  # centres inside lo … hi − 1, centred; centre = corner + 31.5
            n = (size - 1) // stride + 1
            first_centre = lo + ((size - 1) - (n - 1) * stride) // 2
            return [first_centre - (s - 1) // 2 + k * stride for k in range(n)]
        n = 1 if size <= s else int(np.ceil((size - s) / stride)) + 1
        over = (n - 1) * stride + s - size
        return [lo - over // 2 + k * stride for k in range(n)]

    rows, cols = axis(y0, y1), axis(x0, x1)
    raw = np.zeros((len(model.labels), len(rows), len(cols)), np.float32)
    evaluated = np.zeros((len(rows), len(cols)), bool)
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            win = np.zeros((s, s, 3), np.float32)
            tissue = 0
            for y in range(s):
                yy = r + y
                if not 0 <= yy < img.shape[0]:
                    continue
                lo, hi = max(c, 0), min(c + s, img.shape[1])
                if hi > lo:
                    win[y, lo - c : hi - c] = fused[yy, lo:hi]
                    tissue += roi.mask[yy, lo:hi].sum()
            if tissue / (s * s) < min_tissue:
                continue
            evaluated[i, j] = True
            x = torch.from_numpy(win).permute(2, 0, 1)[None]
            with torch.no_grad():
                raw[:, i, j] = model(model.normalize(x))[0].numpy()
    k = iou_kernel(s, stride)
    rad = k.shape[0] // 2
    # Normalised smoothing (docs/method.md §6): the kernel-weighted mean over the evaluated
    # windows within reach; NaN where there are none.
    smooth = np.full_like(raw, np.nan)
    weight = np.pad(evaluated.astype(np.float64), rad)
    for c in range(raw.shape[0]):
        padded = np.pad(raw[c], rad)
        for i in range(raw.shape[1]):
            for j in range(raw.shape[2]):
                w = weight[i : i + 2 * rad + 1, j : j + 2 * rad + 1] * k
                if w.sum() > 0:
                    smooth[c, i, j] = (padded[i : i + 2 * rad + 1, j : j + 2 * rad + 1]
                                       * w).sum() / w.sum()
    return rows[0], cols[0], smooth, evaluated


@pytest.mark.parametrize("reach", ["border", "inside"])
def test_prediction_maps_equal_brute_force_loop(tiny, reach):
    img = ellipse_image()
    result = predict(img, tiny, stride=16, batch_size=7, device="cpu", min_tissue=0.2,
                     reach=reach)
    r0, c0, expected, evaluated = brute_force_maps(img, tiny, 16, 0.2, reach)
    assert result.origin == (r0, c0)
    assert result.window == 64 and result.stride == 16
    np.testing.assert_array_equal(result.window_mask, evaluated)
    np.testing.assert_allclose(result.prediction, expected, atol=2e-5, equal_nan=True)
    assert result.prediction.shape == (3, *result.grid.shape)
    assert 0 < evaluated.sum() < evaluated.size  # some background windows were skipped


def test_progress_events_count_windows(tiny):
    steps = predict_steps(ellipse_image(), tiny,
                          MapSettings(method="prediction", stride=24, batch_size=5, device="cpu"))
    events = []
    while True:
        try:
            events.append(next(steps))
        except StopIteration as stop:
            result = stop.value
            break
    windows = [e for e in events if e.stage == "window"]
    assert windows[0].done == 0
    assert windows[-1].done == windows[-1].total == int(result.window_mask.sum())
    assert all(b.done >= a.done for a, b in itertools.pairwise(windows))


def test_result_saves_public_names_and_reloads(tiny, tmp_path):
    result = predict(ellipse_image(), tiny, stride=32, device="cpu")
    path = result.save(tmp_path / "r.npz")
    with np.load(path) as z:
        assert {"prediction", "window", "stride", "origin"} <= set(z.files)
        assert not {"correlation", "relevance"} & set(z.files)
    back = load_result(path)
    np.testing.assert_array_equal(back.prediction, result.prediction)
    assert back.grid == result.grid and back.labels == result.labels
    assert back.stats == result.stats


def test_peak_reports_window_centre_in_image_pixels(tiny):
    result = predict(ellipse_image(), tiny, stride=32, device="cpu")
    result.prediction[:] = 0
    result.prediction[1, 2, 1] = 0.9
    result.window_mask[2, 1] = True
    value, (row, col) = result.peak("prediction", "Mass")
    assert value == pytest.approx(0.9)
    assert row == pytest.approx(result.origin[0] + 2 * 32 + 31.5)
    assert col == pytest.approx(result.origin[1] + 1 * 32 + 31.5)


def test_bad_arrays_are_rejected(tiny):
    with pytest.raises(CorrelaxError):
        predict(np.zeros((4, 4, 3)), tiny)
    with pytest.raises(CorrelaxError):
        predict(np.full((80, 80), np.nan), tiny)


class _PerBatchNormalize:
    """A model wrapper without ``pointwise_normalize``: the feeder must normalise per batch."""

    def __init__(self, model):
        self.model = model
        self.calls = 0

    def normalize(self, x):
        self.calls += 1
        return self.model.normalize(x)


@pytest.mark.parametrize("prefetch", [True, False])
@pytest.mark.parametrize("pointwise", [True, False])
def test_window_feeder_batches_equal_normalised_crops(tiny, prefetch, pointwise):
    from napari_correlax.maps.runtime import Runtime
    from napari_correlax.maps.sliding import WindowFeeder, prepare_image

    img = ellipse_image()
    prep = prepare_image(img, tiny, stride=16)
    model = tiny if pointwise else _PerBatchNormalize(tiny)
    feeder = WindowFeeder(prep, model, Runtime(device="cpu", batch_size=4))
    todo = np.flatnonzero(prep.active.ravel())[:11]
    got, seen = [], []
    for flat, x in feeder.batches(todo, prefetch=prefetch):
        seen.append(flat)
        got.append(x.clone())  # a yielded tensor is only valid until the next batch
    np.testing.assert_array_equal(np.concatenate(seen), todo)
    # Independent: pad the fused image by hand, cut each window, normalise it alone.
    s = tiny.input_size
    corners = prep.grid.corners().reshape(-1, 2)[todo]
    pad = 2 * s
    fused = np.pad(fuse_channels(img), ((pad, pad), (pad, pad), (0, 0)))
    crops = np.stack([fused[r + pad : r + pad + s, c + pad : c + pad + s] for r, c in corners])
    expected = tiny.normalize(torch.from_numpy(crops).permute(0, 3, 1, 2))
    torch.testing.assert_close(torch.cat(got), expected, rtol=0, atol=1e-6)
    if not pointwise:
        assert model.calls == 3  # once per batch of 4, 4, 3


def test_map_covers_a_lesion_near_the_breast_edge(tiny):
    """A lesion box 20–70 px from the breast's edge (skin line side) lies under the map's
    evaluated cells with the default layout; the paper's inside layout, whose cells stop
    about half a window (128 px) short of the edge, misses it."""
    from napari_correlax.synth import make_phantom

    phantom = make_phantom(4, shape=(1024, 640), findings=[])
    roi = breast_roi(phantom.pixels)
    rows = np.flatnonzero(roi.mask.any(axis=1))
    mid = int(rows[len(rows) // 2])
    edge = int(np.flatnonzero(roi.mask[mid])[-1])  # the skin line on the middle row
    box = (edge - 70, mid - 25, edge - 20, mid + 25)  # xmin, ymin, xmax, ymax
    assert edge - box[2] >= 20 and edge - box[0] <= 100

    def covered(reach: str) -> bool:
        model = Classifier("tiny", ["No Finding", "Mass"], input_size=256).eval()
        result = predict(phantom, model, stride=48, device="cpu", reach=reach)
        centres = result.grid.centres()[result.window_mask]
        half = result.stride / 2  # each map cell is drawn one stride wide around its centre
        inside = ((centres[:, 1] + half >= box[0]) & (centres[:, 1] - half <= box[2])
                  & (centres[:, 0] + half >= box[1]) & (centres[:, 0] - half <= box[3]))
        return bool(inside.any())

    assert covered("border")
    assert not covered("inside")


def test_keyword_options_are_settings_fields(tiny):
    from napari_correlax.maps.runtime import Runtime

    with pytest.raises(TypeError, match="strid"):
        predict(ellipse_image(), tiny, strid=16)
    runtime = Runtime(device="cpu", batch_size=5, threads=1)
    settings = MapSettings.for_call("prediction", {"stride": 16, "runtime": runtime})
    assert settings == MapSettings(method="prediction", stride=16, device="cpu", batch_size=5,
                                   threads=1)


class _ConstantModel(torch.nn.Module):
    """A stand-in classifier whose output ignores the image: ŷ = 0.7 for every label,
    and a constant feature vector."""

    labels = ("No Finding", "Mass", "Calc")
    input_size = 64

    def normalize(self, x):
        return x

    def features(self, x):
        return torch.ones((x.shape[0], 4), dtype=x.dtype) + 0.0 * x.mean(dim=(1, 2, 3))[:, None]

    def head(self, h):
        return torch.full((h.shape[0], len(self.labels)), 0.7, dtype=h.dtype)


@pytest.mark.parametrize("reach", ["border", "inside"])
def test_constant_model_draws_its_constant_up_to_the_border(reach):
    from napari_correlax.maps import explain

    img = ellipse_image()
    result = predict(img, _ConstantModel(), stride=16, device="cpu", min_tissue=0.2,
                     reach=reach)
    mask = result.window_mask
    assert 0 < mask.sum() < mask.size  # skipped windows next to evaluated ones
    reached = np.isfinite(result.prediction[0])
    assert reached[mask].all()
    np.testing.assert_allclose(result.prediction[:, reached], 0.7, rtol=1e-6)
    # CorRELAX over the same grid: the prediction map, and the correlation maps of a
    # model whose output never changes (constant series: 0), are constant too.
    res = explain(img, _ConstantModel(), stride=16, device="cpu", min_tissue=0.2,
                  reach=reach, masks=32, min_masks=32, adaptive=False, focus=False)
    np.testing.assert_array_equal(np.isfinite(res.prediction[0]), reached)
    np.testing.assert_allclose(res.prediction[:, reached], 0.7, rtol=1e-6)
    for name in ("correlation", "product"):
        np.testing.assert_allclose(res.get(name)[:, reached], 0.0, atol=1e-7)
    np.testing.assert_allclose(res.distance[reached], 0.0, atol=1e-7)
