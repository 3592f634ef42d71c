"""GMIC's extras in the analysis dock: the K patches it retrieved, as a Shapes layer with
their attention weights, and its three outputs in one line (docs/method.md §9)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._layers import SEP, LayerData, image_tag

__all__ = ["crops_layer", "outputs_text", "patches_layer", "patches_layer_name"]


def patches_layer_name(image: str) -> str:
    """Name of the Shapes layer of GMIC's patches over an image (its short tag)."""
    return f"GMIC patches{SEP}{image_tag(image)}"


def patches_layer(result: Any, image_name: str, *,
                  image_scale: Sequence[float] = (1.0, 1.0),
                  image_translate: Sequence[float] = (0.0, 0.0)) -> LayerData | None:
    """A Shapes layer of the patches in ``result.meta["gmic"]`` (None without them).

    Each patch is ``{"box": [row, col, height, width], "attention": a}`` with the box in
    original image pixels (pixel edges); the rectangle is drawn on pixel centres (−0.5)
    like the ground-truth boxes, labelled with its retrieval rank and attention weight.
    """
    gmic = (getattr(result, "meta", None) or {}).get("gmic") or {}
    patches = gmic.get("patches") or []
    if not patches:
        return None
    data = []
    for patch in patches:
        r, c, h, w = (float(v) for v in patch["box"])
        data.append(np.array([[r - 0.5, c - 0.5], [r - 0.5, c + w - 0.5],
                              [r + h - 0.5, c + w - 0.5], [r + h - 0.5, c - 0.5]]))
    attention = [float(p["attention"]) for p in patches]
    kwargs: dict[str, Any] = {
        "name": patches_layer_name(image_name),
        "shape_type": "rectangle",
        "scale": tuple(float(v) for v in image_scale),
        "translate": tuple(float(v) for v in image_translate),
        "edge_width": 3.0,
        "edge_color": "#00e5ff",
        "face_color": "transparent",
        "features": {"rank": list(range(1, len(patches) + 1)), "attention": attention},
        "text": {"string": "#{rank} a={attention:.2f}", "anchor": "upper_left",
                 "color": "#00e5ff", "size": 9},
        "metadata": {"correlax": {"image": image_name, "map": "GMIC patches"}},
    }
    return (data, kwargs, "shapes")


def crops_layer(result: Any, pixels: Any, image_name: str, *,
                image_scale: Sequence[float] = (1.0, 1.0),
                image_translate: Sequence[float] = (0.0, 0.0)) -> LayerData | None:
    """The K patches GMIC's local network looked at, side by side in retrieval order, as
    an image layer to the right of the mammogram (a gallery on the same canvas); None
    without patches. Each crop is cut from the image in original pixels
    (:func:`~napari_correlax.gmic.predict.patch_strip`)."""
    from ..gmic.predict import patch_strip

    gmic = (getattr(result, "meta", None) or {}).get("gmic") or {}
    patches = gmic.get("patches") or []
    if not patches or pixels is None:
        return None
    image = np.asarray(pixels)
    boxes = [[r, c, r + h, c + w] for r, c, h, w in (p["box"] for p in patches)]
    strip, _ = patch_strip(image, boxes)
    sy, sx = (float(v) for v in image_scale)
    ty, tx = (float(v) for v in image_translate)
    return (strip, {
        "name": f"GMIC crops{SEP}{image_tag(image_name)}",
        "colormap": "gray", "scale": (sy, sx), "visible": True,
        "translate": (ty, tx + sx * (image.shape[1] + 32)),
        "metadata": {"correlax": {"image": image_name, "map": "GMIC crops"}},
    }, "image")


def outputs_text(result: Any) -> str:
    """``"GMIC Mass: global 0.71 · local 0.64 · fusion 0.69"`` ("" without GMIC outputs)."""
    gmic = (getattr(result, "meta", None) or {}).get("gmic") or {}
    if not gmic.get("y_fusion"):
        return ""
    classes = gmic.get("classes") or list(getattr(result, "labels", []))
    parts = [f"{name}: global {g:.2f} · local {lo:.2f} · fusion {f:.2f}"
             for name, g, lo, f in zip(classes, gmic["y_global"], gmic["y_local"],
                                       gmic["y_fusion"])]
    picked = gmic.get("retrieval_cam")
    return "GMIC " + "; ".join(parts) + (f" · patches by {picked}" if picked else "")
