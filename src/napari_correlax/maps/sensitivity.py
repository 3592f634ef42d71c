"""Sensitivity of CorRELAX to the number of masks (docs/method.md §7, paper §4.3 and Fig. 7).

For each window, the correlations computed from the first ``N`` masks are compared
with those from the first ``reference`` masks (2560) of the same seeded mask sequence:
``|ρ_N − ρ_2560|`` for ``N ∈ {128, 256, 512, 1024, 2048}``.

What the paper's Fig. 7 shows is the **distance** correlation ``ρ(S_h, S_ŷ)`` (its §3.5:
"the distance correlation coefficient was estimated for each subset within each
window"), and it finds a mean below 0.025 from ``N = 256``. The label correlations
``ρ(S_h, ŷ_M[:, c])`` are measured in the same pass and reported separately
(:meth:`MaskSensitivity.sections`: distance first, then the labels pooled, then each
label), never pooled with the distance.

One streaming pass over ``reference`` masks per window gives every ``ρ_N`` (the
statistics are read off as the count passes ``N``), so the cost is that of one run at
``N = reference``. Masks are i.i.d. (:data:`PAPER_DESIGN`), as in the paper, unless the
settings name another mask design (:mod:`~napari_correlax.maps.masks`).
"""

from __future__ import annotations

import os
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CorrelaxError
from .mask_engine import (
    MaskEngine,
    model_device,
    normalized_windows,
    unmasked_outputs,
    unmasked_pass,
)
from .runtime import Progress, Runtime, drain, inference_model
from .settings import DEFAULT_MASK_BATCH, MapSettings
from .sliding import WindowFeeder, prepare_image

if TYPE_CHECKING:
    import torch
    from matplotlib.figure import Figure

    from ..io.image import Mammogram
    from ..models.protocols import ImageModelLike, ModelLike

__all__ = [
    "ALL_LABELS",
    "DEFAULT_COUNTS",
    "DEFAULT_REFERENCE",
    "DISTANCE",
    "PAPER_DESIGN",
    "PAPER_TOLERANCE",
    "MaskSensitivity",
    "boxplot_figure",
    "combine",
    "mask_sensitivity",
    "mask_sensitivity_steps",
    "mask_sensitivity_windows",
    "save_boxplot",
]

#: Mask counts compared with the reference (paper Fig. 7).
DEFAULT_COUNTS = (128, 256, 512, 1024, 2048)
#: The "arbitrarily high" number of masks taken as the truth (paper §3.5).
DEFAULT_REFERENCE = 2560
#: Windows sampled per image by default (0 or None: all tissue windows).
DEFAULT_WINDOWS = 32
#: Name of the distance correlation ρ(S_h, S_ŷ), the first of :attr:`MaskSensitivity.names`.
DISTANCE = "distance"
#: Section name of the label correlations pooled over labels (:meth:`MaskSensitivity.sections`).
ALL_LABELS = "all labels"
#: Mean |ρ_N − ρ_2560| of the distance the paper stays below from N = 256 (§4.3).
PAPER_TOLERANCE = 0.025
#: The paper's Fig. 7 is measured with independent masks: the mask-sensitivity study asks
#: for them (:func:`mask_sensitivity`, ``correlax mask-sensitivity``) so that it reproduces
#: the figure; :data:`~napari_correlax.maps.settings.DEFAULT_DESIGN` stays the maps' default.
PAPER_DESIGN = "iid"


@dataclass
class MaskSensitivity:
    """Correlations at several mask counts for a set of windows.

    Attributes
    ----------
    counts:
        The compared numbers of masks N, increasing.
    reference:
        The reference number of masks.
    names:
        The correlations, in column order: ``"distance"`` then one per label.
    rho:
        ``(W, len(counts) + 1, len(names))``: ρ with the first N masks for each count,
        then with ``reference`` masks (last row).
    windows:
        ``(W,)`` flat indices of the windows in their image's grid (or batch positions).
    """

    counts: tuple[int, ...]
    reference: int
    names: list[str]
    rho: np.ndarray
    windows: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def differences(self) -> np.ndarray:
        """``(W, len(counts), len(names))`` ``|ρ_N − ρ_reference|``."""
        return np.abs(self.rho[:, :-1] - self.rho[:, -1:])

    @property
    def label_names(self) -> list[str]:
        """The label correlations' names: every name after the first (the distance)."""
        return list(self.names[1:])

    def table(self, columns: Sequence[str] | None = None) -> list[dict[str, float]]:
        """One row per N: mean, median, 95th percentile and max of ``|Δρ|``.

        Pooled over windows and the correlations named in ``columns`` (default all,
        distance and labels together; :meth:`sections` keeps them apart).
        """
        cols = [self.names.index(c) for c in columns] if columns else list(range(len(self.names)))
        diffs = self.differences[:, :, cols]
        rows = []
        for k, n in enumerate(self.counts):
            d = diffs[:, k].ravel()
            rows.append(_row(n, d))
        return rows

    def distance_table(self) -> list[dict[str, float]]:
        """:meth:`table` of the distance correlation alone: the paper's Fig. 7."""
        return self.table([DISTANCE])

    def label_table(self) -> list[dict[str, float]]:
        """:meth:`table` of the label correlations pooled over labels (no distance)."""
        return self.table(self.label_names) if self.label_names else []

    def sections(self) -> list[tuple[str, list[dict[str, float]]]]:
        """The tables in report order: distance, :data:`ALL_LABELS`, then each label."""
        out = [(DISTANCE, self.distance_table())]
        if self.label_names:
            out.append((ALL_LABELS, self.label_table()))
            out += [(name, self.table([name])) for name in self.label_names]
        return out

    def smallest_count_within(self, tolerance: float = PAPER_TOLERANCE) -> int | None:
        """Smallest compared N from which the distance's mean ``|Δρ|`` stays below
        ``tolerance`` for every larger N too (the paper: 256 for 0.025); None if none."""
        found = None
        for row in reversed(self.distance_table()):
            if not row["mean"] < tolerance:
                break
            found = int(row["masks"])
        return found


def _row(n: int, d: np.ndarray) -> dict[str, float]:
    if d.size == 0:
        return {"masks": int(n), "values": 0, "mean": float("nan"), "median": float("nan"),
                "p95": float("nan"), "max": float("nan")}
    return {
        "masks": int(n),
        "values": int(d.size),
        "mean": float(d.mean()),
        "median": float(np.median(d)),
        "p95": float(np.percentile(d, 95)),
        "max": float(d.max()),
    }


def combine(results: Sequence[MaskSensitivity]) -> MaskSensitivity:
    """Pool several images' results (same counts, reference and names)."""
    if not results:
        raise CorrelaxError("no mask-sensitivity results to combine")
    first = results[0]
    for r in results[1:]:
        if r.counts != first.counts or r.reference != first.reference or r.names != first.names:
            raise CorrelaxError("mask-sensitivity results differ in counts, reference or labels")
    return MaskSensitivity(
        first.counts,
        first.reference,
        list(first.names),
        np.concatenate([r.rho for r in results]),
        np.concatenate([r.windows for r in results]),
        {"images": len(results)},
    )


def _check_counts(counts: Sequence[int], reference: int) -> tuple[int, ...]:
    out = tuple(sorted({int(c) for c in counts}))
    if not out or out[0] < 2:
        raise CorrelaxError("mask counts must be at least 2")
    if out[-1] >= reference:
        raise CorrelaxError(f"every mask count must be below the reference ({reference})")
    return out


def _sensitivity(engine: MaskEngine, local: np.ndarray) -> np.ndarray:
    rho_ref, _, _ = engine.statistics(local)
    return np.concatenate([engine.snapshots[local], rho_ref[:, None]], axis=1)


def mask_sensitivity_windows(
    model: ModelLike,
    windows: torch.Tensor | np.ndarray,
    counts: Sequence[int] = DEFAULT_COUNTS,
    reference: int = DEFAULT_REFERENCE,
    seed: int = 0,
    *,
    batch_size: int = DEFAULT_MASK_BATCH,
    runtime: Runtime | None = None,
    design: str = PAPER_DESIGN,
) -> MaskSensitivity:
    """Paper Fig. 7 on a batch of ``(B, 3, S, S)`` [0, 1] windows (image space, as for
    :func:`~napari_correlax.maps.explain_windows`; see module docstring)."""

    counts = _check_counts(counts, reference)
    settings = _study_settings(MapSettings(seed=seed, design=design, mask_batch=batch_size),
                               counts, reference)
    rt = runtime or Runtime(device=model_device(model))
    model = inference_model(rt.prepare_model(model), rt)
    x = normalized_windows(model, windows, rt.device)
    h0, y0 = unmasked_outputs(model, rt, x, batch_size)
    engine = MaskEngine(model, rt, lambda idx: x[idx], h0, y0,
                        np.full(x.shape[0], int(reference)), settings, size=x.shape[-1],
                        record_at=counts)
    for _ in engine.steps():
        pass
    local = np.arange(x.shape[0])
    names = [DISTANCE, *[str(lab) for lab in getattr(model, "labels", range(y0.shape[1]))]]
    return MaskSensitivity(counts, int(reference), names, _sensitivity(engine, local), local)


def _study_settings(settings: MapSettings, counts: tuple[int, ...], reference: int
                    ) -> MapSettings:
    """``settings`` for the study: every window runs to ``reference`` masks, no adaptive
    stop, and the first ``counts[0]`` upsampled masks are kept for reuse."""
    return settings.with_(masks=int(reference), min_masks=counts[0], adaptive=False)


def mask_sensitivity_steps(
    image: Mammogram | np.ndarray,
    model: ImageModelLike,
    settings: MapSettings,
    *,
    counts: Sequence[int] = DEFAULT_COUNTS,
    reference: int = DEFAULT_REFERENCE,
    windows: int | None = DEFAULT_WINDOWS,
) -> Generator[Progress, None, MaskSensitivity]:
    """Paper Fig. 7 for one mammogram, as a generator of progress events.

    ``windows`` tissue windows are drawn at random (seeded by ``settings.seed``, which
    also seeds the masks; ``None`` or 0: all of them, as in the paper — 650 windows × 2560
    masks is long on a CPU). ``settings`` gives the window grid (``stride``, ``reach``,
    ``min_tissue``), the masks (``seed``, ``design``, ``mask_batch``) and the runtime;
    its mask counts and adaptive fields are replaced by the study's. Yields
    ``Progress("prepare")``, ``Progress("window", …)`` and ``Progress("masks", …)`` as
    :func:`~napari_correlax.maps.explain_steps` does.
    """
    counts = _check_counts(counts, reference)
    settings = _study_settings(settings, counts, reference)
    seed = settings.seed
    rt = settings.runtime()
    prep = prepare_image(image, model, stride=settings.stride, min_tissue=settings.min_tissue,
                         reach=settings.reach)
    yield Progress("prepare", 1, 1)
    model = inference_model(rt.prepare_model(model), rt)
    todo = np.flatnonzero(prep.active.ravel())
    if windows and len(todo) > windows:
        rng = np.random.default_rng(seed)
        todo = np.sort(rng.choice(todo, size=int(windows), replace=False))
    feeder = WindowFeeder(prep, model, rt)
    h0, y0 = yield from unmasked_pass(feeder, todo)

    def crops_for(local: list[int]) -> Any:
        return feeder.batch(todo[np.asarray(local)])

    engine = MaskEngine(model, rt, crops_for, h0, y0, np.full(len(todo), int(reference)),
                        settings, size=prep.grid.window, record_at=counts)
    total = engine.total_passes()
    done = 0
    yield Progress("masks", 0, total)
    for step in engine.steps():
        done += step
        yield Progress("masks", done, total)
    names = [DISTANCE, *[str(lab) for lab in model.labels]]
    rho = _sensitivity(engine, np.arange(len(todo)))
    meta = dict(prep.meta)
    meta.update(windows_evaluated=len(todo), windows_tissue=int(prep.active.sum()), seed=int(seed))
    return MaskSensitivity(counts, int(reference), names, rho, todo, meta)


def mask_sensitivity(
    image: Mammogram | np.ndarray,
    model: ImageModelLike,
    *,
    counts: Sequence[int] = DEFAULT_COUNTS,
    reference: int = DEFAULT_REFERENCE,
    windows: int | None = DEFAULT_WINDOWS,
    **overrides: Any,
) -> MaskSensitivity:
    """:func:`mask_sensitivity_steps` drained. ``overrides`` are
    :class:`~napari_correlax.maps.settings.MapSettings` fields (``seed=``, ``stride=``,
    ``design=``, ``device=``, … or ``runtime=``); the design is :data:`PAPER_DESIGN`
    unless given."""
    settings = MapSettings.for_call("correlax", {"design": PAPER_DESIGN, **overrides})
    return drain(mask_sensitivity_steps(image, model, settings, counts=counts,
                                        reference=reference, windows=windows))


def boxplot_figure(result: MaskSensitivity, *, tolerance: float = PAPER_TOLERANCE) -> Figure:
    """Matplotlib figure of ``|ρ_N − ρ_reference|`` per N on a log scale (paper Fig. 7).

    First panel: the distance correlation, as in the paper. Second panel (when the
    result has labels): the label correlations pooled over labels. Each panel has a box
    per N, the mean as a dot (line labelled ``"mean"``) and a dashed line at
    ``tolerance`` (the paper's 0.025). Zero differences (constant series) are drawn at
    the bottom of the axis (1e-6). The caller closes the figure.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    diffs = result.differences
    panels = [(f"distance ρ(S_h, S_ŷ), paper Fig. 7: {diffs.shape[0]} windows", diffs[:, :, :1])]
    if result.label_names:
        panels.append((f"labels ρ(S_h, ŷ_M[:, c]) pooled: {diffs.shape[0]} windows × "
                       f"{len(result.label_names)} labels", diffs[:, :, 1:]))
    floor = 1e-6
    positions = range(1, len(result.counts) + 1)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels), 4.0), sharey=True,
                             squeeze=False)
    for ax, (title, d) in zip(axes[0], panels):
        data = [np.maximum(d[:, k].ravel(), floor) for k in range(len(result.counts))]
        ax.boxplot(data, showfliers=True, flierprops={"markersize": 2})
        ax.set_xticks(list(positions), [str(n) for n in result.counts])
        ax.set_yscale("log")
        ax.axhline(tolerance, color="tab:red", ls="--", lw=1, label=f"{tolerance:g}")
        means = [max(float(d[:, k].mean()), floor) if d[:, k].size else np.nan
                 for k in range(len(result.counts))]
        ax.plot(list(positions), means, "o", color="tab:blue", ms=4, label="mean")
        ax.set_xlabel("masks per window")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel(f"|ρ(N) − ρ({result.reference})|")
    fig.suptitle(f"Correlation error against {result.reference} masks", fontsize=10)
    fig.tight_layout()
    return fig


def save_boxplot(
    path: str | os.PathLike[str], result: MaskSensitivity, *, tolerance: float = PAPER_TOLERANCE
) -> Path:
    """:func:`boxplot_figure` written as a PNG, atomically; returns ``path``."""
    import io

    from ..files import atomic_write_bytes

    fig = boxplot_figure(result, tolerance=tolerance)
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
