"""The result of ``predict`` / ``explain``: maps on the window grid plus their geometry.

Array names and shapes are part of the public contract (docs/method.md §12):

- ``prediction`` (C, gy, gx): smoothed label probabilities.
- ``correlation`` (C, gy, gx), ``product`` (C, gy, gx), ``distance`` (gy, gx),
  ``masks_used`` (gy, gx), ``relevance`` (H, W) in original image pixels — only after
  ``explain``.

Maps of other kinds (:mod:`.kinds`; made by other map methods, :mod:`.methods`) live in
``extra`` under their kind name and are saved and loaded like the named ones: the CAM
family's ``saliency`` (labels, H, W) in original image pixels, for example, whose
``target_layer`` (the dotted name of the model's module the maps were taken from) is
saved beside it; ``explain`` puts ``correlation_ci`` there (C, gy, gx: half-widths
of the correlations' 95 % confidence intervals) and ``relevance_uncertainty`` (H, W:
RELAX's uncertainty, the mask-weighted variance of the feature similarity per pixel).

Geometry: ``window``, ``stride``, ``origin`` (row, col of window (0, 0)'s top-left in
original image pixels), ``grid_shape``, ``image_shape``, ``spacing_mm`` and
``window_mask`` (gy, gx; True where the window held enough tissue to be evaluated).
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CorrelaxError
from ..files import atomic_write, npz_reason
from ..windows import WindowGrid
from .stats import RunStats

__all__ = ["MAP_NAMES", "MapResult", "load_result"]

#: Optional arrays added by ``explain``, in save order.
MAP_NAMES = ("correlation", "product", "distance", "masks_used", "relevance")


@dataclass
class MapResult:
    """Per-label maps on a window grid (see module docstring for units and frames)."""

    labels: list[str]
    grid: WindowGrid
    prediction: np.ndarray
    window_mask: np.ndarray
    spacing_mm: tuple[float, float] | None = None
    correlation: np.ndarray | None = None
    product: np.ndarray | None = None
    distance: np.ndarray | None = None
    masks_used: np.ndarray | None = None
    relevance: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    stats: RunStats = field(default_factory=RunStats)
    #: Dotted name of the module CAM-family maps were computed at (``model.get_submodule``
    #: gives it back); None for methods without a target layer.
    target_layer: str | None = None

    def get(self, name: str) -> np.ndarray | None:
        """The map of kind ``name`` (a named field or an ``extra`` map), None if absent."""
        if name == "prediction" or name in MAP_NAMES:
            return getattr(self, name)
        return self.extra.get(name)

    # -- geometry shortcuts (docs/method.md §12) -------------------------------------------------
    @property
    def window(self) -> int:
        """Window side, pixels."""
        return self.grid.window

    @property
    def stride(self) -> int:
        """Window step, pixels."""
        return self.grid.stride

    @property
    def origin(self) -> tuple[int, int]:
        """Top-left ``(row, col)`` of window (0, 0) in original image pixels."""
        return self.grid.origin

    @property
    def image_shape(self) -> tuple[int, int]:
        """``(H, W)`` of the original image."""
        return self.grid.image_shape

    @property
    def has_explanation(self) -> bool:
        """True once CorRELAX maps are present."""
        return self.correlation is not None

    def label_index(self, label: str) -> int:
        """Index of ``label`` in :attr:`labels` (CorrelaxError when unknown)."""
        try:
            return self.labels.index(label)
        except ValueError:
            raise CorrelaxError(f"label {label!r} is not one of {self.labels}") from None

    def peak_cell(self, name: str = "prediction", label: str | None = None) -> tuple[int, int]:
        """Grid cell ``(i, j)`` of a grid map's maximum (see :meth:`peak`)."""
        values = self._grid_values(name, label)
        masked = np.where(self.window_mask, values, -np.inf)
        if not np.isfinite(masked).any():
            masked = values
        i, j = np.unravel_index(int(np.argmax(masked)), masked.shape)
        return int(i), int(j)

    def values_of(self, name: str, label: str | None = None) -> np.ndarray:
        """The 2-D map of kind ``name``, the channel of ``label`` for per-label kinds
        (CorrelaxError when the result lacks the map or the label is missing or unknown)."""
        return self._grid_values(name, label)

    def _grid_values(self, name: str, label: str | None) -> np.ndarray:
        values = self.get(name)
        if values is None:
            raise CorrelaxError(f"this result has no {name!r} map")
        if values.ndim == 3:
            if label is None:
                raise CorrelaxError(f"map {name!r} is per label: name one of {self.labels}")
            values = values[self.label_index(label)]
        return values

    def peak(
        self, name: str = "prediction", label: str | None = None
    ) -> tuple[float, tuple[float, float]]:
        """Maximum of a map and its location (original image pixels, pixel centres).

        Grid maps (``prediction``, ``correlation``, ``product``, ``distance``, …): only
        windows in ``window_mask`` compete and the location is the window's centre.
        Pixel-resolution maps (:class:`~napari_correlax.maps.kinds.MapKind` resolution
        ``"pixel"``, e.g. saliency ``(C, H, W)``): NaN pixels (not evaluated) are left
        out and the location is the pixel. ``label`` picks the channel of per-label maps;
        ties go to the first in row-major order.
        """
        from .kinds import kind

        if kind(name).resolution == "pixel":
            values = self._grid_values(name, label)
            finite = np.where(np.isfinite(values), values, -np.inf)
            i, j = np.unravel_index(int(np.argmax(finite)), finite.shape)
            return float(values[i, j]), (float(i), float(j))
        i, j = self.peak_cell(name, label)
        centre = self.grid.centres()[i, j]
        return float(self._grid_values(name, label)[i, j]), (float(centre[0]), float(centre[1]))

    def peaks(self, kinds: tuple[str, ...] = ("prediction", "correlation")
              ) -> list[tuple[str, str, float, tuple[float, float]]]:
        """Per label, the maximum of each per-label grid map of ``kinds`` the result has:
        ``(label, kind, value, (row, col))``, location in original image pixels (the
        window centre, as :meth:`peak`)."""
        present = [k for k in kinds if self.get(k) is not None and self.get(k).ndim == 3]
        return [(label, kind, *self.peak(kind, label)) for label in self.labels
                for kind in present]

    def maps(self) -> dict[str, np.ndarray]:
        """All present maps by kind name: the named ones in save order, then ``extra``."""
        out = {"prediction": self.prediction}
        for name in MAP_NAMES:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        out.update(self.extra)
        return out

    def layer_transform(
        self, in_mm: bool = True
    ) -> tuple[tuple[float, float], tuple[float, float]]:
        """napari ``(scale, translate)`` of grid maps; mm if ``in_mm`` and spacing is known."""
        return self.grid.layer_transform(self.spacing_mm if in_mm else None)

    # -- files -------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write a ``.npz`` (atomic) with the public array names plus the geometry."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(".npz")
        arrays: dict[str, Any] = dict(self.maps())
        arrays.update(
            window=np.int64(self.window),
            stride=np.int64(self.stride),
            origin=np.asarray(self.origin, dtype=np.int64),
            grid_shape=np.asarray(self.grid.shape, dtype=np.int64),
            image_shape=np.asarray(self.image_shape, dtype=np.int64),
            spacing_mm=np.asarray(self.spacing_mm if self.spacing_mm else (np.nan, np.nan)),
            window_mask=np.asarray(self.window_mask, dtype=bool),
            labels=np.asarray(self.labels, dtype=str),
            kinds=np.asarray(list(self.maps()), dtype=str),
            meta=np.asarray(json.dumps(self.meta, default=str)),
            stats=np.asarray(json.dumps(self.stats.as_dict(), default=str)),
        )
        if self.target_layer is not None:
            arrays["target_layer"] = np.asarray(str(self.target_layer))

        def write(fh: Any) -> None:
            buf = io.BytesIO()
            np.savez_compressed(buf, **arrays)
            fh.write(buf.getvalue())

        return atomic_write(path, write)


def load_result(path: str | os.PathLike[str]) -> MapResult:
    """Read a result written by :meth:`MapResult.save` (never unpickles)."""
    path = Path(path)
    if not path.is_file():
        raise CorrelaxError("result file not found", path)
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as exc:
        raise CorrelaxError(f"not a napari-correlax result ({npz_reason(exc)})", path) from exc
    required = ("prediction", "window", "stride", "origin", "grid_shape", "image_shape", "labels")
    missing = [k for k in required if k not in data]
    if missing:
        raise CorrelaxError(f"result file lacks {', '.join(missing)}", path)
    grid = WindowGrid(
        int(data["window"]),
        int(data["stride"]),
        (int(data["origin"][0]), int(data["origin"][1])),
        (int(data["grid_shape"][0]), int(data["grid_shape"][1])),
        (int(data["image_shape"][0]), int(data["image_shape"][1])),
    )
    spacing = data.get("spacing_mm")
    spacing_mm = None
    if spacing is not None and np.all(np.isfinite(spacing)):
        spacing_mm = (float(spacing[0]), float(spacing[1]))
    meta = json.loads(str(data["meta"])) if "meta" in data else {}
    stats = RunStats.from_dict(json.loads(str(data["stats"]))) if "stats" in data else RunStats()
    window_mask = data.get("window_mask", np.ones(grid.shape, dtype=bool))
    kinds = [str(k) for k in data.get("kinds", ())]
    reserved = {"prediction", *MAP_NAMES}
    extra = {k: data[k] for k in kinds if k not in reserved and k in data}
    target_layer = str(data["target_layer"]) if "target_layer" in data else None
    return MapResult(
        labels=[str(v) for v in data["labels"]],
        grid=grid,
        prediction=data["prediction"],
        window_mask=window_mask.astype(bool),
        spacing_mm=spacing_mm,
        meta=meta,
        stats=stats,
        extra=extra,
        target_layer=target_layer,
        **{name: data.get(name) for name in MAP_NAMES},
    )
