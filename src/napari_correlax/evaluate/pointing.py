"""Pointing game (docs/method.md §10, paper §3.5 and Table 4).

For one image and one label present in its ground truth, the *location* of a map's
maximum is the model's answer to "where is the <label>?". It is a **hit** when it lies
inside any box of that label grown by :data:`GROW_PX` (48) pixels on every side *and*
the maximum passes the map's rule; otherwise a **miss**. Accuracy = hits / (hits +
misses) per label. Two summaries over labels are reported, each named for what it is
(see "Two means" below).

Choices the method reference (docs/method.md) leaves open, written down here:

* **Where the maximum is.** :meth:`~napari_correlax.maps.MapResult.peak`: the window
  whose smoothed value is largest among the windows that were evaluated
  (``window_mask``), ties to the first in row-major order; its location is that
  window's centre in original image pixels.
* **Coordinate frames.** ``peak`` uses the pixel-centre convention of
  :meth:`~napari_correlax.windows.WindowGrid.centres` (pixel ``r`` is centred at
  coordinate ``r``), boxes the VinDr convention (pixel ``i`` covers ``[i, i + 1)``). The
  peak is moved into the box frame by adding 0.5 px to row and column before the test.
* **Inclusive bounds.** A point ``(x, y)`` (x = column) is inside box
  ``(xmin, ymin, xmax, ymax)`` grown by ``g`` when ``xmin − g ≤ x ≤ xmax + g`` and
  ``ymin − g ≤ y ≤ ymax + g``; a point exactly on the grown edge is a hit.
* **Rules** (:data:`RULES`): prediction maps hit only when the maximum is ≥ 0.25, and,
  scored separately, ≥ 0.50; correlation maps only when it is > 0. The value is the
  one at the maximum's window, after the docs/method.md §6 kernel.
* **One answer per (image, label).** Several boxes of one label in one image count once:
  one maximum, one verdict (hit if it falls in any of them).
* **Labels scored.** Every label of the model except "No Finding", as in the paper's
  Table 4, which lists the seven lesion labels and no row for normal tissue (there is
  no lesion to point at). Ground-truth labels the model does not have are not scored.
* **Support** of a label = number of (image, label) pairs. A label without support has
  no accuracy (``None``).
* **Uncertainty of the maximum.** For maps with confidence intervals (the correlation
  map, whose ``correlation_ci`` map holds the half-width of each value's 95 % interval
  for lack of masks, docs/method.md §7) a verdict gives the maximum's half-width ``ci``
  and the *runner-up*: the largest value among the evaluated windows that share no pixel
  with the maximum's window (grid distance ≥ ``ceil(window / stride)`` cells in row or
  column), i.e. the best competing place elsewhere in the image, with its half-width.
  These describe the map as drawn.
* **Two stages for the flags.** Whether the maximum is *distinguishable from 0*
  (``nonzero``: its interval excludes 0) and from the runner-up (``separated``: the two
  intervals do not overlap) is **not** read off the same masks that chose the two
  windows: the arg-max of hundreds of windows is, by selection, a window whose masks
  happened to push it up, and a 5 % test on the values that selected it would be
  inflated. The map selects the two windows (stage 1); a second, independent draw of
  masks at those two windows alone (stage 2, :class:`PeakRedraw`, a new seed stream)
  gives fresh correlations and half-widths, and the flags test those:
  ``nonzero = |ρ₂(peak)| > ci₂(peak)``, ``separated = ρ₂(peak) − ci₂(peak) >
  ρ₂(runner-up) + ci₂(runner-up)``. The two windows of stage 2 draw independent mask
  streams; non-overlap is a valid (conservative) test at the 5 % level whatever the
  dependence between their errors, because the standard error of a difference never
  exceeds the sum of the two standard errors. ``correlax evaluate`` and
  ``correlax compare`` run stage 2 in the same per-image pass as the maps (the model and
  image are at hand there), for every lesion label with a box in the image
  (:func:`peak_redraw_record`), and keep its
  values beside the maps in the image's cache record; the tables read them back
  (:class:`StoredRedraw`), so a resumed run tests the same draws. Without a second draw
  (``pointing_verdicts(..., redraw=None)``, e.g. from maps alone, or for other map
  kinds) both flags are None: not tested. The fields only describe the masks' Monte
  Carlo error, not how the image was sampled; they do not change ``hit``.

Two means (per rule):

* **Mean weighted by support** (:meth:`PointingTable.weighted_mean`):
  ``Σ_label accuracy · support / Σ_label support`` over labels with support, which
  equals all hits over all (image, label) pairs. This is what "weighted mean accuracy"
  means, and it is at most 1.
* **Hits per image with a lesion** (:meth:`PointingTable.hits_per_lesion_image`): all
  hits over the number of *images* with at least one scored (image, label) pair. This is
  the number the paper's Table 4 prints as "Weighted Mean Accuracy" (227/357 = 0.63585,
  printed 0.6358, and 200/357 = 0.5602: its authors' notebook divides the hits by the
  357 test images with a finding), whereas the paper's own per-label rows give
  support-weighted means of 0.4978, 0.2807 and 0.4386. An image with lesions of two
  labels can score two hits, so this figure can exceed 1. The images counted are those
  with a lesion of a label the model scores; an image whose only findings are labels
  outside the model has no verdicts and is not counted (the authors' count of 357 took
  every test image with a finding other than "No Finding").
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..boxes import as_boxes
from ..errors import CorrelaxError
from ..labels import NO_FINDING, lesion_labels

if TYPE_CHECKING:
    from ..io.image import Mammogram
    from ..maps.result import MapResult
    from ..maps.settings import MapSettings
    from ..models.protocols import ImageModelLike

__all__ = [
    "GROW_PX",
    "REDRAW_STREAM",
    "RULES",
    "PeakRedraw",
    "PointingRule",
    "PointingTable",
    "StoredRedraw",
    "Verdict",
    "lesion_labels",
    "normal_verdicts",
    "peak_redraw_record",
    "point_in_boxes",
    "pointing_table",
    "pointing_verdicts",
    "redraw_cells",
    "rule_by_name",
    "rules_for",
    "runner_up_cell",
]

#: Tolerance around every box, pixels on each side (paper §3.5: "an offset of 48 pixels").
GROW_PX = 48.0

#: Second entry of the seed sequence ``(seed, REDRAW_STREAM)`` of the stage-2 masks
#: (:class:`PeakRedraw`): a stream independent of the map's own masks.
REDRAW_STREAM = 2


@dataclass(frozen=True)
class PointingRule:
    """How one map type is scored: the map's name and the test on its maximum.

    ``strict`` selects ``value > threshold``; otherwise ``value ≥ threshold``.
    ``title`` is the column heading of Table 4.
    """

    name: str
    map: str
    threshold: float
    strict: bool
    title: str

    def passes(self, value: float) -> bool:
        """Whether a maximum of ``value`` may count as a hit under this rule."""
        return value > self.threshold if self.strict else value >= self.threshold


def rules_for(kinds: Iterable[str]) -> tuple[PointingRule, ...]:
    """The pointing rules of map kinds, in order: one per threshold of each kind's
    :attr:`~napari_correlax.maps.kinds.MapKind.pointing_thresholds` (kinds without
    thresholds are not scored). Names read ``<kind>>=0.25`` or ``<kind>>0``; a kind scored
    by location alone (:attr:`~napari_correlax.maps.kinds.MapKind.located`) has one rule
    named after it that every value passes."""
    from ..maps.kinds import kind as map_kind

    out = []
    for name in dict.fromkeys(kinds):
        spec = map_kind(name)
        if spec.located:
            out.append(PointingRule(name, name, float("-inf"), False,
                                    f"{spec.title[:1].upper()}{spec.title[1:]} Map"))
        for t in spec.pointing_thresholds:
            op = ">" if spec.strict else ">="
            value = "0" if t == 0 else f"{t:.2f}"
            bound = "" if t == 0 and spec.strict else (
                f" (≥ {t:.0%})" if spec.limits == (0.0, 1.0) else f" ({op} {t:g})")
            title = f"{spec.title[:1].upper()}{spec.title[1:]} Map{bound}"
            out.append(PointingRule(f"{name}{op}{value}", name, float(t), spec.strict, title))
    return tuple(out)


#: The three columns of the paper's Table 4, in its order.
RULES: tuple[PointingRule, ...] = rules_for(("prediction", "correlation"))


def rule_by_name(name: str, rules: Sequence[PointingRule] = RULES) -> PointingRule:
    """The rule called ``name`` (KeyError if there is none)."""
    for rule in rules:
        if rule.name == name:
            return rule
    raise KeyError(name)


@dataclass(frozen=True)
class Verdict:
    """The pointing-game answer for one (image, label, rule).

    ``row``/``col`` is the maximum's window centre in original image pixels
    (pixel-centre convention, as :meth:`MapResult.peak`); ``value`` the map there;
    ``inside`` whether that point lies in a grown box of the label; ``hit`` whether it
    counts (inside and the rule passes); ``boxes`` how many boxes the label has in the
    image.

    For maps with confidence intervals (module docstring, "Uncertainty of the maximum";
    NaN / None otherwise): ``ci`` is the half-width of the maximum's 95 % interval,
    ``runner_up`` and ``runner_up_ci`` the value and half-width of the best window that
    shares no pixel with the maximum's (NaN when there is none), all as on the map.
    ``nonzero`` (the peak window's interval excludes 0) and ``separated`` (its interval
    and the runner-up's do not overlap) come from the second, independent mask draw at
    those two windows (module docstring, "Two stages"); None when there was none.
    """

    image_id: str
    label: str
    rule: str
    map: str
    value: float
    row: float
    col: float
    inside: bool
    hit: bool
    boxes: int
    ci: float = math.nan
    nonzero: bool | None = None
    runner_up: float = math.nan
    runner_up_ci: float = math.nan
    separated: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able copy."""
        return asdict(self)


def _corners(box: Any) -> tuple[float, float, float, float]:
    if hasattr(box, "xmin"):
        return (float(box.xmin), float(box.ymin), float(box.xmax), float(box.ymax))
    x0, y0, x1, y1 = box
    return (float(x0), float(y0), float(x1), float(y1))


def point_in_boxes(x: float, y: float, boxes: Iterable[Any], grow: float = GROW_PX) -> bool:
    """Whether point ``(x, y)`` lies in any box grown by ``grow`` px (inclusive bounds).

    ``x`` is the column, ``y`` the row, both in the boxes' frame (pixel ``i`` covers
    ``[i, i + 1)``); a box is ``(xmin, ymin, xmax, ymax)`` or has those attributes.
    """
    for box in boxes:
        x0, y0, x1, y1 = _corners(box)
        if x0 - grow <= x <= x1 + grow and y0 - grow <= y <= y1 + grow:
            return True
    return False


def runner_up_cell(result: MapResult, name: str, label: str | None = None
                   ) -> tuple[int, int] | None:
    """Grid cell of the largest value of a grid map among the evaluated windows that
    share no pixel with the maximum's window (None when every window overlaps it)."""
    values = result.get(name)
    if values is None:
        return None
    if values.ndim == 3:
        values = values[result.label_index(label or "")]
    i, j = result.peak_cell(name, label)
    apart = math.ceil(result.window / result.stride)
    rows, cols = np.indices(values.shape)
    far = np.maximum(np.abs(rows - i), np.abs(cols - j)) >= apart
    candidates = far & np.asarray(result.window_mask, dtype=bool)
    if not candidates.any():
        return None
    masked = np.where(candidates, values, -np.inf)
    k, m = np.unravel_index(int(np.argmax(masked)), masked.shape)
    return int(k), int(m)


class PeakRedraw:
    """Stage 2 of the peak flags (module docstring, "Two stages"): CorRELAX again at a few
    windows of an image's grid, with masks from an independent seed stream.

    ``image``, ``model`` and ``settings`` are those the map was made with (the window
    grid must come out the same; ``settings`` gives stride, reach, minimum tissue and the
    mask settings: ``masks``, ``adaptive``, ``min_masks``, ``tolerance``, ``design``,
    ``mask_batch``). The masks' seed is drawn from ``SeedSequence((settings.seed,
    REDRAW_STREAM))``. Calling it with grid cells gives, per cell, the window's fresh
    ``(correlation, half-width)`` arrays over the model's labels (the raw window values,
    before the §6 kernel). Cells are computed once and remembered.
    """

    def __init__(self, image: Mammogram | np.ndarray, model: ImageModelLike,
                 settings: MapSettings) -> None:
        from ..maps.sliding import prepare_image

        self.model = model
        self.settings = settings
        self.prep = prepare_image(image, model, stride=settings.stride,
                                  min_tissue=settings.min_tissue, reach=settings.reach)
        state = np.random.SeedSequence((int(settings.seed), REDRAW_STREAM)).generate_state(1)
        self.seed = int(state[0])
        self._done: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def __call__(self, cells: Sequence[tuple[int, int]]
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
        import torch

        from ..maps.correlax import explain_windows

        todo = [c for c in dict.fromkeys(tuple(map(int, c)) for c in cells)
                if c not in self._done]
        if todo:
            gx = self.prep.grid.shape[1]
            flat = np.asarray([i * gx + j for i, j in todo])
            crops = torch.from_numpy(self.prep.windows(flat)).permute(0, 3, 1, 2)
            s = self.settings
            fresh = explain_windows(
                self.model, crops, masks=int(s.masks), seed=self.seed,
                adaptive=bool(s.adaptive), batch_size=int(s.mask_batch),
                min_masks=s.mask_floor, tolerance=float(s.tolerance), design=s.design,
                runtime=s.runtime())
            for k, cell in enumerate(todo):
                self._done[cell] = (fresh.correlation[k].astype(np.float64),
                                    fresh.correlation_ci[k].astype(np.float64))
        return [self._done[tuple(map(int, c))] for c in cells]

    def check_grid(self, result: MapResult) -> None:
        """CorrelaxError unless ``result`` was made on this image's window grid."""
        _check_grid(self.prep.grid.shape, result.grid.shape, self.prep.grid == result.grid)

    def stored(self) -> dict[str, Any]:
        """JSON-able record of every cell drawn so far (:class:`StoredRedraw` reads it):
        ``grid`` (rows, columns of windows), ``cells`` ``[[row, col], …]`` and, per cell,
        ``correlation`` and ``ci`` over the model's labels."""
        cells = list(self._done)
        return {"grid": [int(v) for v in self.prep.grid.shape],
                "cells": [list(c) for c in cells],
                "correlation": [self._done[c][0].tolist() for c in cells],
                "ci": [self._done[c][1].tolist() for c in cells]}


class StoredRedraw:
    """Stage-2 values of an image read back from :meth:`PeakRedraw.stored`, called like a
    :class:`PeakRedraw` (cells → ``(correlation, half-width)`` per cell); a cell that was
    not drawn is a CorrelaxError."""

    def __init__(self, doc: dict[str, Any]) -> None:
        try:
            self.shape = tuple(int(v) for v in doc["grid"])
            self._done = {(int(c[0]), int(c[1])): (np.asarray(r, dtype=np.float64),
                                                   np.asarray(h, dtype=np.float64))
                          for c, r, h in zip(doc["cells"], doc["correlation"], doc["ci"])}
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise CorrelaxError(f"damaged record of the second mask draw ({exc})") from None

    def __call__(self, cells: Sequence[tuple[int, int]]
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for cell in cells:
            key = (int(cell[0]), int(cell[1]))
            if key not in self._done:
                raise CorrelaxError(f"the second mask draw has no window at grid cell {key}")
            out.append(self._done[key])
        return out

    def check_grid(self, result: MapResult) -> None:
        """CorrelaxError unless ``result``'s window grid has the stored shape."""
        _check_grid(self.shape, result.grid.shape, self.shape == tuple(result.grid.shape))


def _check_grid(drawn: tuple[int, ...], mapped: tuple[int, ...], same: bool) -> None:
    if not same:
        raise CorrelaxError(
            "the second mask draw lays another window grid than the map's "
            f"({tuple(drawn)} vs {tuple(mapped)} windows): use the image, model and "
            "settings the map was made with")


def redraw_cells(result: MapResult, label: str, name: str = "correlation"
                 ) -> list[tuple[int, int]]:
    """The cells stage 2 tests for ``label``: the map's maximum and, when there is one,
    its runner-up (:func:`runner_up_cell`)."""
    peak = result.peak_cell(name, label)
    other = runner_up_cell(result, name, label)
    return [peak] if other is None else [peak, other]


def peak_redraw_record(image: Mammogram | np.ndarray, model: ImageModelLike,
                       settings: MapSettings, result: MapResult, boxes: Iterable[Any]
                       ) -> dict[str, Any] | None:
    """Stage 2 of the peak flags for one image (module docstring, "Two stages"), as
    :meth:`PeakRedraw.stored` keeps it: the second mask draw at the correlation map's
    maximum and runner-up of every lesion label with a box in ``boxes``.

    ``image``, ``model`` and ``settings`` are those ``result`` was made with. None when
    ``result`` has no correlation map or the image no box of a label it maps (nothing to
    flag).
    """
    if result.get("correlation") is None:
        return None
    mapped = set(lesion_labels(result.labels))
    labels = [b.label for b in as_boxes(boxes) if b.label in mapped]
    if not labels:
        return None
    cells = [c for label in dict.fromkeys(labels) for c in redraw_cells(result, label)]
    redraw = PeakRedraw(image, model, settings)
    redraw.check_grid(result)
    redraw(cells)
    return redraw.stored()


def _interval_fields(result: MapResult, name: str, label: str,
                     redraw: PeakRedraw | StoredRedraw | None = None) -> dict[str, Any]:
    """The :class:`Verdict` uncertainty fields of one map's maximum (empty without);
    the flags only with a stage-2 ``redraw`` of the correlation map."""
    from ..maps.kinds import kind as map_kind

    spec = map_kind(name)
    half = result.get(spec.interval) if spec.interval else None
    if half is None:
        return {}
    c = result.label_index(label)
    values = result.get(name)[c]
    half = half[c]
    cells = redraw_cells(result, label, name)
    out: dict[str, Any] = {"ci": float(half[cells[0]])}
    if len(cells) > 1:
        out.update(runner_up=float(values[cells[1]]), runner_up_ci=float(half[cells[1]]))
    if redraw is None or name != "correlation":
        return out
    fresh = redraw(cells)
    value, ci = fresh[0][0][c], fresh[0][1][c]
    out["nonzero"] = bool(abs(value) > ci)
    if len(cells) > 1:
        r, r_ci = fresh[1][0][c], fresh[1][1][c]
        out["separated"] = bool(value - ci > r + r_ci)
    return out


def pointing_verdicts(
    result: MapResult,
    boxes: Iterable[Any],
    image_id: str = "",
    *,
    rules: Sequence[PointingRule] = RULES,
    grow: float = GROW_PX,
    redraw: PeakRedraw | StoredRedraw | None = None,
) -> list[Verdict]:
    """Pointing-game verdicts of one image: one per (ground-truth label, rule).

    Args:
        result: a :class:`~napari_correlax.maps.MapResult` of the image.
        boxes: its ground-truth boxes in image pixels, as
            :class:`~napari_correlax.io.vindr.Box` (``label``, ``xmin`` …) or tuples
            ``(label, xmin, ymin, xmax, ymax)``.
        image_id: copied into the verdicts.
        rules: which maps and tests to score (default: Table 4's three).
        grow: tolerance in pixels on every side of each box.
        redraw: stage 2 of the peak flags (:class:`PeakRedraw` of the same image, model
            and settings, or its :class:`StoredRedraw`); None leaves ``nonzero`` and
            ``separated`` untested (None).

    Labels follow the result's label order; "No Finding" and labels the result does not
    have are skipped, and so are rules whose map the result lacks (a prediction-only
    result gives no correlation verdicts) or whose map has no location (a grid of one
    cell: the image-level prediction of a global-mode CAM run).
    """
    if redraw is not None:
        redraw.check_grid(result)
    by_label: dict[str, list[tuple[float, float, float, float]]] = {}
    for box in as_boxes(boxes):
        by_label.setdefault(box.label, []).append(box.corners)
    out: list[Verdict] = []
    for label in lesion_labels(result.labels):
        label_boxes = by_label.get(label)
        if not label_boxes:
            continue
        for rule in rules:
            if not _locates(result, rule.map):
                continue
            value, (row, col) = result.peak(rule.map, label)
            inside = point_in_boxes(col + 0.5, row + 0.5, label_boxes, grow)
            out.append(Verdict(
                image_id=image_id, label=label, rule=rule.name, map=rule.map,
                value=float(value), row=float(row), col=float(col), inside=inside,
                hit=bool(inside and rule.passes(value)), boxes=len(label_boxes),
                **_interval_fields(result, rule.map, label, redraw),
            ))
    return out


def _locates(result: MapResult, name: str) -> bool:
    """Whether ``result`` has a map ``name`` whose maximum says where (not one grid cell)."""
    from ..maps.kinds import kind

    values = result.get(name)
    if values is None:
        return False
    return kind(name).resolution == "pixel" or tuple(values.shape[-2:]) != (1, 1)


def normal_verdicts(
    result: MapResult,
    image_id: str = "",
    *,
    rules: Sequence[PointingRule] = RULES,
) -> list[Verdict]:
    """Verdicts of an image without findings: one per rule, labelled "No Finding".

    There is nothing to point at, so the question is the reverse one: does the map raise
    an alarm? For each rule, the lesion label whose map has the highest maximum is taken;
    the verdict is a **hit** (the map stays quiet) when that maximum does *not* pass the
    rule, a **miss** (a false alarm) when it does. ``row``/``col`` is that maximum, so the
    reader sees where the alarm is; ``label`` is "No Finding", ``boxes`` 0 and ``inside``
    False. A correlation map passes "> 0" almost everywhere, so on normal images only the
    prediction rules say much; the rows exist for every rule so the reader can judge each
    map. These verdicts are kept apart from the pointing game's accuracy (Table 4 has no
    normal rows); the reader's report lists them as "No Finding".
    """
    out: list[Verdict] = []
    labels = lesion_labels(result.labels)
    for rule in rules:
        if not _locates(result, rule.map) or result.get(rule.map).ndim != 3 or not labels:
            continue
        peaks = [(result.peak(rule.map, label), label) for label in labels]
        (value, (row, col)), _ = max(peaks, key=lambda p: p[0][0])
        out.append(Verdict(
            image_id=image_id, label=NO_FINDING, rule=rule.name, map=rule.map,
            value=float(value), row=float(row), col=float(col), inside=False,
            hit=not rule.passes(value), boxes=0,
        ))
    return out


@dataclass
class PointingTable:
    """Hits and pairs per (label, rule): the numbers behind Table 4.

    ``hits[(label, rule)]`` and ``pairs[(label, rule)]`` are counts of (image, label)
    pairs; ``images[rule]`` is the number of distinct images with at least one pair
    under that rule (the "images with a lesion"); ``labels`` and ``rules`` give the row
    and column order.
    """

    labels: list[str]
    rules: list[PointingRule]
    hits: dict[tuple[str, str], int]
    pairs: dict[tuple[str, str], int]
    images: dict[str, int] = field(default_factory=dict)

    def accuracy(self, label: str, rule: str) -> float | None:
        """hits / (hits + misses) of one label under one rule; None without support."""
        n = self.pairs.get((label, rule), 0)
        return self.hits.get((label, rule), 0) / n if n else None

    def support(self, label: str) -> int:
        """Number of (image, label) pairs scored for ``label`` (the largest over rules)."""
        return max((self.pairs.get((label, r.name), 0) for r in self.rules), default=0)

    def total_support(self) -> int:
        """Sum of the labels' support."""
        return sum(self.support(lab) for lab in self.labels)

    def total_hits(self, rule: str) -> int:
        """Hits of one rule summed over the table's labels."""
        return sum(self.hits.get((label, rule), 0) for label in self.labels)

    def images_with_lesion(self, rule: str | None = None) -> int:
        """Images with at least one scored (image, label) pair under ``rule``.

        Without ``rule``: the largest count over the table's rules (as :meth:`support`).
        """
        if rule is not None:
            return self.images.get(rule, 0)
        return max((self.images.get(r.name, 0) for r in self.rules), default=0)

    def weighted_mean(self, rule: str) -> float | None:
        """Mean accuracy of one rule weighted by support, over labels with support.

        Equal to all hits over all (image, label) pairs, so in [0, 1]; None without
        support. Not the paper's "Weighted Mean Accuracy": that is
        :meth:`hits_per_lesion_image` (module docstring).
        """
        num = den = 0.0
        for label in self.labels:
            n = self.pairs.get((label, rule), 0)
            accuracy = self.accuracy(label, rule)
            if accuracy is not None:
                num += accuracy * n
                den += n
        return num / den if den else None

    def hits_per_lesion_image(self, rule: str) -> float | None:
        """All hits of one rule divided by the number of images with a lesion.

        The paper's Table 4 "Weighted Mean Accuracy" (227 hits / 357 images, printed 0.6358).
        An image with lesions of k labels contributes up to k hits but one image, so the
        value can exceed 1; it equals :meth:`weighted_mean` only when every image has
        one scored label. None when no image has a pair under ``rule``.
        """
        n = self.images.get(rule, 0)
        return self.total_hits(rule) / n if n else None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able summary: per label and rule, accuracy, hits and support; both means."""
        rows = []
        for label in self.labels:
            row: dict[str, Any] = {"label": label, "support": self.support(label)}
            for rule in self.rules:
                row[rule.name] = {"accuracy": self.accuracy(label, rule.name),
                                  "hits": self.hits.get((label, rule.name), 0),
                                  "pairs": self.pairs.get((label, rule.name), 0)}
            rows.append(row)
        names = [rule.name for rule in self.rules]
        return {
            "rows": rows,
            "mean_weighted_by_support": {r: self.weighted_mean(r) for r in names},
            "hits_per_image_with_lesion": {r: self.hits_per_lesion_image(r) for r in names},
            "hits": {r: self.total_hits(r) for r in names},
            "images_with_lesion": {r: self.images_with_lesion(r) for r in names},
            "support": self.total_support(),
        }


def pointing_table(
    verdicts: Iterable[Verdict],
    labels: Sequence[str] | None = None,
    rules: Sequence[PointingRule] = RULES,
) -> PointingTable:
    """Count verdicts into a :class:`PointingTable`.

    ``labels`` fixes the rows (default: the verdicts' labels in first-seen order);
    "No Finding" is always left out. A (image, label, rule) seen twice counts once
    (the later verdict wins). Images are told apart by ``image_id``: the number of
    distinct ids under a rule is its count of images with a lesion.
    """
    unique: dict[tuple[str, str, str], Verdict] = {}
    for v in verdicts:
        unique[(v.image_id, v.label, v.rule)] = v
    if labels is None:
        seen: dict[str, None] = {}
        for v in unique.values():
            seen.setdefault(v.label, None)
        labels = list(seen)
    rows = lesion_labels(labels)
    names = {r.name for r in rules}
    hits: dict[tuple[str, str], int] = {}
    pairs: dict[tuple[str, str], int] = {}
    images: dict[str, set[str]] = {}
    for v in unique.values():
        if v.rule not in names or v.label not in rows:
            continue
        key = (v.label, v.rule)
        pairs[key] = pairs.get(key, 0) + 1
        hits[key] = hits.get(key, 0) + int(v.hit)
        images.setdefault(v.rule, set()).add(v.image_id)
    counts = {rule: len(ids) for rule, ids in images.items()}
    return PointingTable(list(rows), list(rules), hits, pairs, counts)
