"""CorRELAX engine (docs/method.md §7): exact statistics, streaming, adaptive stop, focus, maps.

Expected values come from independent computations: ``np.corrcoef`` on the stored
series, masked forward passes recomputed here with ``F.interpolate`` masks and the plain
model, the RELAX formula summed over full-size masks, brute-force overlap averaging.
Models are the tiny backbone at 32–64 px (fast on 2 CPU cores) or hand-made stubs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import binary_dilation
from torch import nn

from napari_correlax.errors import CorrelaxError
from napari_correlax.labels import LABELS
from napari_correlax.maps import explain, explain_steps, explain_windows
from napari_correlax.maps.image_explain import calibration_set, focus_windows
from napari_correlax.maps.mask_engine import CHECK_EVERY, upsample_masks
from napari_correlax.maps.masks import make_mask_grids, window_seed
from napari_correlax.maps.moments import Moments
from napari_correlax.maps.runtime import Runtime
from napari_correlax.maps.sensitivity import mask_sensitivity_windows
from napari_correlax.maps.settings import MapSettings
from napari_correlax.maps.sliding import prepare_image
from napari_correlax.models.classifier import Classifier

#: One thread: these models are so small that a second thread only adds synchronisation.
RT = Runtime(device="cpu", threads=1)


def tiny(size: int = 32, seed: int = 0) -> Classifier:
    torch.manual_seed(seed)
    return Classifier("tiny", input_size=size).eval()


def windows(n: int, size: int = 32, seed: int = 1) -> torch.Tensor:
    """``n`` fused RGB windows in [0, 1] (image space, what explain_windows takes)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, 3, size, size), generator=g)


def corr_reference(series) -> np.ndarray:
    """``[ρ(S_h, S_ŷ), ρ(S_h, ŷ_M[:, c])…]`` by np.corrcoef."""
    rows = np.vstack([series.s_h, series.s_yhat, series.yhat_m.T])
    return np.corrcoef(rows)[0, 1:]


class MeanStub(nn.Module):
    """``h = [mean of channel 0, 1]``; ``ŷ = sigmoid(h @ w)`` with fixed w (2 labels)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("w", torch.tensor([[2.0, -1.0], [0.5, 0.25]]))
        self.labels = ["No Finding", "Mass"]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        m = x[:, 0].mean(dim=(1, 2))
        return torch.stack([m, torch.ones_like(m)], dim=1)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(h @ self.w)


class ConstantHeadStub(MeanStub):
    """Features depend on the mask; the head ignores them (constant ŷ)."""

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return torch.full((h.shape[0], 2), 0.7)


class ConstantFeatureStub(MeanStub):
    """Features ignore the input: S_h is constant."""

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ones((x.shape[0], 2))


# --------------------------------------------------------------------------- masks


def test_mask_grids_are_seeded_binary_half_kept_and_prefix_stable():
    a = make_mask_grids(300, seed=3)
    b = make_mask_grids(700, seed=3)
    assert a.shape == (300, 8, 8)
    assert torch.equal(a, b[:300])
    assert set(torch.unique(b).tolist()) == {0.0, 1.0}
    assert abs(float(b.mean()) - 0.5) < 0.02
    assert not torch.equal(a, make_mask_grids(300, seed=4))


def test_upsampled_masks_are_bilinear_interpolation():
    grids = make_mask_grids(20, seed=0)
    ours = upsample_masks(grids, 64)
    ref = F.interpolate(grids[:, None], size=(64, 64), mode="bilinear", align_corners=False)
    assert ours.shape == (20, 1, 64, 64)
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), atol=1e-6)


# --------------------------------------------------------------------------- statistics


def test_correlations_equal_corrcoef_on_the_stored_series():
    model = tiny()
    res = explain_windows(model, windows(3), masks=200, return_series=True, batch_size=64,
                          runtime=RT, calibrate=())
    assert res.masks_used.tolist() == [200, 200, 200]
    for i in range(3):
        ref = corr_reference(res.series[i])
        np.testing.assert_allclose(res.distance[i], ref[0], atol=1e-5)
        np.testing.assert_allclose(res.correlation[i], ref[1:], atol=1e-5)
    np.testing.assert_allclose(res.product, res.prediction * res.correlation, rtol=1e-6)
    assert not res.constant.any()


def test_series_are_the_masked_forward_passes_of_each_window():
    """Packing several windows into one batch must pair every window with mask 0…n−1, and
    the mask multiplies the [0, 1] window (masked pixels black) before the model's ImageNet
    normalisation (docs/method.md §7), computed here step by step."""
    model = tiny()
    assert not torch.allclose(model.mean, torch.zeros(3))  # ImageNet normalisation is on
    x = windows(3)
    # 70 masks per window in batches of 50: windows straddle batches; each window has its
    # own mask stream, seeded from the run's seed and its index.
    res = explain_windows(model, x, masks=70, seed=5, batch_size=50, min_masks=24,
                          return_series=True, runtime=RT, calibrate=())
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        h0 = model.features((x - mean) / std)
        y0 = model.head(h0)
        np.testing.assert_allclose(res.prediction, y0.numpy(), atol=1e-5)
        for i in range(3):
            grids = make_mask_grids(70, window_seed(5, i))
            masks = F.interpolate(grids[:, None], size=(32, 32), mode="bilinear",
                                  align_corners=False)
            masked = x[i : i + 1] * masks  # image space: masked pixels are 0 (black)
            hm = model.features((masked - mean) / std)
            ym = model.head(hm)
            s_h = F.cosine_similarity(h0[i : i + 1].double(), hm.double(), dim=1).numpy()
            s_y = F.cosine_similarity(y0[i : i + 1].double(), ym.double(), dim=1).numpy()
            np.testing.assert_allclose(res.series[i].s_h, s_h, atol=1e-5)
            np.testing.assert_allclose(res.series[i].s_yhat, s_y, atol=1e-6)
            np.testing.assert_allclose(res.series[i].yhat_m, ym.numpy(), atol=1e-5)


def test_streaming_sums_equal_batch_corrcoef_in_any_chunking():
    rng = np.random.default_rng(0)
    n = 1000
    # Values near 1 with tiny spread, as cosine similarities are: a naive Σx² − (Σx)²/n
    # in float32 would lose everything here.
    x = 1.0 - 1e-6 * rng.random(n)
    y = np.column_stack([0.3 * x + 1e-7 * rng.standard_normal(n), rng.random(n)])
    ref = [np.corrcoef(x, y[:, k])[0, 1] for k in range(2)]
    for cuts in ([n], [1, 7, 500, 492], [128] * 7 + [104]):
        mom = Moments(1, 2)
        start = 0
        for c in cuts:
            mom.add(0, x[start : start + c], y[start : start + c])
            start += c
        rho, constant, _ = mom.summary(np.array([0]), np.array([n]))
        np.testing.assert_allclose(rho[0], ref, atol=1e-9)
        assert not constant.any()


def test_streaming_run_equals_single_batch_run():
    model = tiny()
    x = windows(2)
    one = explain_windows(model, x, masks=128, batch_size=256, runtime=RT)
    many = explain_windows(model, x, masks=128, batch_size=9, runtime=RT)
    np.testing.assert_allclose(many.distance, one.distance, atol=1e-4)
    np.testing.assert_allclose(many.correlation, one.correlation, atol=1e-4)
    np.testing.assert_allclose(many.relevance, one.relevance, atol=1e-5)


def test_uncertainty_is_fishers_for_normal_data():
    rng = np.random.default_rng(1)
    n, rho = 20000, 0.6
    x = rng.standard_normal(n)
    y = rho * x + np.sqrt(1 - rho**2) * rng.standard_normal(n)
    mom = Moments(1, 1)
    mom.add(0, x, y[:, None])
    _, _, se = mom.summary(np.array([0]), np.array([4 * n]))
    expected = (1 - rho**2) * np.sqrt(1 / n - 1 / (4 * n))
    assert se[0, 0] == pytest.approx(expected, rel=0.05)


def test_zero_variance_gives_zero_and_a_flag_never_nan():
    x = torch.rand((2, 3, 16, 16))
    res = explain_windows(ConstantHeadStub(), x, masks=64, runtime=RT)
    assert np.all(np.isfinite(res.correlation)) and np.all(np.isfinite(res.distance))
    assert res.constant.all()  # ŷ_M constant: S_ŷ and every ŷ_M[:, c] have zero variance
    assert np.all(res.correlation == 0) and np.all(res.distance == 0)

    res = explain_windows(ConstantFeatureStub(), x, masks=64, runtime=RT)
    assert res.constant.all() and np.all(res.correlation == 0) and np.all(res.distance == 0)

    res = explain_windows(MeanStub(), x, masks=64, runtime=RT)
    assert not res.constant.any() and np.all(np.abs(res.correlation) > 0)


def test_same_seed_same_result_other_seed_other_masks():
    model = tiny()
    x = windows(2)
    a = explain_windows(model, x, masks=96, seed=7, runtime=RT)
    b = explain_windows(model, x, masks=96, seed=7, runtime=RT)
    c = explain_windows(model, x, masks=96, seed=8, runtime=RT)
    for name in ("distance", "correlation", "relevance"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.allclose(a.correlation, c.correlation)


def test_relevance_equals_relax_formula_on_a_hand_worked_model():
    """h = [mean(M), 1] for X = 1, so S_h,n = (m_n + 1) / (√2 √(m_n² + 1)) by hand."""
    size, n = 32, 40
    x = torch.ones((1, 3, size, size))
    res = explain_windows(MeanStub(), x, masks=n, seed=2, runtime=RT, calibrate=())
    masks = F.interpolate(make_mask_grids(n, window_seed(2, 0))[:, None], size=(size, size),
                          mode="bilinear", align_corners=False)[:, 0].double().numpy()
    m = masks.mean(axis=(1, 2))
    s_h = (m + 1) / (np.sqrt(2) * np.sqrt(m**2 + 1))
    expected = np.tensordot(s_h, masks, axes=1) / masks.sum(axis=0)
    np.testing.assert_allclose(res.relevance[0], expected, rtol=1e-5)


# --------------------------------------------------------------------------- adaptive


def test_adaptive_stops_on_checks_and_equals_the_prefix_of_the_full_run():
    model = tiny()
    x = windows(4, seed=3)
    full = explain_windows(model, x, masks=768, return_series=True, runtime=RT)
    ada = explain_windows(model, x, masks=768, adaptive=True, tolerance=0.06, runtime=RT)
    for i, n in enumerate(ada.masks_used):
        assert 128 <= n <= 768
        assert n == 768 or (n - 128) % CHECK_EVERY == 0
        if n < 768:
            assert ada.uncertainty[i].max() <= 0.06
        s = full.series[i]
        prefix = type(s)(s.s_h[:n], s.s_yhat[:n], s.yhat_m[:n])
        ref = corr_reference(prefix)
        np.testing.assert_allclose(ada.distance[i], ref[0], atol=1e-5)
        np.testing.assert_allclose(ada.correlation[i], ref[1:], atol=1e-5)
    assert ada.masks_used.min() < 768  # the tolerance is loose enough to stop somewhere


def test_bad_options_raise_project_errors():
    model = tiny()
    with pytest.raises(CorrelaxError):
        explain_windows(model, windows(1), masks=1, runtime=RT)
    with pytest.raises(CorrelaxError):
        explain_windows(model, windows(1), masks=64, tolerance=0, runtime=RT)
    with pytest.raises(CorrelaxError):
        explain_windows(model, torch.zeros((2, 32, 32)), masks=64)


# --------------------------------------------------------------------------- images


@pytest.fixture(scope="module")
def phantom():
    from napari_correlax.synth import make_phantom

    return make_phantom(2, shape=(200, 150), findings=["Mass"])


def test_focus_windows_are_lesion_hits_and_their_neighbours():
    pred = np.zeros((len(LABELS), 5, 6))
    pred[0] = 0.9  # "No Finding" never puts a window in focus
    pred[2, 2, 3] = 0.8
    pred[1, 4, 0] = 0.4
    active = np.ones((5, 6), dtype=bool)
    active[1, 2] = False
    # 29 tissue windows: a share of 1/29 keeps the single highest, (2, 3) at 0.8
    got = focus_windows(pred, LABELS, active, 1 / 29)
    expected = np.zeros((5, 6), dtype=bool)
    expected[1:4, 2:5] = True
    expected[1, 2] = False
    np.testing.assert_array_equal(got, expected)
    # 2/29: the second highest, (4, 0) at 0.4, and its neighbours join
    two = focus_windows(pred, LABELS, active, 2 / 29)
    assert two[3:5, 0:2].all() and (two & ~expected).sum() == 4
    # 3/29: the third is tied at 0 with every other window: all tissue windows
    assert focus_windows(pred, LABELS, active, 3 / 29).sum() == active.sum()
    assert not focus_windows(pred, LABELS, active, 0.0).any()


def test_explain_maps_equal_window_results_stitched_by_hand(phantom):
    model = tiny(32)
    rt = RT
    res = explain(phantom, model, masks=64, adaptive=False, focus=False, stride=16, seed=4,
                  runtime=rt)
    prep = prepare_image(phantom, model, stride=16)
    flat = np.flatnonzero(prep.active.ravel())
    crops = torch.from_numpy(prep.windows(flat)).permute(0, 3, 1, 2)  # [0, 1] fused RGB
    win = explain_windows(model, crops, masks=64, seed=4, runtime=rt,
                          calibrate=calibration_set(prep, flat))
    gy, gx = prep.grid.shape
    c = len(model.labels)

    def grid_of(values: np.ndarray) -> np.ndarray:
        out = np.zeros((values.shape[1], gy * gx))
        out[:, flat] = values.T
        return out.reshape(values.shape[1], gy, gx)

    kernel = prep.grid.kernel()
    from scipy.signal import correlate2d

    # Normalised smoothing (docs/method.md §6): conv(G·E, K) / conv(E, K), NaN where 0.
    mass = correlate2d(prep.active.astype(float), kernel, mode="same")

    def smooth(m: np.ndarray) -> np.ndarray:
        num = np.stack([correlate2d(ch, kernel, mode="same") for ch in m])
        return np.where(mass > 0, num / np.where(mass > 0, mass, 1.0), np.nan)

    def close(got: np.ndarray, want: np.ndarray, atol: float) -> None:
        np.testing.assert_allclose(got, want, atol=atol, equal_nan=True)

    close(res.prediction, smooth(grid_of(win.prediction)), 1e-5)
    close(res.correlation, smooth(grid_of(win.correlation)), 1e-4)
    close(res.product, smooth(grid_of(win.product)), 1e-4)
    close(res.distance, smooth(grid_of(win.distance[:, None]))[0], 1e-4)
    assert res.correlation.shape == (c, gy, gx)
    # 64 masks, or two blocks of the default design for the calibration windows
    used = np.zeros(gy * gx, dtype=int)
    used[flat] = 64
    used[flat[calibration_set(prep, flat)]] = 256
    np.testing.assert_array_equal(res.masks_used, used.reshape(gy, gx))
    np.testing.assert_array_equal(win.masks_used, used[flat])

    # Accumulate on a canvas with a one-window margin, then crop to the image.
    h, w = phantom.pixels.shape
    corners = prep.grid.corners().reshape(-1, 2) + 32
    for got, per_window in ((res.relevance, win.relevance),
                            (res.extra["relevance_uncertainty"], win.relevance_uncertainty)):
        total = np.zeros((h + 64, w + 64))
        count = np.zeros_like(total)
        for k, f in enumerate(flat):
            r0, c0 = corners[f]
            total[r0 : r0 + 32, c0 : c0 + 32] += per_window[k]
            count[r0 : r0 + 32, c0 : c0 + 32] += 1
        total, count = total[32 : 32 + h, 32 : 32 + w], count[32 : 32 + h, 32 : 32 + w]
        expected = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
        np.testing.assert_allclose(got, expected, atol=1e-6)
        assert got.shape == phantom.pixels.shape
    # the run's design factor is the window API's, recorded in the statistics
    assert res.stats.design_factor == win.design_factor["design_factor"]
    assert res.stats.design_factor_dof == win.design_factor["design_factor_dof"]


def test_focus_mode_gives_minimum_masks_outside_focus(phantom):
    model = tiny(32)
    rt = RT
    prep = prepare_image(phantom, model, stride=16)
    flat = np.flatnonzero(prep.active.ravel())
    with torch.no_grad():
        y = model(rt.to_input(model, prep.windows(flat))).numpy()
    per_window = np.zeros((len(model.labels), prep.grid.n_windows))
    per_window[:, flat] = y.T
    per_window = per_window.reshape(len(model.labels), *prep.grid.shape)
    lesion = per_window[1:].max(axis=0)
    share = 2 / prep.active.sum()  # the two most suspicious windows and their neighbours
    top = lesion >= np.sort(lesion[prep.active])[-2]
    expected = binary_dilation(top & prep.active, np.ones((3, 3), bool)) & prep.active
    assert 0 < expected.sum() < prep.active.sum()
    res = explain(phantom, model, masks=96, min_masks=32, adaptive=False, focus=True,
                  focus_share=share, stride=16, runtime=rt)
    # the calibration windows get two blocks of the default design (256 masks)
    calibration = np.zeros(prep.grid.n_windows, dtype=bool)
    calibration[flat[calibration_set(prep, flat)]] = True
    calibration = calibration.reshape(prep.grid.shape)
    np.testing.assert_array_equal(res.masks_used[calibration], 256)
    np.testing.assert_array_equal(res.masks_used[expected & ~calibration], 96)
    np.testing.assert_array_equal(res.masks_used[prep.active & ~expected & ~calibration], 32)
    np.testing.assert_array_equal(res.masks_used[~prep.active], 0)
    assert res.stats.windows_focus == int(expected.sum())


def test_progress_is_monotone_and_cancel_leaves_no_state(phantom):
    model = tiny(32)
    before = torch.get_num_threads()
    steps = explain_steps(phantom, model, MapSettings(
        masks=64, focus=False, adaptive=False, stride=16, mask_batch=16, device="cpu",
        threads=1))
    events = [next(steps) for _ in range(6)]
    assert events[0].stage == "prepare"
    steps.close()
    assert torch.get_num_threads() == before
    assert not torch.is_inference_mode_enabled() and torch.is_grad_enabled()

    events = list(explain_steps(phantom, model, MapSettings(
        masks=64, focus=False, stride=16, mask_batch=32, device="cpu", threads=1)))
    masks = [e for e in events if e.stage == "masks"]
    done = [e.done for e in masks]
    assert done == sorted(done) and done[-1] == masks[-1].total > 0
    assert {e.stage for e in events} == {"prepare", "window", "masks"}


def test_blank_image_gives_finite_maps():
    res = explain(np.zeros((80, 70), np.float32), tiny(32), masks=32, stride=16, runtime=RT)
    for name in ("prediction", "correlation", "product", "distance", "relevance"):
        assert np.all(np.isfinite(getattr(res, name))), name
    assert res.masks_used[res.window_mask].min() == 32


def test_mask_sensitivity_rows_equal_corrcoef_on_prefixes():
    model = tiny()
    x = windows(2, seed=6)
    sens = mask_sensitivity_windows(model, x, counts=(32, 64), reference=96, seed=1,
                                    runtime=RT)
    full = explain_windows(model, x, masks=96, seed=1, design="iid", return_series=True,
                           runtime=RT)
    for i in range(2):
        s = full.series[i]
        for k, n in enumerate((32, 64, 96)):
            prefix = type(s)(s.s_h[:n], s.s_yhat[:n], s.yhat_m[:n])
            np.testing.assert_allclose(sens.rho[i, k], corr_reference(prefix), atol=1e-5)
    np.testing.assert_allclose(sens.differences, np.abs(sens.rho[:, :2] - sens.rho[:, 2:]))
    assert [r["masks"] for r in sens.table()] == [32, 64]
