"""``correlax compare``: several map methods scored the same way on one split (docs/method.md §10).

For every method and lesion label: the pointing game on the method's *scored map*
(:attr:`~napari_correlax.maps.methods.MapMethod.scored`: CorRELAX's correlation map
(> 0), a CAM's saliency map (its maximum within 48 px of a box, whatever the value), the
prediction map (≥ 0.25)), and the FROC of that map (threshold → connected components →
boxes, IoU > 0.3; saliency maps scaled to [0, 1] per image,
:mod:`~napari_correlax.evaluate.detection`).

Maps are cached per image and method under ``OUT/cache/<key>/`` with the same keys as
``correlax evaluate`` and the test-set reader, so a run resumes where it stopped and the
reader opens the maps at once. Missing and unreadable image files are found before any
model work and left out (:class:`~.split_run.Excluded`). The run is
:func:`~.split_run.split_steps`: under ``torchrun`` the images are shared among the
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
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

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
from .split_run import Excluded, SplitImages, SplitSource, read_record, split_steps

if TYPE_CHECKING:
    from ..distributed import ProcessGroup
    from ..io.vindr import ImageRecord

__all__ = ["CompareConfig", "CompareReport", "compare", "compare_steps", "method_settings"]


@dataclass
class CompareConfig:
    """One ``correlax compare`` run: data folder, output folder, methods and settings.

    ``settings`` holds the shared map settings (stride, masks, …; its ``method`` is
    replaced by each method in turn); ``options`` are method options (``mode`` of the
    CAM methods, …) given to every method. ``limit`` keeps the first N images of the
    split; ``check`` is the file check before the run (``"quick"``, ``"decode"`` or
    ``"none"``, see :func:`~napari_correlax.io.vindr.check_readable`).
    """

    data: str | os.PathLike[str]
    out: str | os.PathLike[str]
    methods: Sequence[str]
    model: str | os.PathLike[str] | None = None
    split: str = "test"
    settings: MapSettings = field(default_factory=MapSettings)
    options: dict[str, Any] = field(default_factory=dict)
    limit: int | None = None
    check: str = "quick"
    timeout_hours: float = 24.0


@dataclass
class CompareReport:
    """What rank 0 wrote; ``images`` counts the split's images whose file exists."""

    out: Path
    methods: list[str]
    images: int
    missing: list[str]
    failed: dict[str, str]
    tables: dict[str, Table]
    files: list[Path]
    seconds_per_image: dict[str, float]


def method_settings(settings: MapSettings, method: str, options: dict[str, Any]) -> MapSettings:
    """``settings`` for ``method``, with the options that method knows of."""
    spec = get_method(method)
    known = {k: v for k, v in options.items() if k in spec.options}
    return settings.with_(method=spec.name, options=known)


def compare_steps(
    config: CompareConfig,
) -> Generator[Progress | Excluded, None, CompareReport | None]:
    """Compute (or read from the cache) every method's maps of every image, then score
    them; yields ``Progress("check" | "image", done, total)`` for this rank and, before
    any model work, one :class:`~.split_run.Excluded` (the same on every rank). Returns
    the report on rank 0, None elsewhere (:func:`~.split_run.split_steps` runs it).

    Raises:
        CorrelaxError: an unknown method, no data set, an empty split, no usable image,
            or a checkpoint that cannot be read.
    """
    methods = list(dict.fromkeys(get_method(m).name for m in config.methods))
    if not methods:
        raise CorrelaxError("name at least one map method to compare")
    source = SplitSource(config.data, config.split, config.limit, config.check,
                         config.settings.device, config.timeout_hours)
    return (yield from split_steps(source, partial(_CompareJob, config, methods)))


class _CompareJob:
    """The :class:`~.split_run.SplitJob` of ``correlax compare``: every method's maps of
    an image (read once) into the method's cache; the tables from them."""

    def __init__(self, config: CompareConfig, methods: list[str], group: ProcessGroup) -> None:
        from ..models import load_classifier
        from ..preprocess import preprocessing_of

        self.config = config
        self.methods = methods
        self.out = Path(config.out).expanduser()
        base = config.settings.with_(device=group.device)
        self.model = load_classifier(config.model, device=base.runtime().device)
        self.caches: dict[str, tuple[MapSettings, ResultCache]] = {}
        for name in methods:
            settings = method_settings(base, name, config.options)
            self.caches[name] = (settings, ResultCache(
                self.out / "cache", settings_key(self.model, settings), {
                    "model": getattr(self.model, "checkpoint_path", None),
                    "fingerprint": model_fingerprint(self.model)[1],
                    "settings": settings.as_dict(), "labels": list(self.model.labels)}))
        self.voi = preprocessing_of(self.model).voi_lut

    def select(self, present: list[ImageRecord]) -> list[ImageRecord]:
        return present

    def start(self, images: SplitImages, main: bool) -> None:
        if main:
            for _, cache in self.caches.values():
                cache.describe()

    def _todo(self, record: ImageRecord) -> list[str]:
        return [m for m in self.methods if not self.caches[m][1].is_done(record.image_id)]

    def is_done(self, record: ImageRecord) -> bool:
        return not self._todo(record)

    def compute(self, record: ImageRecord) -> None:
        """Each method's maps of one image (read once); errors are recorded, not raised."""
        from ..maps.sliding import drain

        try:
            mammogram, error = read_record(record, voi_lut=self.voi), None
        except CorrelaxError as exc:
            mammogram, error = None, str(exc)
        for name in self._todo(record):
            settings, cache = self.caches[name]
            doc: dict[str, Any] = {"image_id": record.image_id, "error": error}
            if mammogram is not None:
                t0 = time.perf_counter()
                try:
                    drain(image_maps_steps(mammogram, record.image_id, self.model, settings,
                                           cache))
                except CorrelaxError as exc:
                    doc["error"] = str(exc)
                doc["seconds"] = {"maps": round(time.perf_counter() - t0, 3)}
            cache.save_info(record.image_id, doc)

    def merge(self, images: SplitImages) -> CompareReport:
        return _merge(self.config, self.out, images, self.methods, self.caches,
                      list(self.model.labels), model_fingerprint(self.model)[0])


@dataclass
class _Scores:
    """Rank 0's reading of the cache: pointing tables, FROC curves, timings, failures."""

    failed: dict[str, str]
    pointing: dict[str, tuple[Any, str]] = field(default_factory=dict)
    curves: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)


def _score_method(name: str, cache: ResultCache, records: list[Any], labels: list[str],
                  scores: _Scores, store: Any, model_name: str) -> None:
    """Pointing game and FROC of one method's cached maps; its verdicts into ``store``."""
    from .detection import GridMap, froc_curve

    scored = get_method(name).scored
    rules = rules_for((scored,))[:1]
    verdicts, results, times = [], [], []
    for record in records:
        info = cache.load_info(record.image_id) or {}
        result = cache.load_maps(record.image_id) if not info.get("error") else None
        if result is None or result.get(scored) is None:
            scores.failed[record.image_id] = info.get("error") or f"no {name} maps"
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
    scores.pointing[name] = (pointing_table(verdicts, labels, rules), rules[0].name)
    scores.timing[name] = float(np.mean(times)) if times else float("nan")
    for label in lesion_labels(labels):
        maps = [GridMap.from_result(res, scored, label) for _, res in results]
        truth = [[b for b in rec.boxes if b.label == label] for rec, _ in results]
        if any(truth):
            scores.curves[(name, label)] = froc_curve(maps, truth)


def _tables(methods: list[str], labels: list[str], scores: _Scores) -> dict[str, Table]:
    """compare.csv's long table, compare.md's two wide ones, and the timing table."""
    from .detection import operating_point, operating_point_text

    lesions = lesion_labels(labels)
    shown = [lab for lab in lesions if any(p.support(lab) for p, _ in scores.pointing.values())]
    long = Table("Pointing game and detection per method and label",
                 ["method", "label", "support", "hits", "rate", "map", "tpr", "fppi"])
    wide = Table("Pointing game accuracy per method", ["Method", *shown, "Mean (by support)"])
    froc = Table("Detection: TPR@FPPI at the highest TPR (IoU > 0.3)", ["Method", *shown])
    for name in methods:
        table, rule = scores.pointing[name]
        for label in lesions:
            n = table.support(label)
            hits = table.hits.get((label, rule), 0)
            point = operating_point(scores.curves.get((name, label), []))
            long.rows.append([name, label, n, hits, hits / n if n else None, rule,
                              point.tpr if point else None, point.fppi if point else None])
        wide.rows.append([name, *[table.accuracy(label, rule) for label in shown],
                          table.weighted_mean(rule)])
        froc.rows.append([name, *[operating_point_text(operating_point(
            scores.curves.get((name, lab), []))) for lab in shown]])
    wide.notes.append("A hit: the scored map's maximum within 48 px of a box of the label "
                      "(prediction maps also ≥ 0.25, correlation maps > 0; saliency maps "
                      "whatever the value).")
    times = Table("Seconds per image", ["Method", "Seconds per image"],
                  rows=[[name, scores.timing[name]] for name in methods], digits=2)
    return {"pointing": wide, "detection": froc, "times": times, "long": long}


def _merge(config: CompareConfig, out: Path, images: SplitImages, methods: list[str],
           caches: dict[str, tuple[MapSettings, ResultCache]], labels: list[str],
           model_name: str) -> CompareReport:
    """Rank 0: score every method's cached maps and write the files (module docstring)."""
    from .report import write_froc_csv, write_froc_figure
    from .verdicts import VerdictStore

    store = VerdictStore(out / "pointing-verdicts.csv", load=False)
    scores = _Scores(failed=dict(images.unreadable))
    for name in methods:
        _score_method(name, caches[name][1], images.usable, labels, scores, store, model_name)
    tables = _tables(methods, labels, scores)
    files: list[Path] = []
    out.mkdir(parents=True, exist_ok=True)
    files.append(atomic_write_text(out / "compare.csv", tables["long"].to_csv()))
    files.append(atomic_write_text(out / "compare.md", "\n".join(
        tables[t].to_markdown() for t in ("pointing", "detection"))))
    files.append(atomic_write_text(out / "times.csv", tables["times"].to_csv()))
    files.append(store.save())
    files.append(write_froc_csv(out / "froc.csv", scores.curves, ("method", "label")))
    if scores.curves:
        panels: dict[str, dict[str, list[Any]]] = {}
        for (name, label), curve in scores.curves.items():
            panels.setdefault(label, {})[name] = curve
        files.append(write_froc_figure(out / "froc.png", panels))
    present = len(images.records) - len(images.missing)
    doc = {"data": str(config.data), "split": config.split, "methods": methods,
           "keys": {m: caches[m][1].key for m in methods},
           "settings": {m: caches[m][0].as_dict() for m in methods},
           "images": present, "missing": images.missing, "failed": scores.failed,
           "seconds_per_image": scores.timing, "seconds": round(images.seconds, 1)}
    files.append(atomic_write_text(out / "compare.json", json.dumps(doc, indent=2) + "\n"))
    return CompareReport(out, methods, present, images.missing, scores.failed, tables, files,
                         scores.timing)


def compare(config: CompareConfig) -> CompareReport | None:
    """:func:`compare_steps` without progress."""
    from ..maps.sliding import drain

    return drain(compare_steps(config))
