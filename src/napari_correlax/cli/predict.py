"""``correlax predict IMAGE... --out DIR``: sliding-window prediction maps (docs/method.md §6)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..files import atomic_write_text
from .common import (
    Subparsers,
    add_image_options,
    add_map_options,
    add_runtime_options,
    map_images,
)

if TYPE_CHECKING:
    from ..io.image import Mammogram
    from ..maps.result import MapResult


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "predict",
        help="per-label prediction maps for mammograms",
        description="Run the classifier over the breast in sliding windows. Per image writes "
        "<name>.npz (maps + geometry), <name>.png (maps over the image) and <name>.json "
        "(summary: peaks, timings).",
    )
    add_image_options(p)
    p.add_argument("--labels", nargs="*", default=None, help="labels drawn in the PNG (all)")
    add_map_options(p, correlax=False, seed=False)
    add_runtime_options(p)
    p.set_defaults(func=run)


def summary(image_path: Path, mammo: Mammogram, result: MapResult,
            extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """JSON-able per-image summary: geometry, per-label peaks, timings."""
    peaks = {}
    for lab in result.labels:
        value, (row, col) = result.peak("prediction", lab)
        peaks[lab] = {"max": round(value, 6), "row": row, "col": col}
    doc = {
        "image": str(image_path),
        "image_shape": list(result.image_shape),
        "spacing_mm": list(result.spacing_mm) if result.spacing_mm else None,
        "window": result.window,
        "stride": result.stride,
        "origin": list(result.origin),
        "grid_shape": list(result.grid.shape),
        "labels": result.labels,
        "prediction_peaks": peaks,
        "meta": result.meta,
        "stats": result.stats.as_dict(),
    }
    doc.update(extra or {})
    return doc


def figure_notes(image_path: Path, model: str | None) -> dict[str, Any]:
    """``title``, ``warning`` and ``boxes`` of an image's PNG figure: the image's file
    name and the model's; the demo-model warning when the model was trained on phantoms
    only; the ground-truth boxes of a VinDr ``finding_annotations.csv`` beside the image
    (none when there is none, or the CSV cannot be read: the figure is still written)."""
    from ..errors import CorrelaxError
    from ..figures import PHANTOM_WARNING
    from ..io.vindr import boxes_for_image
    from ..models.checkpoint import model_summary

    summary = model_summary(model)
    try:
        boxes = boxes_for_image(image_path)
    except CorrelaxError:
        boxes = []
    return {"title": f"{Path(image_path).name} · model: {summary.name}",
            "warning": PHANTOM_WARNING if summary.phantoms_only else "", "boxes": boxes}


def run(args: argparse.Namespace) -> int:
    from ..figures import save_overlay

    def write(path: Path, mammo: Mammogram, result: MapResult, stem: Path) -> None:
        result.save(stem.with_suffix(".npz"))
        save_overlay(stem.with_suffix(".png"), mammo.pixels, result, labels=args.labels,
                     **figure_notes(path, args.model))
        doc = summary(path, mammo, result)
        atomic_write_text(stem.with_suffix(".json"), json.dumps(doc, indent=2, default=str))
        print(f"{path}: {result.stats.windows_evaluated} windows in "
              f"{result.stats.seconds_total} s -> {stem}.npz")

    return map_images(args, "prediction", "predict", write)
