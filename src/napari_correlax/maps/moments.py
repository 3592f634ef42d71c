"""Streaming moments of CorRELAX's per-mask series and the uncertainty of ρ (docs/method.md §7).

Nothing grows with the number of masks ``N``: per window :class:`Moments` keeps power
sums of the series about a per-window shift (the mean of its first segment) in float64,
enough for the exact Pearson ρ and for its sampling uncertainty.

Uncertainty
    Each correlation's standard error uses the large-sample variance of Pearson's ρ from
    the sample's own moments (up to fourth order), ``Var ρ_n ≈ f_n V / n`` with
    ``V = μ22 + ρ²/4 (μ40 + μ04 + 2 μ22) − ρ (μ31 + μ13)`` (standardised moments; Fisher's
    ``(1 − ρ²)²`` for normal data), the variance for independent masks, times the design
    factor ``f_n`` (:attr:`Moments.factor` for whole blocks, 1 for the masks of an
    unfinished block; see :meth:`Moments.design_variance`), one factor per correlation
    (distance and each label). The factors are set by the mask engine from the run's own
    measurement (:meth:`Moments.measured_factor`).
    Because the masks are nested, the standard error of ``ρ_n − ρ_Nmax`` is
    ``sqrt(V (f_n / n − f_Nmax / Nmax))``, which reaches 0 at ``Nmax``
    (:meth:`Moments.summary`; adaptive mode compares it with its tolerance).

Confidence interval
    The 95 % interval of a window's ρ is Fisher's: ``z = atanh ρ`` with standard error
    ``SE_z = sqrt(f_n V / n) / (1 − ρ²)`` (the delta method), back-transformed,
    ``[tanh(z − Z95 SE_z), tanh(z + Z95 SE_z)]`` (:meth:`Moments.interval`). Unlike the
    Wald interval ``ρ ± Z95 SE`` it stays inside [−1, 1] and is asymmetric where |ρ| is
    near 1, where the Wald interval undercovers. The half-width reported with a map is
    the longer side, ``max(ρ − low, high − ρ)``.

Measured design factor
    The masks of a run come in independent *replicates* (whole design blocks, or
    :data:`~.mask_engine.CHECK_EVERY` masks for designs with shorter blocks); per window
    the power sums of every replicate are kept too. To first order
    ``ρ̂ − ρ`` is the mean of the influence function ``ψ = x̃ỹ − ρ (x̃² + ỹ²) / 2``
    (standardised series) over the masks, whose variance per i.i.d. mask is ``V``. Over
    the ``B ≥ 2`` complete replicates of ``R`` masks of a window the spread of the
    replicate means of ψ estimates the design's variance of one replicate mean,
    ``f V / R``; pooling the windows (whose masks are independent streams), per
    correlation, ``f̂ = Σ R Σ_b (ψ̄_b − ψ̄)² / Σ (B − 1) V``
    (:meth:`Moments.measured_factor`), with ``Σ (B − 1)`` over windows as its degrees of
    freedom.

Zero variance
    A series whose standard deviation is at most ``1e-10`` of its root mean square
    (identical values up to float64 rounding) is constant; every correlation involving
    it is 0 and flagged in ``constant``, never NaN.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["CONSTANT_RTOL", "Z95", "Moments", "row_cosine"]

#: Relative standard deviation at or below which a series counts as constant.
CONSTANT_RTOL = 1e-10
#: Two-sided 95 % normal quantile: confidence intervals are ρ ± Z95 · SE.
Z95 = 1.959963984540054
#: Cross moments (a, b) of Σ dx^a dy^b kept per series pair.
_CROSS = ((1, 1), (2, 1), (1, 2), (2, 2), (3, 1), (1, 3))


class Moments:
    """Streaming power sums of ``x`` (one series) against ``K`` series ``y``, per window.

    Sums are taken about a per-window shift (the mean of the window's first segment) in
    float64, so no large numbers cancel; central moments up to order four follow by
    binomial expansion. ``factor`` and ``unit`` describe the mask design: the variance of
    ρ over ``unit`` masks (a whole design block) is ``factor`` times that of i.i.d. masks
    (a number, or one per series).
    ``replicate`` (0: none) is the length of the independent replicates whose power sums
    are kept for :meth:`measured_factor`, up to ``n_max`` masks per window.
    """

    def __init__(self, n_windows: int, n_series: int, *, factor: float = 1.0,
                 unit: int = 1, replicate: int = 0, n_max: int = 0) -> None:
        w, k = n_windows, n_series
        self.factor = np.broadcast_to(np.asarray(factor, dtype=np.float64), (k,)).copy()
        self.unit = max(int(unit), 1)
        self.replicate = max(int(replicate), 0)
        n_blocks = int(n_max) // self.replicate if self.replicate else 0
        # Per replicate: Σdx, Σdx², then K each of Σdy, Σdy², Σdx·dy (about the shifts).
        self.blocks = np.zeros((w, n_blocks, 2 + 3 * k))
        self.n = np.zeros(w, dtype=np.int64)
        self.shift_x = np.zeros(w)
        self.shift_y = np.zeros((w, k))
        self.px = np.zeros((w, 5))
        self.py = np.zeros((w, k, 5))
        self.cross = np.zeros((w, k, len(_CROSS)))

    def add(self, w: int, x: np.ndarray, y: np.ndarray) -> None:
        """Add ``x`` (m,) and ``y`` (m, K) of window ``w``."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if self.n[w] == 0:
            self.shift_x[w] = x.mean()
            self.shift_y[w] = y.mean(axis=0)
        dx = x - self.shift_x[w]
        dy = y - self.shift_y[w]
        xp = dx[:, None] ** np.arange(5)
        yp = dy[:, :, None] ** np.arange(5)
        self.n[w] += len(x)
        self.px[w] += xp.sum(axis=0)
        self.py[w] += yp.sum(axis=0)
        for j, (a, b) in enumerate(_CROSS):
            self.cross[w, :, j] += (xp[:, a, None] * yp[:, :, b]).sum(axis=0)
        if self.blocks.shape[1]:
            self._add_blocks(w, int(self.n[w]) - len(x), xp, yp)

    def _add_blocks(self, w: int, start: int, xp: np.ndarray, yp: np.ndarray) -> None:
        """Add masks ``start …`` (their powers ``xp``, ``yp``) to their replicates' sums."""
        r = self.replicate
        block = (start + np.arange(len(xp))) // r
        for b in np.unique(block[block < self.blocks.shape[1]]):
            sel = block == b
            px, py = xp[sel], yp[sel]
            self.blocks[w, b] += np.concatenate([
                px[:, 1:3].sum(axis=0), py[:, :, 1].sum(axis=0), py[:, :, 2].sum(axis=0),
                (px[:, 1, None] * py[:, :, 1]).sum(axis=0)])

    def complete_blocks(self) -> np.ndarray:
        """``(W,)`` complete replicates per window (0 when none are kept)."""
        if not self.replicate:
            return np.zeros(len(self.n), dtype=np.int64)
        return np.minimum(self.n // self.replicate, self.blocks.shape[1])

    def measured_factor(self) -> tuple[np.ndarray, np.ndarray]:
        """``(f̂, dof)``, each ``(K,)``: per series, the design factor measured from the
        replicates of every window with at least two complete ones (module docstring) and
        its degrees of freedom; NaN and 0 where there are none."""
        k = self.py.shape[1]
        nb = self.complete_blocks()
        ws = np.flatnonzero(nb >= 2)
        if len(ws) == 0:
            return np.full(k, np.nan), np.zeros(k, dtype=np.int64)
        rho, constant, v = self._moments(ws)
        n = self.n[ws].astype(np.float64)[:, None]
        mx = self.px[ws, 1][:, None] / n
        vx = np.maximum(self.px[ws, 2][:, None] / n - mx**2, 0.0)
        my = self.py[ws, :, 1] / n
        vy = np.maximum(self.py[ws, :, 2] / n - my**2, 0.0)
        blk = self.blocks[ws]  # (w, B, 2 + 3K)
        r = float(self.replicate)
        s1x, s2x = blk[..., 0:1], blk[..., 1:2]
        s1y, s2y, sxy = blk[..., 2:2 + k], blk[..., 2 + k:2 + 2 * k], blk[..., 2 + 2 * k:]
        mx_, my_ = mx[:, None], my[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            suv = (sxy - my_ * s1x - mx_ * s1y + r * mx_ * my_) / np.sqrt(vx * vy)[:, None]
            suu = (s2x - 2 * mx_ * s1x + r * mx_**2) / vx[:, None]
            svv = (s2y - 2 * my_ * s1y + r * my_**2) / vy[:, None]
            psi = (suv - rho[:, None] / 2 * (suu + svv)) / r  # (w, B, K) replicate means
        valid = (np.arange(blk.shape[1])[None, :] < nb[ws, None])[..., None]
        count = nb[ws].astype(np.float64)[:, None]
        mean = np.where(valid, psi, 0.0).sum(axis=1) / count
        spread = np.where(valid, (psi - mean[:, None]) ** 2, 0.0).sum(axis=1)
        use = ~constant & (v > 0) & np.isfinite(spread)  # (w, K)
        den = np.where(use, (count - 1) * v, 0.0).sum(axis=0)
        num = np.where(use, spread, 0.0).sum(axis=0)
        dof = np.where(use, count - 1, 0.0).sum(axis=0).astype(np.int64)
        with np.errstate(invalid="ignore", divide="ignore"):
            factor = np.where(den > 0, r * num / den, np.nan)
        return factor, np.where(den > 0, dof, 0)

    def design_variance(self, n: np.ndarray, factor: np.ndarray | None = None
                        ) -> np.ndarray:
        """``(len(n), K)``: ``f_n / n``, the variance of a mean over ``n`` masks of the
        design in units of one i.i.d. mask's, per series. Whole blocks count ``factor``,
        masks of an incomplete last block count as i.i.d.:
        ``f_n = (factor · U ⌊n/U⌋ + n mod U) / n`` (``factor``: :attr:`factor` unless
        given)."""
        f = self.factor if factor is None else np.asarray(factor, dtype=np.float64)
        n = np.maximum(np.asarray(n, dtype=np.float64), 1.0)[:, None]
        whole = np.floor(n / self.unit) * self.unit
        return (f[None, :] * whole + (n - whole)) / n**2

    def _moments(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(rho, constant, V)`` for windows ``idx``, each ``(len(idx), K)``: V is the
        large-sample variance factor of ρ under i.i.d. masks (module docstring)."""
        n = self.n[idx].astype(np.float64)
        nn = np.maximum(n, 1.0)[:, None]
        raw: dict[tuple[int, int], np.ndarray] = {}
        for a in range(5):
            column = (self.px[idx, a] / nn[:, 0])[:, None]
            raw[(a, 0)] = np.broadcast_to(column, self.py[idx, :, 0].shape)
        for b in range(1, 5):
            raw[(0, b)] = self.py[idx, :, b] / nn
        for j, ab in enumerate(_CROSS):
            raw[ab] = self.cross[idx, :, j] / nn
        mx, my = raw[(1, 0)], raw[(0, 1)]

        def central(a: int, b: int) -> np.ndarray:
            total = np.zeros_like(my)
            for i in range(a + 1):
                for j in range(b + 1):
                    term = raw[(i, j)] if (i, j) != (0, 0) else 1.0
                    total = total + math.comb(a, i) * math.comb(b, j) * term * (-mx) ** (a - i) * (
                        -my
                    ) ** (b - j)
            return total

        vx = np.maximum(central(2, 0), 0.0)
        vy = np.maximum(central(0, 2), 0.0)
        cov = central(1, 1)
        mean_x = self.shift_x[idx][:, None] + mx
        mean_y = self.shift_y[idx] + my
        const_x = vx <= CONSTANT_RTOL**2 * (vx + mean_x**2)
        const_y = vy <= CONSTANT_RTOL**2 * (vy + mean_y**2)
        constant = const_x | const_y | (n[:, None] < 2)
        with np.errstate(invalid="ignore", divide="ignore"):
            sx, sy = np.sqrt(vx), np.sqrt(vy)
            rho = np.where(constant, 0.0, np.clip(cov / (sx * sy), -1.0, 1.0))
            m22 = central(2, 2) / (vx * vy)
            m40 = central(4, 0) / vx**2
            m04 = central(0, 4) / vy**2
            m31 = central(3, 1) / (vx * sx * sy)
            m13 = central(1, 3) / (sx * vy * sy)
            v = m22 + rho**2 / 4 * (m40 + m04 + 2 * m22) - rho * (m31 + m13)
        v = np.where(constant | ~np.isfinite(v), 0.0, np.maximum(v, 0.0))
        rho = np.where(np.isfinite(rho), rho, 0.0)
        return rho, constant, v

    def summary(self, idx: np.ndarray, n_max: np.ndarray, factor: np.ndarray | None = None
                ) -> tuple[np.ndarray, ...]:
        """``(rho, constant, se)``, each ``(len(idx), K)``, for windows ``idx``.

        ``se`` is the standard error of ``ρ_n − ρ_{n_max}`` under the design (module
        docstring): ``sqrt(V (f_n / n − f_Nmax / Nmax))``, 0 at ``n_max``, with the design
        factors ``factor`` (:attr:`factor` unless given).
        """
        rho, constant, v = self._moments(idx)
        n = self.n[idx]
        frac = np.maximum(self.design_variance(n, factor) - self.design_variance(
            np.asarray(n_max, dtype=np.int64), factor), 0.0)
        se = np.sqrt(v * frac)
        return rho, constant, se

    def interval(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(rho, low, high)``, each ``(len(idx), K)``: ρ and its 95 % Fisher-z
        confidence interval (module docstring); ``[0, 0]`` for a correlation flagged
        constant."""
        rho, constant, v = self._moments(idx)
        se = np.sqrt(v * self.design_variance(self.n[idx]))
        r = np.clip(rho, -1.0 + 1e-12, 1.0 - 1e-12)
        z, se_z = np.arctanh(r), se / (1.0 - r**2)
        low = np.where(constant, 0.0, np.tanh(z - Z95 * se_z))
        high = np.where(constant, 0.0, np.tanh(z + Z95 * se_z))
        return rho, low, high

    def halfwidth(self, idx: np.ndarray) -> np.ndarray:
        """``(len(idx), K)``: half-width of the 95 % confidence interval of each ρ, the
        longer side of the Fisher-z interval (0 for a correlation flagged constant)."""
        rho, low, high = self.interval(idx)
        return np.maximum(rho - low, high - rho)


def row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity in float64; 0 where either vector is all zeros."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    dot = np.einsum("ij,ij->i", a, b)
    norm = np.sqrt(np.einsum("ij,ij->i", a, a) * np.einsum("ij,ij->i", b, b))
    out = np.zeros_like(dot)
    np.divide(dot, norm, out=out, where=norm > 0)
    return out
