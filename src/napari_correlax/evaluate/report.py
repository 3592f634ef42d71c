"""Result tables in the papers' layouts, as CSV and Markdown (docs/method.md §5, §10).

- :func:`pointing_report`: the paper's Table 4 — per lesion label the pointing-game
  accuracy of the prediction map at ≥ 25 % and ≥ 50 % and of the correlation map, the
  support, then two summary rows: :data:`MEAN_BY_SUPPORT` (with the total support) and
  :data:`HITS_PER_IMAGE` (the figure the paper prints as "Weighted Mean Accuracy", with
  the number of images with a lesion).
- :func:`classification_report`: the paper's Table 3 — per label accuracy, precision,
  recall, F1 score and support on the test crops.
- :func:`froc_report`: the second paper's Table II style — per label and map the
  operating point ``TPR@FPPI`` and the TPR at fixed FPPI budgets.
- :func:`write_froc_csv` (every point of every FROC curve), :func:`write_froc_figure`
  (one panel per label) and :func:`write_report` (``report.md``): the files every
  evaluation command writes the same way.

A :class:`Table` holds cells as numbers or text; numbers are written with four
decimals (the papers' precision), counts as integers, and a missing value (a label
without support) as an empty CSV cell and "–" in Markdown. A table's ``notes`` are
printed under it in Markdown (the CSV holds the cells only).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..files import atomic_write_text
from ..labels import NO_FINDING

if TYPE_CHECKING:
    from .classification import LabelMetrics
    from .detection import FrocPoint
    from .pointing import PointingTable

__all__ = [
    "FROC_POINT_COLUMNS",
    "HITS_PER_IMAGE",
    "MEAN_BY_SUPPORT",
    "Table",
    "classification_report",
    "froc_report",
    "pointing_report",
    "reader_report",
    "report_markdown",
    "write_froc_csv",
    "write_froc_figure",
    "write_report",
    "write_table",
]

#: Columns of a FROC point in ``froc.csv``, after the columns naming the curve.
FROC_POINT_COLUMNS = ("threshold", "tpr", "fppi", "found", "boxes", "false_positives",
                      "images")


#: Pointing-table row: accuracy averaged over labels weighted by support (= all hits over
#: all (image, label) pairs); its Support cell is the number of pairs.
MEAN_BY_SUPPORT = "Mean weighted by support"
#: Pointing-table row: all hits over the images with a lesion, the paper's Table 4
#: "Weighted Mean Accuracy"; its Support cell is the number of images with a lesion.
HITS_PER_IMAGE = "Hits per image with a lesion (the paper's 'Weighted Mean Accuracy')"


@dataclass
class Table:
    """A titled table: column names, rows of cells (str, int, float or None), notes.

    ``notes`` are sentences printed under the table in Markdown only.
    """

    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    digits: int = 4
    notes: list[str] = field(default_factory=list)

    def _cell(self, value: Any, markdown: bool) -> str:
        if value is None:
            return "–" if markdown else ""
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, int):
            return str(value)
        if isinstance(value, float):
            return f"{value:.{self.digits}f}"
        text = str(value)
        return text.replace("|", "\\|") if markdown else text

    def to_csv(self) -> str:
        """The table as CSV text (header row first)."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(self.columns)
        for row in self.rows:
            writer.writerow([self._cell(v, False) for v in row])
        return buf.getvalue()

    def to_markdown(self) -> str:
        """The table as a Markdown pipe table under a ``###`` heading."""
        align = ["---"] + ["---:"] * (len(self.columns) - 1)
        lines = [f"### {self.title}", "",
                 "| " + " | ".join(self.columns) + " |",
                 "|" + "|".join(align) + "|"]
        for row in self.rows:
            lines.append("| " + " | ".join(self._cell(v, True) for v in row) + " |")
        if self.notes:
            lines += ["", *[f"- {note}" for note in self.notes]]
        return "\n".join(lines) + "\n"

    def as_records(self) -> list[dict[str, Any]]:
        """Rows as dicts keyed by column name (JSON-able)."""
        return [dict(zip(self.columns, row)) for row in self.rows]


def pointing_report(table: PointingTable, title: str = "Pointing game accuracy (paper Table 4)"
                    ) -> Table:
    """Table 4 layout from a :class:`~napari_correlax.evaluate.pointing.PointingTable`.

    Rows: every label of the table (lesion labels, model order), then
    :data:`MEAN_BY_SUPPORT` with the total support ((image, label) pairs), then
    :data:`HITS_PER_IMAGE` with the number of images with a lesion in the Support
    column. The second summary is the one to compare with the paper's "Weighted Mean
    Accuracy"; it is not a mean of the rows above and can exceed 1 (an image with
    lesions of two labels can score two hits). Markdown notes say so under the table.
    """
    columns = ["Finding", *[r.title for r in table.rules], "Support"]
    out = Table(title, columns)
    for label in table.labels:
        out.rows.append([label, *[table.accuracy(label, r.name) for r in table.rules],
                         table.support(label)])
    out.rows.append([MEAN_BY_SUPPORT, *[table.weighted_mean(r.name) for r in table.rules],
                     table.total_support()])
    out.rows.append([HITS_PER_IMAGE,
                     *[table.hits_per_lesion_image(r.name) for r in table.rules],
                     table.images_with_lesion()])
    out.notes = [
        f"{MEAN_BY_SUPPORT}: the label accuracies averaged with their support as weights, "
        "i.e. all hits over all (image, label) pairs; Support = pairs.",
        f"{HITS_PER_IMAGE.split(' (')[0]}: all hits over the number of images with at least "
        "one scored lesion (Support = images). This is how the paper's Table 4 computes its "
        "\"Weighted Mean Accuracy\" (227 hits / 357 images, printed 0.6358; its per-label rows "
        "give 0.4978 weighted by support). It can exceed 1: an image with lesions of two "
        "labels can score two hits.",
    ]
    return out


def classification_report(
    metrics: Sequence[LabelMetrics], title: str = "Crop classification (paper Table 3)"
) -> Table:
    """Table 3 layout from :class:`~napari_correlax.evaluate.classification.LabelMetrics` rows.

    A label without cases (support 0) has no recall or F1: those cells are blank, not 0.
    """
    out = Table(title, ["Label", "Accuracy", "Precision", "Recall", "F1 Score", "Support"])
    for m in metrics:
        undefined = m.support == 0
        out.rows.append([m.label, m.accuracy, m.precision, None if undefined else m.recall,
                         None if undefined else m.f1, int(m.support)])
    return out


def froc_report(
    curves: Mapping[tuple[str, str], Sequence[FrocPoint]],
    budgets: Sequence[float] = (0.5, 1.0, 2.0),
    title: str = "Detection from maps: FROC summary (TPR@FPPI, IoU > 0.3)",
) -> Table:
    """One row per (label, map) curve: operating point, TPR within FPPI budgets, boxes.

    ``curves`` maps ``(label, map name)`` to a list of
    :class:`~napari_correlax.evaluate.detection.FrocPoint` (see
    :func:`~napari_correlax.evaluate.detection.froc_curve`).
    """
    from .detection import operating_point, operating_point_text, tpr_at_fppi

    columns = ["Finding", "Map", "Operating point (TPR@FPPI)", "Threshold",
               *[f"TPR @ FPPI ≤ {b:g}" for b in budgets], "Boxes", "Images"]
    out = Table(title, columns)
    for (label, name), curve in curves.items():
        best = operating_point(curve)
        boxes = curve[0].boxes if curve else 0
        images = curve[0].images if curve else 0
        out.rows.append([label, name, operating_point_text(best),
                         None if best is None else best.threshold,
                         *[tpr_at_fppi(curve, b) for b in budgets], boxes, images])
    return out


def write_table(table: Table, stem: str | os.PathLike[str]) -> list[Path]:
    """Write ``<stem>.csv`` and ``<stem>.md`` atomically; returns both paths."""
    stem = Path(stem)
    csv_path = stem.with_name(stem.name + ".csv")
    md_path = stem.with_name(stem.name + ".md")
    atomic_write_text(csv_path, table.to_csv())
    atomic_write_text(md_path, table.to_markdown())
    return [csv_path, md_path]


def reader_report(rows: Iterable[Any], title: str = "Reader's verdicts beside the automatic ones"
                  ) -> Table:
    """Per finding label and map rule: how often the pointing game called a hit, and how
    often the reader did.

    ``rows`` are :class:`~napari_correlax.evaluate.verdicts.VerdictRow` (one per image ×
    label × rule). Columns: the findings scored; the automatic hit rate; how many the
    reader judged hit or miss, and the reader's hit rate among them (blank when none);
    how many the reader marked unsure; the agreement (reader = automatic) among the
    judged ones; and the false positives the reader marked on that label's maps of the
    rule's kind. A last row per rule pools the lesion labels ("No Finding" rows, where a
    hit means the map stayed quiet on a normal image, are not pooled with them) and
    counts every false positive marked on that kind of map, on any image.
    """
    rows = list(rows)
    marks: dict[tuple[str, str], int] = {}
    groups: dict[tuple[str, str], list[Any]] = {}
    for row in rows:
        if row.is_mark:
            marks[(row.label, row.kind)] = marks.get((row.label, row.kind), 0) + 1
        else:
            groups.setdefault((row.label, row.map), []).append(row)
    out = Table(title, ["Finding", "Map", "Findings", "Automatic hit rate", "Judged",
                        "Reader hit rate", "Unsure", "Agreement", "Marked false positives"])
    kind_of = {r.map: r.kind for members in groups.values() for r in members}

    def line(name: str, rule: str, members: list[Any]) -> list[Any]:
        auto = sum(r.auto_verdict == "hit" for r in members) / len(members) if members else None
        judged = [r for r in members if r.reader_verdict in ("hit", "miss")]
        reader = (sum(r.reader_verdict == "hit" for r in judged) / len(judged)
                  if judged else None)
        agree = (sum(r.reader_verdict == r.auto_verdict for r in judged) / len(judged)
                 if judged else None)
        unsure = sum(r.reader_verdict == "unsure" for r in members)
        fps = sum(n for (lab, k), n in marks.items()
                  if (name == "All findings" or lab == name) and k == kind_of[rule])
        return [name, rule, len(members), auto, len(judged), reader, unsure, agree, fps]

    for (label, rule), members in sorted(groups.items()):
        out.rows.append(line(label, rule, members))
    for rule in sorted({rule for _, rule in groups}):
        pooled = [r for (lab, m), members in groups.items() if m == rule and lab != NO_FINDING
                  for r in members]
        out.rows.append(line("All findings", rule, pooled))
    out.notes.append("Hit rates are over findings (image × label): the automatic one over "
                     "all, the reader's over those judged hit or miss; unsure ones are "
                     "counted apart. \"No Finding\" rows are normal images: a hit there "
                     "means the map raised no alarm.")
    return out


def write_froc_csv(path: str | os.PathLike[str],
                   curves: Mapping[tuple[str, ...], Sequence[FrocPoint]],
                   names: Sequence[str]) -> Path:
    """Write every point of every FROC curve as CSV, atomically; returns the path.

    ``curves`` maps a key naming the curve (as many strings as ``names``, e.g.
    ``("Mass", "correlation")`` for ``names = ("label", "map")``) to its points. One row
    per point: the key, then :data:`FROC_POINT_COLUMNS` (threshold to 4 decimals, TPR and
    FPPI to 6, counts as integers). Cells are quoted only where CSV needs it.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*names, *FROC_POINT_COLUMNS])
    for key, curve in curves.items():
        if len(key) != len(names):
            raise ValueError(f"curve key {key!r} does not match the columns {list(names)}")
        for p in curve:
            writer.writerow([*key, f"{p.threshold:.4f}", f"{p.tpr:.6f}", f"{p.fppi:.6f}",
                             p.found, p.boxes, p.false_positives, p.images])
    return atomic_write_text(path, buf.getvalue())


def write_froc_figure(path: str | os.PathLike[str],
                      panels: Mapping[str, Mapping[str, Sequence[FrocPoint]]]) -> Path:
    """FROC curves as a PNG (written atomically): one panel per label, one line per curve.

    ``panels`` maps a label to ``{line name: points}``; each line runs through its
    points from the highest threshold (TPR against false positives per image). Curves
    without points or images are left out.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    from ..files import atomic_write

    fig = Figure(figsize=(5.5 * max(len(panels), 1), 4.5))
    axes = fig.subplots(1, max(len(panels), 1), squeeze=False)[0]
    for ax, (label, lines) in zip(axes, panels.items()):
        for name, curve in lines.items():
            if not curve or not curve[0].images:
                continue
            pts = sorted(curve, key=lambda q: -q.threshold)
            ax.plot([p.fppi for p in pts], [p.tpr for p in pts], marker=".", label=name)
        ax.set(title=f"FROC: {label} (IoU > 0.3)", xlabel="false positives per image (FPPI)",
               ylabel="true positive rate (TPR)", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize="small")
    fig.tight_layout()
    return atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=100))


def report_markdown(title: str, facts: Sequence[str], tables: Iterable[Table],
                    missing: Sequence[str] = (), failed: Mapping[str, str] | None = None
                    ) -> str:
    """A run's ``report.md``: ``# title``, the ``facts`` as a bullet list, every table,
    then the images left out (``missing`` ids: file missing; ``failed``: id → reason)."""
    failed = failed or {}
    lines = [f"# {title}", "", *[f"- {fact}" for fact in facts], ""]
    lines += [table.to_markdown() for table in tables]
    if missing or failed:
        lines += ["### Images left out", ""]
        lines += [f"- `{i}`: file missing" for i in missing]
        lines += [f"- `{i}`: {why}" for i, why in failed.items()]
        lines.append("")
    return "\n".join(lines)


def write_report(path: str | os.PathLike[str], title: str, facts: Sequence[str],
                 tables: Iterable[Table], missing: Sequence[str] = (),
                 failed: Mapping[str, str] | None = None) -> Path:
    """Write :func:`report_markdown` atomically to ``path``; returns the path."""
    return atomic_write_text(path, report_markdown(title, facts, tables, missing, failed))
