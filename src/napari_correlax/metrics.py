"""Per-label classification scores shared by training (validation each epoch) and evaluation.

Every label is scored as its own binary problem over all samples (multi-label): a
sample is predicted positive for label ``c`` when its probability is at least the
threshold (0.5 by default). ``support`` is the number of samples whose ground truth
holds the label. Precision, recall and F1 are 0 when their denominator is 0 (no
predicted positives, no true positives, or both zero), as scikit-learn does with
``zero_division=0``; nothing here returns NaN. The rows follow the paper's Table 3
(docs/method.md §5); :mod:`napari_correlax.evaluate.classification` adds ROC AUC,
weighted means and the table layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["LabelMetrics", "macro_f1", "per_label_metrics"]


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


def macro_f1(rows: Sequence[LabelMetrics]) -> float:
    """Mean F1 over the labels with support > 0 (0 when no label has any)."""
    present = [r.f1 for r in rows if r.support > 0]
    return float(np.mean(present)) if present else 0.0
