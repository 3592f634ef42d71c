"""Calibrate CorRELAX's adaptive stopping tolerance (docs/method.md §7; paper §4.3).

Runs every sampled window to N = 2560 masks once, recording ρ and the engine's standard
error of ``ρ_n − ρ_2560`` at every point where adaptive mode checks its rule (after
``min_masks``, then every ``CHECK_EVERY`` masks or design block). Because mask ``n`` depends only on
``(seed, n)``, an adaptive run with tolerance ``t`` stops at the first check whose largest
standard error is ≤ ``t`` and reports the ρ recorded there; so one reference run replays
the adaptive result of every tolerance exactly. Prints, per tolerance, the mean masks
per window and the mean / 95th percentile of ``|ρ_adaptive − ρ_2560|`` over all
correlations (distance and every label) of all windows, against the paper's criterion
(mean ≤ 0.025) and a budget of 512 masks per window on average.

``--design`` picks the mask design (default: CorRELAX's) and ``--min-masks`` the floor;
checks fall where the engine puts them for that design (whole pairs and blocks).
``benchmarks/designs.py`` compares designs on several models.

Usage: ``python benchmarks/tolerance.py [--model CKPT] [--images 2] [--windows 24]``
"""

from __future__ import annotations

import argparse

import numpy as np

from napari_correlax.cli.common import tune_cpu_allocator
from napari_correlax.maps.mask_engine import MaskEngine, adaptive_checks, unmasked_pass
from napari_correlax.maps.runtime import Runtime, drain, inference_model
from napari_correlax.maps.settings import (
    DEFAULT_DESIGN,
    DEFAULT_MIN_MASKS,
    DEFAULT_TOLERANCE,
    MASK_DESIGNS,
    MapSettings,
)
from napari_correlax.maps.sliding import WindowFeeder, prepare_image
from napari_correlax.models import load_classifier
from napari_correlax.synth import make_phantom

REFERENCE = 2560


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="checkpoint (default: the demo model)")
    ap.add_argument("--images", type=int, default=2, help="phantoms (seeds 0, 1, ...)")
    ap.add_argument("--windows", type=int, default=24, help="random tissue windows per image")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--tolerances", type=float, nargs="+",
                    default=[0.025, 0.03, 0.0325, 0.035, 0.0375, 0.04, 0.045, 0.05])
    ap.add_argument("--design", choices=MASK_DESIGNS, default=DEFAULT_DESIGN)
    ap.add_argument("--min-masks", type=int, default=DEFAULT_MIN_MASKS)
    ap.add_argument("--save", default=None, help="also write the recorded ρ and SE (.npz)")
    args = ap.parse_args()
    tune_cpu_allocator()

    rt = Runtime(device="cpu")
    model = inference_model(rt.prepare_model(load_classifier(args.model)))
    checks = None
    rho_parts, se_parts = [], []
    for seed in range(args.images):
        image = make_phantom(seed, shape=(2400, 1200),
                             findings=["Mass", "Suspicious Calcification"]).pixels
        prep = prepare_image(image, model)
        tissue = np.flatnonzero(prep.active.ravel())
        pick = np.sort(np.random.default_rng(seed).choice(
            tissue, size=min(args.windows, len(tissue)), replace=False))
        feeder = WindowFeeder(prep, model, rt)
        h0, y0 = drain(unmasked_pass(feeder, pick))
        checks = np.union1d(adaptive_checks(args.min_masks, REFERENCE, args.design), [REFERENCE])
        settings = MapSettings(masks=REFERENCE, seed=0, mask_batch=args.batch,
                               min_masks=args.min_masks, adaptive=False, design=args.design)
        engine = MaskEngine(
            model, rt, lambda local, f=feeder, p=pick: f.batch(p[np.asarray(local)]), h0, y0,
            np.full(len(pick), REFERENCE), settings, size=prep.grid.window, record_at=checks,
        )
        for _ in engine.steps():
            pass
        rho_parts.append(engine.snapshots.copy())
        se_parts.append(engine.snapshot_se.copy())
        print(f"image {seed}: {len(pick)} windows run to N = {REFERENCE}", flush=True)
    rho = np.concatenate(rho_parts)  # (W, checks, 1 + C)
    se = np.concatenate(se_parts)
    if args.save:
        np.savez(args.save, rho=rho, se=se, checks=checks)
    ref = rho[:, -1]
    worst = se.max(axis=2)  # (W, checks): what the stopping rule compares
    print(f"\n{len(rho)} windows x {rho.shape[2]} correlations, design {args.design}; rule: "
          f"stop at the first check ({checks[0]}, {checks[1]}, ...) where the largest SE <= t")
    print("  tolerance   mean masks   x fewer   mean |drho|   p95 |drho|   max |drho|")
    for t in args.tolerances:
        stop = np.where((worst <= t).any(axis=1), (worst <= t).argmax(axis=1), len(checks) - 1)
        used = checks[stop]
        delta = np.abs(rho[np.arange(len(rho)), stop] - ref)
        mark = " (default)" if abs(t - DEFAULT_TOLERANCE) < 1e-12 else ""
        print(f"  {t:9.4f}   {used.mean():10.0f}   {REFERENCE / used.mean():7.1f}   "
              f"{delta.mean():11.4f}   {np.percentile(delta, 95):10.4f}   "
              f"{delta.max():10.4f}{mark}")
    print("targets: mean |drho| <= 0.025 (paper §4.3); mean masks <= 512")


if __name__ == "__main__":
    main()
