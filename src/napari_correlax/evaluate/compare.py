"""``correlax compare``: several map methods scored the same way on one split (docs/method.md §10).

For every method and lesion label: the pointing game on the method's *scored map*
(:attr:`~napari_correlax.maps.methods.MapMethod.scored`: CorRELAX's correlation map
(> 0), a CAM's saliency map (its maximum within 48 px of a box, whatever the value), the
prediction map (≥ 0.25)), and the FROC of that map (threshold → connected components →
boxes, IoU > 0.3; saliency maps scaled to [0, 1] per image,
:mod:`~napari_correlax.evaluate.detection`).

Maps are cached per image and method under ``OUT/cache/<key>/`` with the same keys as
``correlax evaluate`` and the test-set reader, so a run resumes where it stopped and the
reader opens the maps at once. Under ``torchrun`` the images are shared among the
processes (every method of an image on the same rank, the image read once); rank 0 writes

``compare.csv``
    long form, one row per method × label: ``method, label, support, hits, rate`` (rate
    in 0–1, blank without support), then the FROC operating point.
``compare.md``
    one row per method, one column per label (the papers' layout), then the TPR@FPPI
    table.
``times.csv``
    seconds per image of each method (mean over the images it computed in this folder).
``froc.csv`` / ``froc.png``
    every FROC point, and one panel per label with a curve per method.
``pointing-verdicts.csv``
    every image's automatic verdicts of every method (rows keyed by each method's cache
    key, the columns of the test-set reader's ``verdicts.csv``).
``compare.json``
    the settings, keys, images and timings.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..distributed import join
from ..errors import CorrelaxError
from ..files import atomic_write_text
from ..maps.cache import ResultCache, image_maps_steps, model_fingerprint, settings_key
from ..maps.methods import get_method
from ..maps.runtime import Progress
from ..maps.settings import MapSettings
from .pointing import (
    lesion_labels,
    normal_verdicts,
    pointing_table,
    pointing_verdicts,
    rules_for,
)
from .report import Table

__all__ = ["CompareConfig", "CompareReport", "compare", "compare_steps", "method_settings"]


@dataclass
class CompareConfig:
    """One ``correlax compare`` run: data folder, output folder, methods and settings.

    ``settings`` holds the shared map settings (stride, masks, …; its ``method`` is
    replaced by each method in turn); ``options`` are method options (``mode`` of the
    CAM methods, …) given to every method.
    """

    data: str | os.PathLike[str]
    out: str | os.PathLike[str]
    methods: Sequence[str]
    model: str | os.PathLike[str] | None = None
    split: str = "test"
    settings: MapSettings = field(default_factory=MapSettings)
    options: dict[str, Any] = field(default_factory=dict)
    limit: int | None = None
    timeout_hours: float = 24.0


@dataclass
class CompareReport:
    """What rank 0 wrote."""

    out: Path
    methods: list[str]
    images: int
    failed: dict[str, str]
    tables: dict[str, Table]
    files: list[Path]
    seconds_per_image: dict[str, float]


def method_settings(settings: MapSettings, method: str, options: dict[str, Any]) -> MapSettings:
    """``settings`` for ``method``, with the options that method knows of."""
    spec = get_method(method)
    known = {k: v for k, v in options.items() if k in spec.options}
    return settings.with_(method=spec.name, options=known)


def compare_steps(config: CompareConfig) -> Generator[Progress, None, CompareReport | None]:
    """Compute (or read from the cache) every method's maps of every image, then score
    them; yields ``Progress("image", done, total)`` for this rank. Returns the report on
    rank 0, None elsewhere.

    Raises:
        CorrelaxError: an unknown method, an empty split, or a checkpoint that cannot
            be read.
    """
    from ..io import read_mammogram
    from ..io.vindr import load_vindr
    from ..maps.sliding import drain
    from ..models import load_classifier
    from ..preprocess import preprocessing_of

    t_start = time.perf_counter()
    methods = list(dict.fromkeys(get_method(m).name for m in config.methods))
    if not methods:
        raise CorrelaxError("name at least one map method to compare")
    data = Path(config.data).expanduser()
    out = Path(config.out).expanduser()
    index = load_vindr(data)
    missing = {str(p) for p in index.missing}
    records = [r for r in index.split(config.split) if str(r.path) not in missing]
    if config.limit is not None:
        records = records[: max(int(config.limit), 0)]
    if not records:
        raise CorrelaxError(f"split {config.split!r} has no image files", data)

    group = join(config.settings.device, gpu_backend=False, timeout_hours=config.timeout_hours)
    try:
        base = config.settings.with_(device=group.device)
        model = load_classifier(config.model, device=base.runtime().device)
        caches = {}
        for name in methods:
            settings = method_settings(base, name, config.options)
            key = settings_key(model, settings)
            caches[name] = (settings, ResultCache(out / "cache", key, {
                "model": getattr(model, "checkpoint_path", None),
                "fingerprint": model_fingerprint(model)[1],
                "settings": settings.as_dict(), "labels": list(model.labels)}))
            if group.rank == 0:
                caches[name][1].describe()
        voi = preprocessing_of(model).voi_lut
        mine = records[group.rank :: group.world_size]
        yield Progress("image", 0, len(mine))
        for done, record in enumerate(mine, start=1):
            todo = [m for m in methods if not caches[m][1].is_done(record.image_id)]
            if todo:
                try:
                    mammogram = read_mammogram(record.path, voi_lut=voi)
                    error = None
                except CorrelaxError as exc:
                    mammogram, error = None, str(exc)
                for name in todo:
                    settings, cache = caches[name]
                    doc: dict[str, Any] = {"image_id": record.image_id, "error": error}
                    if mammogram is not None:
                        t0 = time.perf_counter()
                        try:
                            drain(image_maps_steps(mammogram, record.image_id, model,
                                                   settings, cache))
                        except CorrelaxError as exc:
                            doc["error"] = str(exc)
                        doc["seconds"] = {"maps": round(time.perf_counter() - t0, 3)}
                    cache.save_info(record.image_id, doc)
            yield Progress("image", done, len(mine))
        group.barrier()
        if group.rank != 0:
            return None
        return _merge(config, out, records, methods, caches, list(model.labels),
                      model_fingerprint(model)[0], time.perf_counter() - t_start)
    finally:
        group.close()


def _merge(config: CompareConfig, out: Path, records: list[Any], methods: list[str],
           caches: dict[str, tuple[MapSettings, ResultCache]], labels: list[str],
           model_name: str, seconds: float) -> CompareReport:
    from .detection import GridMap, froc_curve, operating_point
    from .verdicts import VerdictStore

    lesions = lesion_labels(labels)
    store = VerdictStore(out / "pointing-verdicts.csv", load=False)
    failed: dict[str, str] = {}
    pointing: dict[str, Any] = {}
    curves: dict[tuple[str, str], list[Any]] = {}
    timing: dict[str, float] = {}
    for name in methods:
        cache = caches[name][1]
        scored = get_method(name).scored
        rules = rules_for((scored,))[:1]
        verdicts, results, times = [], [], []
        for record in records:
            info = cache.load_info(record.image_id) or {}
            result = cache.load_maps(record.image_id) if not info.get("error") else None
            if result is None or result.get(scored) is None:
                failed[record.image_id] = info.get("error") or f"no {name} maps"
                continue
            times.append(float((info.get("seconds") or {}).get("maps", 0.0)))
            found = pointing_verdicts(result, record.boxes, record.image_id, rules=rules)
            verdicts += found
            results.append((record, result))
            store.add_automatic(
                found if lesion_labels(record.labels) else
                normal_verdicts(result, record.image_id, rules=rules),
                study_id=record.study_id, split=record.split, model=model_name,
                settings=cache.key, save=False)
        pointing[name] = (pointing_table(verdicts, labels, rules), rules[0].name)
        timing[name] = float(np.mean(times)) if times else float("nan")
        for label in lesions:
            maps = [GridMap.from_result(res, scored, label) for _, res in results]
            truth = [[b.corners for b in rec.boxes if b.label == label] for rec, _ in results]
            if any(truth):
                curves[(name, label)] = froc_curve(maps, truth)

    shown = [lab for lab in lesions if any(p.support(lab) for p, _ in pointing.values())]
    long = Table("Pointing game and detection per method and label",
                 ["method", "label", "support", "hits", "rate", "map", "tpr", "fppi"])
    wide = Table("Pointing game accuracy per method", ["Method", *shown, "Mean (by support)"])
    froc = Table("Detection: TPR@FPPI at the highest TPR (IoU > 0.3)", ["Method", *shown])
    for name in methods:
        table, rule = pointing[name]
        row: list[Any] = [name]
        for label in lesions:
            n = table.support(label)
            hits = table.hits.get((label, rule), 0)
            point = operating_point(curves.get((name, label), []))
            long.rows.append([name, label, n, hits, hits / n if n else None, rule,
                              point.tpr if point else None, point.fppi if point else None])
        row += [table.accuracy(label, rule) for label in shown]
        wide.rows.append([*row, table.weighted_mean(rule)])
        froc.rows.append([name, *[_point_text(operating_point(curves.get((name, lab), [])))
                                  for lab in shown]])
    wide.notes.append("A hit: the scored map's maximum within 48 px of a box of the label "
                      "(prediction maps also ≥ 0.25, correlation maps > 0; saliency maps "
                      "whatever the value).")
    times = Table("Seconds per image", ["Method", "Seconds per image"],
                  rows=[[name, timing[name]] for name in methods], digits=2)
    files: list[Path] = []
    out.mkdir(parents=True, exist_ok=True)
    files.append(atomic_write_text(out / "compare.csv", long.to_csv()))
    files.append(atomic_write_text(out / "compare.md", "\n".join(
        t.to_markdown() for t in (wide, froc))))
    files.append(atomic_write_text(out / "times.csv", times.to_csv()))
    files.append(store.save())
    rows = ["method,label,threshold,tpr,fppi,found,boxes,false_positives,images"]
    for (name, label), curve in curves.items():
        rows += [f'{name},"{label}",{p.threshold:.4f},{p.tpr:.6f},{p.fppi:.6f},{p.found},'
                 f"{p.boxes},{p.false_positives},{p.images}" for p in curve]
    files.append(atomic_write_text(out / "froc.csv", "\n".join(rows) + "\n"))
    if curves:
        files.append(_plot(curves, out / "froc.png"))
    doc = {"data": str(config.data), "split": config.split, "methods": methods,
           "keys": {m: caches[m][1].key for m in methods},
           "settings": {m: caches[m][0].as_dict() for m in methods},
           "images": len(records), "failed": failed, "seconds_per_image": timing,
           "seconds": round(seconds, 1)}
    files.append(atomic_write_text(out / "compare.json", json.dumps(doc, indent=2) + "\n"))
    return CompareReport(out, methods, len(records), failed,
                         {"pointing": wide, "detection": froc, "times": times, "long": long},
                         files, timing)


def _point_text(point: Any) -> str:
    from .detection import operating_point_text

    return operating_point_text(point)


def _plot(curves: dict[tuple[str, str], list[Any]], path: Path) -> Path:
    """One FROC panel per label, a curve per method (TPR against FPPI)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..files import atomic_write

    labels = list(dict.fromkeys(label for _, label in curves))
    fig, axes = plt.subplots(1, len(labels), figsize=(4.5 * len(labels), 4), squeeze=False)
    for ax, label in zip(axes[0], labels):
        for (name, lab), curve in curves.items():
            if lab == label:
                pts = sorted(curve, key=lambda p: p.fppi)
                ax.plot([p.fppi for p in pts], [p.tpr for p in pts], marker=".", label=name)
        ax.set(title=label, xlabel="false positives per image", ylabel="TPR", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write(path, lambda fh: fh.write(buf.getvalue()))


def compare(config: CompareConfig) -> CompareReport | None:
    """:func:`compare_steps` without progress."""
    from ..maps.sliding import drain

    return drain(compare_steps(config))
