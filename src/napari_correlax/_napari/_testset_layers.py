"""The layers of the test-set reader: the image, its maps, boxes and map maxima.

Layers are named ``"test set · …"`` and updated in place from one image to the next:
adding and removing napari layers costs far more than the maps.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..evaluate.pointing import RULES
from ..labels import lesion_labels
from ..preprocess import breast_roi
from . import _layers

PREFIX = "test set"
_PER_LABEL = ("prediction", "correlation", "saliency")
_SHOWN = ("distance", *_PER_LABEL)


class ReviewLayers:
    """Draws a loaded image of the review into a viewer (see :meth:`draw`)."""

    def __init__(self, viewer: Any) -> None:
        self.viewer = viewer
        self._pending: dict[str, Any] = {}
        self._findings: list[str] = []
        self._kinds: set[str] = {"correlation", "saliency"}
        self._method = ""

    def draw(self, loaded: Any, verdicts: list[Any], follow: bool) -> None:
        """Show the image, its maps, boxes and maxima, updating same-named layers in place.

        ``loaded.result`` may be None (the image alone, before its maps) or hold only
        prediction maps (a preview): what it has is drawn.

        The prediction and correlation maps of every lesion label are shown (the result
        has them all; product and masks-used maps are left to the analysis dock) plus the
        distance map. A hidden map layer gets its new data only when it is made visible.
        With ``follow``, the map kinds the reader had visible for the previous image's
        findings are shown for this image's findings and the other labels' maps are
        hidden. Layers are scaled to millimetres when the pixel spacing is known.
        """
        viewer = self.viewer
        record, result = loaded.record, loaded.result
        scale = tuple(loaded.spacing_mm or (1.0, 1.0))
        old = viewer.layers[PREFIX] if PREFIX in viewer.layers else None
        reset = old is None or old.data.shape != loaded.pixels.shape
        kinds = self._visible_kinds()
        if result is not None and result.stats.method:
            self._method = result.stats.method
        findings = lesion_labels(record.labels) or alarm_label(result)
        image = (loaded.pixels, {"name": PREFIX, "scale": scale, "translate": (0.0, 0.0),
                                 "colormap": "gray", "contrast_limits": (0.0, 1.0),
                                 "metadata": {"path": str(record.path),
                                              "image_id": record.image_id,
                                              "spacing_mm": loaded.spacing_mm}}, "image")
        _layers.add_or_update(viewer, [image])
        maps = [] if result is None else [
            m for m in _layers.result_layers(result, PREFIX, lesion_labels(result.labels),
                                             image_scale=scale,
                                             breast=breast_roi(loaded.pixels).mask)
            if m[1]["metadata"]["correlax"]["map"] in _SHOWN]
        for data, kwargs, kind in maps:
            name = kwargs["name"]
            info = kwargs["metadata"]["correlax"]
            if follow:
                kwargs["visible"] = (info["map"] == "distance" and "distance" in kinds) or (
                    info["label"] in findings and info["map"] in kinds)
            layer = viewer.layers[name] if name in viewer.layers else None
            show = kwargs["visible"] if follow or layer is None else layer.visible
            if layer is not None and not show:
                self._pending[name] = (data, kwargs, kind)
                layer.visible = False
                continue
            self._pending.pop(name, None)
            (made,) = _layers.add_or_update(viewer, [(data, kwargs, kind)])
            made.visible = show
            if layer is None:
                made.events.visible.connect(self._apply_pending)
        put_boxes(viewer, _layers.boxes_layer(record.boxes, PREFIX, image_scale=scale,
                                              image_shape=loaded.pixels.shape))
        put_points(viewer, maxima_layer(verdicts, scale))
        self._findings = findings
        if viewer.layers.selection.active is not viewer.layers[PREFIX]:
            viewer.layers.selection.active = viewer.layers[PREFIX]
        if reset:
            viewer.reset_view()

    @property
    def labels(self) -> list[str]:
        """The labels whose maps are shown: the image's findings (a normal image: the
        lesion label with the highest prediction, where a false alarm would be)."""
        return list(self._findings)

    def draw_marks(self, rows: list[Any], record: Any) -> None:
        """Show the false positives the reader marked (``rows``: mark rows of ``record``)."""
        if PREFIX not in self.viewer.layers:
            return
        data = np.array([[r.max_row, r.max_col] for r in rows], dtype=float).reshape(-1, 2)
        kwargs = {"name": f"false positives{_layers.SEP}{PREFIX}", "symbol": "x",
                  "scale": tuple(self.viewer.layers[PREFIX].scale), "size": 28,
                  "face_color": "#ff3030", "border_color": "#ff3030",
                  "features": {"label": [r.label for r in rows], "map": [r.kind for r in rows]},
                  "metadata": {"correlax": {"image": PREFIX, "map": "marks"}}}
        put_points(self.viewer, (data, kwargs, "points"))

    def _apply_pending(self, event: Any) -> None:
        """A hidden map layer was made visible: give it the current image's data."""
        layer = event.source
        pending = self._pending.pop(getattr(layer, "name", ""), None)
        if pending is not None and layer.visible:
            _layers.add_or_update(self.viewer, [pending])

    def show_kind(self, kind: str) -> None:
        """Show one map kind (``prediction``, ``correlation`` or ``distance``) for the
        current image's findings, hiding the other kinds: one key flips between them."""
        self._kinds = {kind}
        for layer in self.viewer.layers:
            info = (layer.metadata or {}).get("correlax") or {}
            if layer.name.endswith(f"{_layers.SEP}{PREFIX}") and info.get("map") in _SHOWN:
                layer.visible = info["map"] == kind and (
                    kind == "distance" or info.get("label") in self._findings)

    def _visible_kinds(self) -> set[str]:
        """Map kinds visible for the previous image's findings (first image: correlation)."""
        names = {kind: [_layers.layer_name(PREFIX, kind, lab, self._method)
                        for lab in self._findings] for kind in _PER_LABEL}
        names["distance"] = [_layers.layer_name(PREFIX, "distance")]
        layers = self.viewer.layers
        if any(n in layers for group in names.values() for n in group):
            self._kinds = {kind for kind, group in names.items()
                           if any(n in layers and layers[n].visible for n in group)}
        return self._kinds


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
    layer.scale = kwargs["scale"]
    layer.data = data
    layer.features = kwargs["features"]
    if len(data):
        layer.face_color = kwargs["face_color"]
        layer.border_color = kwargs["border_color"]
        layer.symbol = kwargs["symbol"]
