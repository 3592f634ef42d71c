"""CorRELAX mask designs (docs/method.md §7): how the N occlusion masks of a run are drawn.

A mask is a ``g × g`` grid of cells (g = 8, so k = 64 cells), 1 = kept, 0 = masked,
bilinearly upsampled to the window afterwards. CorRELAX's correlations are Pearson ρ over
masks whose cells are kept with probability ``1 − p`` independently (p = 0.5: every mask
uniform on {0, 1}^k). A *design* says how the N masks of a run are drawn **together**.
Every design here leaves each single mask uniform on {0, 1}^k, so ρ keeps its meaning
(the same population quantity as the paper's i.i.d. masks); a balanced design only makes
the estimate less noisy for the same N. Only ``"iid"`` is defined for ``p ≠ 0.5``.

Notation: ``H`` is the Sylvester–Hadamard matrix of ``R = 2^q`` rows written in bits,
``H[r, c] = parity(popcount(r & c))`` for row and column indices ``r, c ∈ [0, R)``. Two
different non-zero columns agree in exactly half the rows and every non-zero column is
balanced, so any set of non-zero columns is a two-level orthogonal array of strength 2.

Designs
    ``iid``
        The paper's masks: every cell of every mask an independent Bernoulli draw.
    ``antithetic``
        Masks in complementary pairs ``(M, 1 − M)``, M i.i.d. uniform. *Uniformity:* the
        first mask of a pair is uniform, and complementing is a bijection of {0, 1}^k.
        Every effect of an odd number of cells cancels within each pair.
    ``oa``
        Randomised orthogonal array: blocks of ``R`` masks (the smallest power of two
        above k: 128 for 64 cells), each made of k distinct non-zero columns of ``H``
        drawn at random (column j → cell j), its rows in random order, each column
        flipped (0 ↔ 1) by an independent fair coin. Within a block every cell is kept in
        exactly half the masks and every pair of cells shows each of its four patterns
        equally often, so main effects and two-cell interactions cancel.
    ``oa-antithetic``
        The orthogonal array made of complementary pairs (a *foldover*): ``R = 2m`` rows
        (m the smallest power of two ≥ k; 128 for 64 cells) and the k columns taken among
        the m columns whose top bit is m. For such a column ``H[r ⊕ m, c] = 1 − H[r, c]``,
        so rows ``r`` and ``r ⊕ m`` are complementary masks; they follow each other in the
        block (pairs in random order), with random column flips as above. It is
        a strength-2 array in which, in addition, every product of an odd number of
        columns is balanced (a resolution-IV design): effects of one, two and three cells
        all cancel within a block, and every effect of an odd number of cells within
        each pair.
    ``sobol``
        Randomised quasi-Monte Carlo in blocks of ``R`` masks (128 for 64 cells): cell j
        of mask n of a block is the leading bit of coordinate j of point n of a scrambled
        k-dimensional Sobol sequence (``torch.quasirandom.SobolEngine``, linear matrix
        scrambling and a random digital shift), each block with its own scrambling drawn
        from ``seed``, so blocks are independent replicates (as the orthogonal arrays'
        blocks are) and the run can measure the design's variance.

    *Uniformity of the orthogonal arrays.* A mask at any position of a block is
    ``a ⊕ f``: ``a`` is the row of ``H`` that landed there (it depends on the chosen
    columns and the row order), ``f`` the block's flip vector, uniform on {0, 1}^k and
    drawn independently of them. For every fixed ``a`` the map ``f ↦ a ⊕ f`` is a
    bijection, so ``a ⊕ f`` is uniform whatever ``a`` is. *Uniformity of Sobol masks:*
    the digital shift XORs every coordinate with independent fair bits, drawn
    independently of the matrix scrambling; the leading bits of a point are therefore a
    vector fixed by the scrambling XOR independent fair bits: uniform.

Nesting and seeds
    Masks are produced block after block from one CPU ``torch.Generator`` seeded with
    ``seed``, so mask n depends only on ``(design, seed, n)``: the first n masks of a
    longer run are exactly the masks of a run of n, and the same seed gives the same
    masks. CorRELAX gives every window its own stream, seeded with
    :func:`window_seed` of the run's seed and the window's key, so the randomisations of
    different windows are independent (what lets a run measure its design's variance,
    below) and a window that stops early used masks ``0 … n−1`` of its stream.
    :func:`design_unit` is the number of masks after which a design is complete (1, 2, or
    the block of ``R``); CorRELAX's adaptive stopping checks only at multiples of it
    (after its floor), so pairs and blocks are never cut by a stop.

Variance
    A design's variance of ρ relative to i.i.d. masks is not a property of the design
    alone: to first order ``ρ̂ − ρ`` is the mean of an influence function ψ over the
    masks, and a block cancels some of ψ's Walsh components while it *adds up* others.
    ``oa-antithetic`` removes every odd order and order 2, but a product of an even
    number ≥ 4 of its columns is constant over the block with probability ≈ 1/64 (4
    cells: 1/61), so those orders count about twice; ``antithetic`` doubles every even
    order, ``oa`` cancels orders 1 and 2 and leaves the others about as i.i.d. masks do.
    CorRELAX therefore measures the factor in every run, per correlation, from
    independent replicates (whole blocks, or 64 masks of the shorter designs) of the
    windows that reach two or more of them (:meth:`.moments.Moments.measured_factor`;
    a run's calibration windows, at least :data:`MIN_FACTOR_DOF` where it has that many,
    are given two replicates), and widens it for the uncertainty of the
    measurement itself (the ratio of Student's to the normal quantile, squared), never
    beyond :data:`DESIGN_VARIANCE_BOUND`, the most one block can have, which is also used
    where nothing could be measured. :data:`DESIGN_VARIANCE_FACTOR` records typical
    values. Measurements: ``benchmarks/designs.py``, docs/method.md §7.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ..errors import CorrelaxError
from .settings import DEFAULT_DESIGN, MASK_DESIGNS

if TYPE_CHECKING:
    import torch

__all__ = [
    "DESIGN_VARIANCE_BOUND",
    "DESIGN_VARIANCE_FACTOR",
    "GRID_CELLS",
    "MASKED_PROBABILITY",
    "MASK_DESIGNS",
    "MIN_FACTOR_DOF",
    "design_unit",
    "hadamard_bits",
    "make_mask_grids",
    "orthogonal_block",
    "window_seed",
]

#: Mask grid side g (paper: 8 × 8 blocks).
GRID_CELLS = 8
#: Probability p that a grid cell is masked (kept with probability 1 − p).
MASKED_PROBABILITY = 0.5
#: i.i.d. masks are drawn in blocks of this size (the paper's batches of 128).
_IID_BLOCK = 128

#: Typical variance of ρ under each design relative to i.i.d. masks at the same N, at
#: whole blocks, on the models where the design helped least among the demo, CBIS-DDSM
#: and resnet18 settings (``benchmarks/designs.py``; docs/method.md §7). For planning and
#: the benchmarks only: a run's intervals use the factor it measures (module docstring).
DESIGN_VARIANCE_FACTOR: dict[str, float] = {
    "iid": 1.0,
    "antithetic": 1.1,
    "oa": 0.7,
    "oa-antithetic": 0.6,
    "sobol": 0.65,
}

#: Largest variance factor of one block of each design whatever the model: the block's
#: length times the largest probability that a set of cells of one size is aliased to the
#: constant (``oa-antithetic``: 128 / 61 for four cells; ``antithetic``: a pair doubles
#: every even order; ``oa``: about 128 / 125). Sobol's nets are not a group design; it
#: gets the antithetic bound. Used until the run has measured its own factor.
DESIGN_VARIANCE_BOUND: dict[str, float] = {
    "iid": 1.0,
    "antithetic": 2.0,
    "oa": 1.05,
    "oa-antithetic": 2.1,
    "sobol": 2.0,
}

#: Calibration windows a run gives two replicates (where it has that many windows), so
#: that its measured design factor has at least this many degrees of freedom.
MIN_FACTOR_DOF = 16
#: Stream of the per-window mask seeds (:func:`window_seed`).
_WINDOW_STREAM = 0x6D61736B


def window_seed(seed: int, key: int) -> int:
    """Seed of the mask stream of the window with ``key`` in a run seeded with ``seed``:
    independent streams for different keys (``numpy.random.SeedSequence``)."""
    state = np.random.SeedSequence((int(seed), _WINDOW_STREAM, int(key))).generate_state(2)
    return int(state[0]) << 31 ^ int(state[1])


def _check_design(design: str, p: float) -> None:
    if design not in MASK_DESIGNS:
        raise CorrelaxError(f"unknown mask design {design!r}; choose one of "
                            f"{', '.join(MASK_DESIGNS)}")
    if not 0.0 <= p <= 1.0:
        raise CorrelaxError(f"masked probability must be in [0, 1], not {p}")
    if design != "iid" and p != 0.5:
        raise CorrelaxError(f"mask design {design!r} keeps every mask uniform only with half "
                            f"the cells masked (p = 0.5, not {p}); use design 'iid'")


def _block_rows(design: str, k: int) -> int:
    """Rows ``R`` of one orthogonal-array or Sobol block for ``k`` cells."""
    if design == "oa-antithetic":
        return 2 * (1 << max(k - 1, 0).bit_length())  # 2m, m the power of two ≥ k
    return 1 << k.bit_length()  # the power of two > k: R − 1 ≥ k non-zero columns


def design_unit(design: str, cells: int = GRID_CELLS) -> int:
    """Masks after which ``design`` is complete: 1 (iid), 2 (antithetic pairs) or the
    block of ``R`` masks of the orthogonal arrays and Sobol (128 for 8 × 8 cells)."""
    _check_design(design, 0.5)
    if design == "iid":
        return 1
    if design == "antithetic":
        return 2
    return _block_rows(design, int(cells) ** 2)


def hadamard_bits(rows: int, columns: np.ndarray) -> np.ndarray:
    """``(rows, len(columns))`` uint8: Sylvester–Hadamard entries in bits,
    ``parity(popcount(r & c))`` for row ``r`` and each column index ``c``."""
    a = np.arange(int(rows), dtype=np.int64)[:, None] & np.asarray(columns, dtype=np.int64)
    parity = np.zeros(a.shape, dtype=np.int64)
    while a.any():
        parity ^= a & 1
        a = a >> 1
    return parity.astype(np.uint8)


def orthogonal_block(rows: int, columns: np.ndarray, flips: np.ndarray, order: np.ndarray
                     ) -> np.ndarray:
    """One randomised orthogonal-array block, ``(rows, k)`` uint8 (module docstring).

    ``columns`` (k,) are Hadamard column indices (column j → cell j), ``flips`` (k,) the
    0/1 flip of each column, ``order`` (rows,) the row of ``H`` at each position.
    """
    base = hadamard_bits(rows, columns)
    return base[np.asarray(order)] ^ np.asarray(flips, dtype=np.uint8)[None, :]


def _oa_blocks(design: str, n_blocks: int, k: int, gen: torch.Generator) -> np.ndarray:
    import torch

    rows = _block_rows(design, k)
    out = []
    for _ in range(n_blocks):
        if design == "oa":
            columns = torch.randperm(rows - 1, generator=gen)[:k].numpy() + 1
            order = torch.randperm(rows, generator=gen).numpy()
        else:
            half = rows // 2
            columns = torch.randperm(half, generator=gen)[:k].numpy() + half
            pairs = torch.randperm(half, generator=gen).numpy()
            order = np.stack([pairs, pairs + half], axis=1).reshape(-1)
        flips = torch.randint(0, 2, (k,), generator=gen).numpy()
        out.append(orthogonal_block(rows, columns, flips, order))
    return np.concatenate(out) if out else np.zeros((0, k), np.uint8)


def make_mask_grids(
    n: int, seed: int = 0, *, cells: int = GRID_CELLS, p: float = MASKED_PROBABILITY,
    design: str = DEFAULT_DESIGN,
) -> torch.Tensor:
    """``(n, cells, cells)`` float32 CPU tensor of 0/1 mask cells (1 = kept) of ``design``.

    Each mask alone is uniform on {0, 1}^(cells²) (cells kept with probability ``1 − p``
    for ``"iid"``, the only design defined for ``p ≠ 0.5``); the masks of a call are drawn
    jointly as the design says (module docstring). Mask n depends only on
    ``(design, seed, n)``: the first ``k`` masks of any call are those of a call of ``k``.
    """
    import torch

    if n < 0:
        raise CorrelaxError("number of masks must not be negative")
    _check_design(design, p)
    n, cells = int(n), int(cells)
    k = cells * cells
    if n == 0:
        return torch.zeros((0, cells, cells), dtype=torch.float32)
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(seed))
    if design == "iid":
        blocks = []
        for _ in range(math.ceil(n / _IID_BLOCK)):
            u = torch.rand((_IID_BLOCK, cells, cells), generator=gen, dtype=torch.float32)
            blocks.append((u >= p).to(torch.float32))
        return torch.cat(blocks)[:n]
    if design == "antithetic":
        parts = []
        for _ in range(math.ceil(n / _IID_BLOCK)):
            first = torch.rand((_IID_BLOCK // 2, k), generator=gen) >= 0.5
            parts.append(torch.stack([first, ~first], dim=1).reshape(-1, k))
        return torch.cat(parts)[:n].to(torch.float32).reshape(n, cells, cells)
    rows = _block_rows(design, k)
    if design == "sobol":  # independent scrambles, one per block: replicates (module doc)
        parts = []
        for _ in range(math.ceil(n / rows)):
            block_seed = int(torch.randint(0, 2**62, (1,), generator=gen))
            engine = torch.quasirandom.SobolEngine(k, scramble=True, seed=block_seed)
            points = engine.draw(rows, dtype=torch.float64)  # exact: leading bit ≥ 0.5
            parts.append((points >= 0.5).to(torch.float32))
        return torch.cat(parts)[:n].reshape(n, cells, cells)
    bits = _oa_blocks(design, math.ceil(n / rows), k, gen)[:n]
    return torch.from_numpy(bits.astype(np.float32)).reshape(n, cells, cells)
