"""Comparing map methods of one label on one image, in the analysis dock.

Each method run on an image leaves its map layers (CorRELAX's correlation, each CAM's
saliency, the prediction). :class:`MethodComparison` finds the ones of a label (one per
method: the map ``correlax compare`` scores, plus the prediction) and

- **flips** through them (key N): one visible at a time over the image, the others
  hidden, the one shown selected (its colour bar and meaning in the dock);
- shows them **side by side** in napari's grid mode: every map over its own view of the
  mammogram (image layers sharing the image's pixels, not copies) with the ground-truth
  boxes, all with one camera, so panning and zooming stay linked. Each panel is titled
  with its method, label and colour range (the view's name, shown in its corner) and
  has its map's colour bar. Leaving the grid removes those views and puts the layers'
  order, visibility and colour bars back.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..maps.kinds import kind as map_kind
from ..maps.methods import METHODS
from . import _layers

__all__ = ["MethodComparison", "describe_panels", "grid_of", "method_layers", "panel_title"]

#: Metadata ``map`` of the image views made for the grid.
VIEW = "comparison view"


def grid_of(viewer: Any) -> Any:
    """The viewer's grid settings (``viewer.canvas.grid`` since napari 0.9, ``viewer.grid``
    before)."""
    canvas = getattr(viewer, "canvas", None)
    return canvas.grid if canvas is not None and hasattr(canvas, "grid") else viewer.grid


def _info(layer: Any) -> dict[str, Any]:
    return (getattr(layer, "metadata", None) or {}).get("correlax") or {}


def method_layers(viewer: Any, image_name: str, label: str) -> list[Any]:
    """The map layers of ``label`` over ``image_name``, one per method, in the order of
    the method registry (the prediction map last)."""
    found: dict[str, Any] = {}
    for layer in viewer.layers:
        info = _info(layer)
        if info.get("image") != image_name or info.get("label") != label:
            continue
        method, kind = str(info.get("method") or ""), info.get("map")
        if method in METHODS and kind == METHODS[method].scored:
            found.setdefault(method, layer)
        elif kind == "prediction":
            found.setdefault("prediction", layer)
    order = [m for m in METHODS if m != "prediction"] + ["prediction"]
    return [found[m] for m in order if m in found]


class MethodComparison:
    """Flip through, or lay side by side, the methods' maps of one label (module docstring)."""

    def __init__(self, viewer: Any) -> None:
        self.viewer = viewer
        self._saved: tuple[list[str], dict[str, bool], dict[str, bool]] | None = None
        self._views: list[str] = []

    @property
    def side_by_side(self) -> bool:
        """True while the grid comparison is shown."""
        return self._saved is not None

    def flip(self, image_name: str, label: str, step: int = 1) -> str:
        """Show the next (``step`` = 1) or previous method's map of ``label``, hiding the
        others; the name of the layer shown ("" when there is none)."""
        layers = method_layers(self.viewer, image_name, label)
        if not layers:
            return ""
        shown = [k for k, layer in enumerate(layers) if layer.visible]
        k = (shown[0] + step) % len(layers) if shown else 0
        for j, layer in enumerate(layers):
            layer.visible = j == k
        self.viewer.layers.selection.active = layers[k]
        return str(layers[k].name)

    def show_side_by_side(self, image_name: str, label: str) -> list[str]:
        """Lay the methods' maps of ``label`` side by side, each over its own view of the
        image with the boxes (napari grid mode, one camera), titled and with its colour
        bar; the names of the maps shown."""
        self.leave()
        layers = self.viewer.layers
        maps = method_layers(self.viewer, image_name, label)
        if image_name not in layers or not maps:
            return []
        image = layers[image_name]
        boxes_name = _layers.boxes_layer_name(image_name)
        boxes = layers[boxes_name] if boxes_name in layers else None
        self._saved = ([str(x.name) for x in layers], {str(x.name): x.visible for x in layers},
                       {str(x.name): x.colorbar.visible for x in layers
                        if hasattr(x, "colorbar")})
        for layer in layers:
            layer.visible = False
        stride = 3 if boxes is not None else 2
        for k, layer in enumerate(maps):
            view = self.viewer.add_image(
                image.data, name=panel_title(layer), scale=image.scale,
                translate=image.translate, colormap=image.colormap,
                contrast_limits=image.contrast_limits,
                metadata={"correlax": {"image": image_name, "map": VIEW}})
            view.name_overlay.visible = True
            panel = [view, layer]
            if boxes is not None:
                panel.append(self.viewer.add_shapes(
                    [np.asarray(d) for d in boxes.data], shape_type="rectangle",
                    name=f"{view.name}{_layers.SEP}boxes", scale=boxes.scale,
                    translate=boxes.translate, edge_width=boxes.edge_width[0] if len(
                        boxes.edge_width) else 2.0, edge_color=boxes.edge_color,
                    face_color="transparent", metadata={"correlax": {"map": VIEW}}))
            self._views += [str(x.name) for x in panel if x is not layer]
            # panel k = layers stride·k … stride·k + stride − 1 at the bottom of the list
            for j, x in enumerate(panel):
                layers.move(layers.index(x), stride * k + j)
                x.visible = True
            layer.colorbar.visible = True
        grid = grid_of(self.viewer)
        grid.stride = stride
        grid.shape = (-1, -1)
        grid.enabled = True
        self.viewer.reset_view()
        layers.selection.active = maps[0]
        return [str(m.name) for m in maps]

    def leave(self) -> None:
        """Back to one view: remove the image views, restore order, visibility and
        colour bars."""
        if self._saved is None:
            return
        order, visible, colorbars = self._saved
        self._saved = None
        grid = grid_of(self.viewer)
        grid.enabled = False
        grid.stride = 1
        layers = self.viewer.layers
        for name in self._views:
            if name in layers:
                layers.remove(name)
        self._views = []
        present = [name for name in order if name in layers]
        for k, name in enumerate(present):
            layers.move(layers.index(name), k)
        for name in present:
            layers[name].visible = visible[name]
            if name in colorbars:
                layers[name].colorbar.visible = colorbars[name]
        self.viewer.reset_view()


def panel_title(layer: Any) -> str:
    """``"CorRELAX · Mass · corr -1…1"``, ``"Grad-CAM · Mass · 0…0.074"``: the method,
    label, kind and colour range of a map layer, as the title of its side-by-side
    panel."""
    info = _info(layer)
    method, kind = str(info.get("method") or ""), str(info.get("map") or "")
    shown = "Prediction" if kind == "prediction" or method not in METHODS else \
        METHODS[method].title
    lo, hi = (float(v) for v in layer.contrast_limits)
    scale = f"{lo:.2g}…{hi:.2g}"
    if not map_kind(kind).by_method:  # a saliency map is named by its method already
        scale = f"{_layers.kind_title(kind)} {scale}"
    return _layers.SEP.join([shown, str(info.get("label") or ""), scale])


def describe_panels(layers: list[Any]) -> str:
    """One line per kind of map shown side by side (:func:`~._layers.meaning`)."""
    lines: dict[str, str] = {}
    for layer in layers:
        info = _info(layer)
        key = f"{info.get('map')}:{info.get('method')}"
        lines.setdefault(key, _layers.meaning(layer))
    return "\n".join(line for line in lines.values() if line)


def target(dock: Any) -> tuple[str, str]:
    """The image and label to compare in the analysis dock: those of the selected map
    layer, else the dock's image and its first shown label."""
    info = _info(dock.viewer.layers.selection.active)
    if info.get("label") and info.get("image"):
        return str(info["image"]), str(info["label"])
    labels = dock.chosen_labels()
    return dock.image_combo.currentText(), (labels[0] if labels else "")


def flip(dock: Any) -> None:
    """Key N / button: the next method's map of the target label."""
    image, label = target(dock)
    if not dock.comparison.flip(image, label):
        dock.status.setText(f"No maps of {label or 'a label'} over {image or 'an image'} yet: "
                            "run one or more methods first.")


def toggle_side_by_side(dock: Any) -> None:
    """Button: the methods' maps of the target label side by side, or back."""
    if dock.comparison.side_by_side:
        dock.comparison.leave()
        return
    image, label = target(dock)
    shown = dock.comparison.show_side_by_side(image, label)
    if not shown:
        dock.status.setText(f"No maps of {label or 'a label'} over {image or 'an image'} to "
                            "compare yet.")
        return
    dock.help.setText(describe_panels([dock.viewer.layers[name] for name in shown]))
