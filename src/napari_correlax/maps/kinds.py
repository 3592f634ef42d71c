"""Map kinds: what each map in a :class:`~napari_correlax.maps.MapResult` means and how it
is drawn. The one definition used by results, layers, figures, export and evaluation.

A kind is an array name in results and ``.npz`` files. Per-label kinds are
``(C, gy, gx)`` on the window grid or ``(C, H, W)`` in original image pixels; the others
drop the label axis. Display ranges are fixed per kind, so maps of two images or two
methods compare at a glance: probabilities 0–1, correlations −1–1 centred on 0.

New map methods register their kinds with :func:`register_kind`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "KINDS",
    "MapKind",
    "kind",
    "register_kind",
]

Resolution = Literal["grid", "pixel"]
Scale = Literal["sequential", "diverging", "count"]


@dataclass(frozen=True)
class MapKind:
    """How one map kind is stored, scored and shown.

    Attributes
    ----------
    name:
        Array name in results and files (``"prediction"``).
    title:
        Name in layer names and figures (``"masks used"``).
    per_label:
        One map per label (leading label axis) or one map for the window/image.
    resolution:
        ``"grid"``: one value per window, shown with ``scale = stride``; ``"pixel"``:
        original image pixels.
    scale:
        ``"sequential"`` (0 → high), ``"diverging"`` (centred on 0) or ``"count"``.
    limits:
        Fixed display range; None: the map's own range (counts, and RELAX relevance,
        whose values all sit near the unmasked cosine similarity of 1).
    meaning:
        One plain-language line for tooltips and the help panel.
    read_order:
        Which kind to read first (lower first); the dock shows the lowest it made.
    stack:
        Drawing order among maps of the same group (higher is drawn above).
    pointing_thresholds:
        Pointing game (docs/method.md §10): the map's maximum must reach each
        threshold to count as a hit (one rule per threshold); ``strict`` makes the
        comparison ``>`` (correlations: ``> 0``). Empty: the kind is not scored, unless
        ``located``.
    by_method:
        Several methods make maps of this kind: layer names carry the method's title
        instead of the kind's (``Mass · Grad-CAM++ · image``).
    located:
        Scored by where its maximum lies, whatever the value (one rule named after the
        kind): saliency maps, whose raw values have no common scale, hit when their
        maximum lies within 48 px of a box of the label (docs/method.md §10).
    interval:
        Name of the kind that holds the half-widths of this kind's 95 % confidence
        intervals (same shape), or ``""`` when the map has none.
    """

    name: str
    title: str
    per_label: bool
    resolution: Resolution
    scale: Scale
    limits: tuple[float, float] | None
    meaning: str
    read_order: int = 50
    stack: int = 0
    pointing_thresholds: tuple[float, ...] = ()
    strict: bool = False
    located: bool = False
    by_method: bool = False
    interval: str = ""

    @property
    def colormap(self) -> str:
        """Matplotlib colormap of this kind's scale in figures (the viewer's layers use
        transparent variants of the same hues, :mod:`napari_correlax._napari._layers`)."""
        return {"sequential": "magma", "diverging": "RdBu_r", "count": "viridis"}[self.scale]


#: Every known kind by name, in registration order.
KINDS: dict[str, MapKind] = {}


def register_kind(new: MapKind) -> MapKind:
    """Add (or replace) a kind; returns it."""
    KINDS[new.name] = new
    return new


def kind(name: str) -> MapKind:
    """The registered kind ``name``; an unknown name gets a neutral per-label description."""
    if name in KINDS:
        return KINDS[name]
    return MapKind(name, name.replace("_", " "), True, "grid", "sequential", None,
                   f"{name} (a map kind this version does not describe)")


PREDICTION = register_kind(MapKind(
    "prediction", "prediction", True, "grid", "sequential", (0.0, 1.0),
    "How likely the classifier finds this label in the 256 px window around each point "
    "(0–1): where does the model see the finding?",
    read_order=20, stack=30, pointing_thresholds=(0.25, 0.5),
))
CORRELATION = register_kind(MapKind(
    "correlation", "correlation", True, "grid", "diverging", (-1.0, 1.0),
    "CorRELAX: how strongly hiding parts of the window changes this label's prediction "
    "together with the features (−1–1). Red: the window's content drives the label. "
    "Read first after a CorRELAX run, beside the prediction.",
    read_order=10, stack=20, pointing_thresholds=(0.0,), strict=True,
    interval="correlation_ci",
))
PRODUCT = register_kind(MapKind(
    "product", "product", True, "grid", "diverging", (-1.0, 1.0),
    "Prediction × correlation: high where the label is both predicted and explained by "
    "the window's content.",
    read_order=30, stack=10,
))
CORRELATION_CI = register_kind(MapKind(
    "correlation_ci", "correlation ±", True, "grid", "sequential", (0.0, 1.0),
    "How far the correlation map may be off for lack of masks: half-width of its 95 % "
    "confidence interval at each window (0–1). A correlation smaller than this could "
    "be 0 with more masks.",
    read_order=35, stack=5,
))
DISTANCE = register_kind(MapKind(
    "distance", "distance", False, "grid", "diverging", (-1.0, 1.0),
    "CorRELAX: correlation between feature similarity and prediction similarity under "
    "masking (−1–1), for all labels together.",
    read_order=40, stack=30,
))
RELEVANCE = register_kind(MapKind(
    "relevance", "relevance", False, "pixel", "sequential", None,
    "RELAX: how similar the features stay when each pixel is kept (0–1); high pixels "
    "carry the window's representation.",
    read_order=60, stack=10,
))
RELEVANCE_UNCERTAINTY = register_kind(MapKind(
    "relevance_uncertainty", "relevance uncertainty", False, "pixel", "sequential", None,
    "RELAX uncertainty: how much the feature similarity varies over the masks that keep "
    "each pixel (its mask-weighted variance); high where the relevance rests on few or "
    "disagreeing masks.",
    read_order=65, stack=5,
))
MASKS_USED = register_kind(MapKind(
    "masks_used", "masks used", False, "grid", "count", None,
    "How many masked copies CorRELAX evaluated per window (more where the estimate was "
    "noisier or the window was in focus).",
    read_order=90, stack=20,
))
SALIENCY = register_kind(MapKind(
    "saliency", "saliency", True, "pixel", "sequential", None,
    "CAM family (Grad-CAM and others): where the classifier's evidence for this label lies, "
    "in the units of the method (raw) or 0–1 per window; blank where nothing was evaluated.",
    read_order=15, stack=15, located=True, by_method=True,
))
