"""Per-label classification metrics in the layout of the paper's Table 3 (docs/method.md §5).

Every label is scored as its own binary problem over all samples (multi-label): a
sample is predicted positive for label ``c`` when its probability is at least the
threshold (0.5 by default). ``support`` is the number of samples whose ground truth
holds the label. Precision, recall and F1 are 0 when their denominator is 0 (no
predicted positives, no true positives, or both zero), as scikit-learn does with
``zero_division=0``; nothing here returns NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["LabelMetrics", "format_table", "macro_f1", "per_label_metrics", "roc_auc",
           "weighted_mean"]


@dataclass(frozen=True)
class LabelMetrics:
    """Scores of one label (a row of Table 3); counts are numbers of samples."""

    label: str
    accuracy: float
    precision: float
    recall: float
    f1: float
    support: int
    tp: int
    fp: int
    fn: int
    tn: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-able copy."""
        return asdict(self)


def _ratio(num: int, den: int) -> float:
    return float(num) / float(den) if den else 0.0


def per_label_metrics(
    targets: np.ndarray,
    scores: np.ndarray,
    labels: Sequence[str],
    threshold: float = 0.5,
) -> list[LabelMetrics]:
    """Accuracy, precision, recall, F1 and support for each label.

    Args:
        targets: ``(N, C)`` ground truth, non-zero where the sample has the label.
        scores: ``(N, C)`` predicted probabilities in [0, 1].
        labels: the ``C`` label names, in column order.
        threshold: a probability at or above it counts as a positive prediction.

    Returns:
        One :class:`LabelMetrics` per label, in column order.
    """
    truth = np.asarray(targets) > 0
    pred = np.asarray(scores, dtype=np.float64) >= threshold
    if truth.shape != pred.shape or truth.ndim != 2:
        raise ValueError(f"targets {truth.shape} and scores {pred.shape} must be equal (N, C)")
    if truth.shape[1] != len(labels):
        raise ValueError(f"{truth.shape[1]} columns but {len(labels)} labels")
    n = truth.shape[0]
    rows = []
    for c, name in enumerate(labels):
        t, p = truth[:, c], pred[:, c]
        tp = int(np.sum(t & p))
        fp = int(np.sum(~t & p))
        fn = int(np.sum(t & ~p))
        tn = int(np.sum(~t & ~p))
        precision = _ratio(tp, tp + fp)
        recall = _ratio(tp, tp + fn)
        f1 = _ratio(2 * tp, 2 * tp + fp + fn)
        rows.append(LabelMetrics(
            label=str(name), accuracy=_ratio(tp + tn, n), precision=precision, recall=recall,
            f1=f1, support=tp + fn, tp=tp, fp=fp, fn=fn, tn=tn,
        ))
    return rows


def roc_auc(targets: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve of one binary problem: the probability that a random
    positive scores above a random negative, ties counting one half (the Mann–Whitney
    statistic, with average ranks for tied scores). ``targets``: (N,) non-zero for
    positives; ``scores``: (N,). None when either class is absent (undefined)."""
    from scipy.stats import rankdata

    truth = np.asarray(targets).reshape(-1) > 0
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    n_pos, n_neg = int(truth.sum()), int((~truth).sum())
    if not n_pos or not n_neg:
        return None
    ranks = rankdata(s)
    return float((ranks[truth].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def macro_f1(rows: Sequence[LabelMetrics]) -> float:
    """Mean F1 over the labels with support > 0 (0 when no label has any)."""
    present = [r.f1 for r in rows if r.support > 0]
    return float(np.mean(present)) if present else 0.0


def weighted_mean(rows: Sequence[LabelMetrics], field: str) -> float:
    """Support-weighted mean of one metric (``"f1"``, ``"precision"``, ...)."""
    total = sum(r.support for r in rows)
    if not total:
        return 0.0
    return float(sum(getattr(r, field) * r.support for r in rows) / total)


def format_table(rows: Sequence[LabelMetrics], digits: int = 4) -> str:
    """Plain-text (Markdown) table with Table 3's columns and a weighted-mean row.

    A label without cases (support 0) shows "–" for recall and F1 (undefined, not 0).
    """
    head = "| Label | Accuracy | Precision | Recall | F1 | Support |"
    lines = [head, "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        recall, f1 = (("–", "–") if r.support == 0
                      else (f"{r.recall:.{digits}f}", f"{r.f1:.{digits}f}"))
        lines.append(
            f"| {r.label} | {r.accuracy:.{digits}f} | {r.precision:.{digits}f} | "
            f"{recall} | {f1} | {r.support} |"
        )
    means = [weighted_mean(rows, k) for k in ("accuracy", "precision", "recall", "f1")]
    lines.append(
        "| Weighted mean | " + " | ".join(f"{m:.{digits}f}" for m in means)
        + f" | {sum(r.support for r in rows)} |"
    )
    return "\n".join(lines)
