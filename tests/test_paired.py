"""Wilson intervals and the exact McNemar test of method comparisons (docs/method.md §10)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats

from napari_correlax.evaluate.paired import (
    POOLED,
    exact_mcnemar,
    paired_counts,
    paired_rows,
    wilson_interval,
)


def _wilson_by_quadratic(hits, n, z):
    """The Wilson bounds are the rates π with (p̂ − π)² = z² π (1 − π) / n: the roots of
    (1 + z²/n) π² − (2 p̂ + z²/n) π + p̂² = 0."""
    p = hits / n
    a = 1 + z * z / n
    roots = np.sort(np.roots([a, -(2 * p + z * z / n), p * p]).real)
    return float(roots[0]), float(roots[1])


def _mcnemar_by_enumeration(b, c):
    """Sum the probabilities of every outcome of Binomial(b + c, 1/2) at most as likely as
    the one observed (the exact two-sided test), with exact fractions."""
    n = b + c
    prob = [Fraction(math.comb(n, k), 2**n) for k in range(n + 1)]
    return float(min(Fraction(1), sum(q for q in prob if q <= prob[b])))


@pytest.mark.parametrize("hits,n", [(17, 26), (16, 26), (0, 10), (10, 10), (1, 3), (250, 400)])
def test_wilson_interval_solves_the_score_equation(hits, n):
    low, high = wilson_interval(hits, n)
    z = stats.norm.ppf(0.975)
    exp_low, exp_high = _wilson_by_quadratic(hits, n, z)
    assert low == pytest.approx(max(exp_low, 0.0), abs=1e-9)
    assert high == pytest.approx(min(exp_high, 1.0), abs=1e-9)
    ci = stats.binomtest(hits, n).proportion_ci(0.95, method="wilson")
    assert (low, high) == pytest.approx((ci.low, ci.high), abs=1e-9)


def test_wilson_interval_of_the_worked_example_and_other_levels():
    # 17/26 and 16/26 hits: the intervals quoted for the comparison of Grad-CAM and CorRELAX
    # on 25 phantoms (0.46-0.81 and 0.43-0.78 to two decimals).
    assert [round(v, 2) for v in wilson_interval(17, 26)] == [0.46, 0.81]
    assert [round(v, 2) for v in wilson_interval(16, 26)] == [0.43, 0.78]
    narrow, wide = wilson_interval(30, 60, 0.8), wilson_interval(30, 60, 0.99)
    assert wide[0] < narrow[0] < 0.5 < narrow[1] < wide[1]
    exp = _wilson_by_quadratic(30, 60, stats.norm.ppf(0.995))
    assert wide == pytest.approx(exp, abs=1e-9)


def test_wilson_interval_without_support_is_nan_and_bad_counts_raise():
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    with pytest.raises(ValueError):
        wilson_interval(5, 4)
    with pytest.raises(ValueError):
        wilson_interval(1, 4, level=1.0)


@pytest.mark.parametrize("b,c", [(0, 0), (2, 1), (0, 5), (5, 0), (3, 9), (10, 10), (1, 30),
                                 (47, 80)])
def test_exact_mcnemar_against_enumeration_and_scipy(b, c):
    p = exact_mcnemar(b, c)
    assert p == pytest.approx(_mcnemar_by_enumeration(b, c), rel=1e-12)
    if b + c:
        assert p == pytest.approx(stats.binomtest(b, b + c, 0.5).pvalue, rel=1e-9)


def test_exact_mcnemar_hand_worked_values():
    assert exact_mcnemar(2, 1) == 1.0  # 3 discordant pairs: 2 · (1 + 3) / 8, capped
    assert exact_mcnemar(0, 5) == 2 / 32
    assert exact_mcnemar(1, 7) == pytest.approx(2 * (1 + 8) / 256)
    with pytest.raises(ValueError):
        exact_mcnemar(-1, 2)


def test_paired_counts_count_each_shared_pair_once():
    a = {("i1", "Mass"): True, ("i2", "Mass"): True, ("i3", "Mass"): False,
         ("i1", "Retractions"): False, ("i4", "Mass"): True}
    b = {("i1", "Mass"): True, ("i2", "Mass"): False, ("i3", "Mass"): False,
         ("i1", "Retractions"): True, ("i5", "Mass"): False}
    pooled = paired_counts(a, b)
    assert (pooled.both, pooled.a_only, pooled.b_only, pooled.neither) == (1, 1, 1, 1)
    assert pooled.unpaired == 2 and pooled.pairs == 4 and pooled.discordant == 2
    assert pooled.p_value == 1.0
    mass = paired_counts(a, b, "Mass")
    assert (mass.both, mass.a_only, mass.b_only, mass.neither) == (1, 1, 0, 1)
    assert mass.p_value == 1.0


def test_paired_rows_per_label_and_pooled_against_a_reference():
    rng = np.random.default_rng(0)
    keys = [(f"img{i}", lab) for i in range(40) for lab in ("Mass", "Retractions")]
    hits = {m: {k: bool(rng.random() < q) for k in keys}
            for m, q in (("correlax", 0.7), ("gradcam", 0.4), ("eigencam", 0.5))}
    rows = paired_rows(hits, against="correlax")
    assert [(r.method_a, r.method_b, r.label) for r in rows] == [
        ("correlax", m, lab) for m in ("gradcam", "eigencam")
        for lab in ("Mass", "Retractions", POOLED)]
    for row in rows:
        ka = [k for k in keys if row.label in (POOLED, k[1])]
        only_a = sum(hits[row.method_a][k] and not hits[row.method_b][k] for k in ka)
        only_b = sum(hits[row.method_b][k] and not hits[row.method_a][k] for k in ka)
        assert (row.counts.a_only, row.counts.b_only) == (only_a, only_b)
        assert row.counts.pairs == len(ka)
        assert row.counts.p_value == pytest.approx(_mcnemar_by_enumeration(only_a, only_b))
    assert len(paired_rows(hits)) == 3 * 3  # every pair of three methods
