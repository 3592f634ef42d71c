"""Batch evaluation over a VinDr-layout split (method §5, §10, §11), resumable and data-parallel.

:func:`evaluate_steps` runs prediction + CorRELAX over every usable image of a split,
caches each image's maps and crop scores on disk, and builds the paper's tables:

- Table 4: pointing game of the prediction (≥ 25 %, ≥ 50 %) and correlation maps
  (:mod:`.pointing`);
- Table 3: per-label metrics of the classifier on the test crops (:mod:`.classification`);
- a FROC summary of boxes detected on the maps (:mod:`.detection`).

Files under ``out``:

``cache/<key>/<image>.npz``
    The image's :class:`~napari_correlax.maps.MapResult` without ``relevance``
    (the full-resolution map would cost tens of MB per mammogram and no table uses it).
``cache/<key>/<image>.json``
    Written after the maps: crop probabilities, timings, the second mask draw of the
    peak flags (``redraw``, :func:`~.pointing.peak_redraw_record`; the pointing
    verdicts' ``nonzero`` and ``separated`` are tested on it), or the error that stopped
    the image. Its presence marks the image done, so an interrupted run resumes with the first
    image that has none. ``<key>`` (:func:`settings_key`) names the checkpoint and hashes
    its content and every setting that changes the maps, so other settings never reuse
    these files. The test-set reader uses the same cache.
``pointing.{csv,md}``, ``classification.{csv,md}``, ``detection.{csv,md}``, ``froc.csv``,
``pointing-verdicts.csv`` (one row per image × label × rule, the
:mod:`.verdicts` format), ``report.md`` and ``report.json``.

Data-parallel (:func:`~.split_run.split_steps`, the runner ``compare`` and ``gmic
evaluate`` share): under ``torchrun --nproc-per-node N`` (``WORLD_SIZE`` > 1) a gloo process
group is joined; rank ``r`` checks and computes images ``r, r + N, r + 2N, …`` of the
split, then all ranks meet at a barrier and rank 0 reads every image's cache files and
writes the tables. Each image is computed alone, with the same seed, so the tables do not
depend on the number of processes. On a machine with GPUs each rank uses
``cuda:<LOCAL_RANK>``.

Each image is read and prepared (breast ROI, window grid, fusion) on a background
thread while the previous one computes, and handed to the map method
(:mod:`.image_work`).

Test crops (Table 3) are the training code's validation crops
(:class:`~napari_correlax.train.crops.CropDataset` with ``train=False``): the box itself,
or for a No Finding image a window of the median training box size centred on the
breast, cut from the CLAHE-fused image quantised to 8 bits as the training cache stores it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CorrelaxError
from ..files import atomic_write_text
from ..maps.cache import ResultCache, image_maps_steps, model_fingerprint, settings_key
from ..maps.coarse import on_previews
from ..maps.kinds import kind as map_kind
from ..maps.methods import get_method, run_method
from ..maps.runtime import Progress
from ..maps.settings import MapSettings
from .image_work import (
    ImageWork,
    image_maps,
    is_done,
    lays_windows,
    load_work,
    sharing,
    stored_redraw,
)
from .pointing import (
    lesion_labels,
    normal_verdicts,
    pointing_table,
    pointing_verdicts,
    rules_for,
)
from .report import write_report, write_table
from .split_run import Excluded, SplitImages, SplitSource, read_record, split_steps

if TYPE_CHECKING:
    from ..distributed import ProcessGroup
    from ..io.vindr import ImageRecord
    from ..maps.result import MapResult
    from ..maps.runtime import Runtime
    from ..models.protocols import ImageModelLike

__all__ = [
    "EvaluationConfig",
    "EvaluationReport",
    "Excluded",
    "LoadedImage",
    "Preview",
    "crop_scores",
    "evaluate",
    "evaluate_steps",
    "load_image_steps",
]


@dataclass
class LoadedImage:
    """An image ready to show: pixels, its maps (no ``relevance``) and where they came from.

    ``final`` is False for what a :class:`Preview` carries: the image alone (``result``
    None) or its prediction maps while the full maps are still being made.
    """

    record: ImageRecord
    pixels: np.ndarray
    spacing_mm: tuple[float, float] | None
    result: MapResult | None
    key: str
    model_name: str
    final: bool = True


@dataclass
class Preview:
    """Yielded by :func:`load_image_steps` before its maps are done, so a reader never
    waits in the dark: the image as soon as it is read, then (for methods slower than
    prediction) its prediction maps while the full maps are computed, then (CorRELAX)
    its coarse map."""

    image: LoadedImage


def load_image_steps(
    record: ImageRecord,
    checkpoint: str | os.PathLike[str] | None,
    settings: MapSettings,
    cache_root: str | os.PathLike[str],
) -> Generator[Progress | Preview, None, LoadedImage]:
    """Read an image of a data set and get its maps (cached under ``cache_root/<key>``).

    What the test-set reader runs in its worker: yields a :class:`Preview` of the image
    once it is read, then the progress of the map computation (nothing when the maps are
    cached) with a :class:`Preview` of the prediction maps first when the method is a
    slower one, and for CorRELAX a :class:`Preview` of its coarse map
    (:mod:`~napari_correlax.maps.coarse`) once that is made; returns a :class:`LoadedImage`.
    Raises CorrelaxError for an unreadable image, a size that disagrees with the CSV, or
    a broken checkpoint.
    """
    from ..models import load_model

    mammogram = read_record(record)
    shown = partial(LoadedImage, record, mammogram.pixels, mammogram.spacing_mm)
    yield Preview(shown(None, "", "", final=False))
    yield Progress("model", 0, 1)
    model = load_model(checkpoint, device=settings.runtime().device)  # classifier or GMIC
    key = settings_key(model, settings)
    name = model_fingerprint(model)[0]
    cache = ResultCache(cache_root, key, {"model": getattr(model, "checkpoint_path", None),
                                          "settings": settings.as_dict()})
    result = cache.load_maps(record.image_id, mammogram.path)
    if result is None:
        if settings.method != "prediction":
            quick = yield from run_method(mammogram, model, settings.with_(method="prediction"))
            yield Preview(shown(quick, key, name, final=False))
        # CorRELAX coarse to fine: its coarse map is a preview too; the final maps are the
        # same (coarse_first only changes the order windows run in)
        steps = image_maps_steps(mammogram, record.image_id, model,
                                 settings.with_(coarse_first=True), cache)
        result = yield from on_previews(
            steps, lambda coarse: Preview(shown(coarse, key, name, final=False)))
    cache.describe()
    return shown(replace(result, relevance=None), key, name)


class _OneImage:
    """Stands in for the training image cache: serves one in-memory fused image."""

    def __init__(self, cached: Any) -> None:
        self.cached = cached

    def load(self, record: Any) -> Any:
        return self.cached


def crop_scores(
    pixels: np.ndarray,
    record: ImageRecord,
    model: ImageModelLike,
    runtime: Runtime,
    reference_size: tuple[float, float],
) -> list[dict[str, Any]]:
    """Model probabilities on the test crops of one image (docs/method.md §5; module docstring).

    Returns one ``{"box": [xmin, ymin, xmax, ymax] or None, "target": [labels],
    "probabilities": [C floats]}`` per sample of
    :func:`~napari_correlax.train.crops.build_samples`.
    """
    from ..preprocess import breast_roi, preprocessing_of
    from ..train.crops import CachedImage, CropDataset, build_samples

    labels = list(model.labels)
    samples = build_samples([record], labels)
    if not samples:
        return []
    fused = preprocessing_of(model).fuse(pixels)
    region = np.round(fused * 255.0).astype(np.uint8)
    step = 16
    h, w = pixels.shape
    mask = breast_roi(pixels).mask
    gy, gx = h // step, w // step
    cells = mask[: gy * step, : gx * step].reshape(gy, step, gx, step).mean(axis=(1, 3))
    tissue = np.argwhere(cells >= 0.5).astype(np.int32)
    image = CachedImage(region, (0, 0), (h, w), tissue, step)
    dataset = CropDataset([record], samples, _OneImage(image), int(model.input_size),
                          train=False, reference_size=reference_size)
    crops = np.stack([dataset.crop(i) for i in range(len(samples))])
    probs = []
    for start in range(0, len(crops), runtime.batch_size):
        with runtime.inference():
            x = runtime.to_input(model, crops[start : start + runtime.batch_size])
            probs.append(model.head(model.features(x)).float().cpu().numpy())
    p = np.concatenate(probs)
    return [{"box": None if s.box is None else [float(v) for v in s.box],
             "target": [labels[c] for c in np.flatnonzero(s.target)],
             "probabilities": [float(v) for v in p[k]]} for k, s in enumerate(samples)]


# --------------------------------------------------------------------------- the run


@dataclass
class EvaluationConfig:
    """One ``correlax evaluate`` run.

    ``data`` is the VinDr-layout folder, ``out`` the output folder, ``model`` a checkpoint
    (None: the demo model). ``limit`` keeps the first N images of the split; ``check``
    is ``"quick"`` or ``"decode"`` (see
    :func:`~napari_correlax.io.vindr.check_readable`); ``froc`` adds the detection
    summary; ``threshold`` is the crop classification threshold.
    """

    data: str | os.PathLike[str]
    out: str | os.PathLike[str]
    model: str | os.PathLike[str] | None = None
    split: str = "test"
    settings: MapSettings = field(default_factory=MapSettings)
    limit: int | None = None
    check: str = "quick"
    froc: bool = True
    threshold: float = 0.5
    timeout_hours: float = 24.0


@dataclass
class EvaluationReport:
    """What rank 0 wrote: the tables, the files, and which images were left out."""

    out: Path
    key: str
    images: int
    evaluated: list[str]
    failed: dict[str, str]
    missing: list[str]
    tables: dict[str, Any]
    files: list[Path]
    seconds: float


def _reference_size(index: Any, records: Sequence[Any], labels: Sequence[str],
                    input_size: int) -> tuple[float, float]:
    from ..train.crops import build_samples, median_box_size

    for pool in (index.split("training"), records):
        size = median_box_size(build_samples(pool, labels))
        if size is not None:
            return size
    return (float(input_size), float(input_size))


def evaluate_steps(
    config: EvaluationConfig,
) -> Generator[Progress | Excluded, None, EvaluationReport | None]:
    """Run the evaluation; yields ``Progress("check" | "image", done, total)`` for this rank.

    Once the files are checked, and before any model work, it yields an :class:`Excluded`
    event listing the images left out (the same on every rank). Returns the
    :class:`EvaluationReport` on rank 0 and None on the other ranks
    (:func:`~.split_run.split_steps` runs it).

    Raises:
        CorrelaxError: no data set, an empty split, a broken checkpoint, or a split
            with no usable image.
    """
    source = SplitSource(config.data, config.split, config.limit, config.check,
                         config.settings.device, config.timeout_hours)
    return (yield from split_steps(source, partial(_EvaluationJob, config)))


class _EvaluationJob:
    """The :class:`~.split_run.SplitJob` of ``correlax evaluate``: maps and crop scores of
    each image into one cache; the tables from it."""

    def __init__(self, config: EvaluationConfig, group: ProcessGroup) -> None:
        from ..models import load_classifier

        self.config = config
        self.out = Path(config.out).expanduser()
        self.settings = config.settings.with_(device=group.device)
        self.runtime = self.settings.runtime()
        self.model = load_classifier(config.model, device=self.runtime.device)
        self.cache = ResultCache(self.out / "cache", settings_key(self.model, self.settings), {
            "model": getattr(self.model, "checkpoint_path", None),
            "fingerprint": model_fingerprint(self.model)[1],
            "settings": self.settings.as_dict(), "labels": list(self.model.labels)})
        self.reference = (0.0, 0.0)

    def select(self, present: list[ImageRecord]) -> list[ImageRecord]:
        return present

    def start(self, images: SplitImages, main: bool) -> None:
        if main:
            self.cache.describe()
        self.reference = _reference_size(images.index, images.usable, self.model.labels,
                                         int(self.model.input_size))

    def is_done(self, record: ImageRecord) -> bool:
        return is_done(self.cache, record.image_id, self.settings)

    def prefetch(self, record: ImageRecord) -> ImageWork:
        """Read and prepare one image (the split runner's background thread)."""
        return load_work(record, self.model, self.settings if lays_windows(self.settings)
                         else None)

    def compute(self, record: ImageRecord, work: ImageWork | None = None) -> None:
        with sharing(work or self.prefetch(record), self.model) as shared:
            _compute_image(shared, self.model, self.settings, self.runtime, self.cache,
                           self.reference)

    def merge(self, images: SplitImages) -> EvaluationReport:
        return _merge(self.config, self.out, images, self.model, self.cache)


def _compute_image(work: ImageWork, model: Any, settings: MapSettings, runtime: Any,
                   cache: ResultCache, reference: tuple[float, float]) -> None:
    """Maps, the peak flags' second draw and crop scores of one image (read as the
    model's preprocessing asks, so the maps and the crop scores see the same pixels) into
    the cache; errors are recorded, not raised."""
    record = work.record
    doc: dict[str, Any] = {"image_id": record.image_id, "study_id": record.study_id,
                           "source": str(record.path), "error": work.error}
    if work.mammogram is not None:
        try:
            t1 = time.perf_counter()
            doc.update(image_maps(work, model, settings, cache))
            t2 = time.perf_counter()
            doc["crops"] = crop_scores(work.mammogram.pixels, record, model, runtime,
                                       reference)
            doc["seconds"] = {**work.seconds, "maps": round(t2 - t1, 3),
                              "crops": round(time.perf_counter() - t2, 3)}
        except CorrelaxError as exc:
            doc["error"] = str(exc)
        except MemoryError:
            doc["error"] = (f"{record.path}: out of memory (lower --batch-size or use a "
                            "larger stride)")
    cache.save_info(record.image_id, doc)


@dataclass
class _Collected:
    """What rank 0 read back from the cache for the tables."""

    failed: dict[str, str]
    evaluated: list[str] = field(default_factory=list)
    verdicts: list[Any] = field(default_factory=list)
    store_rows: list[tuple[Any, list[Any]]] = field(default_factory=list)
    crop_targets: list[np.ndarray] = field(default_factory=list)
    crop_probs: list[np.ndarray] = field(default_factory=list)
    results: list[tuple[Any, MapResult]] = field(default_factory=list)
    image_seconds: list[float] = field(default_factory=list)


def _collect(images: SplitImages, cache: ResultCache, labels: list[str], rules: Any
             ) -> _Collected:
    """Every usable image's cached maps and crop scores: verdicts, crops, results."""
    got = _Collected(failed=dict(images.unreadable))
    for record in images.usable:
        info = cache.load_info(record.image_id)
        result = cache.load_maps(record.image_id) if info and not info.get("error") else None
        if result is None:
            got.failed[record.image_id] = ((info or {}).get("error")
                                           or "not computed (a rank stopped?)")
            continue
        got.evaluated.append(record.image_id)
        got.image_seconds.append(sum((info.get("seconds") or {}).values()))
        found = pointing_verdicts(result, record.boxes, record.image_id, rules=rules,
                                  redraw=stored_redraw(info))
        got.verdicts.extend(found)
        # normal images: "did the map stay quiet?" rows for the reader, not Table 4
        got.store_rows.append((record, found if lesion_labels(record.labels) else
                               normal_verdicts(result, record.image_id, rules=rules)))
        for crop in info.get("crops", []):
            target = np.zeros(len(labels), dtype=np.float32)
            for lab in crop["target"]:
                if lab in labels:
                    target[labels.index(lab)] = 1.0
            got.crop_targets.append(target)
            got.crop_probs.append(np.asarray(crop["probabilities"], dtype=np.float64))
        got.results.append((record, result))
    return got


def _detection_curves(results: list[tuple[Any, MapResult]], labels: list[str], rules: Any
                      ) -> dict[tuple[str, str], Any]:
    """FROC curve per lesion label with boxes and per scored per-label map kind."""
    from .detection import GridMap, froc_curve

    curves: dict[tuple[str, str], Any] = {}
    if not results:
        return curves
    for label in lesion_labels(labels):
        truth = [[b.corners for b in rec.boxes if b.label == label] for rec, _ in results]
        if not any(truth):
            continue
        for name in dict.fromkeys(rule.map for rule in rules):  # the scored kinds
            if results[0][1].get(name) is None or not map_kind(name).per_label:
                continue
            maps = [GridMap.from_result(res, name, label) for _, res in results]
            curves[(label, name)] = froc_curve(maps, truth)
    return curves


def _merge(config: EvaluationConfig, out: Path, images: SplitImages, model: Any,
           cache: ResultCache) -> EvaluationReport:
    """Rank 0: read every image's cache files and write the tables (module docstring)."""
    from .classification import per_label_metrics
    from .report import classification_report, froc_report, pointing_report, write_froc_csv

    labels = list(model.labels)
    # Table 4's columns: the pointing rules of the kinds the method makes
    rules = rules_for(get_method(config.settings.method).kinds)
    got = _collect(images, cache, labels, rules)
    tables: dict[str, Any] = {}
    point = pointing_table(got.verdicts, labels, rules)
    tables["pointing"] = pointing_report(point)
    if got.crop_targets:
        metrics = per_label_metrics(np.stack(got.crop_targets), np.stack(got.crop_probs),
                                    labels, config.threshold)
        tables["classification"] = classification_report(metrics)
    curves = _detection_curves(got.results, labels, rules) if config.froc else {}
    if curves:
        tables["detection"] = froc_report(curves)
    files: list[Path] = []
    for name, table in tables.items():
        files += write_table(table, out / name)
    if curves:
        files.append(write_froc_csv(out / "froc.csv", curves, ("label", "map")))
    files += _write_verdicts(out, got, model, cache)
    doc = {
        "data": str(images.data), "split": config.split,
        "model": getattr(model, "checkpoint_path", None),
        "key": cache.key, "settings": config.settings.as_dict(), "labels": labels,
        "images_in_split": len(images.records), "images_evaluated": len(got.evaluated),
        "missing": images.missing, "failed": got.failed,
        "seconds_total": round(images.seconds, 3),
        "seconds_per_image_mean": round(float(np.mean(got.image_seconds)), 3)
        if got.image_seconds else None,
        "pointing": point.as_dict(),
        "classification": tables["classification"].as_records()
        if "classification" in tables else None,
        "detection": {f"{lab} | {name}": [p.as_dict() for p in curve]
                      for (lab, name), curve in curves.items()},
    }
    files.append(atomic_write_text(out / "report.json", json.dumps(doc, indent=2) + "\n"))
    files.append(write_report(out / "report.md", "CorRELAX evaluation", _facts(doc),
                              tables.values(), images.missing, got.failed))
    return EvaluationReport(out, cache.key, len(images.records), got.evaluated, got.failed,
                            images.missing, tables, files, images.seconds)


def _write_verdicts(out: Path, got: _Collected, model: Any, cache: ResultCache) -> list[Path]:
    """``pointing-verdicts.csv`` (the automatic verdicts) and ``reader-report.{csv,md}``."""
    from .report import reader_report
    from .verdicts import VERDICTS_FILE, VerdictStore

    store = VerdictStore(out / "pointing-verdicts.csv", load=False)
    model_name = model_fingerprint(model)[0]
    for record, found in got.store_rows:
        store.add_automatic(found, study_id=record.study_id, split=record.split,
                            model=model_name, settings=cache.key, save=False)
    files = [store.save()]
    # The reader's own verdicts when it reviewed in this folder (the test-set reader's
    # work folder), else the automatic ones: per label, reader beside automatic.
    reviewed = out / VERDICTS_FILE
    source = VerdictStore(reviewed) if reviewed.is_file() else store
    mine = [r for r in source.rows() if r.settings == cache.key] or store.rows()
    return files + write_table(reader_report(mine), out / "reader-report")


def _facts(doc: dict[str, Any]) -> list[str]:
    """The bullet lines of ``report.md``."""
    per_image = doc["seconds_per_image_mean"]
    return [f"data: `{doc['data']}`, split `{doc['split']}`",
            f"model: `{doc['model']}` (cache key `{doc['key']}`)",
            f"settings: {json.dumps(doc['settings'])}",
            f"images: {doc['images_evaluated']} evaluated of {doc['images_in_split']}"
            f" ({len(doc['missing'])} missing, {len(doc['failed'])} failed)",
            f"time: {doc['seconds_total']} s in total"
            + (f", {per_image} s per image" if per_image is not None else "")]


def evaluate(config: EvaluationConfig) -> EvaluationReport | None:
    """Run :func:`evaluate_steps` to the end (None on ranks other than 0)."""
    from ..maps.runtime import drain

    return drain(evaluate_steps(config))
