"""Statistics for comparing map methods on the same images (docs/method.md §10).

A pointing-game rate is a share of (image, label) pairs, so it gets a binomial
confidence interval, and two methods scored on the same pairs are compared with a
paired test that looks only at the pairs where they disagree:

- :func:`wilson_interval`: the Wilson score interval of ``hits / n`` (better than the
  normal approximation for small ``n`` and rates near 0 or 1, never outside [0, 1]).
- :func:`exact_mcnemar`: the two-sided exact McNemar test, i.e. the exact binomial
  test of ``b`` successes in ``b + c`` trials at probability 1/2, where ``b`` counts
  the pairs only method A hits and ``c`` those only method B hits.
- :func:`paired_counts`: both / A only / B only / neither and the McNemar p-value of
  two methods' hit tables keyed by (image, label).
- :func:`paired_rows`: the same for every pair of methods, per label and pooled over
  labels (the rows of ``paired.csv``).

Nothing here imports torch or numpy.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from statistics import NormalDist

__all__ = [
    "POOLED",
    "PairedCounts",
    "PairedRow",
    "exact_mcnemar",
    "paired_counts",
    "paired_rows",
    "wilson_interval",
]

#: The ``label`` of a row pooled over every label.
POOLED = "all labels"

#: A hit table: ``(image_id, label) -> hit``.
HitTable = Mapping[tuple[Hashable, str], bool]


def wilson_interval(hits: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of the rate ``hits / n`` at confidence ``level``.

    Returns ``(low, high)`` in [0, 1]; ``(nan, nan)`` when ``n == 0`` (no support).

    Raises:
        ValueError: ``hits`` outside ``0 … n``, or ``level`` outside (0, 1).
    """
    if not 0 <= hits <= n:
        raise ValueError(f"hits must lie in 0..n, not {hits} of {n}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), not {level}")
    if n == 0:
        return math.nan, math.nan
    z = NormalDist().inv_cdf(0.5 + level / 2.0)
    p = hits / n
    z2n = z * z / n
    centre = (p + z2n / 2.0) / (1.0 + z2n)
    half = z / (1.0 + z2n) * math.sqrt(p * (1.0 - p) / n + z2n / (4.0 * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def exact_mcnemar(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` and ``c`` discordant pairs.

    Under the null hypothesis each discordant pair falls on either side with
    probability 1/2, so the p-value is twice the binomial tail
    ``P(X <= min(b, c))`` for ``X ~ Binomial(b + c, 1/2)``, capped at 1. No discordant
    pairs give 1.0 (no evidence of a difference). Exact integer arithmetic.

    Raises:
        ValueError: a negative count.
    """
    if b < 0 or c < 0:
        raise ValueError(f"counts must be non-negative, not {b}, {c}")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)


@dataclass(frozen=True)
class PairedCounts:
    """Two methods on the same (image, label) pairs.

    ``both`` / ``a_only`` / ``b_only`` / ``neither`` count the pairs hit by both, by A
    only, by B only and by neither; ``p_value`` is :func:`exact_mcnemar` on
    ``(a_only, b_only)``; ``unpaired`` counts pairs that only one table has (left out).
    """

    both: int
    a_only: int
    b_only: int
    neither: int
    p_value: float
    unpaired: int = 0

    @property
    def pairs(self) -> int:
        """Pairs both tables score."""
        return self.both + self.a_only + self.b_only + self.neither

    @property
    def discordant(self) -> int:
        """Pairs where the two methods disagree (what the test looks at)."""
        return self.a_only + self.b_only


def paired_counts(hits_a: HitTable, hits_b: HitTable, label: str | None = None) -> PairedCounts:
    """Compare two hit tables keyed by ``(image_id, label)`` on the pairs both have.

    Args:
        hits_a, hits_b: whether each method hits each (image, label) pair.
        label: count only this label's pairs; None pools every label.
    """
    keys_a = {k for k in hits_a if label is None or k[1] == label}
    keys_b = {k for k in hits_b if label is None or k[1] == label}
    shared = keys_a & keys_b
    counts = {(True, True): 0, (True, False): 0, (False, True): 0, (False, False): 0}
    for key in shared:
        counts[(bool(hits_a[key]), bool(hits_b[key]))] += 1
    a_only, b_only = counts[(True, False)], counts[(False, True)]
    return PairedCounts(both=counts[(True, True)], a_only=a_only, b_only=b_only,
                        neither=counts[(False, False)], p_value=exact_mcnemar(a_only, b_only),
                        unpaired=len(keys_a ^ keys_b))


@dataclass(frozen=True)
class PairedRow:
    """One row of ``paired.csv``: two methods, one label (or :data:`POOLED`)."""

    method_a: str
    method_b: str
    label: str
    counts: PairedCounts


def paired_rows(hits: Mapping[str, HitTable], labels: Sequence[str] | None = None,
                against: str | None = None) -> list[PairedRow]:
    """Paired comparisons of several methods, per label and pooled.

    Args:
        hits: each method's hit table, in the order rows should follow.
        labels: labels to report one by one (default: every label in the tables, in
            order of first appearance); a pooled row over all pairs follows them.
        against: compare every other method with this one only (it is ``method_a``);
            None compares every pair of methods.
    """
    names = list(hits)
    if against is not None:
        if against not in hits:
            raise ValueError(f"no hit table for {against!r}")
        pairs = [(against, m) for m in names if m != against]
    else:
        pairs = list(combinations(names, 2))
    if labels is None:
        labels = list(dict.fromkeys(key[1] for table in hits.values() for key in table))
    rows = []
    for a, b in pairs:
        for label in [*labels, None]:
            rows.append(PairedRow(a, b, POOLED if label is None else label,
                                  paired_counts(hits[a], hits[b], label)))
    return rows
