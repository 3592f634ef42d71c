"""What one map run did and how long it took: a typed record beside the maps.

:class:`~napari_correlax.maps.MapResult` keeps the image's own metadata (file, view,
laterality …) in ``meta`` and the run's numbers here, in ``stats``; result files store
both as JSON.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = ["RunStats"]


@dataclass
class RunStats:
    """Counts and timings of one run of a map method.

    Attributes
    ----------
    method, settings:
        The map method and the settings that made the maps (``MapSettings.map_fields``).
    model, backbone, device, precision:
        Checkpoint path (or class name), backbone, where and how the model ran.
    roi_box:
        Breast bounding box ``(y0, x0, y1, x1)``, original image pixels, half-open.
    windows_total, windows_evaluated, windows_focus:
        Windows of the grid, those with enough tissue to be run, those in focus.
    masks_total, masks_mean, masks_mean_focus, masks_min, masks_max:
        Masked forward passes: all, mean per evaluated window, mean per focus window,
        and the run's floor and ceiling per window.
    constant_correlations, uncertainty_max:
        Correlations flagged constant (reported as 0), largest standard error.
    design_factor, design_factor_measured, design_factor_dof, design_factor_tabled:
        The mask design's variance factor the intervals used (variance of ρ relative to
        i.i.d. masks, docs/method.md §7; the largest over the correlations), the factor
        measured there (None when no window reached two replicates), the measurement's
        degrees of freedom and the design's tabled (typical) factor.
    design_factors, design_factors_measured:
        The factor used and the one measured (None: not measured) per correlation:
        distance, then each label.
    warnings:
        Plain-language warnings about the run (shown by the command line and the dock).
    seconds:
        Wall-clock seconds per stage (``prepare``, ``predict``, ``correlax``, ``stitch``).
    masked_passes_per_second:
        CorRELAX throughput.
    """

    method: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    model: str = ""
    backbone: str | None = None
    device: str = ""
    precision: str = "float32"
    roi_box: list[int] = field(default_factory=list)
    windows_total: int = 0
    windows_evaluated: int = 0
    windows_focus: int = 0
    masks_total: int = 0
    masks_mean: float = 0.0
    masks_mean_focus: float = 0.0
    masks_min: int = 0
    masks_max: int = 0
    constant_correlations: int = 0
    uncertainty_max: float = 0.0
    design_factor: float | None = None
    design_factor_measured: float | None = None
    design_factor_dof: int = 0
    design_factor_tabled: float | None = None
    design_factors: list[float] = field(default_factory=list)
    design_factors_measured: list[float | None] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    masked_passes_per_second: float = 0.0

    @property
    def windows_skipped(self) -> int:
        """Windows skipped for too little tissue."""
        return self.windows_total - self.windows_evaluated

    @property
    def windows_minimum(self) -> int:
        """Evaluated windows outside focus (explained with the minimum of masks)."""
        return self.windows_evaluated - self.windows_focus

    @property
    def seconds_total(self) -> float:
        """Sum of the stages' seconds."""
        return round(sum(self.seconds.values()), 3)

    @property
    def design_line(self) -> str:
        """One line on the mask design's variance factor for a run summary ("" when the
        run made no CorRELAX maps)."""
        if self.design_factor is None:
            return ""
        unmeasured = ("independent masks" if self.settings.get("design") == "iid"
                      else "not measured: the design's bound")
        measured = (unmeasured if self.design_factor_measured is None
                    else f"measured {self.design_factor_measured:.2f} on "
                    f"{self.design_factor_dof} d.o.f., widened for that")
        spread = ""
        if len(set(self.design_factors)) > 1:
            spread = (f"; {min(self.design_factors):.2f}–{max(self.design_factors):.2f} "
                      "over the correlations")
        return f"design factor {self.design_factor:.2f} ({measured}{spread})"

    def as_dict(self) -> dict[str, Any]:
        """JSON-able copy."""
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any] | None) -> RunStats:
        """Inverse of :meth:`as_dict`; unknown keys are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (doc or {}).items() if k in names})
