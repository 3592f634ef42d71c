"""``correlax explain IMAGE... --out DIR``: CorRELAX maps for mammograms (docs/method.md §7).

Per image writes ``<name>.npz`` (every map + geometry, :meth:`MapResult.save`),
``<name>.png`` (maps over the image) and ``<name>.json`` (peaks, timings, masks used,
windows skipped). With ``--preview DIR`` a first, coarse map (4 × the stride, the mask
floor; :mod:`napari_correlax.maps.coarse`) is written to ``DIR/<name>.npz`` and
``DIR/<name>.png`` as soon as it is made; the final maps are the same as without it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

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

#: Label maps drawn in the PNG when ``--labels`` is not given: the lesion labels with the
#: highest peak prediction, this many.
DEFAULT_PNG_LABELS = 2


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "explain",
        help="CorRELAX maps (correlation, product, distance, relevance) for mammograms",
        description="Run the classifier and CorRELAX over the breast in sliding windows. "
        "Per image writes <name>.npz (maps + geometry), <name>.png (maps over the image) "
        "and <name>.json (peaks, timings, masks used, windows skipped).",
    )
    add_image_options(p)
    p.add_argument("--labels", nargs="*", default=None,
                   help="labels drawn in the PNG (default: the two lesion labels with the "
                   "highest predictions)")
    p.add_argument("--preview", type=Path, default=None, metavar="DIR",
                   help="first write a coarse map (4x the stride, the mask floor) of each "
                   "image to DIR (<name>.npz, <name>.png), then refine to the final map")
    add_map_options(p)
    add_runtime_options(p)
    p.set_defaults(func=run)


def png_labels(result: MapResult, requested: list[str] | None) -> list[str]:
    """Labels drawn in the PNG: ``requested``, else the top lesion labels by peak."""
    if requested:
        for lab in requested:
            result.label_index(lab)
        return list(requested)
    from ..labels import lesion_labels

    lesions = lesion_labels(result.labels) or list(result.labels)
    peaks = {lab: result.peak("prediction", lab)[0] for lab in lesions}
    return sorted(lesions, key=lambda lab: -peaks[lab])[:DEFAULT_PNG_LABELS]


def explain_summary(path: Path, mammo: Mammogram, result: MapResult) -> dict[str, Any]:
    """JSON document for one image: geometry, peaks, timings, masks and windows."""
    from .predict import summary

    stats = result.stats
    assert result.masks_used is not None  # CorRELAX results always count their masks
    evaluated = result.window_mask
    used = result.masks_used[evaluated]
    corr_peaks = {}
    for lab in result.labels:
        value, (row, col) = result.peak("correlation", lab)
        corr_peaks[lab] = {"max": round(value, 6), "row": row, "col": col}
    extra = {
        "correlation_peaks": corr_peaks,
        "timings_s": {**stats.seconds, "total": stats.seconds_total},
        "masks": {
            "total": int(result.masks_used.sum()),
            "mean": float(used.mean()) if used.size else 0.0,
            "mean_focus": stats.masks_mean_focus,
            "min": int(used.min()) if used.size else 0,
            "max": int(used.max()) if used.size else 0,
            "per_second": stats.masked_passes_per_second,
            "histogram": {
                str(int(k)): int(v) for k, v in zip(*np.unique(used, return_counts=True))
            },
        },
        "windows": {
            "total": stats.windows_total,
            "evaluated": stats.windows_evaluated,
            "skipped_tissue": stats.windows_skipped,
            "focus": stats.windows_focus,
            "minimum_only": stats.windows_minimum,
        },
        "design_factor": {"used": stats.design_factor,
                          "measured": stats.design_factor_measured,
                          "dof": stats.design_factor_dof,
                          "tabled": stats.design_factor_tabled},
        "warnings": list(stats.warnings),
        "settings": {**stats.settings, "masks_max": stats.masks_max,
                     "masks_min": stats.masks_min, "device": stats.device,
                     "precision": stats.precision},
    }
    return summary(path, mammo, result, extra)


def write_preview(out: Path, path: Path, mammo: Mammogram, coarse: MapResult) -> None:
    """The coarse map of ``path``: ``out/<name>.npz`` and ``out/<name>.png``."""
    from ..figures import save_overlay

    out.mkdir(parents=True, exist_ok=True)
    stem = out / path.stem
    coarse.save(stem.with_suffix(".npz"))
    save_overlay(stem.with_suffix(".png"), mammo.pixels, coarse,
                 maps=("prediction", "correlation"), labels=png_labels(coarse, None))
    print(f"{path}: coarse map ({coarse.stride} px stride) -> {stem}.npz")


def run(args: argparse.Namespace) -> int:
    from ..figures import save_overlay
    from .predict import figure_notes

    def write(path: Path, mammo: Mammogram, result: MapResult, stem: Path) -> None:
        labels = png_labels(result, args.labels)
        notes = figure_notes(path, args.model)
        if not args.labels:  # the labels of the image's boxes too, so every box is drawn
            labels += [b.label for b in notes["boxes"]
                       if b.label in result.labels and b.label not in labels]
        result.save(stem.with_suffix(".npz"))
        save_overlay(
            stem.with_suffix(".png"), mammo.pixels, result,
            maps=("prediction", "correlation", "product", "distance", "relevance"),
            labels=labels, **notes,
        )
        doc = explain_summary(path, mammo, result)
        atomic_write_text(stem.with_suffix(".json"), json.dumps(doc, indent=2, default=str))
        st = result.stats
        print(f"{path}: {st.windows_evaluated} windows ({st.windows_focus} in focus), "
              f"{st.masks_total} masked passes in {st.seconds_total} s, {st.design_line} "
              f"-> {stem}.npz")
        for warning in st.warnings:
            print(f"{path}: warning: {warning}", file=sys.stderr)

    preview = None
    if args.preview is not None:
        args.coarse_first = True
        out = args.preview

        def preview(path: Path, mammo: Mammogram, coarse: MapResult) -> None:
            write_preview(out, path, mammo, coarse)

    return map_images(args, "correlax", "explain", write, preview)
