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
processes (every method of an image on the same rank). Each image is read, prepared
(breast, window grid, fusion) and run through the prediction pass once for all methods,
the next image read and prepared on a background thread meanwhile
(:mod:`.image_work`); rank 0 writes

``compare.csv``
    long form, one row per method × label: ``method, label, support, hits, rate`` (rate
    in 0–1, blank without support), ``ci_low, ci_high`` (its Wilson 95 % interval),
    ``same_as`` (see below), then the FROC operating point.
``paired.csv``
    every pair of methods, per label and pooled over labels (label
    :data:`~.paired.POOLED`): ``method_a, method_b, label, both, a_only, b_only,
    neither, p_value``, the (image, label) pairs both hit, only A hits, only B hits and
    neither hits, and the exact McNemar p-value on the discordant ones
    (:mod:`~.paired`).
``compare.md``
    one row per method (methods with equal maps merged into one row, "gradcam =
    xgradcam"), one column per label (the papers' layout), each cell ``rate [Wilson 95 %
    interval]``; under it one sentence per label on whether any two methods differ at
    the 5 % level; then the TPR@FPPI table.
``times.csv``
    seconds per image of each method (mean over the images it computed in this folder;
    reading and preparing the image, shared by all methods, is in no method's time, the
    prediction pass is in the time of the first method that ran it, and CorRELAX's
    includes the second mask draw of its peak flags).
``froc.csv`` / ``froc.png``
    every FROC point, and one panel per label with a curve per method.
``pointing-verdicts.csv``
    every image's automatic verdicts of every method (rows keyed by each method's cache
    key, the columns of the test-set reader's ``verdicts.csv``).
``compare.json``
    the settings, keys, images and timings.
``settings.json``
    what every method of the folder shares (images, model, map settings); a later run
    with other settings is refused unless ``fresh`` (:mod:`.compare_folder`).

``same_as`` names the first method (in the order given) whose scored maps equal this
method's on every image of the run (:func:`same_maps`; e.g. Grad-CAM, XGrad-CAM and
HiRes-CAM at a layer that feeds global average pooling, docs/method.md §8); it is empty
for a method equal to no earlier one.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CorrelaxError
from ..files import atomic_write_text
from ..maps.cache import ResultCache, model_fingerprint, settings_key
from ..maps.methods import get_method
from ..maps.runtime import Progress
from ..maps.settings import MapSettings
from .compare_folder import check_folder, folder_record, record_folder, start_fresh
from .image_work import (
    ImageWork,
    image_maps,
    is_done,
    lays_windows,
    load_work,
    sharing,
    stored_redraw,
)
from .paired import POOLED, PairedRow, paired_rows, wilson_interval
from .pointing import (
    lesion_labels,
    normal_verdicts,
    pointing_table,
    pointing_verdicts,
    rules_for,
)
from .report import Table
from .split_run import Excluded, SplitImages, SplitSource, split_steps

if TYPE_CHECKING:
    from ..distributed import ProcessGroup
    from ..io.vindr import ImageRecord

__all__ = ["SAME_MAPS_ATOL", "SAME_MAPS_RTOL", "CompareConfig", "CompareReport", "compare",
           "compare_steps", "maps_equal", "method_settings", "same_maps"]

#: Two scored maps are equal when every value agrees within this relative tolerance …
SAME_MAPS_RTOL = 1e-4
#: … or within this share of the larger map's largest absolute value (float32 round-off).
SAME_MAPS_ATOL = 1e-5


@dataclass
class CompareConfig:
    """One ``correlax compare`` run: data folder, output folder, methods and settings.

    ``settings`` holds the shared map settings (stride, masks, …; its ``method`` is
    replaced by each method in turn); ``options`` are method options (``mode`` of the
    CAM methods, …) given to every method. ``limit`` keeps the first N images of the
    split; ``check`` is the file check before the run (``"quick"``, ``"decode"`` or
    ``"none"``, see :func:`~napari_correlax.io.vindr.check_readable`). ``fresh`` starts
    the folder anew (:func:`~.compare_folder.start_fresh`: its cached maps and tables
    are deleted) instead of refusing settings that differ from the folder's.
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
    fresh: bool = False


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
    same_as: dict[str, str] = field(default_factory=dict)
    paired: list[PairedRow] = field(default_factory=list)


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
            a checkpoint that cannot be read, or settings other than the folder's
            (:func:`~.compare_folder.check_folder`) without ``fresh``.
    """
    methods = list(dict.fromkeys(get_method(m).name for m in config.methods))
    if not methods:
        raise CorrelaxError("name at least one map method to compare")
    source = SplitSource(config.data, config.split, config.limit, config.check,
                         config.settings.device, config.timeout_hours)
    return (yield from split_steps(source, partial(_CompareJob, config, methods)))


class _CompareJob:
    """The :class:`~.split_run.SplitJob` of ``correlax compare``: every method's maps of
    an image (read, prepared and predicted once, :mod:`.image_work`) into the method's
    cache; the tables from them."""

    def __init__(self, config: CompareConfig, methods: list[str], group: ProcessGroup) -> None:
        from ..models import load_classifier

        self.config = config
        self.methods = methods
        self.out = Path(config.out).expanduser()
        base = config.settings.with_(device=group.device)
        self.model = load_classifier(config.model, device=base.runtime().device)
        self.record = folder_record(config.data, config.split, config.limit,
                                    model_fingerprint(self.model), base, config.options)
        if not config.fresh:
            check_folder(self.out, self.record)
        elif group.main:  # before the file check's gather: no rank computes before this
            start_fresh(self.out)
        self.caches: dict[str, tuple[MapSettings, ResultCache]] = {}
        for name in methods:
            settings = method_settings(base, name, config.options)
            self.caches[name] = (settings, ResultCache(
                self.out / "cache", settings_key(self.model, settings), {
                    "model": getattr(self.model, "checkpoint_path", None),
                    "fingerprint": model_fingerprint(self.model)[1],
                    "settings": settings.as_dict(), "labels": list(self.model.labels)}))
        self.layout = next((s for s, _ in self.caches.values() if lays_windows(s)), None)

    def select(self, present: list[ImageRecord]) -> list[ImageRecord]:
        return present

    def start(self, images: SplitImages, main: bool) -> None:
        if main:
            record_folder(self.out, self.record)
            for _, cache in self.caches.values():
                cache.describe()

    def _todo(self, record: ImageRecord) -> list[str]:
        return [m for m in self.methods
                if not is_done(self.caches[m][1], record.image_id, self.caches[m][0])]

    def is_done(self, record: ImageRecord) -> bool:
        return not self._todo(record)

    def prefetch(self, record: ImageRecord) -> ImageWork:
        """Read and prepare one image (the split runner's background thread)."""
        return load_work(record, self.model, self.layout)

    def compute(self, record: ImageRecord, work: ImageWork | None = None) -> None:
        """Each method's maps of one image (and CorRELAX's second mask draw of the peak
        flags), sharing ``work`` (:meth:`prefetch`'s; read here when None); errors are
        recorded, not raised."""
        work = work or self.prefetch(record)
        with sharing(work, self.model):
            for name in self._todo(record):
                settings, cache = self.caches[name]
                doc: dict[str, Any] = {"image_id": record.image_id, "error": work.error}
                if work.mammogram is not None:
                    t0 = time.perf_counter()
                    try:
                        doc.update(image_maps(work, self.model, settings, cache))
                    except CorrelaxError as exc:
                        doc["error"] = str(exc)
                    doc["seconds"] = {"maps": round(time.perf_counter() - t0, 3)}
                cache.save_info(record.image_id, doc)

    def merge(self, images: SplitImages) -> CompareReport:
        return _merge(self.config, self.out, images, self.methods, self.caches,
                      list(self.model.labels), model_fingerprint(self.model)[0])


@dataclass
class _Scores:
    """Rank 0's reading of the cache: pointing tables, each method's hit per (image,
    label), FROC curves, timings, failures."""

    failed: dict[str, str]
    pointing: dict[str, tuple[Any, str]] = field(default_factory=dict)
    hits: dict[str, dict[tuple[str, str], bool]] = field(default_factory=dict)
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
        found = pointing_verdicts(result, record.boxes, record.image_id, rules=rules,
                                  redraw=stored_redraw(info))
        verdicts += found
        results.append((record, result))
        store.add_automatic(
            found if lesion_labels(record.labels) else
            normal_verdicts(result, record.image_id, rules=rules),
            study_id=record.study_id, split=record.split, model=model_name,
            settings=cache.key, save=False)
    scores.pointing[name] = (pointing_table(verdicts, labels, rules), rules[0].name)
    scores.hits[name] = {(v.image_id, v.label): bool(v.hit) for v in verdicts}
    scores.timing[name] = float(np.mean(times)) if times else float("nan")
    for label in lesion_labels(labels):
        maps = [GridMap.from_result(res, scored, label) for _, res in results]
        truth = [[b for b in rec.boxes if b.label == label] for rec, _ in results]
        if any(truth):
            scores.curves[(name, label)] = froc_curve(maps, truth)


def maps_equal(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    """True when two scored maps are one map: same shape, the same empty (non-finite)
    cells, and every value equal within :data:`SAME_MAPS_RTOL` or :data:`SAME_MAPS_ATOL`
    times the largest absolute value of either map. A missing map (None) equals nothing."""
    if a is None or b is None or a.shape != b.shape:
        return False
    finite = np.isfinite(a)
    if not np.array_equal(finite, np.isfinite(b)):
        return False
    x, y = a[finite].astype(np.float64), b[finite].astype(np.float64)
    if not x.size:
        return True
    scale = max(float(np.abs(x).max()), float(np.abs(y).max()))
    return bool(np.allclose(x, y, rtol=SAME_MAPS_RTOL, atol=SAME_MAPS_ATOL * scale))


def same_maps(methods: Sequence[str], caches: dict[str, ResultCache],
              image_ids: Sequence[str]) -> dict[str, str]:
    """Methods whose cached scored maps equal an earlier method's on every image.

    Returns ``{method: first equal method}`` (in the order of ``methods``; a method that
    equals no earlier one is absent). Only methods that score the same kind of map are
    compared (:func:`maps_equal`, every label's map); an image neither of two methods
    has maps of is skipped, one only one of them has makes them differ, and two methods
    are equal only if at least one image was compared.
    """
    kind = {m: get_method(m).scored for m in methods}
    open_pairs = {(a, b) for a, b in combinations(methods, 2) if kind[a] == kind[b]}
    compared: set[tuple[str, str]] = set()
    for image_id in image_ids:
        if not open_pairs:
            break
        needed = {m for pair in open_pairs for m in pair}
        maps = {m: _scored_map(caches[m], image_id, kind[m]) for m in needed}
        for a, b in list(open_pairs):
            if maps[a] is None and maps[b] is None:
                continue
            compared.add((a, b))
            if not maps_equal(maps[a], maps[b]):
                open_pairs.discard((a, b))
    equal = open_pairs & compared
    same: dict[str, str] = {}
    for i, b in enumerate(methods):
        first = next((a for a in methods[:i] if (a, b) in equal), None)
        if first is not None:
            same[b] = same.get(first, first)
    return same


def _scored_map(cache: ResultCache, image_id: str, kind: str) -> np.ndarray | None:
    result = cache.load_maps(image_id)
    return None if result is None else result.get(kind)


def _merged_names(methods: list[str], same_as: dict[str, str]) -> dict[str, str]:
    """Each method that equals no earlier one → its row name ("gradcam = xgradcam")."""
    return {m: " = ".join([m, *(o for o in methods if same_as.get(o) == m)])
            for m in methods if m not in same_as}


def _rate_cell(hits: int, n: int) -> str | None:
    """``hits/n = rate [low, high]`` (Wilson 95 %), None without support."""
    if not n:
        return None
    low, high = wilson_interval(hits, n)
    return f"{hits}/{n} = {hits / n:.3f} [{low:.3f}, {high:.3f}]"


def _verdict_counts(hits: dict[tuple[str, str], bool], label: str) -> tuple[int, int]:
    """(hits, support) of one method over one label's pairs (or :data:`POOLED`)."""
    got = [hit for (_, lab), hit in hits.items() if label in (POOLED, lab)]
    return sum(got), len(got)


def significance_sentence(label: str, rows: Sequence[PairedRow], level: float = 0.05) -> str:
    """One sentence: does any pair of methods differ on ``label`` at ``level``?

    ``rows`` are that label's :class:`~.paired.PairedRow` s of distinct methods (methods
    with equal maps are one); the p-values are per pair, not corrected for their number.
    """
    rows = [r for r in rows if r.counts.pairs]
    if not rows:
        return f"{label}: fewer than two distinct methods scored, nothing to test."
    sizes = sorted({r.counts.pairs for r in rows})
    on = (f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]}–{sizes[-1]}") + \
        " (image, label) pairs"
    pairs = f"{len(rows)} pair{'s' if len(rows) > 1 else ''} of methods"
    low = [r for r in rows if r.counts.p_value < level]
    if not low:
        best = min(r.counts.p_value for r in rows)
        return (f"{label}: no difference between methods is significant at "
                f"{level * 100:g} % ({pairs}, exact McNemar on {on}; smallest p = {best:.3g}).")
    named = "; ".join(f"{r.method_a} vs {r.method_b} p = {r.counts.p_value:.3g}" for r in low)
    return (f"{label}: {len(low)} of {pairs} differ at {level * 100:g} % (exact McNemar on {on}): "
            f"{named}.")


def _tables(methods: list[str], labels: list[str], scores: _Scores,
            same_as: dict[str, str], paired: list[PairedRow]) -> dict[str, Table]:
    """compare.csv's long table, paired.csv, compare.md's two wide ones, and the timing
    table."""
    from .detection import operating_point, operating_point_text

    lesions = lesion_labels(labels)
    shown = [lab for lab in lesions if any(p.support(lab) for p, _ in scores.pointing.values())]
    long = Table("Pointing game and detection per method and label",
                 ["method", "label", "support", "hits", "rate", "ci_low", "ci_high", "same_as",
                  "map", "tpr", "fppi"])
    for name in methods:
        table, rule = scores.pointing[name]
        for label in lesions:
            n = table.support(label)
            hits = table.hits.get((label, rule), 0)
            low, high = wilson_interval(hits, n) if n else (None, None)
            point = operating_point(scores.curves.get((name, label), []))
            long.rows.append([name, label, n, hits, hits / n if n else None, low, high,
                              same_as.get(name, ""), rule,
                              point.tpr if point else None, point.fppi if point else None])
    rows = _merged_names(methods, same_as)
    wide = Table("Pointing game per method: hits/support = rate [Wilson 95 % interval]",
                 ["Method", *shown, POOLED])
    froc = Table("Detection: TPR@FPPI at the highest TPR (IoU > 0.3)", ["Method", *shown])
    for name, row_name in rows.items():
        wide.rows.append([row_name, *[_rate_cell(*_verdict_counts(scores.hits[name], lab))
                                      for lab in [*shown, POOLED]]])
        froc.rows.append([row_name, *[operating_point_text(operating_point(
            scores.curves.get((name, lab), []))) for lab in shown]])
    distinct = [r for r in paired if r.method_a in rows and r.method_b in rows]
    wide.notes += [significance_sentence(lab, [r for r in distinct if r.label == lab])
                   for lab in [*shown, POOLED]]
    wide.notes += [
        "A hit: the scored map's maximum within 48 px of a box of the label (prediction maps "
        "also ≥ 0.25, correlation maps > 0; saliency maps whatever the value).",
        "Methods joined by \"=\" gave equal maps on every image (one row); p-values: exact "
        "McNemar on the (image, label) pairs the two methods score, not corrected for the "
        "number of pairs (every pair in paired.csv)."]
    pairs = Table("Paired comparisons", ["method_a", "method_b", "label", "both", "a_only",
                                         "b_only", "neither", "p_value"], digits=6)
    pairs.rows = [[r.method_a, r.method_b, r.label, r.counts.both, r.counts.a_only,
                   r.counts.b_only, r.counts.neither, r.counts.p_value] for r in paired]
    times = Table("Seconds per image", ["Method", "Seconds per image"],
                  rows=[[name, scores.timing[name]] for name in methods], digits=2)
    return {"pointing": wide, "detection": froc, "times": times, "long": long,
            "paired": pairs}


def _mode_line(methods: list[str], config: CompareConfig) -> str:
    """compare.md's first line when CAM methods ran: how (windowed, or global at a scale
    the classifier never saw, docs/method.md §8)."""
    from ..maps.cam import mode_title
    from ..maps.methods import get_method

    cams = [m for m in methods if "mode" in get_method(m).options]
    if not cams:
        return ""
    mode = str(config.options.get("mode") or "windowed")
    return f"CAM methods ({', '.join(cams)}): {mode_title(mode)}.\n\n"


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
    same_as = same_maps(methods, {m: caches[m][1] for m in methods},
                        [r.image_id for r in images.usable])
    shown = [lab for lab in lesion_labels(labels)
             if any(p.support(lab) for p, _ in scores.pointing.values())]
    paired = paired_rows(scores.hits, shown)
    tables = _tables(methods, labels, scores, same_as, paired)
    files: list[Path] = []
    out.mkdir(parents=True, exist_ok=True)
    files.append(atomic_write_text(out / "compare.csv", tables["long"].to_csv()))
    files.append(atomic_write_text(out / "paired.csv", tables["paired"].to_csv()))
    files.append(atomic_write_text(out / "compare.md", _mode_line(methods, config) + "\n".join(
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
           "same_as": same_as,
           "images": present, "missing": images.missing, "failed": scores.failed,
           "seconds_per_image": scores.timing, "seconds": round(images.seconds, 1)}
    files.append(atomic_write_text(out / "compare.json", json.dumps(doc, indent=2) + "\n"))
    return CompareReport(out, methods, present, images.missing, scores.failed, tables, files,
                         scores.timing, same_as, paired)


def compare(config: CompareConfig) -> CompareReport | None:
    """:func:`compare_steps` without progress."""
    from ..maps.runtime import drain

    return drain(compare_steps(config))
