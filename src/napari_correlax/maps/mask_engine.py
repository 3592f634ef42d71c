"""The mask engine of CorRELAX (docs/method.md §7): masked forward passes of many windows.

:class:`MaskEngine` is shared by the window API (:func:`~.correlax.explain_windows`), the
image API (:func:`~.image_explain.explain_steps`) and the mask-sensitivity study
(:mod:`.sensitivity`). For each window ``X`` (the [0, 1] fused RGB window, image space) it
evaluates the model on ``X ∘ M_n`` for masks ``n = 0, 1, …`` and streams the cosines
``S_h,n``, ``S_ŷ,n`` and the outputs ``ŷ_M`` into :class:`~.moments.Moments`.

Masks
    A ``g × g`` grid (g = 8) of cells kept with probability ``1 − p`` (p = 0.5 masked),
    bilinearly upsampled to ``S × S`` (``align_corners=False``). The masks of a window are
    drawn jointly by a *design* (:mod:`.masks`, :attr:`MapSettings.design
    <napari_correlax.maps.settings.MapSettings.design>`): the paper's independent masks
    (``"iid"``) or balanced blocks that keep every single mask uniform on {0, 1}^64, so ρ
    estimates the same quantity with less noise. Every window has its own stream, drawn on
    the CPU from :func:`~.masks.window_seed` of the run's seed and the window's *key*
    (its index, or what the caller passes, e.g. its place in the image's grid), block
    after block: windows are randomised independently, a window that uses ``n`` masks
    uses masks ``0 … n−1`` of its stream, and the same seed gives the same maps on any
    device.

Streaming
    Nothing grows with ``N``: per window the engine keeps the moments of the series plus
    ``Σ S_h,n G_n`` and ``Σ G_n`` over the ``g × g`` mask grids. Bilinear upsampling is
    linear, so the RELAX map is ``up(Σ S_h G) / up(Σ G)``, identical to summing full-size
    masks. Masked copies of several windows are packed into one forward batch (each
    window contributes up to its next stopping check), so every batch but the last is
    full.

Adaptive number of masks
    At the floor (``min_masks``) and then at every multiple of :data:`CHECK_EVERY` masks —
    or of the design's block when that is longer, so pairs and blocks are never cut
    (:func:`adaptive_checks`) — a window stops once, for every tracked correlation
    (distance and each label), the standard error of ``ρ_n − ρ_Nmax``
    (:meth:`~.moments.Moments.summary`) is at most the tolerance. How the default
    tolerance and floor were chosen, with the measurements: docs/method.md §7, *Choices*.

Design factor
    The standard errors multiply the i.i.d. variance of ρ by the design's variance
    factor, one per correlation, measured in the run (:meth:`MaskEngine.update_factor`)
    from the windows that reached two or more independent replicates
    (:meth:`~.moments.Moments.measured_factor`, ``f̂`` with ``ν`` degrees of freedom) and
    widened for the measurement's own uncertainty: ``f = f̂ (t_ν / z)²`` with ``t_ν`` and
    ``z`` the 97.5 % quantiles of Student's t and of the normal distribution, so that an
    interval ``ρ ± z sqrt(f V / n)`` is the t-interval of an estimated variance; never
    more than the design's bound (:data:`~.masks.DESIGN_VARIANCE_BOUND`), which is used
    while nothing is measured. i.i.d. masks have factor 1 exactly. The measurement comes
    first: *calibration windows* (those the caller names, e.g. the windows of the coarse
    grid of an image, or :func:`calibration_windows`) run before the others, each to two
    replicates whatever its target (its floor rises), and the factors measured on them
    decide every later adaptive stop. Reported intervals use the factors measured at the
    end of the run (every window with two or more replicates). Because the calibration
    windows and their masks are fixed by the seed and the grid, the stops do not depend
    on the order windows run in: a coarse-to-fine run gives the one-pass result. On a
    model where the design helps less, adaptive windows run on past the floor, so no
    window stops with a precision the design has not been shown to give.

Speed
    The forward pass dominates. Windows are normalised once; for a per-pixel affine
    normalisation ``n(x) = (x − μ) / σ`` the masked input is
    ``n(X ∘ M) = (n(X) − b) ∘ M + b`` with ``b = n(0)`` (black), one fused multiply-add
    per pixel (``torch.addcmul``) on the normalised window shifted by ``b``. The callers
    run the model with BatchNorm folded into the preceding convolutions
    (:func:`~.runtime.inference_model`; exact up to float rounding); the engine writes
    the upsampled masks straight into one reused channels-last input buffer (two small
    matrix products, ``U G Uᵀ``, a few per cent of a forward pass) and builds the masked
    inputs in place, and takes the unmasked ``h``, ``ŷ`` from the prediction pass the
    callers need anyway.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CorrelaxError
from .masks import (
    DESIGN_VARIANCE_BOUND,
    DESIGN_VARIANCE_FACTOR,
    GRID_CELLS,
    MIN_FACTOR_DOF,
    design_unit,
    make_mask_grids,
    window_seed,
)
from .moments import Z95, Moments, row_cosine
from .runtime import Progress, Runtime
from .settings import DEFAULT_DESIGN
from .shared import current as work_server

if TYPE_CHECKING:
    import torch

    from ..models.protocols import ModelLike
    from .settings import MapSettings
    from .sliding import WindowFeeder

__all__ = [
    "CHECK_EVERY",
    "MaskEngine",
    "WindowSeries",
    "adaptive_checks",
    "black_level",
    "calibration_windows",
    "check_step",
    "interpolation_matrix",
    "model_device",
    "normalized_windows",
    "unmasked_outputs",
    "unmasked_pass",
    "upsample_masks",
    "used_factor",
]

#: Adaptive mode checks the stopping rule every this many masks after ``min_masks``.
CHECK_EVERY = 64


def interpolation_matrix(cells: int, size: int, like: Any) -> Any:
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

    u = interpolation_matrix(int(grids.shape[-1]), int(size), grids)
    return torch.matmul(u, torch.matmul(grids, u.T))[:, None]


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
class WindowSeries:
    """The per-mask series of one window, in mask order (for tests and inspection).

    ``s_h`` (n,) = cos(h, h_M); ``s_yhat`` (n,) = cos(ŷ, ŷ_M); ``yhat_m`` (n, C) = ŷ_M.
    """

    s_h: np.ndarray
    s_yhat: np.ndarray
    yhat_m: np.ndarray


@dataclass
class _Window:
    """Book-keeping of one window while its masks are being evaluated."""

    index: int
    crop: Any
    target: int
    n: int = 0
    floor: int = 0
    grids: Any = None  # (n, g, g) float32 on the device: masks 0 … n−1 of its stream
    grids_np: np.ndarray | None = None  # the same, (n, g²) float64


class MaskEngine:
    """Streams masked forward passes for many windows through full batches.

    ``crops_for(indices) -> (k, 3, S, S)`` gives normalised windows on the device (the
    model's ``normalize`` of the [0, 1] window); masks act in image space (module docstring).
    ``h0`` (W, D) and ``y0`` (W, C) are the unmasked outputs (numpy); ``targets`` (W,)
    the most masks per window; ``settings`` gives the seed, the mask design, the masked
    batch (``mask_batch``), the floor (:attr:`~.settings.MapSettings.mask_floor`) and the
    adaptive rule (``adaptive``, ``tolerance``); ``order`` the order in which windows
    enter batches; ``record_at`` mask counts at which each window's statistics are kept
    (:attr:`snapshots`); ``keep_series`` keeps the per-mask series (for tests); ``keys``
    (W,) the windows' mask-stream keys (default: their indices; module docstring);
    ``calibrate`` the windows given two replicates to measure the design factor on
    (default :func:`calibration_windows`; module docstring, "Design factor"). Their
    targets rise to two replicates (:attr:`targets`).
    """

    def __init__(
        self,
        model: Any,
        runtime: Runtime,
        crops_for: Callable[[list[int]], Any],
        h0: Any,
        y0: Any,
        targets: np.ndarray,
        settings: MapSettings,
        *,
        size: int,
        order: Sequence[int] | None = None,
        record_at: Sequence[int] = (),
        keep_series: bool = False,
        keys: Sequence[int] | None = None,
        calibrate: Sequence[int] | None = None,
    ) -> None:
        import torch

        self.model = model
        self.rt = runtime
        self.crops_for = crops_for
        self.h0 = np.asarray(h0, dtype=np.float64)
        self.y0 = np.asarray(y0, dtype=np.float64)
        self.targets = np.array(targets, dtype=np.int64)
        self.size = int(size)
        self.batch_size = int(settings.mask_batch)
        self.min_masks = settings.mask_floor
        self.adaptive = bool(settings.adaptive)
        self.tolerance = float(settings.tolerance)
        n_windows, n_labels = int(y0.shape[0]), int(y0.shape[1])
        self.n_series = 1 + n_labels
        n_max = int(self.targets.max(initial=0))
        design = settings.design
        self.design = design
        self.unit = design_unit(design, GRID_CELLS)
        self.check_step = check_step(design)
        self.seed = int(settings.seed)
        self.keys = (np.arange(n_windows, dtype=np.int64) if keys is None
                     else np.asarray(keys, dtype=np.int64))
        # Bilinear upsampling as U G Uᵀ; the right factor is repeated per input channel so
        # the product lands directly in the channels-last (B, S, S·3) input buffer.
        self.bound = DESIGN_VARIANCE_BOUND[design]
        self.u = interpolation_matrix(GRID_CELLS, self.size,
                                      torch.zeros((), device=runtime.device))
        self.u_t_rep = self.u.T.repeat_interleave(3, dim=1).contiguous()
        self.order = list(range(n_windows)) if order is None else [int(i) for i in order]
        self.record_at = sorted({int(r) for r in record_at if r > 0})
        self.snapshots = np.zeros((n_windows, len(self.record_at), self.n_series))
        self.snapshot_se = np.zeros_like(self.snapshots)
        self.snapshot_ci = np.zeros_like(self.snapshots)
        self.tabled_factor = DESIGN_VARIANCE_FACTOR[design]
        self.moments = Moments(n_windows, self.n_series, unit=self.unit,
                               factor=self.bound,
                               replicate=0 if design == "iid" else self.check_step,
                               n_max=max(n_max, 2 * self.check_step))
        self.measured_factor = np.full(self.n_series, np.nan)
        self.factor_dof = np.zeros(self.n_series, dtype=np.int64)
        self._blocks_seen = -1
        self._decisions_frozen = False
        self._decision_factor = self.moments.factor.copy()
        self._finished: set[int] = set()
        self.calibrate = np.zeros(n_windows, dtype=bool)
        if design != "iid":
            chosen = (calibration_windows(n_windows) if calibrate is None
                      else np.asarray(calibrate, dtype=np.int64))
            self.calibrate[chosen] = True
            self.targets[self.calibrate] = np.maximum(self.targets[self.calibrate],
                                                      2 * self.check_step)
        self.rel_num = np.zeros((n_windows, GRID_CELLS**2))
        self.rel_sq = np.zeros_like(self.rel_num)
        self.rel_den = np.zeros_like(self.rel_num)
        self.series: list[list[np.ndarray]] | None = (
            [[] for _ in range(n_windows)] if keep_series else None
        )
        # n(X ∘ M) = (n(X) − b) ∘ M + b, b = n(black), in the (S·3) channels-last row layout.
        self.black = black_level(model, runtime.device).repeat(self.size)
        self.device = runtime.device
        self._torch = torch
        self._buffer: Any = None
        self.start = np.zeros(n_windows, dtype=np.int64)  # masks carried over (carry_over)

    def carry_over(self, other: MaskEngine, src: np.ndarray, dst: np.ndarray) -> None:
        """Continue windows ``dst`` from the state of ``other``'s windows ``src`` (the same
        image windows, the same seed and design: masks ``0 … n−1`` are the same masks).

        Their moments and RELAX sums are copied; :meth:`steps` resumes them at mask ``n``
        (after the stopping decision a one-pass run makes there), so the result equals a
        run that did all their masks here, up to float rounding.
        """
        src, dst = np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64)
        mine, theirs = self.moments, other.moments
        for name in ("n", "shift_x", "shift_y", "px", "py", "cross"):
            getattr(mine, name)[dst] = getattr(theirs, name)[src]
        b = min(mine.blocks.shape[1], theirs.blocks.shape[1])
        mine.blocks[dst, :b] = theirs.blocks[src, :b]
        for name in ("rel_num", "rel_sq", "rel_den"):
            getattr(self, name)[dst] = getattr(other, name)[src]
        self.start[dst] = theirs.n[src]

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
        """Upper bound on masked forward passes still to run (every window at its target,
        less the masks carried over)."""
        if not self.order:
            return 0
        return int((self.targets[self.order] - self.start[self.order]).clip(0).sum())

    def steps(self) -> Generator[int, None, None]:
        """Run all windows; yields the progress made by each batch (passes run + skipped).

        Calibration windows run first, each to two replicates; the design factor measured
        on them then decides every adaptive stop (module docstring, "Design factor"), so
        the stops do not depend on the order windows run in. Calibration windows with a
        larger target continue among the others."""
        cal = [i for i in self.order if self.calibrate[i] and self.targets[i] > 0]
        if cal:
            yield from self._run_windows(cal, phase_target=2 * self.check_step)
        # the factors of every stopping decision from here on
        self._decision_factor = self.update_factor().copy()
        self._decisions_frozen = True
        rest = [i for i in self.order
                if self.targets[i] > self.moments.n[i] and i not in self._finished]
        yield from self._run_windows(rest)

    def _run_windows(self, windows: list[int], phase_target: int = 0
                     ) -> Generator[int, None, None]:
        """Run ``windows`` (in that order) to their targets, or to ``phase_target``."""
        pending = list(reversed(windows))
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
            skipped = 0
            while room > 0 and pending:
                win = self._enter(pending.pop(), phase_target)
                if win.n and self._decide(win):  # carried over and already finished
                    skipped += win.target - win.n
                    continue
                crop = self.crops_for([win.index])[0].float()  # (3, S, S) → (1, S, 3S)
                win.crop = crop.permute(1, 2, 0).reshape(1, self.size, 3 * self.size) - self.black
                active.append(win)
                k = min(self._next_stop(win) - win.n, room)
                segments.append((win, win.n, win.n + k))
                room -= k
            self._run_batch(segments)
            progress = skipped + sum(b - a for _, a, b in segments)
            finished = set()
            for win, _, b in segments:
                reached = b == self._next_stop(win)
                win.n = b
                if reached and self._decide(win):
                    finished.add(id(win))
                    progress += win.target - win.n
            active = [w for w in active if id(w) not in finished]
            yield progress

    def _enter(self, w: int, phase_target: int = 0) -> _Window:
        """Book-keeping of window ``w`` as it enters a batch: a calibration window does
        not stop before two replicates; ``phase_target`` pauses it there."""
        win = _Window(w, None, int(self.targets[w]), int(self.moments.n[w]))
        if self.calibrate[w]:
            win.floor = 2 * self.check_step
        if phase_target:
            win.target = min(win.target, phase_target)
        return win

    def _window_grids(self, win: _Window, upto: int) -> tuple[Any, np.ndarray]:
        """Masks ``0 … upto−1`` of ``win``'s stream (drawn on demand, in growing chunks:
        a longer draw starts with the same masks)."""
        have = 0 if win.grids_np is None else len(win.grids_np)
        if upto > have:
            n = min(max(upto, 2 * have, self.min_masks), max(win.target, upto))
            grids = make_mask_grids(n, window_seed(self.seed, int(self.keys[win.index])),
                                    design=self.design)
            win.grids_np = grids.numpy().reshape(n, GRID_CELLS**2).astype(np.float64)
            win.grids = grids.to(self.device)
        return win.grids, win.grids_np

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
                    device=self.device, memory_format=torch.channels_last,
                )
            x = self._buffer[:total]
            # (B, S, S, 3) is contiguous in a channels-last tensor: view it as (B, S, 3S).
            rows = x.permute(0, 2, 3, 1).view(total, size, 3 * size)
            pos = 0
            for win, a, b in segments:
                # n(X ∘ M) = b + M ∘ (n(X) − b), masks repeated per channel (win.crop
                # holds n(X) − b).
                grids, _ = self._window_grids(win, b)
                out = rows[pos : pos + b - a]
                right = torch.matmul(grids[a:b], self.u_t_rep)
                torch.matmul(self.u, right, out=out)
                out.mul_(win.crop).add_(self.black)
                pos += b - a
        with self.rt.inference():
            h = self.model.features(x)
            y = self.model.head(h)
            h = h.float().cpu().numpy()
            y = y.float().cpu().numpy()
        s_h = row_cosine(self.h0[slots], h)
        s_y = row_cosine(self.y0[slots], y)
        out = np.concatenate([s_h[:, None], s_y[:, None], y.astype(np.float64)], axis=1)
        pos = 0
        for win, a, b in segments:
            k = b - a
            part = out[pos : pos + k]
            self.moments.add(win.index, part[:, 0], part[:, 1:])
            grids = win.grids_np[a:b]
            self.rel_num[win.index] += part[:, 0] @ grids
            self.rel_sq[win.index] += part[:, 0] ** 2 @ grids
            self.rel_den[win.index] += grids.sum(axis=0)
            if self.series is not None:
                self.series[win.index].append(part.copy())
            pos += k

    def _decide(self, win: _Window) -> bool:
        """Record snapshots at ``win.n``; True when the window is finished."""
        if win.n in self.record_at:
            one = np.array([win.index])
            rho, _, se = self.moments.summary(one, self.targets[one])
            at = self.record_at.index(win.n)
            self.snapshots[win.index, at] = rho[0]
            self.snapshot_se[win.index, at] = se[0]
            self.snapshot_ci[win.index, at] = self.moments.halfwidth(one)[0]
        finished = win.n >= win.target
        if not finished and self.adaptive and win.n >= max(self.min_masks, win.floor):
            if self.is_check(win.n):
                factor = self._decision_factor if self._decisions_frozen \
                    else self.update_factor()
                one = np.array([win.index])
                _, _, se = self.moments.summary(one, self.targets[one], factor)
                finished = bool(se.max() <= self.tolerance)
        if finished:
            win.crop = win.grids = win.grids_np = None
            if win.target == self.targets[win.index]:
                self._finished.add(win.index)
        return finished

    # -- design factor -----------------------------------------------------------------
    def update_factor(self) -> np.ndarray:
        """Measure the design factors from the replicates completed so far and set those
        the standard errors use (module docstring, "Design factor"); returns them, (1 + C,)."""
        seen = int(self.moments.complete_blocks().sum())
        if seen != self._blocks_seen and self.design != "iid":
            self._blocks_seen = seen
            self.measured_factor, self.factor_dof = self.moments.measured_factor()
            self.moments.factor = used_factor(self.measured_factor, self.factor_dof,
                                              self.bound)
        return self.moments.factor

    def factor_report(self) -> dict[str, Any]:
        """The design factor the results use (the largest over the correlations), the
        measured one there (None when not measured), its degrees of freedom and the
        tabled one, for a run's statistics; ``design_factors`` lists the factor used per
        correlation (distance, then each label), ``design_factors_measured`` the measured
        ones."""
        used = self.update_factor()
        worst = int(np.argmax(used))
        measured = float(self.measured_factor[worst])
        return {"design_factor": round(float(used[worst]), 4),
                "design_factor_measured": round(measured, 4) if math.isfinite(measured)
                else None,
                "design_factor_dof": int(self.factor_dof[worst]),
                "design_factor_tabled": float(self.tabled_factor),
                "design_factors": [round(float(f), 4) for f in used],
                "design_factors_measured": [round(float(f), 4) if math.isfinite(f) else None
                                            for f in self.measured_factor]}

    def factor_warning(self) -> str:
        """A warning when a measured design factor exceeds 1 (the design is noisier
        than i.i.d. masks on this model for that correlation), else ""."""
        self.update_factor()
        measured = np.where(self.factor_dof > 0, self.measured_factor, np.nan)
        if not np.nanmax(measured, initial=0.0) > 1.0:
            return ""
        return (f"mask design {self.design!r} is noisier than independent masks on this "
                f"model (measured variance factor up to {np.nanmax(measured):.2f} > 1): "
                f"intervals are widened to match; design 'iid' would need fewer masks")

    # -- outputs -----------------------------------------------------------------------
    def statistics(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(rho, constant, se)`` for windows ``idx``, each ``(len(idx), 1 + C)``."""
        self.update_factor()
        return self.moments.summary(idx, np.maximum(self.targets[idx], 1))

    def halfwidth(self, idx: np.ndarray) -> np.ndarray:
        """``(len(idx), 1 + C)`` half-widths of the 95 % confidence intervals (the longer
        side of the Fisher-z interval, :meth:`~.moments.Moments.interval`)."""
        self.update_factor()
        return self.moments.halfwidth(idx)

    def interval(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(low, high)``, each ``(len(idx), 1 + C)``: the 95 % Fisher-z intervals."""
        self.update_factor()
        _, low, high = self.moments.interval(idx)
        return low, high

    def _upsampled_ratio(self, num: np.ndarray, den: np.ndarray) -> np.ndarray:
        """``up(num) / up(den)`` of ``(k, g²)`` cell sums, ``(k, S, S)`` float64; 0 where
        ``up(den)`` is 0."""
        g = round(math.sqrt(num.shape[1]))
        zero = self._torch.zeros((), dtype=self._torch.float64)
        u = interpolation_matrix(g, self.size, zero).numpy()
        top = np.einsum("sa,kab,tb->kst", u, num.reshape(-1, g, g), u, optimize=True)
        bottom = np.einsum("sa,kab,tb->kst", u, den.reshape(-1, g, g), u, optimize=True)
        out = np.zeros(top.shape)
        np.divide(top, bottom, out=out, where=bottom > 1e-9)
        return out

    def relevance(self, idx: np.ndarray) -> np.ndarray:
        """RELAX maps of windows ``idx``, ``(len(idx), S, S)`` float32.

        ``up(Σ S_h G) / up(Σ G)``; 0 where no mask kept the pixel (never after ≥ 2
        random masks in practice).
        """
        idx = np.asarray(idx, dtype=np.int64)
        return self._upsampled_ratio(self.rel_num[idx], self.rel_den[idx]).astype(np.float32)

    def relevance_uncertainty(self, idx: np.ndarray) -> np.ndarray:
        """RELAX uncertainty of windows ``idx``, ``(len(idx), S, S)`` float32: the
        mask-weighted variance of ``S_h`` at each pixel,
        ``Σ_n M_n (S_h,n − R)² / Σ_n M_n = up(Σ S_h² G) / up(Σ G) − R²`` with ``R`` the
        relevance (bilinear upsampling is linear, so this equals the sum over full-size
        masks)."""
        idx = np.asarray(idx, dtype=np.int64)
        mean = self._upsampled_ratio(self.rel_num[idx], self.rel_den[idx])
        square = self._upsampled_ratio(self.rel_sq[idx], self.rel_den[idx])
        return np.maximum(square - mean**2, 0.0).astype(np.float32)

    def window_series(self, w: int) -> WindowSeries:
        """The stored series of window ``w`` (``keep_series`` must be on)."""
        assert self.series is not None
        parts = self.series[w]
        data = np.concatenate(parts) if parts else np.zeros((0, self.n_series + 1))
        return WindowSeries(data[:, 0].copy(), data[:, 1].copy(), data[:, 2:].copy())


def calibration_windows(n_windows: int, count: int = MIN_FACTOR_DOF) -> np.ndarray:
    """Indices of ``min(count, n_windows)`` windows spread evenly over ``0 … n_windows−1``:
    the default calibration windows of a run (module docstring, "Design factor")."""
    if n_windows <= 0:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.linspace(0, n_windows - 1, min(count, n_windows)).round()
                     ).astype(np.int64)


def used_factor(measured: np.ndarray, dof: np.ndarray, bound: float) -> np.ndarray:
    """The design factors a run uses (module docstring, "Design factor"): per
    correlation ``min(bound, f̂ (t_ν / z)²)`` where ``ν ≥ 1`` degrees of freedom were
    measured, else ``bound``."""
    from scipy.stats import t as student

    measured = np.asarray(measured, dtype=np.float64)
    dof = np.asarray(dof, dtype=np.int64)
    ok = (dof >= 1) & np.isfinite(measured)
    quantile = student.ppf(0.975, np.maximum(dof, 1))
    widened = measured * (quantile / Z95) ** 2
    return np.where(ok, np.minimum(widened, bound), bound)


def model_device(model: Any) -> str:
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


def unmasked_outputs(model: Any, rt: Runtime, x: Any, batch_size: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """``(h, ŷ)`` float32 numpy arrays of model-ready windows ``x`` (B ≥ 1), in batches."""
    hs, ys = [], []
    for start in range(0, x.shape[0], batch_size):
        with rt.inference():
            h = model.features(x[start : start + batch_size])
            y = model.head(h)
            hs.append(h.float().cpu().numpy())
            ys.append(y.float().cpu().numpy())
    return np.concatenate(hs), np.concatenate(ys)


def unmasked_pass(
    feeder: WindowFeeder, todo: np.ndarray
) -> Generator[Progress, None, tuple[np.ndarray, np.ndarray]]:
    """Prediction pass over windows ``todo`` keeping ``h`` and ``ŷ`` (float32 numpy);
    a split run's pass of the same windows is run once (:mod:`.shared`)."""
    server = work_server()
    served = server.prediction_pass(feeder, todo, run_unmasked) if server is not None else None
    return (yield from (served if served is not None else run_unmasked(feeder, todo)))


def run_unmasked(
    feeder: WindowFeeder, todo: np.ndarray
) -> Generator[Progress, None, tuple[np.ndarray, np.ndarray]]:
    """:func:`unmasked_pass` computed, never served."""
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
