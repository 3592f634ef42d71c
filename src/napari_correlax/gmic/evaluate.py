"""Evaluating GMIC checkpoints as [CAM-GMIC] Tables I and II (docs/method.md §9, §10).

:func:`gmic_evaluate_steps` runs every checkpoint on every usable image of a split and
writes, under ``out``:

``table1-classification.{csv,md}`` (Table I)
    Per checkpoint and output: accuracy, AUC, TPR, TNR and FNR of ŷ_fusion at the
    threshold (0.5) on the images, with the numbers of positive and negative images.
``table2-detection.{csv,md}`` (Table II)
    One row per checkpoint (and output), named by the CAM it was trained with (from its
    metadata: ``info["training"]["train_cam"]``; published weights count as ``cam``), one
    column per test CAM: the FROC operating point ``TPR@FPPI`` (highest TPR, then lowest
    FPPI; IoU > 0.3) of that CAM's map.
``froc.csv``, ``froc.png``
    The FROC curves behind Table II (one point per threshold).
``report.json``, ``report.md``
    Everything above, the settings and the images left out.
``cache/<key>/<image>.{npz,json}``
    Per checkpoint and image: the outputs and the test CAMs' grid maps (``.npz``), and the
    outputs, per-image FROC counts and timings (``.json``, written last: its presence
    marks the image done, so a stopped run resumes). ``<key>`` names the checkpoint and
    hashes its content and the settings that change the counts
    (:class:`~napari_correlax.maps.cache.ResultCache` keeps the files).

Images: those of the split whose labels :func:`~.data.image_targets` selects for the
checkpoint's outputs (positives and, by default, normal images: [CAM-GMIC]'s normal vs
mass test set). An output is scored against the data set label of the same name (a
model trained here), or against ``positive[c]`` when given (the published weights'
``benign``/``malignant`` outputs name no label).

Detection ([CAM-GMIC] §III-E, docs/method.md §10): each test CAM's map on the saliency
grid is taken to original pixels exactly as the ``"gmic"`` map method does (GMIC's
saliency as it is, a gradient CAM scaled to [0, 1]; warped by the input transform),
then :class:`~napari_correlax.evaluate.detection.GridMap` scales it to [0, 1] per image
and reduces it to 4-pixel blocks, and :func:`~napari_correlax.evaluate.detection.froc_curve`
sweeps thresholds 0.05 … 0.95; a box is a true positive at IoU > 0.3 with a box of the
output's label. Images counted: those with a box of the label (``detect_on="positives"``,
as [CAM-GMIC] analysed only the test images with masses) or every evaluated image
(``"all"``, so normal images add false positives).

Data-parallel (:func:`~napari_correlax.evaluate.split_run.split_steps`, shared with
``correlax evaluate`` and ``compare``): under ``torchrun --nproc-per-node N``
(``WORLD_SIZE`` > 1) a gloo group is joined; rank ``r`` computes images ``r, r + N, …``
for every checkpoint, then rank 0 reads the cache and writes the tables. Each image is
computed alone, so the tables do not depend on the number of processes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CorrelaxError
from ..evaluate.split_run import Excluded, SplitImages, SplitSource, split_steps
from ..files import atomic_write, atomic_write_text
from ..maps.runtime import Progress
from .cams import TRAIN_CAMS, cam_title, check_cams
from .data import NEGATIVES, check_classes, image_targets

if TYPE_CHECKING:
    from ..distributed import ProcessGroup
    from ..evaluate.detection import FrocPoint
    from ..evaluate.report import Table
    from ..io.vindr import ImageRecord
    from ..maps.cache import ResultCache
    from .network import GMIC

__all__ = [
    "DETECT_ON",
    "GMICEvaluationConfig",
    "GMICEvaluationReport",
    "gmic_evaluate",
    "gmic_evaluate_steps",
    "image_metrics",
]

#: Which images Table II counts (module notes).
DETECT_ON = ("positives", "all")


@dataclass
class GMICEvaluationConfig:
    """One ``correlax gmic evaluate`` run (module notes).

    ``models``: GMIC checkpoints; ``test_cams``: CAM names (:data:`~.cams.TRAIN_CAMS`);
    ``positive``: data set labels of the outputs, in order (None: the class names);
    ``negatives``: ``"normal"`` or ``"all"``; ``detect_on``: ``"positives"`` or
    ``"all"``; ``threshold``: ŷ_fusion counted positive at or above it; ``limit``: the
    first N images of the split; ``check``: ``"quick"``, ``"decode"`` or ``"none"``.
    """

    data: str | os.PathLike[str]
    out: str | os.PathLike[str]
    models: list[str]
    test_cams: list[str] = field(default_factory=lambda: list(TRAIN_CAMS))
    split: str = "test"
    positive: list[str] | None = None
    negatives: str = "normal"
    detect_on: str = "positives"
    threshold: float = 0.5
    limit: int | None = None
    device: str = "auto"
    check: str = "quick"
    timeout_hours: float = 24.0
    retrieval_cam: str | None = None

    def __post_init__(self) -> None:
        self.test_cams = check_cams(self.test_cams)
        if self.retrieval_cam:
            self.retrieval_cam = check_cams([self.retrieval_cam])[0]
        if not self.models:
            raise CorrelaxError("no GMIC checkpoint given")
        if self.negatives not in NEGATIVES:
            raise CorrelaxError(f"negatives must be one of {list(NEGATIVES)}")
        if self.detect_on not in DETECT_ON:
            raise CorrelaxError(f"detect_on must be one of {list(DETECT_ON)}")
        if self.positive is not None:
            self.positive = [check_classes([p])[0] for p in self.positive]


@dataclass
class GMICEvaluationReport:
    """What rank 0 wrote: the tables, the files, the images used and left out."""

    out: Path
    models: list[str]
    tables: dict[str, Table]
    curves: dict[tuple[str, str, str], list[FrocPoint]]
    evaluated: dict[str, list[str]]
    failed: dict[str, str]
    missing: list[str]
    files: list[Path]
    seconds: float


@dataclass
class _Checkpoint:
    """A loaded checkpoint and how it is scored."""

    path: Path
    name: str
    model: GMIC
    labels: list[str]
    train_cam: str
    cache: ResultCache
    retrieval_cam: str = "cam"
    records: list[ImageRecord] = field(default_factory=list)
    targets: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))


def image_metrics(targets: np.ndarray, scores: np.ndarray, threshold: float = 0.5
                  ) -> dict[str, Any]:
    """Table I's numbers for one output: ``accuracy``, ``auc`` (None with one class
    only), ``tpr`` = TP/(TP+FN), ``tnr`` = TN/(TN+FP), ``fnr`` = FN/(TP+FN) (None when
    the denominator is 0), and the counts; a score at or above ``threshold`` is a
    positive prediction."""
    from ..evaluate.classification import per_label_metrics, roc_auc

    t = np.asarray(targets, dtype=np.float64).reshape(-1, 1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1, 1)
    m = per_label_metrics(t, s, ["output"], threshold)[0]

    def ratio(num: int, den: int) -> float | None:
        return num / den if den else None

    return {"accuracy": m.accuracy if len(t) else None, "auc": roc_auc(t[:, 0], s[:, 0]),
            "tpr": ratio(m.tp, m.tp + m.fn), "tnr": ratio(m.tn, m.tn + m.fp),
            "fnr": ratio(m.fn, m.tp + m.fn), "tp": m.tp, "fp": m.fp, "fn": m.fn, "tn": m.tn,
            "positives": m.tp + m.fn, "negatives": m.tn + m.fp}


def _display_names(paths: Sequence[Path]) -> list[str]:
    """Short unique names: the file's stem, with its folder for run checkpoints."""
    names = [f"{p.parent.name}/{p.stem}" if p.stem in ("last", "best") else p.stem
             for p in paths]
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if names.count(n) == 1 else f"{n} ({seen[n]})")
    return out


def _train_cam(model: Any) -> str:
    """The CAM the model was trained with (its configuration; ``cam`` for published
    weights and for checkpoints trained with GMIC's own saliency)."""
    return str(model.config.train_cam)


def _cache_key(path: Path, config: GMICEvaluationConfig, labels: Sequence[str],
               retrieval_cam: str) -> str:
    from ..evaluate.detection import DEFAULT_THRESHOLDS, IOU_MIN, PIXEL_BLOCK
    from ..maps.cache import _slug, checkpoint_fingerprint

    name, fingerprint = checkpoint_fingerprint(path)
    fields = {"model": fingerprint, "cams": config.test_cams, "labels": list(labels),
              "thresholds": list(DEFAULT_THRESHOLDS), "iou": IOU_MIN, "block": PIXEL_BLOCK,
              "retrieval": retrieval_cam, "version": 1}
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]
    return f"{_slug(name)}-{digest}"


def _open_checkpoint(path: Path, name: str, config: GMICEvaluationConfig, device: str,
                     out: Path) -> _Checkpoint:
    """Load one checkpoint and name the data set label of each of its outputs."""
    from ..maps.cache import ResultCache
    from .checkpoint import load_gmic

    model = load_gmic(path, device=device)
    classes = list(model.config.class_names)
    if config.positive is not None:
        if len(config.positive) != len(classes):
            raise CorrelaxError(f"{len(config.positive)} positive labels for "
                                f"{len(classes)} outputs ({', '.join(classes)})", path)
        labels = list(config.positive)
    else:
        try:
            labels = check_classes(classes)
        except CorrelaxError:
            raise CorrelaxError(
                f"the outputs ({', '.join(classes)}) are not data set labels; give "
                f"--positive LABEL for each output, in order", path) from None
    picker = config.retrieval_cam or _train_cam(model)
    cache = ResultCache(out / "cache", _cache_key(path, config, labels, picker), {
        "model": str(path), "labels": labels, "test_cams": config.test_cams,
        "retrieval_cam": picker})
    return _Checkpoint(path, name, model, labels, _train_cam(model), cache, picker)


def gmic_evaluate_steps(
    config: GMICEvaluationConfig,
) -> Generator[Progress | Excluded, None, GMICEvaluationReport | None]:
    """Run the evaluation; yields ``Progress("check" | "image", done, total)`` of this
    rank and, before any model work, one
    :class:`~napari_correlax.evaluate.split_run.Excluded` (the same on every rank).
    Returns the report on rank 0, None on the others
    (:func:`~napari_correlax.evaluate.split_run.split_steps` runs it).

    Raises CorrelaxError: no data set, an empty split, a checkpoint that is not GMIC or
    whose outputs name no label, no usable image.
    """
    source = SplitSource(config.data, config.split, config.limit, config.check,
                         config.device, config.timeout_hours, scope=" for these outputs")
    return (yield from split_steps(source, partial(_GMICJob, config)))


class _GMICJob:
    """The :class:`~napari_correlax.evaluate.split_run.SplitJob` of ``correlax gmic
    evaluate``: every checkpoint's outputs, maps and FROC counts of the images it scores."""

    def __init__(self, config: GMICEvaluationConfig, group: ProcessGroup) -> None:
        self.config = config
        self.out = Path(config.out).expanduser()
        paths = [Path(m).expanduser() for m in config.models]
        paths = [p / "last.safetensors" if p.is_dir() else p for p in paths]
        self.checkpoints = [_open_checkpoint(path, name, config, group.device, self.out)
                            for path, name in zip(paths, _display_names(paths))]
        self.members: list[set[str]] = []

    def select(self, present: list[ImageRecord]) -> list[ImageRecord]:
        for c in self.checkpoints:
            c.records, c.targets = image_targets(present, c.labels, self.config.negatives)
        self.members = [{r.image_id for r in c.records} for c in self.checkpoints]
        wanted = set().union(*self.members)
        return [r for r in present if r.image_id in wanted]

    def start(self, images: SplitImages, main: bool) -> None:
        if main:
            for c in self.checkpoints:
                c.cache.describe()

    def _needed(self, record: ImageRecord) -> list[_Checkpoint]:
        return [c for c, ids in zip(self.checkpoints, self.members)
                if record.image_id in ids and not c.cache.is_done(record.image_id)]

    def is_done(self, record: ImageRecord) -> bool:
        return not self._needed(record)

    def compute(self, record: ImageRecord) -> None:
        _compute_image(record, self._needed(record), self.config)

    def merge(self, images: SplitImages) -> GMICEvaluationReport:
        return _merge(self.config, self.out, self.checkpoints, images)


def _compute_image(record: ImageRecord, checkpoints: list[_Checkpoint],
                   config: GMICEvaluationConfig) -> None:
    """Outputs, grid maps and per-image FROC counts of one image for each checkpoint into
    its cache; errors are recorded, not raised."""
    from ..evaluate.detection import GridMap, froc_curve
    from ..evaluate.split_run import read_record
    from .method import analyse, to_result

    t0 = time.perf_counter()
    try:
        mammogram = read_record(record)
    except CorrelaxError as exc:
        for c in checkpoints:
            c.cache.save_info(record.image_id, {"image_id": record.image_id,
                                                "error": str(exc)})
        return
    read_seconds = time.perf_counter() - t0
    for c in checkpoints:
        t1 = time.perf_counter()
        doc: dict[str, Any] = {"image_id": record.image_id, "study_id": record.study_id,
                               "source": str(record.path), "error": None}
        try:
            analysis = analyse(mammogram, c.model, tuple(config.test_cams),
                               laterality=record.laterality or None,
                               view=record.view or None, retrieval_cam=c.retrieval_cam)
            froc: dict[str, dict[str, list[list[int]]]] = {}
            for cam in config.test_cams:
                result = to_result(analysis, mammogram, cam, c.model)
                froc[cam] = {}
                for k, label in enumerate(c.labels):
                    truth = [b for b in record.boxes if b.label == label]
                    grid = GridMap.from_result(result, "saliency", result.labels[k])
                    froc[cam][label] = [[p.found, p.boxes, p.false_positives]
                                        for p in froc_curve([grid], [truth])]
            t = analysis.prepared.transform
            arrays = {f"map_{cam}": analysis.maps[cam] for cam in config.test_cams}
            arrays.update(y_global=analysis.y_global, y_local=analysis.y_local,
                          y_fusion=analysis.y_fusion, patch_boxes=analysis.boxes,
                          attention=analysis.attention,
                          transform=np.asarray(json.dumps({
                              "original_shape": t.original_shape, "input_shape": t.input_shape,
                              "flipped": t.flipped, "start": t.start, "scale": t.scale})))
            _save_npz(c.cache.maps_path(record.image_id), arrays)
            doc.update(
                labels=c.labels, y_global=analysis.y_global.tolist(),
                y_local=analysis.y_local.tolist(), y_fusion=analysis.y_fusion.tolist(),
                laterality=analysis.prepared.laterality,
                laterality_from=analysis.laterality_source, froc=froc,
                seconds={"read": round(read_seconds, 3),
                         "model": round(analysis.seconds, 3),
                         "detection": round(time.perf_counter() - t1 - analysis.seconds, 3)})
        except CorrelaxError as exc:
            doc["error"] = str(exc)
        except MemoryError:
            doc["error"] = f"{record.path}: out of memory"
        c.cache.save_info(record.image_id, doc)


def _save_npz(path: Path, arrays: dict[str, Any]) -> None:
    def write(fh: Any) -> None:
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        fh.write(buf.getvalue())

    atomic_write(path, write)


def _usable_docs(c: _Checkpoint, images: SplitImages, failed: dict[str, str]
                 ) -> list[tuple[ImageRecord, np.ndarray, dict[str, Any]]]:
    """``(record, targets, cached info)`` of the images ``c`` scored; failures into
    ``failed``."""
    docs = []
    for record, target in zip(c.records, c.targets):
        if record.image_id in images.unreadable:
            continue
        info = c.cache.load_info(record.image_id)
        if not info or info.get("error"):
            failed[record.image_id] = (info or {}).get("error") or \
                "not computed (a rank stopped?)"
            continue
        docs.append((record, target, info))
    return docs


def _summed_curve(docs: list[tuple[ImageRecord, np.ndarray, dict[str, Any]]], label: str,
                  cam: str, detect_on: str) -> list[FrocPoint]:
    """The FROC curve of one output and test CAM: the per-image counts summed."""
    from ..evaluate.detection import DEFAULT_THRESHOLDS, FrocPoint

    counts = np.zeros((len(DEFAULT_THRESHOLDS), 3), dtype=np.int64)
    images = 0
    for record, _, d in docs:
        if detect_on == "positives" and not any(b.label == label for b in record.boxes):
            continue
        counts += np.asarray(d["froc"][cam][label], dtype=np.int64)
        images += 1
    return [FrocPoint(threshold=float(th), tpr=float(f) / float(b) if b else 0.0,
                      fppi=float(fp) / images if images else 0.0, found=int(f), boxes=int(b),
                      false_positives=int(fp), images=images)
            for th, (f, b, fp) in zip(DEFAULT_THRESHOLDS, counts)]


@dataclass
class _Tables:
    """Tables I and II as rank 0 fills them, with the curves and Table I's records."""

    table1: Table
    table2: Table
    curves: dict[tuple[str, str, str], list[FrocPoint]] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)


def _new_tables(config: GMICEvaluationConfig) -> _Tables:
    """Empty Tables I and II with their columns and notes."""
    from ..evaluate.report import Table

    table1 = Table("GMIC classification on images ([CAM-GMIC] Table I): ŷ_fusion at "
                   f"{config.threshold:g}", ["Model", "Training CAM", "Patches by", "Output",
                                             "Accuracy", "AUC", "TPR", "TNR", "FNR",
                                             "Positives", "Negatives"])
    table2 = Table("GMIC detection ([CAM-GMIC] Table II): TPR@FPPI, IoU > 0.3",
                   ["Model", "Training CAM", "Output",
                    *[cam_title(c) for c in config.test_cams]])
    table1.notes = [
        "TPR = TP/(TP+FN), TNR = TN/(TN+FP), FNR = FN/(TP+FN) of ŷ_fusion ≥ "
        f"{config.threshold:g}; AUC from the ranks of ŷ_fusion (blank with one class only).",
        "Images: the split's images with the output's label and "
        + ("its normal images." if config.negatives == "normal"
           else "every other image."),
    ]
    table2.notes = [
        "Rows: the CAM that picked the patches in training (checkpoint metadata); columns: "
        "the CAM whose map localises at test time. Operating point: highest TPR, then "
        "lowest FPPI, over thresholds 0.05 … 0.95 of each image's map scaled to [0, 1].",
        "Images counted: " + ("those with a box of the label (as [CAM-GMIC])."
                              if config.detect_on == "positives" else "every evaluated image."),
    ]
    return _Tables(table1, table2)


def _add_rows(tables: _Tables, c: _Checkpoint, docs: list[Any],
              config: GMICEvaluationConfig) -> None:
    """One row of Table I and of Table II per output of checkpoint ``c``."""
    from ..evaluate.detection import operating_point, operating_point_text

    trained = cam_title(c.train_cam) if c.train_cam in TRAIN_CAMS else c.train_cam
    for k, label in enumerate(c.labels):
        targets = np.array([t[k] for _, t, _ in docs], dtype=np.float64)
        scores = np.array([d["y_fusion"][k] for _, _, d in docs], dtype=np.float64)
        m = image_metrics(targets, scores, config.threshold)
        tables.metrics.append({"model": c.name, "path": str(c.path), "train_cam": c.train_cam,
                               "retrieval_cam": c.retrieval_cam,
                               "output": c.model.config.class_names[k], "label": label, **m})
        tables.table1.rows.append([c.name, trained, cam_title(c.retrieval_cam), label,
                                   m["accuracy"], m["auc"], m["tpr"], m["tnr"], m["fnr"],
                                   m["positives"], m["negatives"]])
        cells = []
        for cam in config.test_cams:
            curve = _summed_curve(docs, label, cam, config.detect_on)
            tables.curves[(c.name, label, cam)] = curve
            cells.append(operating_point_text(operating_point(curve))
                         if curve[0].images else None)
        tables.table2.rows.append([c.name, trained, label, *cells])


def _merge(config: GMICEvaluationConfig, out: Path, checkpoints: list[_Checkpoint],
           images: SplitImages) -> GMICEvaluationReport:
    """Rank 0: read every image's cache file, write the tables (module notes)."""
    from ..evaluate.report import write_froc_csv, write_froc_figure, write_report, write_table

    failed = dict(images.unreadable)
    evaluated: dict[str, list[str]] = {}
    tables = _new_tables(config)
    for c in checkpoints:
        docs = _usable_docs(c, images, failed)
        evaluated[c.name] = [r.image_id for r, _, _ in docs]
        _add_rows(tables, c, docs, config)
    files = write_table(tables.table1, out / "table1-classification")
    files += write_table(tables.table2, out / "table2-detection")
    train_cam = {c.name: c.train_cam for c in checkpoints}
    files.append(write_froc_csv(
        out / "froc.csv", {(n, train_cam[n], lab, cam): curve
                           for (n, lab, cam), curve in tables.curves.items()},
        ("model", "train_cam", "label", "test_cam")))
    panels: dict[str, dict[str, list[FrocPoint]]] = {}
    for (name, label, cam), curve in tables.curves.items():
        panels.setdefault(label, {})[f"{name} · {cam_title(cam)}"] = curve
    files.append(write_froc_figure(out / "froc.png", panels))
    doc = {
        "data": str(images.data), "split": config.split, "settings": {
            k: v for k, v in asdict(config).items() if k not in ("data", "out")},
        "models": [{"name": c.name, "path": str(c.path), "train_cam": c.train_cam,
                    "labels": c.labels, "classes": list(c.model.config.class_names),
                    "cache_key": c.cache.key, "images": len(evaluated[c.name])}
                   for c in checkpoints],
        "missing": images.missing, "failed": failed,
        "seconds_total": round(images.seconds, 3), "table1": tables.metrics,
        "table2": tables.table2.as_records(),
        "froc": {f"{n} | {lab} | {cam}": [p.as_dict() for p in curve]
                 for (n, lab, cam), curve in tables.curves.items()},
    }
    files.append(atomic_write_text(out / "report.json", json.dumps(doc, indent=2) + "\n"))
    facts = [f"data: `{images.data}`, split `{config.split}`",
             *[f"`{c.name}`: {c.path} (trained with {c.train_cam}; "
               f"{len(evaluated[c.name])} images)" for c in checkpoints],
             f"test CAMs: {', '.join(config.test_cams)}", f"time: {images.seconds:.1f} s"]
    files.append(write_report(out / "report.md", "GMIC evaluation", facts,
                              (tables.table1, tables.table2), images.missing, failed))
    return GMICEvaluationReport(out, [c.name for c in checkpoints],
                                {"table1": tables.table1, "table2": tables.table2},
                                tables.curves, evaluated, failed, images.missing, files,
                                images.seconds)


def gmic_evaluate(config: GMICEvaluationConfig) -> GMICEvaluationReport | None:
    """Run :func:`gmic_evaluate_steps` to the end (None on ranks other than 0)."""
    from ..maps.runtime import drain

    return drain(gmic_evaluate_steps(config))
