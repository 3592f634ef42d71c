"""Exporting maps in open formats: per-window CSV, NPZ and TIFF map files (docs/method.md §12).

No napari here: the napari writer, the analysis dock and scripts all call these.

Two kinds of files:

- **An analysis** (:func:`export_analysis`): the :class:`~napari_correlax.maps.MapResult`
  as ``<stem>.npz`` (``MapResult.save``, readable by ``load_result``), its per-window
  numbers as ``<stem>-windows.csv`` (:func:`write_window_csv`) and, given the image, a
  PNG figure of the maps over it (:func:`~napari_correlax.figures.save_overlay`).
- **Map files** (:func:`write_maps_npz`, :func:`write_maps_tiff`): a set of named 2-D
  arrays, each with the ``scale`` and ``translate`` that place it over the image
  (napari's convention: pixel ``(r, c)`` of the array is centred at world point
  ``translate + scale·(r, c)``, in mm when the image has a pixel spacing, otherwise in
  image pixels), and a small JSON-able ``attrs`` dict (which map, which label, display
  settings). They are read back by :func:`read_maps`, so saved layers reopen exactly.

NPZ map file layout: one array per map under its name, plus ``__maps__``, a JSON string
``{"format": "napari-correlax-maps", "version": 1, "maps": [{"name", "scale",
"translate", "attrs"}, ...]}`` that keeps their order. TIFF map files hold one float32
array each, with the same per-map JSON in the ImageDescription tag. Every file is
written atomically (temp file beside it, then rename).
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import CorrelaxError
from .files import atomic_write, atomic_write_csv, npz_reason
from .maps.kinds import kind as map_kind

if TYPE_CHECKING:
    from .maps.result import MapResult

__all__ = [
    "MAPS_FORMAT",
    "MAPS_INDEX_KEY",
    "MapArray",
    "export_analysis",
    "read_maps",
    "window_rows",
    "write_maps_npz",
    "write_maps_tiff",
    "write_window_csv",
]

MAPS_FORMAT = "napari-correlax-maps"
MAPS_INDEX_KEY = "__maps__"


@dataclass
class MapArray:
    """One named 2-D map and where it lies over the image.

    ``scale`` and ``translate`` are ``(row, col)`` in world units (mm when the image has a
    spacing, otherwise image pixels); ``attrs`` is JSON-able (map kind, label, display).
    """

    name: str
    data: np.ndarray
    scale: tuple[float, float] = (1.0, 1.0)
    translate: tuple[float, float] = (0.0, 0.0)
    attrs: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """The JSON entry stored for this map (everything but the array)."""
        return {
            "name": self.name,
            "scale": [float(v) for v in self.scale],
            "translate": [float(v) for v in self.translate],
            "attrs": self.attrs,
        }


# -- per-window numbers ------------------------------------------------------------------
def window_rows(result: MapResult) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of the per-window table of a result, one row per grid cell.

    Columns: ``row``, ``col`` (grid cell), ``centre_row_px``, ``centre_col_px`` (window
    centre in original image pixels, pixel centres at integers), ``centre_row_mm``,
    ``centre_col_mm`` (only when the result has a spacing), ``evaluated`` (1 when the
    window held enough tissue to be run), then one column per label-free grid map the
    result holds (``distance``, ``masks_used``, …), then ``<map>:<label>`` for each
    per-label grid map (``prediction``, ``correlation``, ``product``, …), in the
    result's map order (:meth:`~napari_correlax.maps.MapResult.maps`).
    Values are the result's maps as stored (after the docs/method.md §6 kernel).
    """
    gy, gx = result.grid.shape
    centres = result.grid.centres()
    spacing = result.spacing_mm
    header = ["row", "col", "centre_row_px", "centre_col_px"]
    if spacing is not None:
        header += ["centre_row_mm", "centre_col_mm"]
    header.append("evaluated")
    grid_maps = {n: v for n, v in result.maps().items() if map_kind(n).resolution == "grid"}
    scalar = [n for n in grid_maps if not map_kind(n).per_label]
    header += scalar
    per_label = [n for n in grid_maps if map_kind(n).per_label]
    header += [f"{name}:{label}" for name in per_label for label in result.labels]
    rows: list[list[Any]] = []
    for i in range(gy):
        for j in range(gx):
            cy, cx = float(centres[i, j, 0]), float(centres[i, j, 1])
            row: list[Any] = [i, j, _num(cy), _num(cx)]
            if spacing is not None:
                row += [_num(cy * spacing[0]), _num(cx * spacing[1])]
            row.append(int(bool(result.window_mask[i, j])))
            row += [_num(grid_maps[n][i, j]) for n in scalar]
            for name in per_label:
                values = grid_maps[name]
                row += [_num(values[c, i, j]) for c in range(len(result.labels))]
            rows.append(row)
    return header, rows


def write_window_csv(result: MapResult, path: str | os.PathLike[str]) -> Path:
    """Write :func:`window_rows` as a UTF-8 CSV file (atomic); returns the path."""
    header, rows = window_rows(result)
    return atomic_write_csv(path, header, rows)


def _num(value: Any) -> str:
    """Shortest exact-enough text for a float (``%.7g``); integers stay integers."""
    v = float(value)
    if not np.isfinite(v):
        return "nan" if np.isnan(v) else ("inf" if v > 0 else "-inf")
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return f"{v:.7g}"


# -- map files ---------------------------------------------------------------------------
def _check_maps(maps: Sequence[MapArray]) -> None:
    if not maps:
        raise CorrelaxError("no maps to write")
    names = [m.name for m in maps]
    if len(set(names)) != len(names):
        raise CorrelaxError(f"map names must be unique, got {names}")
    for m in maps:
        if m.name == MAPS_INDEX_KEY or not m.name:
            raise CorrelaxError(f"invalid map name {m.name!r}")
        if np.ndim(m.data) != 2:
            raise CorrelaxError(f"map {m.name!r} is not 2-D (shape {np.shape(m.data)})")


def write_maps_npz(path: str | os.PathLike[str], maps: Sequence[MapArray]) -> Path:
    """Write maps to one compressed ``.npz`` (layout in the module docstring); atomic."""
    _check_maps(maps)
    index = {"format": MAPS_FORMAT, "version": 1, "maps": [m.describe() for m in maps]}
    arrays: dict[str, Any] = {m.name: np.asarray(m.data) for m in maps}
    arrays[MAPS_INDEX_KEY] = np.asarray(json.dumps(index))

    def write(fh: Any) -> None:
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        fh.write(buf.getvalue())

    return atomic_write(path, write)


def _slug(text: str) -> str:
    """File-name-safe map name: ``"Mass · correlation · a"`` → ``a-Mass-correlation``."""
    parts = re.split(r"[^0-9A-Za-z._+-]+", text)
    return "-".join(p for p in parts if p) or "map"


def write_maps_tiff(path: str | os.PathLike[str], maps: Sequence[MapArray]) -> list[Path]:
    """Write each map as a float32 TIFF; returns the paths written.

    One map goes to ``path``; several go to ``<stem>-<map name>.tif`` beside it (names
    reduced to letters, digits and ``._+-``), since maps of one analysis differ in shape.
    The map's JSON entry (name, scale, translate, attrs) is the ImageDescription.
    """
    import tifffile

    _check_maps(maps)
    path = Path(path)
    if len(maps) == 1:
        targets = [path]
    else:
        targets = [path.with_name(f"{path.stem}-{_slug(m.name)}{path.suffix}") for m in maps]
        if len(set(targets)) != len(targets):
            targets = [
                path.with_name(f"{path.stem}-{k:02d}-{_slug(m.name)}{path.suffix}")
                for k, m in enumerate(maps)
            ]
    written = []
    for target, m in zip(targets, maps):
        doc = {"format": MAPS_FORMAT, "version": 1, **m.describe()}
        data = np.asarray(m.data, dtype=np.float32)

        def write(fh: Any, data: np.ndarray = data, doc: dict[str, Any] = doc) -> None:
            buf = io.BytesIO()
            tifffile.imwrite(buf, data, description=json.dumps(doc), metadata=None)
            fh.write(buf.getvalue())

        written.append(atomic_write(target, write))
    return written


def read_maps(path: str | os.PathLike[str]) -> list[MapArray]:
    """Read a map file written by :func:`write_maps_npz` or :func:`write_maps_tiff`.

    Never unpickles. A file of another kind raises :class:`CorrelaxError`.
    """
    path = Path(path)
    if not path.is_file():
        raise CorrelaxError("file not found", path)
    if path.suffix.lower() in (".tif", ".tiff"):
        return [_read_tiff_map(path)]
    try:
        with np.load(path, allow_pickle=False) as z:
            if MAPS_INDEX_KEY not in z.files:
                raise CorrelaxError("not a napari-correlax map file (no map index)", path)
            index = json.loads(str(z[MAPS_INDEX_KEY]))
            entries = index.get("maps", [])
            return [
                MapArray(
                    name=e["name"],
                    data=z[e["name"]],
                    scale=tuple(float(v) for v in e.get("scale", (1.0, 1.0))),
                    translate=tuple(float(v) for v in e.get("translate", (0.0, 0.0))),
                    attrs=dict(e.get("attrs", {})),
                )
                for e in entries
            ]
    except CorrelaxError:
        raise
    except Exception as exc:
        raise CorrelaxError(f"not a napari-correlax map file ({npz_reason(exc)})", path) from exc


def _read_tiff_map(path: Path) -> MapArray:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            data = page.asarray()
            text = page.description
        doc = json.loads(text)
    except Exception as exc:
        raise CorrelaxError(f"not a napari-correlax map file ({npz_reason(exc)})", path) from exc
    if not isinstance(doc, dict) or doc.get("format") != MAPS_FORMAT:
        raise CorrelaxError("TIFF has no napari-correlax map description", path)
    return MapArray(
        name=str(doc.get("name", path.stem)),
        data=data,
        scale=tuple(float(v) for v in doc.get("scale", (1.0, 1.0))),
        translate=tuple(float(v) for v in doc.get("translate", (0.0, 0.0))),
        attrs=dict(doc.get("attrs", {})),
    )


# -- a whole analysis --------------------------------------------------------------------
def export_analysis(
    result: MapResult,
    stem: str | os.PathLike[str],
    *,
    pixels: np.ndarray | None = None,
    labels: Sequence[str] | None = None,
    boxes: Sequence[Any] = (),
    title: str = "",
    warning: str = "",
) -> list[Path]:
    """Write ``<stem>.npz`` (the result), ``<stem>-windows.csv`` and ``<stem>.png``.

    The PNG only when ``pixels``, the H×W [0, 1] image the result was computed on, is
    given; ``labels`` limits the figure's panels; ``boxes`` are
    :class:`~napari_correlax.boxes.Box` records (or ``(label, xmin, ymin, xmax, ymax)``
    tuples) in image pixels; ``title`` and ``warning`` head the figure
    (:func:`~napari_correlax.figures.save_overlay`). Returns the paths written, in that
    order.
    """
    stem = Path(stem)
    if stem.suffix.lower() in (".npz", ".csv", ".png"):
        stem = stem.with_suffix("")
    written = [
        result.save(stem.with_name(stem.name + ".npz")),
        write_window_csv(result, stem.with_name(stem.name + "-windows.csv")),
    ]
    if pixels is not None:
        from .figures import save_overlay

        # the per-label maps, the kind to read first leading (prediction, correlation…)
        maps = sorted((n for n in result.maps() if map_kind(n).per_label),
                      key=lambda n: map_kind(n).read_order)[:2]
        written.append(
            save_overlay(
                stem.with_name(stem.name + ".png"),
                pixels,
                result,
                maps=maps,
                labels=labels,
                boxes=boxes,
                title=title,
                warning=warning,
            )
        )
    return written
