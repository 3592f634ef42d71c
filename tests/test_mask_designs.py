"""Mask designs and confidence intervals of CorRELAX (docs/method.md §7).

Uniformity of single masks is checked exactly where the construction allows it (the
orthogonal arrays, by enumerating their random flips) and statistically otherwise (over
many seeds); balance properties by counting; unbiasedness against i.i.d. masks on a tiny
model; confidence half-widths against the delta method written here from a window's
series (influence function of Pearson's ρ) and against a bootstrap.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.signal import correlate2d
from scipy.stats import t as student_t

from napari_correlax.errors import CorrelaxError
from napari_correlax.maps import explain, explain_windows, load_result
from napari_correlax.maps.image_explain import calibration_set
from napari_correlax.maps.mask_engine import check_step
from napari_correlax.maps.masks import (
    DESIGN_VARIANCE_BOUND,
    design_unit,
    hadamard_bits,
    make_mask_grids,
    orthogonal_block,
)
from napari_correlax.maps.moments import Z95
from napari_correlax.maps.runtime import Runtime
from napari_correlax.maps.settings import DEFAULT_DESIGN, MASK_DESIGNS, MapSettings
from napari_correlax.maps.sliding import prepare_image
from napari_correlax.models.classifier import Classifier

RT = Runtime(device="cpu", threads=1)
BALANCED = [d for d in MASK_DESIGNS if d != "iid"]


def tiny(size: int = 32, seed: int = 0) -> Classifier:
    torch.manual_seed(seed)
    return Classifier("tiny", input_size=size).eval()


def windows(n: int, size: int = 32, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, 3, size, size), generator=g)


def flat(design: str, n: int, seed: int, cells: int = 8) -> np.ndarray:
    grids = make_mask_grids(n, seed, cells=cells, design=design)
    return grids.reshape(n, cells * cells).numpy().astype(np.int64)


# --------------------------------------------------------------------------- designs


@pytest.mark.parametrize("design", MASK_DESIGNS)
def test_every_design_is_binary_seeded_and_nested(design):
    long = flat(design, 2 * 300, seed=5)
    assert set(np.unique(long)) == {0, 1}
    for n in (1, 77, 128, 300):  # prefixes, cutting pairs and blocks too
        np.testing.assert_array_equal(flat(design, n, seed=5), long[:n])
    np.testing.assert_array_equal(flat(design, 300, seed=5), flat(design, 300, seed=5))
    assert not np.array_equal(flat(design, 300, seed=6), long[:300])
    assert (long.std(axis=0) > 0).all()  # no cell is the same in every mask


@pytest.mark.parametrize("design", ["oa", "oa-antithetic"])
def test_orthogonal_array_masks_are_uniform_over_the_flips_exactly(design):
    """Every position of a block takes each of the 2^k masks exactly once as the flips run
    over {0, 1}^k, for any column choice and row order: uniform over the randomisation."""
    rng = np.random.default_rng(0)
    k, rows = 4, 8  # 2 × 2 cells
    assert design_unit(design, cells=2) == rows
    for _ in range(5):
        if design == "oa":
            columns = rng.choice(np.arange(1, rows), size=k, replace=False)
            order = rng.permutation(rows)
        else:
            columns = rng.permutation(np.arange(rows // 2, rows))[:k]
            pairs = rng.permutation(rows // 2)
            order = np.stack([pairs, pairs + rows // 2], axis=1).ravel()
        seen = np.stack([orthogonal_block(rows, columns, np.array(f), order)
                         for f in itertools.product((0, 1), repeat=k)])  # (16, rows, k)
        for position in range(rows):
            codes = seen[:, position] @ (1 << np.arange(k))
            assert sorted(codes.tolist()) == list(range(2**k))


def test_hadamard_bits_are_sylvester_parities():
    h = np.array([[1]])
    for _ in range(3):
        h = np.block([[h, h], [h, -h]])  # Sylvester construction, ±1
    np.testing.assert_array_equal(hadamard_bits(8, np.arange(8)), (1 - h) // 2)


@pytest.mark.parametrize("design", ["oa", "oa-antithetic", "sobol"])
def test_single_masks_are_uniform_over_seeds(design):
    """Cell means ≈ 1/2 and cell pairs independent at fixed positions, over 300 seeds."""
    seeds = 300
    masks = np.stack([flat(design, 130, seed=s)[[0, 1, 77, 129]] for s in range(seeds)])
    sd_mean = 0.5 / np.sqrt(seeds)
    assert np.abs(masks.mean(axis=0) - 0.5).max() < 4.5 * sd_mean
    for position in range(masks.shape[1]):
        m = masks[:, position].astype(float)
        both = (m.T @ m) / seeds  # P(cell i and cell j kept)
        iu = np.triu_indices(64, 1)
        sd_pair = np.sqrt(0.25 * 0.75 / seeds)
        assert np.abs(both[iu] - 0.25).max() < 5 * sd_pair


def test_design_blocks_are_balanced():
    """OA blocks: each cell kept in half the masks, every pair of cells in each of its four
    patterns a quarter of the time; the foldover also balances products of three cells;
    antithetic masks come in complementary pairs."""
    rng = np.random.default_rng(1)
    triples = [rng.choice(64, size=3, replace=False) for _ in range(200)]
    for design in ("oa", "oa-antithetic"):
        unit = design_unit(design)
        assert unit == 128
        masks = flat(design, 3 * unit, seed=2)
        for b in range(3):
            block = 2 * masks[b * unit : (b + 1) * unit] - 1  # ±1
            np.testing.assert_array_equal(block.sum(axis=0), 0)
            gram = block.T @ block
            np.testing.assert_array_equal(gram - np.diag(np.diag(gram)), 0)
            if design == "oa-antithetic":
                for t in triples:
                    assert block[:, t].prod(axis=1).sum() == 0
                np.testing.assert_array_equal(block[0::2] + block[1::2], 0)
    anti = flat("antithetic", 256, seed=3)
    np.testing.assert_array_equal(anti[0::2] + anti[1::2], 1)
    assert design_unit("antithetic") == 2 and design_unit("iid") == 1


def test_bad_designs_raise_project_errors():
    with pytest.raises(CorrelaxError, match=r"p = 0\.5"):
        make_mask_grids(10, 0, p=0.3, design="oa")
    with pytest.raises(CorrelaxError, match="unknown mask design"):
        make_mask_grids(10, 0, design="latin")
    with pytest.raises(CorrelaxError, match="unknown mask design"):
        MapSettings(design="latin")
    assert make_mask_grids(10, 0, p=0.3, design="iid").shape == (10, 8, 8)


def test_design_is_in_the_cache_key():
    a, b = MapSettings(design="iid"), MapSettings(design="oa-antithetic")
    assert a.map_fields()["design"] == "iid"
    assert a.map_fields() != b.map_fields()
    assert "design" not in MapSettings(method="prediction").map_fields()


# --------------------------------------------------------------------------- adaptive


@pytest.mark.parametrize("design", ["antithetic", "oa-antithetic"])
def test_adaptive_stops_keep_pairs_and_blocks_whole(design):
    unit = design_unit(design)
    res = explain_windows(tiny(), windows(4, seed=3), masks=640, adaptive=True, min_masks=128,
                          tolerance=0.08, design=design, runtime=RT)
    assert (res.masks_used % unit == 0).all()
    assert (res.masks_used % 64 == 0).all() and res.masks_used.min() >= 128
    assert res.masks_used.min() < 640


# --------------------------------------------------------------------------- unbiased


def test_default_design_is_unbiased_against_many_iid_masks():
    """Mean of ρ over 40 seeds of 256 masks under the default design equals ρ from 8192
    i.i.d. masks within three standard errors (both estimated here, without the engine)."""
    model, x = tiny(), windows(1, seed=11)
    seeds = 40
    rho = np.stack([
        np.concatenate([r.distance, r.correlation[0]])
        for r in (explain_windows(model, x, masks=256, seed=100 + s, design=DEFAULT_DESIGN,
                                  runtime=RT) for s in range(seeds))
    ])
    ref = explain_windows(model, x, masks=8192, seed=9, design="iid", return_series=True,
                          runtime=RT)
    s = ref.series[0]
    rows = np.vstack([s.s_h, s.s_yhat, s.yhat_m.T])
    rho_ref = np.corrcoef(rows)[0, 1:]
    # standard error of the reference by batch means (32 batches of 256 masks)
    batches = np.stack([np.corrcoef(rows[:, k * 256 : (k + 1) * 256])[0, 1:] for k in range(32)])
    se_ref = batches.std(axis=0, ddof=1) / np.sqrt(32)
    se_mean = rho.std(axis=0, ddof=1) / np.sqrt(seeds)
    z = (rho.mean(axis=0) - rho_ref) / np.sqrt(se_mean**2 + se_ref**2)
    assert np.abs(z).max() < 3.5, z
    assert np.abs(z).mean() < 1.5


# --------------------------------------------------------------------------- intervals


def delta_method_se(x: np.ndarray, y: np.ndarray) -> float:
    """Standard error of Pearson's ρ from i.i.d. pairs: sd of its influence function
    ``x̃ỹ − ρ (x̃² + ỹ²) / 2`` (standardised series) over √n."""
    xs = (x - x.mean()) / x.std()
    ys = (y - y.mean()) / y.std()
    rho = np.mean(xs * ys)
    psi = xs * ys - rho * (xs**2 + ys**2) / 2
    return float(np.sqrt(np.mean(psi**2) / len(x)))


def fisher_interval(x: np.ndarray, y: np.ndarray, factor: float) -> tuple[float, float]:
    """95 % Fisher-z interval of Pearson's ρ by hand: atanh ρ ± Z95 · SE / (1 − ρ²)."""
    rho = np.corrcoef(x, y)[0, 1]
    se_z = np.sqrt(factor) * delta_method_se(x, y) / (1 - rho**2)
    return (float(np.tanh(np.arctanh(rho) - Z95 * se_z)),
            float(np.tanh(np.arctanh(rho) + Z95 * se_z)))


def measured_factor_by_hand(series: list, replicate: int) -> tuple[np.ndarray, int]:
    """Per correlation, ``f̂ = R Σ_w Σ_b (ψ̄_wb − ψ̄_w)² / Σ_w (B − 1) V_w``: ψ the influence
    function of each window's ρ (standardised over all its masks), ψ̄_wb its mean over
    replicate b of R masks, V_w the mean of ψ²; and the degrees of freedom Σ_w (B − 1)."""
    num, den, dof = 0.0, 0.0, 0
    for s in series:
        x = (s.s_h - s.s_h.mean()) / s.s_h.std()
        ys = np.stack([(y - y.mean()) / y.std() for y in [s.s_yhat, *s.yhat_m.T]])
        rho = (x * ys).mean(axis=1, keepdims=True)
        psi = x * ys - rho * (x**2 + ys**2) / 2  # (K, n)
        blocks = psi.reshape(len(ys), -1, replicate).mean(axis=2)  # (K, B)
        spread = ((blocks - blocks.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
        num = num + replicate * spread
        den = den + (blocks.shape[1] - 1) * (psi**2).mean(axis=1)
        dof += blocks.shape[1] - 1
    return num / den, dof


@pytest.mark.parametrize("design", ["iid", DEFAULT_DESIGN])
def test_intervals_are_fisher_z_of_the_delta_method_times_the_design_factor(design):
    res = explain_windows(tiny(), windows(3, seed=4), masks=256, seed=3, design=design,
                          return_series=True, runtime=RT)
    factors = np.asarray(res.design_factor["design_factors"])
    if design == "iid":  # independent masks: factor 1 exactly, nothing measured
        assert res.design_factor["design_factor_dof"] == 0
        np.testing.assert_array_equal(factors, 1.0)
    else:  # measured on 3 windows × (2 replicates − 1), widened by (t_3 / z)², capped
        measured, dof = measured_factor_by_hand(res.series, check_step(design))
        assert res.design_factor["design_factor_dof"] == dof == 3
        widened = measured * (student_t.ppf(0.975, dof) / Z95) ** 2
        expected = np.minimum(widened, DESIGN_VARIANCE_BOUND[design])
        np.testing.assert_allclose(factors, expected, rtol=1e-3)
    for i, s in enumerate(res.series):
        bounds = [fisher_interval(s.s_h, y, f)
                  for y, f in zip([s.s_yhat, *s.yhat_m.T], factors, strict=True)]
        np.testing.assert_allclose(res.interval[i], bounds, rtol=1e-3, atol=2e-5)
        rho = [res.distance[i], *res.correlation[i]]
        longer = [max(r - lo, hi - r) for r, (lo, hi) in zip(rho, bounds)]
        np.testing.assert_allclose([res.distance_ci[i], *res.correlation_ci[i]], longer,
                                   rtol=1e-3, atol=1e-6)


def test_iid_half_widths_agree_with_a_bootstrap():
    res = explain_windows(tiny(), windows(2, seed=8), masks=512, seed=1, design="iid",
                          return_series=True, runtime=RT)
    rng = np.random.default_rng(0)
    for i, s in enumerate(res.series):
        rows = np.vstack([s.s_h, s.yhat_m.T])
        boot = np.stack([np.corrcoef(rows[:, rng.integers(0, 512, 512)])[0, 1:]
                         for _ in range(400)])
        half = Z95 * boot.std(axis=0, ddof=1)
        np.testing.assert_allclose(res.correlation_ci[i], half, rtol=0.2)


@pytest.fixture(scope="module")
def phantom():
    from napari_correlax.synth import make_phantom

    return make_phantom(2, shape=(200, 150), findings=["Mass"])


def test_confidence_map_is_smoothed_window_half_widths_and_survives_saving(phantom, tmp_path):
    model = tiny(32)
    res = explain(phantom, model, masks=64, adaptive=False, focus=False, stride=16, seed=4,
                  runtime=RT)
    prep = prepare_image(phantom, model, stride=16)
    idx = np.flatnonzero(prep.active.ravel())
    crops = torch.from_numpy(prep.windows(idx)).permute(0, 3, 1, 2)
    win = explain_windows(model, crops, masks=64, seed=4, runtime=RT,
                          calibrate=calibration_set(prep, idx))
    gy, gx = prep.grid.shape
    raw = np.zeros((len(model.labels), gy * gx))
    raw[:, idx] = win.correlation_ci.T
    kernel = prep.grid.kernel()
    # Normalised smoothing over the evaluated windows (method.md §6), NaN where none reaches.
    mass = correlate2d(prep.active.astype(float), kernel, mode="same")
    summed = np.stack([correlate2d(m, kernel, mode="same") for m in raw.reshape(-1, gy, gx)])
    expected = np.where(mass > 0, summed / np.where(mass > 0, mass, 1.0), np.nan)
    ci = res.get("correlation_ci")
    np.testing.assert_allclose(ci, expected, atol=1e-5, equal_nan=True)
    assert ci.shape == res.correlation.shape and (ci[:, prep.active] > 0).all()

    loaded = load_result(res.save(tmp_path / "r.npz"))
    np.testing.assert_array_equal(loaded.get("correlation_ci"), ci)
    np.testing.assert_array_equal(loaded.get("relevance_uncertainty"),
                                  res.get("relevance_uncertainty"))
    for name in ("design_factor", "design_factor_measured", "design_factor_dof",
                 "design_factor_tabled", "warnings"):
        assert getattr(loaded.stats, name) == getattr(res.stats, name)
    assert res.stats.design_factor is not None and "design factor" in res.stats.design_line

    from napari_correlax.export import window_rows

    header, rows = window_rows(res)
    column = header.index(f"correlation_ci:{model.labels[1]}")
    np.testing.assert_allclose(float(rows[0][column]), float(ci[1, 0, 0]), atol=1e-5,
                               equal_nan=True)


def test_command_line_design_option_reaches_the_settings():
    import argparse

    from napari_correlax.cli.common import add_map_options, settings_from

    parser = argparse.ArgumentParser()
    add_map_options(parser)
    assert settings_from(parser.parse_args([]), "correlax").design == DEFAULT_DESIGN
    chosen = settings_from(parser.parse_args(["--design", "iid"]), "correlax")
    assert chosen.design == "iid" and chosen.map_fields()["design"] == "iid"
    with pytest.raises(SystemExit):
        parser.parse_args(["--design", "latin"])
