"""The layers of the test-set reader: the image, its maps, boxes, map maxima and marks.

Layers are named ``"… · test set"`` and updated in place from one image to the next:
adding and removing napari layers costs far more than the maps. Which layer is the
reader's, and what it shows, is read from its ``metadata["correlax"]`` (``image``,
``map``, ``label``), never parsed from its name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..evaluate.pointing import RULES
from ..labels import lesion_labels
from ..preprocess import breast_roi
from . import _layers

PREFIX = "test set"
_PER_LABEL = ("prediction", "correlation", "saliency")
_SHOWN = ("distance", *_PER_LABEL)
#: Points / Shapes layers the reader makes (never left selected nor in an edit mode).
_MARKINGS = ("maxima", "marks", "ground truth", "analysed area")


def _info(layer: Any) -> dict[str, Any]:
    """The reader's metadata of a layer ({} for a layer it did not make)."""
    info = (getattr(layer, "metadata", None) or {}).get("correlax") or {}
    return info if isinstance(info, dict) and info.get("image") == PREFIX else {}


class ReviewLayers:
    """Draws the review's current image into a viewer (:meth:`draw`), or nothing
    (:meth:`clear`), so the canvas never shows one image under another's header.

    Rules: the map of the judged kind (:meth:`show_kind`) is visible for the label of
    the selected row (``selected``, a callable giving it), or for the first label the
    reader judges (:attr:`labels`) before a row of them is selected, whenever it exists
    — one finding's map at a time, never several stacked; the distance map is shown on
    top of them while D has it on; a map layer that holds another image's data is hidden
    until this image's map replaces it (:attr:`stale`). ``keys`` (key → action) are
    bound on every layer the reader makes, ahead of napari's layer shortcuts (Points
    "P" = add points, …), and those layers never stay selected or in an edit mode.
    """

    def __init__(self, viewer: Any, keys: dict[str, Callable[[], Any]] | None = None,
                 selected: Callable[[], str] | None = None) -> None:
        self.viewer = viewer
        self.keys = dict(keys or {})
        self.selected = selected
        self._pending: dict[str, Any] = {}
        self._findings: list[str] = []
        self._kind = "correlation"
        self._distance = False
        #: Names of map layers that still hold another image's data (kept hidden).
        self.stale: set[str] = set()
        self._before_clear: dict[str, bool] = {}
        self._verdicts: list[Any] = []
        self._scale: tuple[float, ...] = (1.0, 1.0)

    # -- drawing -----------------------------------------------------------------------
    def draw(self, loaded: Any, verdicts: list[Any], follow: bool, kind: str = "") -> None:
        """Show the image, its maps, boxes and maxima, updating same-named layers in place.

        ``loaded.result`` may be None (the image alone, before its maps) or hold only
        prediction maps (a preview): what it has is drawn, and the map layers it has no
        data for are hidden. ``kind`` is the map kind the reader judges (default: the
        last one shown); a preview without it shows its prediction maps.

        The prediction and correlation (or saliency) maps of every lesion label are made
        (product and masks-used maps are left to the analysis dock) plus the distance
        map. The judged kind's maps of :attr:`labels` are always shown; with ``follow``
        every other map is hidden, without it the others keep the visibility the reader
        gave them. A hidden map layer gets its new data only when it is made visible.
        Layers are scaled to millimetres when the pixel spacing is known.
        """
        viewer = self.viewer
        record, result = loaded.record, loaded.result
        scale = tuple(loaded.spacing_mm or (1.0, 1.0))
        old = viewer.layers[PREFIX] if PREFIX in viewer.layers else None
        reset = old is None or old.data.shape != loaded.pixels.shape
        self._kind = kind or self._kind
        self._findings = lesion_labels(record.labels) or alarm_label(result)
        image = (loaded.pixels, {"name": PREFIX, "scale": scale, "translate": (0.0, 0.0),
                                 "colormap": "gray", "contrast_limits": (0.0, 1.0),
                                 "metadata": {"path": str(record.path),
                                              "image_id": record.image_id,
                                              "spacing_mm": loaded.spacing_mm}}, "image")
        (made,) = _layers.add_or_update(viewer, [image])
        made.visible = True
        breast = None if result is None else breast_roi(loaded.pixels).mask
        maps = [] if result is None else [
            m for m in _layers.result_layers(result, PREFIX, lesion_labels(result.labels),
                                             image_scale=scale, breast=breast)
            if m[1]["metadata"]["correlax"]["map"] in _SHOWN]
        kinds = {m[1]["metadata"]["correlax"]["map"] for m in maps}
        shown_kind = self._kind if self._kind in kinds else (
            "prediction" if "prediction" in kinds else "")
        drawn = set()
        for data, kwargs, layer_type in maps:
            name = kwargs["name"]
            drawn.add(name)
            layer = viewer.layers[name] if name in viewer.layers else None
            show = self._wanted(kwargs["metadata"]["correlax"], shown_kind)
            if not show and not follow:
                show = self._before_clear.get(name, layer.visible if layer is not None
                                              else kwargs["visible"])
            self.stale.discard(name)
            if layer is not None and not show:
                self._pending[name] = (data, kwargs, layer_type)
                layer.visible = False
                continue
            self._pending.pop(name, None)
            kwargs["visible"] = show
            (made,) = _layers.add_or_update(viewer, [(data, kwargs, layer_type)])
            made.visible = show
            if layer is None:
                made.events.visible.connect(self._apply_pending)
        self._hide_stale(drawn)
        self._outline(result, scale, breast)
        put_boxes(viewer, _layers.boxes_layer(record.boxes, PREFIX, image_scale=scale,
                                              image_shape=loaded.pixels.shape))
        self._verdicts, self._scale = list(verdicts), scale
        put_points(viewer, maxima_layer(self._focused(self._verdicts), scale))
        self._empty_marks()
        if loaded.final:
            self._before_clear = {}
        self._settle(select_image=True)
        if reset:
            viewer.reset_view()

    def clear(self) -> None:
        """Show no image: every layer of the reader is hidden and its maps count as
        stale (the next :meth:`draw` brings back what the new image has)."""
        if not self._before_clear:
            self._before_clear = {layer.name: bool(layer.visible)
                                  for layer in self.viewer.layers if _info(layer)}
        for layer in self._layers():
            if _info(layer).get("map") in _SHOWN:
                self.stale.add(layer.name)
                self._pending.pop(layer.name, None)
            layer.visible = False

    @property
    def labels(self) -> list[str]:
        """The labels whose maps are judged: the image's findings (a normal image: the
        lesion label with the highest prediction, where a false alarm would be)."""
        return list(self._findings)

    def shown_labels(self) -> list[str]:
        """Labels whose judged-kind map is on screen now (this image's data, visible),
        topmost layer first: what a click on the canvas can be about."""
        out = []
        for layer in reversed(list(self.viewer.layers)):
            info = _info(layer)
            if info.get("map") == self._kind and layer.visible \
                    and layer.name not in self.stale and info.get("label") not in out:
                out.append(info["label"])
        return out

    def draw_marks(self, rows: list[Any], record: Any) -> None:
        """Show the false positives the reader marked (``rows``: mark rows of ``record``)."""
        name = f"false positives{_layers.SEP}{PREFIX}"
        if PREFIX not in self.viewer.layers or (not rows and name not in self.viewer.layers):
            return
        data = np.array([[r.max_row, r.max_col] for r in rows], dtype=float).reshape(-1, 2)
        kwargs = {"name": name, "symbol": "x",
                  "scale": tuple(self.viewer.layers[PREFIX].scale), "size": 28,
                  "face_color": "#ff3030", "border_color": "#ff3030",
                  "features": {"label": [r.label for r in rows], "map": [r.kind for r in rows]},
                  "metadata": {"correlax": {"image": PREFIX, "map": "marks"}}}
        put_points(self.viewer, (data, kwargs, "points"))
        self.viewer.layers[name].visible = True
        self._settle()

    def refresh(self) -> None:
        """Re-apply the visibility rules and the maxima shown (the selected row changed)."""
        self.show_kind(self._kind)
        if self._verdicts:
            put_points(self.viewer, maxima_layer(self._focused(self._verdicts), self._scale))
            self._settle()

    def _focused(self, verdicts: list[Any]) -> list[Any]:
        """The maxima of the selected row's finding (every finding's when the selection is
        none of them): one label's markers at a time, so their labels never overprint."""
        focus = self.selected() if self.selected is not None else ""
        chosen = [v for v in verdicts if v.label == focus]
        return chosen or list(verdicts)

    def show_kind(self, kind: str) -> None:
        """Show one map kind (``prediction``, ``correlation`` or ``saliency``) for the
        judged labels, hiding the other kinds; ``distance`` shows the distance map on top
        of them, or hides it again."""
        if kind == "distance":
            self._distance = not self._distance
        else:
            self._kind = kind
        for layer in self._layers():
            info = _info(layer)
            if info.get("map") in _SHOWN and layer.name not in self.stale:
                layer.visible = self._wanted(info, self._kind)

    # -- helpers -----------------------------------------------------------------------
    def _wanted(self, info: dict[str, Any], kind: str) -> bool:
        """Whether a map layer is shown: the judged kind for the judged labels, and the
        distance map while it is on."""
        if info.get("map") == "distance":
            return self._distance
        focus = self.selected() if self.selected is not None else ""
        labels = [focus] if focus in self._findings else self._findings[:1]
        return bool(kind) and info.get("map") == kind and info.get("label") in labels

    def _layers(self) -> list[Any]:
        """Every layer the reader made (the image included)."""
        return [layer for layer in self.viewer.layers
                if layer.name == PREFIX or _info(layer)]

    def _hide_stale(self, drawn: set[str]) -> None:
        """Hide the map layers this image has no data for (they show another image)."""
        for layer in self._layers():
            if _info(layer).get("map") in _SHOWN and layer.name not in drawn:
                self.stale.add(layer.name)
                self._pending.pop(layer.name, None)
                layer.visible = False

    def _outline(self, result: Any, scale: tuple[float, ...], breast: Any) -> None:
        """Outline where this image's maps were computed; hidden while it has none."""
        name = _layers.outline_layer_name(PREFIX)
        if result is None:
            if name in self.viewer.layers:
                self.viewer.layers[name].visible = False
            return
        outline = _layers.outline_layer(result, PREFIX, image_scale=scale, breast=breast)
        (made,) = _layers.add_or_update(self.viewer, [outline])
        made.visible = True

    def _empty_marks(self) -> None:
        """Drop the previous image's marks (the dock draws this image's with its rows)."""
        name = f"false positives{_layers.SEP}{PREFIX}"
        if name in self.viewer.layers and len(self.viewer.layers[name].data):
            self.viewer.layers[name].visible = True
            self.viewer.layers[name].data = np.empty((0, 2))

    def _settle(self, select_image: bool = False) -> None:
        """Bind the reader's keys on its layers, keep its Points / Shapes layers out of
        their edit modes, and give the selection back to the image when one of them has
        it (napari selects a layer when it is added) or ``select_image``."""
        for layer in self._layers():
            for key, action in self.keys.items():
                layer.bind_key(key, lambda _layer, a=action: a(), overwrite=True)
            if _info(layer).get("map") in _MARKINGS and getattr(layer, "mode", "") not in (
                    "pan_zoom", ""):
                layer.mode = "pan_zoom"
        active = self.viewer.layers.selection.active
        image = self.viewer.layers[PREFIX] if PREFIX in self.viewer.layers else None
        if image is not None and active is not image and (
                select_image or active is None or _info(active).get("map") in _MARKINGS):
            self.viewer.layers.selection.active = image

    def _apply_pending(self, event: Any) -> None:
        """A hidden map layer was made visible: give it the current image's data (one
        that only holds another image's data goes back to hidden)."""
        layer = event.source
        if not layer.visible:
            return
        if getattr(layer, "name", "") in self.stale:
            layer.visible = False
            return
        pending = self._pending.pop(getattr(layer, "name", ""), None)
        if pending is not None:
            _layers.add_or_update(self.viewer, [pending])


def alarm_label(result: Any) -> list[str]:
    """``[label]`` of the lesion label with the highest prediction maximum (none without
    maps): what a reader checks on an image without findings."""
    if result is None:
        return []
    labels = lesion_labels(result.labels)
    return [max(labels, key=lambda lab: result.peak("prediction", lab)[0])] if labels else []


def maxima_layer(verdicts: list[Any], scale: tuple[float, ...]) -> Any:
    """Points at each (label, map) maximum, ringed by the automatic verdict of its map.

    One point per (label, map): the two prediction rules share a location, and the ring
    follows the map's first rule (prediction ≥ 25 %, correlation > 0). Discs are prediction
    maxima, diamonds correlation maxima, filled with the label's box colour. Coordinates
    are image pixels (pixel-centre convention), shown with the image layer's scale.
    """
    first: dict[tuple[str, str], Any] = {}
    order = [r.name for r in RULES]
    for v in sorted(verdicts, key=lambda v: order.index(v.rule) if v.rule in order else 99):
        first.setdefault((v.label, v.map), v)
    chosen = list(first.values())
    data = np.array([[v.row, v.col] for v in chosen], dtype=float).reshape(-1, 2)
    features = {"label": [v.label for v in chosen], "map": [v.map for v in chosen],
                "value": [round(v.value, 3) for v in chosen],
                "verdict": ["hit" if v.hit else "miss" for v in chosen]}
    kwargs = {
        "name": f"maxima{_layers.SEP}{PREFIX}",
        "scale": tuple(scale),
        "features": features,
        "symbol": ["disc" if v.map == "prediction" else "diamond" for v in chosen] or "disc",
        "face_color": [_layers.label_colour(v.label) for v in chosen] or "white",
        "border_color": ["#30e030" if v.hit else "#ff3030" for v in chosen] or "white",
        "border_width": 0.25,
        "size": 24,
        "text": {"string": "{map} {value:.2f}", "anchor": "upper_left", "color": "white",
                 "size": 9},
        "metadata": {"correlax": {"image": PREFIX, "map": "maxima"}},
    }
    return (data, kwargs, "points")


def put_boxes(viewer: Any, layer_data: Any) -> None:
    """Create the ground-truth Shapes layer, or replace its rectangles in place."""
    data, kwargs, _ = layer_data
    name = kwargs["name"]
    if name not in viewer.layers:
        viewer.add_shapes(data, **kwargs)
        return
    layer = viewer.layers[name]
    layer.visible = True
    layer.scale = kwargs["scale"]
    layer.data = []
    if data:
        layer.add(data, shape_type="rectangle", edge_color=kwargs["edge_color"],
                  edge_width=kwargs["edge_width"], face_color="transparent")
    layer.features = kwargs["features"]


def put_points(viewer: Any, layer_data: Any) -> None:
    """Create the maxima Points layer, or replace its points in place."""
    data, kwargs, _ = layer_data
    name = kwargs["name"]
    if name not in viewer.layers:
        viewer.add_points(data, **kwargs)
        return
    layer = viewer.layers[name]
    layer.visible = True  # napari re-slices a hidden layer late: its text would lag
    layer.scale = kwargs["scale"]
    layer.data = data  # an empty layer keeps its (empty) feature columns: setting them
    if len(data):      # again would make napari redraw the text of points now gone
        layer.features = kwargs["features"]
        layer.face_color = kwargs["face_color"]
        layer.border_color = kwargs["border_color"]
        layer.symbol = kwargs["symbol"]
