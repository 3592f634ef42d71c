"""CorRELAX's 95 % intervals hold on a model where the mask design helps little: the
design factor measured in the run on independent per-window mask streams and widened for
its own uncertainty, Fisher-z intervals, and RELAX's uncertainty map (docs/method.md §7)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import t as student_t

from napari_correlax.maps import explain_windows
from napari_correlax.maps.masks import DESIGN_VARIANCE_BOUND, make_mask_grids, window_seed
from napari_correlax.maps.moments import Z95, Moments
from napari_correlax.maps.runtime import Runtime
from napari_correlax.maps.settings import DEFAULT_DESIGN

RT = Runtime(device="cpu", threads=1)
SIZE = 16  # 8 × 8 cells of 2 × 2 pixels


class PairwiseModel(torch.nn.Module):
    """Features and logits are products of pairs of cells: ``c_j = 2 m̄_j − 1`` with
    ``m̄_j`` the mean of cell j of the masked window (±1 on a white window),
    ``h_i = 1 + c_a c_b`` over random pairs ``(a, b)`` and each logit a random
    combination of other pair products: a response with no main effects, where the
    default design's influence function sits in order 4 (docs/method.md §7)."""

    labels = ("A", "B")
    input_size = SIZE

    def __init__(self, features: int = 12, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("pairs", torch.randint(0, 64, (features + 8, 2), generator=g))
        self.register_buffer("weights", torch.randn(2, 8, generator=g))
        self.n_features = features

    def _products(self, x: torch.Tensor) -> torch.Tensor:
        cells = 2 * F.avg_pool2d(x.mean(dim=1, keepdim=True), SIZE // 8).flatten(1) - 1
        return cells[:, self.pairs[:, 0]] * cells[:, self.pairs[:, 1]]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        p = self._products(x)
        return torch.cat([1 + p[:, : self.n_features], p[:, self.n_features :]], dim=1)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return h[:, self.n_features :] @ self.weights.T


def white(n: int = 1) -> torch.Tensor:
    return torch.ones((n, 3, SIZE, SIZE))


def iid_reference(model: PairwiseModel, window: torch.Tensor, n: int) -> np.ndarray:
    """ρ of (distance, label A, label B) over ``n`` i.i.d. masks, computed directly:
    masks upsampled with ``F.interpolate``, cosines and ``np.corrcoef`` in float64."""
    grids = make_mask_grids(n, seed=12345, design="iid")
    with torch.no_grad():
        up = F.interpolate(grids[:, None], size=SIZE, mode="bilinear", align_corners=False)
        h0 = model.features(window[None]).double()
        y0 = model.head(model.features(window[None])).double()
        h = model.features(window[None] * up).double()
        y = model.head(model.features(window[None] * up)).double()
    s_h = F.cosine_similarity(h, h0).numpy()
    s_y = F.cosine_similarity(y, y0).numpy()
    rows = np.vstack([s_h, s_y, y.numpy().T])
    return np.corrcoef(rows)[0, 1:]


@pytest.fixture(scope="module")
def pairwise() -> tuple[PairwiseModel, np.ndarray]:
    model = PairwiseModel().eval()
    return model, iid_reference(model, white()[0], 32768)


def test_default_design_intervals_cover_the_pairwise_model(pairwise):
    """At N = 128 the reported 95 % intervals cover the i.i.d. truth 90–98 % of the time
    over 100 seeds: the run measures the design factor on its 16 calibration windows (two
    blocks each) and the other 8 windows stay at one block (128 masks)."""
    model, truth = pairwise
    hits, used = [], []
    for seed in range(100):
        res = explain_windows(model, white(24), masks=128, seed=seed, runtime=RT)
        low, high = res.interval[..., 0], res.interval[..., 1]
        hits.append((low <= truth) & (truth <= high))
        used.append(res.masks_used)
    hits, used = np.array(hits), np.array(used)
    at_floor = (used == 128).all(axis=0)
    assert at_floor.sum() == 8 and (used[:, ~at_floor] == 256).all()
    print(f"coverage {hits.mean():.3f}, at 128 masks {hits[:, at_floor].mean():.3f}")
    assert 0.90 <= hits.mean() <= 0.98, hits.mean()
    assert 0.90 <= hits[:, at_floor].mean() <= 0.98, hits[:, at_floor].mean()


def test_measured_factor_matches_the_spread_over_seeds(pairwise):
    """The factor measured from a run's replicates agrees with the variance of ρ over
    seeds divided by the i.i.d. delta-method variance (an independent measurement)."""
    model, _ = pairwise
    rhos, measured, iid_var = [], [], []
    for seed in range(24):
        res = explain_windows(model, white(), masks=2048, seed=seed, runtime=RT,
                              return_series=True)
        rhos.append(np.concatenate([res.distance[:, None], res.correlation], axis=1))
        measured.append(np.mean(res.design_factor["design_factors_measured"]))
        assert res.design_factor["design_factor_dof"] == 2048 // 128 - 1
        v = []
        for s in res.series:
            x = (s.s_h - s.s_h.mean()) / s.s_h.std()
            per = []
            for y in [s.s_yhat, *s.yhat_m.T]:
                y = (y - y.mean()) / y.std()
                r = np.mean(x * y)
                per.append(np.mean((x * y - r * (x**2 + y**2) / 2) ** 2) / len(x))
            v.append(per)
        iid_var.append(v)
    spread = np.stack(rhos).var(axis=0, ddof=1)  # (windows, series) over seeds
    ratio = spread.sum() / np.mean(iid_var, axis=0).sum()
    assert ratio > 1.0  # the design helps less than i.i.d. masks on this model
    print(f"measured factor {np.mean(measured):.3f}, spread over seeds {ratio:.3f}")
    assert abs(np.mean(measured) / ratio - 1) < 0.3, (np.mean(measured), ratio)


def test_measured_factor_is_exact_on_hand_made_replicates():
    """Two windows of two replicates whose ψ means are known: the pooled estimate equals
    R Σ (ψ̄_b − ψ̄)² / Σ (B − 1) V computed here from the series."""
    rng = np.random.default_rng(3)
    m = Moments(2, 1, replicate=32, n_max=64)
    num = den = 0.0
    for w in range(2):
        x = rng.normal(size=64)
        y = 0.5 * x + rng.normal(size=64) + (w + 1) * (np.arange(64) >= 32)
        m.add(w, x[:20], y[:20, None])
        m.add(w, x[20:], y[20:, None])  # a chunk across the replicates' boundary
        xs, ys = (x - x.mean()) / x.std(), (y - y.mean()) / y.std()
        r = np.mean(xs * ys)
        psi = xs * ys - r * (xs**2 + ys**2) / 2
        means = psi.reshape(2, 32).mean(axis=1)
        num += 32 * ((means - means.mean()) ** 2).sum()
        den += np.mean(psi**2)
    factor, dof = m.measured_factor()
    assert dof.tolist() == [2]
    assert factor[0] == pytest.approx(num / den, rel=1e-9)


def test_fisher_interval_stays_inside_and_is_asymmetric_near_one():
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    m = Moments(1, 1)
    m.add(0, x, (x + 0.1 * rng.normal(size=200))[:, None])
    rho, low, high = m.interval(np.array([0]))
    assert -1 < low[0, 0] < rho[0, 0] < high[0, 0] < 1
    assert high[0, 0] - rho[0, 0] < rho[0, 0] - low[0, 0]
    # by hand: tanh(atanh ρ ± 1.96 · SE / (1 − ρ²)), SE from the normal-theory variance
    se_z = np.sqrt((1 - rho[0, 0] ** 2) ** 2 / 200) / (1 - rho[0, 0] ** 2)
    z = np.arctanh(rho[0, 0])
    np.testing.assert_allclose([low[0, 0], high[0, 0]],
                               np.tanh([z - 1.959964 * se_z, z + 1.959964 * se_z]), atol=0.01)


def test_relax_uncertainty_is_the_mask_weighted_variance(pairwise):
    """Per pixel, Σ M_n (S_h,n − R)² / Σ M_n over the full-size upsampled masks."""
    model, _ = pairwise
    window = white() * 0.8
    res = explain_windows(model, window, masks=64, seed=2, runtime=RT, return_series=True,
                          calibrate=())
    grids = make_mask_grids(64, seed=window_seed(2, 0), design=DEFAULT_DESIGN)
    up = F.interpolate(grids[:, None], size=SIZE, mode="bilinear",
                       align_corners=False)[:, 0].double().numpy()
    s = res.series[0].s_h[:, None, None]
    relevance = (s * up).sum(axis=0) / up.sum(axis=0)
    variance = (up * (s - relevance) ** 2).sum(axis=0) / up.sum(axis=0)
    np.testing.assert_allclose(res.relevance[0], relevance, atol=1e-5)
    np.testing.assert_allclose(res.relevance_uncertainty[0], variance, atol=1e-6)
    assert variance.max() > 1e-4  # not a trivial zero map


def test_a_measured_factor_above_one_is_used_and_warned_about(pairwise):
    """2 windows × 15 replicates: the factor used is the measured one widened by
    (t_30 / z)² (at most the bound); on the pairwise model it exceeds 1 and is warned
    about. i.i.d. masks have factor 1 exactly."""
    model, _ = pairwise
    res = explain_windows(model, white(2), masks=2048, seed=0, runtime=RT)
    report = res.design_factor
    assert report["design_factor_dof"] == 30
    widened = [min(DESIGN_VARIANCE_BOUND[DEFAULT_DESIGN], m * (student_t.ppf(0.975, 30) / Z95)
                   ** 2) for m in report["design_factors_measured"]]
    np.testing.assert_allclose(report["design_factors"], widened, atol=2e-4)
    assert report["design_factor_measured"] > 1.0
    assert "noisier than independent masks" in report["warning"]
    quiet = explain_windows(model, white(2), masks=2048, seed=0, runtime=RT, design="iid")
    assert quiet.design_factor["design_factors"] == [1.0, 1.0, 1.0]
    assert quiet.design_factor["design_factor_measured"] is None
    assert quiet.design_factor["warning"] == ""
