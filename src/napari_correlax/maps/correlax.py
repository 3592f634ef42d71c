"""CorRELAX (docs/method.md §7, paper §3.4–3.5) on a batch of windows: the definition.

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

The pieces: the masks and their designs (:mod:`.masks`), the streaming engine with the
adaptive stop (:mod:`.mask_engine`), the moments and uncertainty of ρ (:mod:`.moments`),
and the whole-image API with focus mode and relevance stitching (:mod:`.image_explain`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .mask_engine import (
    MaskEngine,
    WindowSeries,
    model_device,
    normalized_windows,
    unmasked_outputs,
)
from .runtime import Runtime, inference_model
from .settings import (
    DEFAULT_DESIGN,
    DEFAULT_MASK_BATCH,
    DEFAULT_MASKS,
    DEFAULT_MIN_MASKS,
    DEFAULT_TOLERANCE,
    MapSettings,
)

if TYPE_CHECKING:
    import torch

    from ..models.protocols import ModelLike

__all__ = ["WindowExplanation", "WindowSeries", "explain_windows"]


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
        would give lies within the half-width of ρ (the longer side of the Fisher-z
        interval, :mod:`.moments`).
    interval:
        ``(B, 1 + C, 2)`` the 95 % Fisher-z intervals ``[low, high]`` of the correlations
        (distance first, then each label).
    relevance:
        ``(B, S, S)`` RELAX map in window pixels.
    relevance_uncertainty:
        ``(B, S, S)`` RELAX uncertainty: the mask-weighted variance of ``S_h`` per pixel.
    design_factor:
        The mask design's variance factor the intervals use, the measured one (None when
        no window reached two replicates), its degrees of freedom
        (:meth:`~.mask_engine.MaskEngine.factor_report`) and ``warning``, the text
        shown when the measured factor exceeds 1 ("" otherwise).
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
    interval: np.ndarray | None = None
    relevance_uncertainty: np.ndarray | None = field(default=None, repr=False)
    design_factor: dict[str, Any] = field(default_factory=dict)
    series: list[WindowSeries] | None = field(default=None, repr=False)

    @property
    def product(self) -> np.ndarray:
        """``(B, C)`` prediction × correlation."""
        return self.prediction * self.correlation


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
    calibrate: Sequence[int] | None = None,
    keys: Sequence[int] | None = None,
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
    calibrate:
        Indices of the windows given two replicates of the design (256 masks for the
        block designs, more than ``masks`` if that is less) so that the run measures the
        design's variance factor (:mod:`~napari_correlax.maps.mask_engine`, "Design
        factor"); default: up to :data:`~napari_correlax.maps.masks.MIN_FACTOR_DOF`
        windows spread over the batch; ``()`` measures nothing and uses the design's
        bound. Ignored for ``"iid"``.
    keys:
        Mask-stream keys of the windows (default: their indices): window ``i`` uses the
        masks of :func:`~napari_correlax.maps.masks.window_seed` ``(seed, keys[i])``.
    """
    settings = MapSettings(masks=masks, seed=seed, adaptive=adaptive, mask_batch=batch_size,
                           min_masks=min_masks, tolerance=tolerance, design=design)
    rt = runtime or Runtime(device=model_device(model))
    model = inference_model(rt.prepare_model(model), rt)
    x = normalized_windows(model, windows, rt.device)
    h0, y0 = unmasked_outputs(model, rt, x, batch_size)
    n_windows = x.shape[0]
    engine = MaskEngine(model, rt, lambda idx: x[idx], h0, y0, np.full(n_windows, int(masks)),
                        settings, size=x.shape[-1], keep_series=return_series,
                        calibrate=calibrate, keys=keys)
    for _ in engine.steps():
        pass
    return _window_explanation(engine, y0, np.arange(n_windows), return_series)


def _window_explanation(
    engine: MaskEngine, prediction: np.ndarray, idx: np.ndarray, with_series: bool
) -> WindowExplanation:
    rho, constant, se = engine.statistics(idx)
    half = engine.halfwidth(idx)
    low, high = engine.interval(idx)
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
        interval=np.stack([low, high], axis=-1),
        relevance_uncertainty=engine.relevance_uncertainty(idx),
        design_factor={**engine.factor_report(), "warning": engine.factor_warning()},
        series=[engine.window_series(int(w)) for w in idx] if with_series else None,
    )
