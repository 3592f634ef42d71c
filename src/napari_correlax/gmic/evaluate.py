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

Data-parallel: under ``torchrun --nproc-per-node N`` (``WORLD_SIZE`` > 1) a gloo group is
joined; rank ``r`` computes images ``r, r + N, …`` for every checkpoint, then rank 0
reads the cache and writes the tables. Each image is computed alone, so the tables do
not depend on the number of processes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..distributed import join
from ..errors import CorrelaxError
from ..files import atomic_write, atomic_write_text
from ..maps.runtime import Progress
from .cams import TRAIN_CAMS, cam_title, check_cams
from .data import NEGATIVES, check_classes, image_targets

if TYPE_CHECKING:
    from ..evaluate.detection import FrocPoint
    from ..evaluate.report import Table
    from ..evaluate.runner import Excluded
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

    def __post_init__(self) -> None:
        self.test_cams = check_cams(self.test_cams)
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
    records: list[ImageRecord]
    targets: np.ndarray


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
    info = getattr(model, "checkpoint_info", None) or {}
    cam = (info.get("training") or {}).get("train_cam")
    if cam:
        return str(cam)
    return "cam" if "imported" in info else "unknown"


def _cache_key(path: Path, config: GMICEvaluationConfig, labels: Sequence[str]) -> str:
    from ..evaluate.detection import DEFAULT_THRESHOLDS, IOU_MIN, PIXEL_BLOCK
    from ..maps.cache import _slug, checkpoint_fingerprint

    name, fingerprint = checkpoint_fingerprint(path)
    fields = {"model": fingerprint, "cams": config.test_cams, "labels": list(labels),
              "thresholds": list(DEFAULT_THRESHOLDS), "iou": IOU_MIN, "block": PIXEL_BLOCK,
              "version": 1}
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]
    return f"{_slug(name)}-{digest}"


def _open_checkpoints(config: GMICEvaluationConfig, records: list[ImageRecord], device: str,
                      out: Path) -> list[_Checkpoint]:
    from ..maps.cache import ResultCache
    from .checkpoint import load_gmic

    paths = [Path(m).expanduser() for m in config.models]
    paths = [p / "last.safetensors" if p.is_dir() else p for p in paths]
    opened = []
    for path, name in zip(paths, _display_names(paths)):
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
        chosen, targets = image_targets(records, labels, config.negatives)
        cache = ResultCache(out / "cache", _cache_key(path, config, labels), {
            "model": str(path), "labels": labels, "test_cams": config.test_cams})
        opened.append(_Checkpoint(path, name, model, labels, _train_cam(model), cache,
                                  chosen, targets))
    return opened


def gmic_evaluate_steps(
    config: GMICEvaluationConfig,
) -> Generator[Progress | Excluded, None, GMICEvaluationReport | None]:
    """Run the evaluation; yields ``Progress("check" | "image", done, total)`` of this
    rank and, before any model work, one
    :class:`~napari_correlax.evaluate.runner.Excluded` (the same on every rank). Returns
    the report on rank 0, None on the others.

    Raises CorrelaxError: no data set, an empty split, a checkpoint that is not GMIC or
    whose outputs name no label, no usable image.
    """
    from ..evaluate.runner import Excluded
    from ..io.vindr import check_readable, load_vindr

    t_start = time.perf_counter()
    data = Path(config.data).expanduser()
    out = Path(config.out).expanduser()
    index = load_vindr(data)
    records = index.split(config.split)
    if not records:
        splits = sorted({r.split for r in index.images})
        raise CorrelaxError(f"split {config.split!r} has no images (splits here: "
                            f"{', '.join(splits) or 'none'})", data)
    if config.limit is not None:
        records = records[: max(int(config.limit), 0)]
    missing_paths = {str(p) for p in index.missing}
    missing = [r.image_id for r in records if str(r.path) in missing_paths]
    present = [r for r in records if str(r.path) not in missing_paths]

    group = join(config.device, gpu_backend=False, timeout_hours=config.timeout_hours)
    try:
        checkpoints = _open_checkpoints(config, present, group.device, out)
        wanted = {r.image_id for c in checkpoints for r in c.records}
        todo = [r for r in present if r.image_id in wanted]
        mine = todo[group.rank :: group.world_size]
        failures: dict[str, str] = {}
        if config.check in ("quick", "decode"):
            yield Progress("check", 0, len(mine))
            failures = {r.image_id: why for r, why in
                        check_readable(mine, decode=config.check == "decode")}
            yield Progress("check", len(mine), len(mine))
        unreadable: dict[str, str] = {}
        for part in group.gather(failures):
            unreadable.update(part)
        todo = [r for r in todo if r.image_id not in unreadable]
        yield Excluded(list(missing), dict(unreadable))
        if not todo:
            raise CorrelaxError(f"no usable image in split {config.split!r} for these "
                                f"outputs ({len(missing)} missing, {len(unreadable)} "
                                "unreadable)", data)
        if group.main:
            for c in checkpoints:
                c.cache.describe()
        mine = todo[group.rank :: group.world_size]
        members = [{r.image_id for r in c.records} for c in checkpoints]
        yield Progress("image", 0, len(mine))
        for done, record in enumerate(mine, start=1):
            needed = [c for c, ids in zip(checkpoints, members) if record.image_id in ids
                      and not c.cache.is_done(record.image_id)]
            if needed:
                _compute_image(record, needed, config)
            yield Progress("image", done, len(mine))
        group.barrier()
        if not group.main:
            return None
        return _merge(config, data, out, checkpoints, unreadable, missing,
                      time.perf_counter() - t_start)
    finally:
        group.close()


def _compute_image(record: ImageRecord, checkpoints: list[_Checkpoint],
                   config: GMICEvaluationConfig) -> None:
    """Outputs, grid maps and per-image FROC counts of one image for each checkpoint into
    its cache; errors are recorded, not raised."""
    from ..evaluate.detection import GridMap, froc_curve
    from ..io import read_mammogram
    from .method import analyse, to_result

    t0 = time.perf_counter()
    try:
        mammogram = read_mammogram(record.path)
        if record.height and record.width and \
                mammogram.pixels.shape != (record.height, record.width):
            raise CorrelaxError(f"image is {mammogram.pixels.shape[0]}×"
                                f"{mammogram.pixels.shape[1]} pixels but the CSV says "
                                f"{record.height}×{record.width}", record.path)
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
                               view=record.view or None)
            froc: dict[str, dict[str, list[list[int]]]] = {}
            for cam in config.test_cams:
                result = to_result(analysis, mammogram, cam, c.model)
                froc[cam] = {}
                for k, label in enumerate(c.labels):
                    truth = [(b.xmin, b.ymin, b.xmax, b.ymax) for b in record.boxes
                             if b.label == label]
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


def _merge(config: GMICEvaluationConfig, data: Path, out: Path, checkpoints: list[_Checkpoint],
           unreadable: dict[str, str], missing: list[str], seconds: float
           ) -> GMICEvaluationReport:
    """Rank 0: read every image's cache file, write the tables (module notes)."""
    from ..evaluate.detection import (
        DEFAULT_THRESHOLDS,
        FrocPoint,
        operating_point,
        operating_point_text,
    )
    from ..evaluate.report import Table, write_table

    failed = dict(unreadable)
    evaluated: dict[str, list[str]] = {}
    table1 = Table("GMIC classification on images ([CAM-GMIC] Table I): ŷ_fusion at "
                   f"{config.threshold:g}", ["Model", "Training CAM", "Output", "Accuracy",
                                             "AUC", "TPR", "TNR", "FNR", "Positives",
                                             "Negatives"])
    cams = config.test_cams
    table2 = Table("GMIC detection ([CAM-GMIC] Table II): TPR@FPPI, IoU > 0.3",
                   ["Model", "Training CAM", "Output", *[cam_title(c) for c in cams]])
    curves: dict[tuple[str, str, str], list[FrocPoint]] = {}
    metrics_doc: list[dict[str, Any]] = []
    for c in checkpoints:
        docs = []
        for record, target in zip(c.records, c.targets):
            if record.image_id in unreadable:
                continue
            info = c.cache.load_info(record.image_id)
            if not info or info.get("error"):
                failed[record.image_id] = (info or {}).get("error") or \
                    "not computed (a rank stopped?)"
                continue
            docs.append((record, target, info))
        evaluated[c.name] = [r.image_id for r, _, _ in docs]
        trained = cam_title(c.train_cam) if c.train_cam in TRAIN_CAMS else c.train_cam
        for k, label in enumerate(c.labels):
            targets = np.array([t[k] for _, t, _ in docs], dtype=np.float64)
            scores = np.array([d["y_fusion"][k] for _, _, d in docs], dtype=np.float64)
            m = image_metrics(targets, scores, config.threshold)
            metrics_doc.append({"model": c.name, "path": str(c.path), "train_cam": c.train_cam,
                                "output": c.model.config.class_names[k], "label": label, **m})
            table1.rows.append([c.name, trained, label, m["accuracy"], m["auc"], m["tpr"],
                                m["tnr"], m["fnr"], m["positives"], m["negatives"]])
            cells = []
            for cam in cams:
                counts = np.zeros((len(DEFAULT_THRESHOLDS), 3), dtype=np.int64)
                images = 0
                for record, _, d in docs:
                    if config.detect_on == "positives" and not any(
                            b.label == label for b in record.boxes):
                        continue
                    counts += np.asarray(d["froc"][cam][label], dtype=np.int64)
                    images += 1
                curve = [FrocPoint(threshold=float(th),
                                   tpr=float(f) / float(b) if b else 0.0,
                                   fppi=float(fp) / images if images else 0.0,
                                   found=int(f), boxes=int(b), false_positives=int(fp),
                                   images=images)
                         for th, (f, b, fp) in zip(DEFAULT_THRESHOLDS, counts)]
                curves[(c.name, label, cam)] = curve
                cells.append(operating_point_text(operating_point(curve)) if images else None)
            table2.rows.append([c.name, trained, label, *cells])
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
    files = write_table(table1, out / "table1-classification")
    files += write_table(table2, out / "table2-detection")
    rows = ["model,train_cam,label,test_cam,threshold,tpr,fppi,found,boxes,false_positives,"
            "images"]
    for (name, label, cam), curve in curves.items():
        train_cam = next(c.train_cam for c in checkpoints if c.name == name)
        rows += [f'"{name}",{train_cam},"{label}",{cam},{p.threshold:.4f},{p.tpr:.6f},'
                 f"{p.fppi:.6f},{p.found},{p.boxes},{p.false_positives},{p.images}"
                 for p in curve]
    files.append(atomic_write_text(out / "froc.csv", "\n".join(rows) + "\n"))
    files.append(_froc_plot(curves, out / "froc.png"))
    doc = {
        "data": str(data), "split": config.split, "settings": {
            k: v for k, v in asdict(config).items() if k not in ("data", "out")},
        "models": [{"name": c.name, "path": str(c.path), "train_cam": c.train_cam,
                    "labels": c.labels, "classes": list(c.model.config.class_names),
                    "cache_key": c.cache.key, "images": len(evaluated[c.name])}
                   for c in checkpoints],
        "missing": missing, "failed": failed, "seconds_total": round(seconds, 3),
        "table1": metrics_doc,
        "table2": table2.as_records(),
        "froc": {f"{n} | {lab} | {cam}": [p.as_dict() for p in curve]
                 for (n, lab, cam), curve in curves.items()},
    }
    files.append(atomic_write_text(out / "report.json", json.dumps(doc, indent=2) + "\n"))
    lines = ["# GMIC evaluation", "", f"- data: `{data}`, split `{config.split}`",
             *[f"- `{c.name}`: {c.path} (trained with {c.train_cam}; "
               f"{len(evaluated[c.name])} images)" for c in checkpoints],
             f"- test CAMs: {', '.join(cams)}", f"- time: {seconds:.1f} s", "",
             table1.to_markdown(), table2.to_markdown()]
    if missing or failed:
        lines += ["### Images left out", ""]
        lines += [f"- `{i}`: file missing" for i in missing]
        lines += [f"- `{i}`: {why}" for i, why in failed.items()]
    files.append(atomic_write_text(out / "report.md", "\n".join(lines) + "\n"))
    return GMICEvaluationReport(out, [c.name for c in checkpoints],
                                {"table1": table1, "table2": table2}, curves, evaluated,
                                failed, missing, files, seconds)


def _froc_plot(curves: dict[tuple[str, str, str], list[FrocPoint]], path: Path) -> Path:
    """FROC curves (TPR against FPPI), one panel per label, one line per model and test
    CAM through its thresholds from the highest; written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    labels = list(dict.fromkeys(lab for _, lab, _ in curves))
    fig = Figure(figsize=(6.0 * max(len(labels), 1), 4.5))
    axes = fig.subplots(1, max(len(labels), 1), squeeze=False)[0]
    for ax, label in zip(axes, labels):
        for (name, lab, cam), curve in curves.items():
            if lab != label or not curve or not curve[0].images:
                continue
            pts = [(p.fppi, p.tpr) for p in sorted(curve, key=lambda q: -q.threshold)]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".",
                    label=f"{name} · {cam_title(cam)}")
        ax.set_xlabel("false positives per image (FPPI)")
        ax.set_ylabel("true positive rate (TPR)")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"FROC: {label} (IoU > 0.3)")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize="small")
    fig.tight_layout()

    def write(fh: Any) -> None:
        fig.savefig(fh, format="png", dpi=100)

    return atomic_write(path, write)


def gmic_evaluate(config: GMICEvaluationConfig) -> GMICEvaluationReport | None:
    """Run :func:`gmic_evaluate_steps` to the end (None on ranks other than 0)."""
    from ..maps.sliding import drain

    return drain(gmic_evaluate_steps(config))
