"""Per-label classification metrics in the layout of the paper's Table 3 (docs/method.md §5).

Every label is scored as its own binary problem over all samples (multi-label): a
sample is predicted positive for label ``c`` when its probability is at least the
threshold (0.5 by default). ``support`` is the number of samples whose ground truth
holds the label. Precision, recall and F1 are 0 when their denominator is 0 (no
predicted positives, no true positives, or both zero), as scikit-learn does with
``zero_division=0``; nothing here returns NaN. The per-label rows and the macro F1
live in :mod:`napari_correlax.metrics` (training validates with them too).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..metrics import LabelMetrics, macro_f1, per_label_metrics

__all__ = ["LabelMetrics", "format_table", "macro_f1", "per_label_metrics", "roc_auc",
           "weighted_mean"]


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
