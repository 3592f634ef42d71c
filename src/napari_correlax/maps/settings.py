"""How maps are made: one frozen settings object and every default (docs/method.md §6–7).

The command line builds a :class:`MapSettings` from its options, each dock binds its
controls to one, the result cache derives its key from one, and every map method reads
its parameters from one. A default changes here and nowhere else.

Nothing here imports torch, so the napari reader and ``--help`` stay fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from .engines import ENGINES

if TYPE_CHECKING:
    from .runtime import Runtime

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_DESIGN",
    "DEFAULT_ENGINE",
    "DEFAULT_FOCUS_SHARE",
    "DEFAULT_MASKS",
    "DEFAULT_MASK_BATCH",
    "DEFAULT_MIN_MASKS",
    "DEFAULT_MIN_TISSUE",
    "DEFAULT_REACH",
    "DEFAULT_STRIDE",
    "DEFAULT_TOLERANCE",
    "ENGINES",
    "MASK_DESIGNS",
    "MapSettings",
]

#: Window step in pixels (paper §3.5).
DEFAULT_STRIDE = 48
#: How far windows reach (:meth:`~napari_correlax.windows.WindowGrid.covering`): window
#: centres up to the breast's border, so maps reach the skin line and the chest wall.
DEFAULT_REACH = "border"
#: Windows per forward pass of the prediction pass.
DEFAULT_BATCH_SIZE = 16
#: Windows with less breast tissue than this fraction (Otsu mask) are skipped.
DEFAULT_MIN_TISSUE = 0.05
#: Masks per window at full CorRELAX (paper §3.5).
DEFAULT_MASKS = 2560
#: Fewest masks any evaluated window gets (adaptive start, and focus mode's minimum):
#: one 128-mask block of the default design, where correlations are as stable as with the
#: 256 i.i.d. masks at which the paper's Fig. 7 finds mean |ρ_N − ρ_2560| < 0.025
#: (paper §4.3; docs/method.md §7). With ``design="iid"`` the paper's floor is 256.
DEFAULT_MIN_MASKS = 128
#: Masked forward passes per batch (paper: sets of 128).
DEFAULT_MASK_BATCH = 128
#: Adaptive stopping tolerance on SE(ρ_n − ρ_Nmax), calibrated for the default design;
#: see :mod:`napari_correlax.maps.mask_engine` and docs/method.md §7.
DEFAULT_TOLERANCE = 0.06
#: How the masks of a run are drawn together (:mod:`napari_correlax.maps.masks`); every
#: design keeps each single mask uniform, so the correlations estimate the same quantity.
MASK_DESIGNS = ("iid", "antithetic", "oa", "oa-antithetic", "sobol")
#: The design CorRELAX uses unless told otherwise (``"iid"``: the paper's masks).
DEFAULT_DESIGN = "oa-antithetic"
#: Share of tissue windows, ranked by their highest lesion probability, that get full
#: CorRELAX in focus mode (with their grid neighbours); see
#: :mod:`napari_correlax.maps.image_explain`.
DEFAULT_FOCUS_SHARE = 0.05

#: The engine used unless told otherwise: PyTorch. ``benchmarks/engines.py`` (2-core CPU,
#: batch 64, 256 px; median [range] of the ratio to PyTorch) gave ONNX Runtime 2.0×
#: [0.7–2.6] (1 thread) and 2.2× [1.1–3.4] (2 threads) for the demo model but only 1.3×
#: [1.0–1.7] (1 thread) for EfficientNetV2-S, short of a clear 1.3× for both models, so
#: ONNX Runtime and OpenVINO are options (``engine="onnx"``), not the default.
DEFAULT_ENGINE = "torch"

#: Fields that only say where and how fast the model runs: they never change a map
#: (float32 is exact; other precisions do change maps and stay in the key).
_RUNTIME_ONLY = ("device", "batch_size", "mask_batch", "threads", "engine", "coarse_first")


@dataclass(frozen=True)
class MapSettings:
    """Everything besides the image and the model that decides how maps are made.

    Attributes
    ----------
    method:
        Name of a registered map method (:mod:`napari_correlax.maps.methods`):
        ``"prediction"``, ``"correlax"``, …
    stride:
        Window step, pixels of the original image (the window side is the model's
        input size).
    reach:
        ``"border"``: window centres reach the breast's border (maps cover the skin line
        and the chest wall); ``"inside"``: windows stay inside the breast's bounding box
        (the paper's layout).
    min_tissue:
        Windows whose breast-tissue fraction is below this are skipped.
    batch_size:
        Windows per forward pass (prediction pass).
    masks, adaptive, tolerance, min_masks, focus, focus_share, seed, design, mask_batch:
        CorRELAX (:func:`~napari_correlax.maps.image_explain.explain_steps`); ``design`` is
        one of :data:`MASK_DESIGNS`.
    device, precision, threads, engine:
        Where and how the model runs (:class:`~napari_correlax.maps.runtime.Runtime`);
        ``engine`` is one of :data:`ENGINES` (CPU, float32 only; otherwise PyTorch).
    coarse_first:
        CorRELAX yields a first map at 4 × the stride before the final one
        (:mod:`napari_correlax.maps.coarse`); the final maps are the same.
    options:
        Method-specific options as sorted ``(name, value)`` pairs (hashable); read with
        :meth:`option`.
    """

    method: str = "correlax"
    stride: int = DEFAULT_STRIDE
    reach: str = DEFAULT_REACH
    min_tissue: float = DEFAULT_MIN_TISSUE
    batch_size: int = DEFAULT_BATCH_SIZE
    masks: int = DEFAULT_MASKS
    adaptive: bool = True
    tolerance: float = DEFAULT_TOLERANCE
    min_masks: int = DEFAULT_MIN_MASKS
    focus: bool = True
    focus_share: float = DEFAULT_FOCUS_SHARE
    seed: int = 0
    design: str = DEFAULT_DESIGN
    mask_batch: int = DEFAULT_MASK_BATCH
    device: str = "auto"
    precision: str = "float32"
    threads: int | None = None
    engine: str = DEFAULT_ENGINE
    coarse_first: bool = False
    options: tuple[tuple[str, Any], ...] = field(default=())

    def __post_init__(self) -> None:
        from ..errors import CorrelaxError

        if int(self.stride) < 1:
            raise CorrelaxError(f"stride must be a positive number of pixels, not {self.stride}")
        if int(self.batch_size) < 1 or int(self.mask_batch) < 1:
            raise CorrelaxError("batch sizes must be at least 1")
        if int(self.masks) < 2:
            raise CorrelaxError(f"CorRELAX needs at least 2 masks per window, not {self.masks}")
        if int(self.min_masks) < 2:
            raise CorrelaxError(
                f"the minimum number of masks must be at least 2, not {self.min_masks}")
        if not float(self.tolerance) > 0:
            raise CorrelaxError(f"tolerance must be positive, not {self.tolerance}")
        if self.reach not in ("border", "inside"):
            raise CorrelaxError(f"reach must be 'border' or 'inside', not {self.reach!r}")
        if self.design not in MASK_DESIGNS:
            raise CorrelaxError(f"unknown mask design {self.design!r}; choose one of "
                                f"{', '.join(MASK_DESIGNS)}")
        if self.engine not in ENGINES:
            raise CorrelaxError(f"unknown engine {self.engine!r}; choose one of "
                                f"{', '.join(ENGINES)}")
        if not 0.0 <= float(self.min_tissue) <= 1.0:
            raise CorrelaxError(f"min_tissue must lie in [0, 1], not {self.min_tissue}")
        object.__setattr__(self, "options", tuple(sorted(dict(self.options).items())))

    # -- reading --------------------------------------------------------------------------
    @property
    def mask_floor(self) -> int:
        """Fewest masks any evaluated window gets: ``min_masks``, or ``masks`` if fewer."""
        return min(int(self.min_masks), int(self.masks))

    def option(self, name: str, default: Any = None) -> Any:
        """A method-specific option (``default`` when not set)."""
        return dict(self.options).get(name, default)

    def with_(self, **changes: Any) -> MapSettings:
        """A copy with some fields changed (``options`` given as a dict or pairs)."""
        if isinstance(changes.get("options"), dict):
            changes["options"] = tuple(changes["options"].items())
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able copy (``options`` as a dict)."""
        out = asdict(self)
        out["options"] = dict(self.options)
        return out

    @classmethod
    def for_call(cls, method: str, overrides: Mapping[str, Any]) -> MapSettings:
        """The settings of one call of a public function (``explain``, ``predict``, ``cam``):
        the defaults, ``method``, and the caller's keyword ``overrides`` — field names, or
        ``runtime=`` a :class:`~napari_correlax.maps.runtime.Runtime` whose device,
        precision, batch size and threads replace those fields. An unknown name raises
        TypeError, as a misspelt keyword argument does."""
        given = dict(overrides)
        runtime = given.pop("runtime", None)
        if runtime is not None:
            given.update(device=runtime.device, precision=runtime.precision,
                         batch_size=runtime.batch_size, threads=runtime.threads,
                         engine=runtime.engine)
        unknown = sorted(set(given) - {f.name for f in fields(cls)} - {"method"})
        if unknown:
            raise TypeError(f"unexpected keyword arguments: {', '.join(unknown)}")
        return cls(**{**given, "method": method})

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> MapSettings:
        """Inverse of :meth:`as_dict`; unknown keys are ignored."""
        names = {f.name for f in fields(cls)}
        known = {k: v for k, v in doc.items() if k in names}
        if isinstance(known.get("options"), dict):
            known["options"] = tuple(known["options"].items())
        return cls(**known)

    def map_fields(self) -> dict[str, Any]:
        """The fields that change the maps (the cache key is made from these).

        Runtime-only fields are left out, and so are the CorRELAX fields when the method
        makes no CorRELAX maps (a prediction map does not depend on the mask count).
        """
        from .methods import get_method

        used = get_method(self.method).uses
        doc = self.as_dict()
        return {k: v for k, v in doc.items()
                if k not in _RUNTIME_ONLY and (k in used or k in ("method", "options"))}

    def runtime(self) -> Runtime:
        """The :class:`~napari_correlax.maps.runtime.Runtime` these settings ask for."""
        from .runtime import Runtime

        return Runtime(device=self.device, precision=self.precision,
                       batch_size=self.batch_size, threads=self.threads, engine=self.engine)
