"""Turning results and ground truth into napari layers (STYLE: predictable names, in place).

Only :func:`add_or_update` and :func:`remove_layers` touch a viewer; the rest builds
napari ``LayerData`` tuples ``(data, kwargs, layer_type)`` or reads layer attributes,
so it is tested without Qt.

Names (stable, so re-running replaces instead of piling up):

- ``"<label> · prediction · <image>"``, ``… · correlation · …``, ``… · product · …`` per
  label (the label first, so a narrow layer list still tells maps apart),
- ``"distance · <image>"``, ``"relevance · <image>"``, ``"masks used · <image>"``,
- ``"ground truth · <image>"`` for the boxes.

Coordinates: a map computed on an image layer must overlay that layer exactly, whatever
its ``scale`` and ``translate``. Grid maps have ``scale = stride`` and a translate that
puts cell ``(i, j)`` on window ``(i, j)``'s centre in image pixels (docs/method.md §6,
:meth:`~napari_correlax.windows.WindowGrid.layer_transform`); that is then composed with
the image layer's own transform, ``world = image_translate + image_scale · pixel``. For an
image read by the plugin, ``image_scale`` is the pixel spacing in mm and the result is
``MapResult.layer_transform(in_mm=True)``. Boxes are given in image pixels with pixel
``i`` covering ``[i, i + 1)`` (VinDr and slice-style boxes alike); napari centres pixel
``i`` at ``i``, so box edges move by −0.5 px.

Display: predictions use a sequential colormap over the fixed range [0, 1] (comparable
across labels and images); correlation, product and distance use a diverging colormap
with limits symmetric about 0; both fade to transparent at their "nothing" end so the
mammogram stays visible. Windows that were not evaluated (too little tissue) are NaN,
which napari draws transparent.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..boxes import Box, as_boxes
from ..export import MapArray
from ..io.vindr import boxes_for_image, find_annotations
from ..maps.kinds import KINDS
from ..maps.kinds import kind as map_kind
from ._layer_data import LayerData

__all__ = [
    "CONTRASTS",
    "DIVERGING_CMAP",
    "SEQUENTIAL_CMAP",
    "LayerData",
    "add_or_update",
    "analysed_area",
    "boxes_for_image",
    "boxes_layer",
    "boxes_layer_name",
    "boxes_layer_over",
    "boxes_of_layer",
    "compose_transform",
    "contrast_limits",
    "display_for",
    "evaluated_cells",
    "find_annotations",
    "image_tag",
    "image_transform",
    "is_correlax_output",
    "kind_title",
    "known_boxes",
    "label_colour",
    "layer_name",
    "layers_from_maps",
    "map_arrays",
    "meaning",
    "outline_kwargs",
    "outline_layer",
    "outline_layer_name",
    "present",
    "remove_layers",
    "result_layers",
    "spacing_of",
    "subcells_per_cell",
]

SEP = " · "

#: Sequential, transparent at 0 (colours sampled from matplotlib's "inferno").
SEQUENTIAL_CMAP: dict[str, Any] = {
    "name": "correlax heat",
    "colors": [
        [0.001, 0.000, 0.014, 0.0],
        [0.341, 0.062, 0.429, 0.55],
        [0.735, 0.216, 0.330, 0.8],
        [0.978, 0.557, 0.035, 0.95],
        [0.988, 1.000, 0.645, 1.0],
    ],
    "controls": [0.0, 0.25, 0.5, 0.75, 1.0],
}
#: Diverging blue–red, transparent at the centre (value 0 with symmetric limits). Each
#: half fades out in its own hue, so values near 0 do not tint the image white.
DIVERGING_CMAP: dict[str, Any] = {
    "name": "correlax diverging",
    "colors": [
        [0.13, 0.40, 0.85, 1.0],
        [0.35, 0.65, 0.95, 0.7],
        [0.35, 0.65, 0.95, 0.0],
        [0.98, 0.55, 0.35, 0.0],
        [0.98, 0.55, 0.35, 0.7],
        [0.85, 0.12, 0.10, 1.0],
    ],
    "controls": [0.0, 0.25, 0.499, 0.501, 0.75, 1.0],
}

#: Edge colours of ground-truth boxes for the docs/method.md §3 labels (others: by hash).
_LABEL_COLOURS = {
    "No Finding": "#bbbbbb",
    "Mass": "#ff4040",
    "Suspicious Calcification": "#ffd21f",
    "Asymmetries": "#3fd0ff",
    "Architectural Distortion": "#c070ff",
    "Suspicious Lymph Node": "#40e070",
    "Skin Thickening": "#ff9a3c",
    "Retractions": "#ff6ad5",
}
_SPARE_COLOURS = ("#8dd3c7", "#fb8072", "#80b1d3", "#fdb462", "#b3de69", "#fccde5")


#: Short kind names in layer names: napari elides a long name in its middle, so the
#: label and kind go first and stay short ("Mass · corr · R MLO…b9c907").
SHORT_KINDS = {
    "prediction": "pred",
    "correlation": "corr",
    "correlation_ci": "corr 95% CI ±",
    "product": "pred×corr",
    "masks_used": "masks used",
}
#: Image names longer than this are shortened to their head and tail in map layer names.
TAG_CHARS = 16


def image_tag(image: str) -> str:
    """A short tag of an image layer's name for map layer names: the name itself when it
    has at most :data:`TAG_CHARS` characters, else its first 7 and last 6 characters
    (``"850eb9c…907272"``; VinDr ids differ in their tails)."""
    return image if len(image) <= TAG_CHARS else f"{image[:7]}…{image[-6:]}"


def kind_title(kind: str, method: str = "") -> str:
    """The kind's short name in layer names (:data:`SHORT_KINDS`, else its title); kinds
    several methods make (saliency) are named after the ``method`` (``"Grad-CAM++"``)."""
    spec = map_kind(kind)
    if method and spec.by_method:
        from ..maps.methods import METHODS

        return METHODS[method].title if method in METHODS else method
    return SHORT_KINDS.get(kind, spec.title)


def layer_name(image: str, kind: str, label: str | None = None, method: str = "") -> str:
    """Predictable layer name, label and kind first so napari's middle elision keeps
    them: ``"<label> · <kind> · <image tag>"`` or ``"<kind> · <image tag>"``
    (:func:`kind_title`, :func:`image_tag`): ``"Mass · corr · scan"``,
    ``"Mass · Grad-CAM++ · scan"``."""
    shown, tag = kind_title(kind, method), image_tag(image)
    return SEP.join([label, shown, tag] if label else [shown, tag])


def boxes_layer_name(image: str) -> str:
    """Name of the ground-truth Shapes layer of an image (its :func:`image_tag`)."""
    return f"ground truth{SEP}{image_tag(image)}"


def outline_layer_name(image: str) -> str:
    """Name of the Shapes layer outlining where an image's maps were computed."""
    return f"analysed area{SEP}{image_tag(image)}"


def label_colour(label: str) -> str:
    """Hex edge colour of a label's boxes (fixed for docs/method.md §3 labels)."""
    if label in _LABEL_COLOURS:
        return _LABEL_COLOURS[label]
    return _SPARE_COLOURS[sum(label.encode()) % len(_SPARE_COLOURS)]


def compose_transform(
    inner_scale: Sequence[float],
    inner_translate: Sequence[float],
    image_scale: Sequence[float],
    image_translate: Sequence[float],
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Scale/translate of a map given in image pixels, placed on an image layer.

    ``world = image_translate + image_scale · (inner_translate + inner_scale · index)``.
    """
    scale = tuple(float(s) * float(k) for s, k in zip(inner_scale, image_scale))
    translate = tuple(
        float(t0) + float(k) * float(t)
        for t0, k, t in zip(image_translate, image_scale, inner_translate)
    )
    return scale, translate  # type: ignore[return-value]


def _symmetric_limits(values: np.ndarray) -> tuple[float, float]:
    finite = np.abs(values[np.isfinite(values)])
    top = float(finite.max()) if finite.size else 0.0
    top = top if top > 1e-6 else 1.0
    return (-top, top)


def _range_limits(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return (0.0, 1.0)
    sample = finite[:: max(1, finite.size // 1_000_000)]  # percentiles of ≤ ~1 M pixels
    lo, hi = (float(v) for v in np.percentile(sample, [2.0, 99.5]))
    if not hi > lo:
        lo, hi = float(finite.min()), float(finite.max())
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


#: Contrast of correlation-type maps (diverging kinds with a fixed range), as the
#: analysis dock offers it: the kind's fixed range (default; compares images), or this
#: image's own map, ±max |value| (0 stays the transparent centre) or its 2nd–98th
#: percentiles (shows structure in a saturated map; the centre is then the image's
#: middle value, not 0).
CONTRASTS = {
    "fixed": "fixed −1…1 (compare images)",
    "symmetric": "this image: ±max |ρ|",
    "percentile": "this image: 2–98 %",
}
#: Methods whose saliency is a probability, drawn on a fixed 0–1 scale (GMIC's saliency
#: is a sigmoid; its gradient CAMs are scaled to 0–1, docs/method.md §9).
UNIT_SALIENCY_METHODS = frozenset({"gmic"})


def _percentile_limits(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return (-1.0, 1.0)
    lo, hi = (float(v) for v in np.percentile(finite, [2.0, 98.0]))
    return (lo, hi) if hi - lo > 1e-6 else (lo - 0.5, lo + 0.5)


def contrast_limits(kind: str, values: np.ndarray, contrast: str = "fixed",
                    method: str = "") -> tuple[float, float]:
    """Display range of a map of ``kind``: see :func:`display_for`."""
    spec = map_kind(kind)
    if contrast not in CONTRASTS:
        raise ValueError(f"contrast must be one of {sorted(CONTRASTS)}, not {contrast!r}")
    if spec.scale == "count":
        finite = values[np.isfinite(values)]
        return (0.0, float(finite.max()) if finite.size and finite.max() > 0 else 1.0)
    if spec.scale == "diverging":
        if contrast == "symmetric" or spec.limits is None:
            return _symmetric_limits(values)
        if contrast == "percentile":
            return _percentile_limits(values)
        return spec.limits
    if spec.limits is not None:
        return spec.limits
    if spec.by_method and method in UNIT_SALIENCY_METHODS:
        return (0.0, 1.0)
    return _range_limits(values)


def display_for(kind: str, values: np.ndarray, contrast: str = "fixed",
                method: str = "") -> dict[str, Any]:
    """Colormap, contrast limits and opacity of a map kind (:mod:`~napari_correlax.maps.kinds`).

    Kinds with fixed limits (predictions 0–1, correlations −1–1) use them by default, so
    maps compare across labels, images and methods; ``contrast`` (:data:`CONTRASTS`)
    gives diverging kinds this map's own range instead. GMIC's saliency (``method``
    ``"gmic"``) is a probability on 0–1; other kinds without limits use their own range.
    """
    spec = map_kind(kind)
    limits = contrast_limits(kind, values, contrast, method)
    if spec.scale == "count":
        return {"colormap": "viridis", "contrast_limits": limits, "opacity": 0.5}
    if spec.scale == "diverging":
        return {"colormap": DIVERGING_CMAP, "contrast_limits": limits, "opacity": 0.75}
    opacity = 0.75 if spec.limits is not None else 0.6
    return {"colormap": SEQUENTIAL_CMAP, "contrast_limits": limits, "opacity": opacity}


def centres_inside(grid: Any, mask: np.ndarray) -> np.ndarray:
    """``(gy, gx)`` bool: whether each window's centre pixel is True in ``mask`` (H×W).

    A centre at coordinate ``c`` lies in pixel ``floor(c + 0.5)`` (pixel ``r`` spans
    ``[r − 0.5, r + 0.5)``); centres off the image are outside.
    """
    mask = np.asarray(mask, dtype=bool)
    centres = np.floor(grid.centres() + 0.5).astype(np.int64)
    rows = np.clip(centres[..., 0], 0, mask.shape[0] - 1)
    cols = np.clip(centres[..., 1], 0, mask.shape[1] - 1)
    inside = (centres[..., 0] >= 0) & (centres[..., 0] < mask.shape[0]) & \
        (centres[..., 1] >= 0) & (centres[..., 1] < mask.shape[1])
    return inside & mask[rows, cols]


#: Grid maps are drawn with each cell split into sub-cells (clipped at the image's
#: edge), at most this many along the longer side of the grid, …
MAX_GRID_SIDE = 512
#: … and sub-cells of at least this many image pixels.
MIN_SUBCELL_PX = 4


def subcells_per_cell(grid: Any) -> int:
    """How many sub-cells per cell side a grid map is drawn with (:data:`MAX_GRID_SIDE`,
    :data:`MIN_SUBCELL_PX`; at least 1)."""
    return max(1, min(grid.stride // MIN_SUBCELL_PX, MAX_GRID_SIDE // max(grid.shape)))


def evaluated_cells(result: Any, breast: np.ndarray | None = None) -> np.ndarray:
    """``(gy, gx)`` bool: the windows whose maps are drawn — evaluated ones, and with
    ``breast`` (H×W bool) only those whose centre lies in the breast."""
    evaluated = np.asarray(result.window_mask, dtype=bool)
    if breast is not None:
        evaluated = evaluated & centres_inside(result.grid, breast)
    return evaluated


def analysed_area(result: Any, breast: np.ndarray | None = None) -> np.ndarray:
    """``(H, W)`` bool: where the result's maps are drawn over the image.

    Results whose per-label maps are in image pixels (CAM saliency) cover the evaluated
    windows themselves, inside the breast when ``breast`` is given; grid-map results
    cover the map cells of the evaluated windows
    (:meth:`~napari_correlax.windows.WindowGrid.coverage`), clipped to the image.
    """
    evaluated = evaluated_cells(result, breast)
    pixel_maps = any(map_kind(n).resolution == "pixel" and map_kind(n).per_label
                     for n in result.maps())
    area = result.grid.coverage(evaluated, cells=not pixel_maps)
    if pixel_maps and breast is not None:
        area &= np.asarray(breast, dtype=bool)
    return area


def outline_layer(
    result: Any,
    image_name: str,
    *,
    image_scale: Sequence[float] | None = None,
    image_translate: Sequence[float] = (0.0, 0.0),
    breast: np.ndarray | None = None,
) -> LayerData:
    """A Shapes ``LayerData`` of closed paths around :func:`analysed_area`, placed over
    the image layer like :func:`map_arrays`: where the maps stop, and holes left out."""
    if image_scale is None:
        image_scale = result.spacing_mm if result.spacing_mm is not None else (1.0, 1.0)
    from ..windows import mask_outline

    paths = [p for p in mask_outline(analysed_area(result, breast)) if len(p) >= 3]
    side = max(result.grid.image_shape)
    kwargs = outline_kwargs(outline_layer_name(image_name), "path", image_scale,
                            image_translate, max(2.0, round(0.002 * side, 1)), "#e8e8e8")
    kwargs["opacity"] = 0.8
    kwargs["metadata"] = {"correlax": {"image": image_name, "map": "analysed area"}}
    return (paths, kwargs, "shapes")


def outline_kwargs(name: str, shape_type: str, image_scale: Sequence[float],
                   image_translate: Sequence[float], edge_width: float,
                   edge_color: Any) -> dict[str, Any]:
    """Keyword arguments of a Shapes layer of unfilled outlines placed over an image
    layer (its scale and translate; ``edge_width`` in image pixels)."""
    return {
        "name": name,
        "shape_type": shape_type,
        "scale": tuple(float(v) for v in image_scale),
        "translate": tuple(float(v) for v in image_translate),
        "edge_width": edge_width,
        "edge_color": edge_color,
        "face_color": "transparent",
    }


def map_arrays(
    result: Any,
    image_name: str,
    labels: Sequence[str] | None = None,
    *,
    image_scale: Sequence[float] | None = None,
    image_translate: Sequence[float] = (0.0, 0.0),
    breast: np.ndarray | None = None,
) -> list[MapArray]:
    """The maps of ``result`` to show, bottom to top, placed over the image layer.

    ``labels`` picks the per-label maps (default: all of the result's labels, in order);
    ``image_scale``/``image_translate`` are the image layer's (default: the result's
    spacing in mm, or 1 when unknown, and 0 — what the plugin's reader gives). Grid maps
    are drawn cell by cell, clipped at the image's edge
    (:meth:`~napari_correlax.windows.WindowGrid.cells_on_image`, :func:`subcells_per_cell`
    sub-cells per cell side); cells of windows that were not evaluated, and relevance
    pixels outside every evaluated window, are NaN (napari draws them transparent).
    With ``breast`` (H×W bool, the breast outline of
    :func:`~napari_correlax.preprocess.breast_roi`), grid cells whose window centre and
    pixels that lie outside the breast are NaN too, so maps stop at the skin line.
    """
    if image_scale is None:
        image_scale = result.spacing_mm if result.spacing_mm is not None else (1.0, 1.0)
    chosen = (
        list(result.labels) if labels is None else [lab for lab in labels if lab in result.labels]
    )
    per_cell = subcells_per_cell(result.grid)
    px_scale, px_translate = compose_transform((1.0, 1.0), (0.0, 0.0), image_scale, image_translate)
    units = "mm" if result.spacing_mm is not None else "px"
    method = str(getattr(result.stats, "method", "") or "")
    base = {"image": image_name, "window": result.window, "stride": result.stride,
            "units": units, "method": method}
    evaluated = evaluated_cells(result, breast)
    covered: np.ndarray | None = None

    def placed(spec: Any, values: np.ndarray) -> tuple[np.ndarray, Any, Any]:
        nonlocal covered
        if spec.resolution == "grid":
            cells = np.where(evaluated, np.asarray(values, dtype=np.float32), np.float32(np.nan))
            data, scale, translate = result.grid.cells_on_image(cells, per_cell)
            return (data, *compose_transform(scale, translate, image_scale, image_translate))
        if covered is None:
            covered = result.grid.coverage(evaluated)
            if breast is not None:
                covered &= np.asarray(breast, dtype=bool)
        data = np.where(covered, np.asarray(values, dtype=np.float32), np.float32(np.nan))
        return data, px_scale, px_translate

    # Bottom to top: label-free maps below per-label ones, each group in its kinds' stack order.
    present = sorted(result.maps().items(), key=lambda kv: map_kind(kv[0]).stack)
    out: list[MapArray] = []
    for name, values in present:
        spec = map_kind(name)
        if spec.per_label:
            continue
        data, scale, translate = placed(spec, values)
        attrs = {**base, "map": name, "label": None}
        out.append(MapArray(layer_name(image_name, name, None, method), data, scale,
                            translate, attrs))
    for label in chosen:
        c = result.labels.index(label)
        for name, values in present:
            spec = map_kind(name)
            if not spec.per_label:
                continue
            data, scale, translate = placed(spec, values[c])
            attrs = {**base, "map": name, "label": label}
            out.append(MapArray(layer_name(image_name, name, label, method), data, scale,
                                translate, attrs))
    return out


def layers_from_maps(
    maps: Iterable[MapArray], *, visible: Sequence[str] | None = None,
    contrast: str = "fixed",
) -> list[LayerData]:
    """Image ``LayerData`` for maps (from :func:`map_arrays` or a reopened map file).

    ``visible`` lists the names shown at first (default: the first label's correlation
    map, or its prediction map when there is no correlation); the others start hidden,
    so one map at a time is read over the mammogram. ``contrast``: see
    :func:`display_for`. Grid maps are drawn without interpolation (one value per
    window cell, as computed).
    """
    maps = list(maps)
    if visible is None:
        visible = _default_visible(maps)
    out: list[LayerData] = []
    for m in maps:
        kind = str(m.attrs.get("map", ""))
        kwargs: dict[str, Any] = {
            "name": m.name,
            "scale": tuple(m.scale),
            "translate": tuple(m.translate),
            "blending": "translucent",
            "interpolation2d": "nearest",
            "visible": m.name in visible,
            "metadata": {"correlax": dict(m.attrs)} if kind else {},
        }
        kwargs.update(display_for(kind, np.asarray(m.data), contrast,
                                  str(m.attrs.get("method", "") or "")))
        shown = m.attrs.get("display", {})
        if kind not in KINDS and isinstance(shown.get("colormap"), str):
            kwargs["colormap"] = shown["colormap"]
        if "contrast_limits" in shown:
            kwargs["contrast_limits"] = tuple(float(v) for v in shown["contrast_limits"])
        if "opacity" in shown:
            kwargs["opacity"] = float(shown["opacity"])
        if "visible" in shown:
            kwargs["visible"] = bool(shown["visible"])
        out.append((m.data, kwargs, "image"))
    return out


def _default_visible(maps: Sequence[MapArray]) -> list[str]:
    """The first map of the kind to read first (lowest ``read_order``), if any."""
    if not maps:
        return []
    first = min(maps, key=lambda m: map_kind(str(m.attrs.get("map", ""))).read_order)
    return [first.name]


def result_layers(
    result: Any,
    image_name: str,
    labels: Sequence[str] | None = None,
    *,
    image_scale: Sequence[float] | None = None,
    image_translate: Sequence[float] = (0.0, 0.0),
    breast: np.ndarray | None = None,
    contrast: str = "fixed",
    outline: bool = False,
) -> list[LayerData]:
    """``LayerData`` for all maps of a result over an image layer, bottom to top.

    See :func:`map_arrays` for the arguments and :func:`layers_from_maps` for display
    (``contrast``); with ``outline``, the :func:`outline_layer` of the analysed area
    comes last, above the maps.
    """
    maps = map_arrays(
        result, image_name, labels, image_scale=image_scale, image_translate=image_translate,
        breast=breast,
    )
    out = layers_from_maps(maps, contrast=contrast)
    if outline:
        out.append(outline_layer(result, image_name, image_scale=image_scale,
                                 image_translate=image_translate, breast=breast))
    return out


# -- ground truth ------------------------------------------------------------------------
def boxes_layer(
    boxes: Iterable[Any],
    image_name: str,
    *,
    image_scale: Sequence[float] = (1.0, 1.0),
    image_translate: Sequence[float] = (0.0, 0.0),
    image_shape: Sequence[int] | None = None,
) -> LayerData:
    """One Shapes ``LayerData`` of rectangles for ground-truth boxes (image pixels).

    Edge colour per label (:func:`label_colour`), the label as text, and ``label``,
    ``category`` and ``birads`` in the layer's features. The layer uses the image
    layer's scale and translate, so boxes in pixels land on the image.
    """
    rows = as_boxes(boxes)
    data = [
        np.array([[b.ymin - 0.5, b.xmin - 0.5], [b.ymin - 0.5, b.xmax - 0.5],
                  [b.ymax - 0.5, b.xmax - 0.5], [b.ymax - 0.5, b.xmin - 0.5]])
        for b in rows
    ]
    side = max(image_shape) if image_shape is not None else 1000
    kwargs = outline_kwargs(boxes_layer_name(image_name), "rectangle", image_scale,
                            image_translate, max(2.0, round(0.003 * side, 1)),
                            [label_colour(b.label) for b in rows] or "white")
    kwargs.update({
        "features": {
            "label": [b.label for b in rows],
            "category": [b.category for b in rows],
            "birads": [b.birads or "" for b in rows],
        },
        "text": {
            "string": "{label}",
            "anchor": "upper_left",
            "color": "white",
            "size": 9,
            "translation": (-2.0, 0.0),
        },
        "metadata": {"correlax": {"image": image_name, "map": "ground truth"}},
    })
    return (data, kwargs, "shapes")


# -- viewer helpers (the only functions here that touch napari) -------------------------
def add_or_update(viewer: Any, layer_data: Iterable[LayerData]) -> list[Any]:
    """Add layers, or update same-named ones in place; returns the layers in order.

    An existing image layer keeps its identity, position, visibility, opacity and
    colormap: only data, scale, translate, contrast limits and metadata change; so does
    a Shapes layer of plain outlines (the analysed area). A Shapes layer with features
    (boxes) is replaced at the same position (its shape count may change).
    Ground-truth boxes stay on top of every map, whatever was added after them.
    """
    from napari.layers import Image, Shapes

    out = []
    for data, kwargs, layer_type in layer_data:
        name = kwargs["name"]
        existing = viewer.layers[name] if name in viewer.layers else None
        if existing is not None and layer_type == "image" and isinstance(existing, Image):
            existing.metadata = kwargs.get("metadata", {})
            existing.scale = kwargs["scale"]
            existing.translate = kwargs["translate"]
            existing.data = data
            if "contrast_limits" in kwargs:
                existing.contrast_limits = kwargs["contrast_limits"]
            out.append(existing)
            continue
        if existing is not None and layer_type == "shapes" and "features" not in kwargs \
                and isinstance(existing, Shapes):
            _update_outlines(existing, data, kwargs)
            out.append(existing)
            continue
        index = viewer.layers.index(existing) if existing is not None else None
        new = getattr(viewer, f"add_{layer_type}")(data, **kwargs)
        if existing is not None:
            viewer.layers.remove(existing)
            viewer.layers.move(viewer.layers.index(new), index)
            new.name = name
        out.append(new)
    raise_boxes(viewer)
    return out


def order_layers(viewer: Any, names: Sequence[str]) -> None:
    """Put the named layers that exist in the order of ``names`` (bottom to top), in the
    places they hold among the viewer's layers (a coarse map's layers come first; the
    final map's extra kinds would otherwise land on top of them)."""
    present = [n for n in names if n in viewer.layers]
    slots = sorted(viewer.layers.index(n) for n in present)
    for slot, name in zip(slots, present):
        index = viewer.layers.index(name)
        if index != slot:
            viewer.layers.move(index, slot)


def _update_outlines(layer: Any, data: Any, kwargs: dict[str, Any]) -> None:
    """Replace the shapes of an outline layer in place (same layer object)."""
    layer.metadata = kwargs.get("metadata", {})
    layer.scale = kwargs["scale"]
    layer.translate = kwargs["translate"]
    layer.data = []
    if len(data):
        layer.add(data, shape_type=kwargs["shape_type"], edge_width=kwargs["edge_width"],
                  edge_color=kwargs["edge_color"], face_color=kwargs["face_color"])


def raise_boxes(viewer: Any) -> None:
    """Move the ground-truth box layers above every other layer (keeping their order)."""
    n = len(viewer.layers)
    boxes = [k for k, layer in enumerate(viewer.layers)
             if layer.name.startswith(f"ground truth{SEP}")]
    if boxes and boxes != list(range(n - len(boxes), n)):
        viewer.layers.move_multiple(boxes, n)


def remove_layers(viewer: Any, names: Iterable[str]) -> None:
    """Remove the named layers that exist."""
    for name in names:
        if name in viewer.layers:
            viewer.layers.remove(name)


def is_correlax_output(layer: Any) -> bool:
    """True for layers this plugin made (maps, boxes), which are never analysis inputs."""
    return isinstance(getattr(layer, "metadata", None), dict) and "correlax" in layer.metadata


def image_transform(layer: Any) -> tuple[tuple[float, float], tuple[float, float]]:
    """``(scale, translate)`` of a 2-D image layer (last two axes)."""
    scale = tuple(float(v) for v in layer.scale[-2:])
    translate = tuple(float(v) for v in layer.translate[-2:])
    return scale, translate  # type: ignore[return-value]


def spacing_of(layer: Any) -> tuple[float, float] | None:
    """Pixel spacing (mm) of an image layer: its metadata, else a non-unit scale, else None."""
    meta = getattr(layer, "metadata", {}) or {}
    spacing = meta.get("spacing_mm")
    if spacing is not None:
        return (float(spacing[0]), float(spacing[1]))
    scale, _ = image_transform(layer)
    if all(math.isclose(s, 1.0) for s in scale):
        return None
    return scale


def boxes_of_layer(layer: Any) -> list[Box]:
    """Ground-truth boxes back from a Shapes layer made by :func:`boxes_layer` (image pixels)."""
    features = layer.features
    rows: list[Box] = []
    for k, vertices in enumerate(layer.data):
        v = np.asarray(vertices)[:, -2:] + 0.5
        label = str(features["label"].iloc[k]) if "label" in features else ""
        category = str(features["category"].iloc[k]) if "category" in features else label
        birads = str(features["birads"].iloc[k]) if "birads" in features else ""
        rows.append(Box(label, category, float(v[:, 1].min()), float(v[:, 0].min()),
                        float(v[:, 1].max()), float(v[:, 0].max()), birads or None))
    return rows


def boxes_layer_over(layer: Any, boxes: Iterable[Any]) -> LayerData:
    """:func:`boxes_layer` placed over an image layer (its scale, translate and size)."""
    scale, translate = image_transform(layer)
    return boxes_layer(boxes, layer.name, image_scale=scale, image_translate=translate,
                       image_shape=layer.data.shape)


def known_boxes(viewer: Any, layer: Any) -> list[Box]:
    """Boxes of an image layer: its ground-truth layer if shown, else a VinDr CSV found
    beside its file (CorrelaxError when that CSV cannot be read)."""
    name = boxes_layer_name(layer.name)
    if name in viewer.layers:
        return boxes_of_layer(viewer.layers[name])
    path = (layer.metadata or {}).get("path")
    return boxes_for_image(path) if path else []


def present(viewer: Any, names: Sequence[str]) -> None:
    """Show the maps ``names`` just computed and hide every other map of the plugin (and
    the analysed-area outlines of other images); select the first and show its colour
    bar (the range of its kind)."""
    shown = [viewer.layers[n] for n in names if n in viewer.layers]
    images = {layer.metadata["correlax"].get("image") for layer in shown}
    for layer in viewer.layers:
        if is_correlax_output(layer) and hasattr(layer, "colorbar") and layer not in shown:
            layer.visible = False
            layer.colorbar.visible = False
        elif is_correlax_output(layer) and layer.metadata["correlax"].get("map") == \
                "analysed area":
            layer.visible = layer.metadata["correlax"].get("image") in images
    for layer in shown:
        layer.visible = True
    if shown:
        shown[0].colorbar.visible = True
        viewer.layers.selection.active = shown[0]


def meaning(layer: Any) -> str:
    """One plain-language line on what a map layer of the plugin shows, with the range
    its colours span now ("" for other layers)."""
    info = ((getattr(layer, "metadata", None) or {}).get("correlax") or {}) if layer else {}
    kind = info.get("map")
    if not kind:
        return ""
    if kind == "analysed area":
        return ("Analysed area: the maps were computed inside this outline only; outside "
                "it nothing was evaluated (too little tissue, or beyond the window grid).")
    if kind not in KINDS:
        return ""
    spec = map_kind(str(kind))
    limits = getattr(layer, "contrast_limits", None)
    if limits is not None:
        fixed = spec.limits is not None and tuple(limits) == tuple(spec.limits)
        scale = f"{limits[0]:.3g} to {limits[1]:.3g}" + ("" if fixed else ", this image's range")
    else:
        scale = f"{spec.limits[0]:g} to {spec.limits[1]:g}" if spec.limits else "its own range"
    method = str(info.get("method") or "")
    title = kind_title(str(kind), method) if spec.by_method else spec.title
    return f"{title[:1].upper()}{title[1:]} ({scale}): {spec.meaning}"
