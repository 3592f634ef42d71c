"""Check the demo model's sliding-window maps on phantoms (docs/method.md §6).

For each seed, a 1024×640 CC phantom with one Mass and one Suspicious Calcification
cluster is scored by :func:`napari_correlax.predict` (stride 48 px, ``input_size``
windows at native resolution). A label is a *hit* when the maximum of its prediction map
(window centre, image pixels) lies within 48 px of the finding's box:
``x0 − 48 ≤ col ≤ x1 + 48`` and ``y0 − 48 ≤ row ≤ y1 + 48``. Prints per-image peaks
and the hit rate per label.

Run from the repository root: ``python scripts/check_demo_maps.py [--model FILE]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

MARGIN = 48
FINDINGS = ("Mass", "Suspicious Calcification")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=None, help="checkpoint (default: the demo)")
    p.add_argument("--seeds", type=int, nargs=2, default=(100, 112), metavar=("FIRST", "STOP"),
                   help="seeds FIRST..STOP-1 (default 100 112)")
    p.add_argument("--stride", type=int, default=48)
    p.add_argument("--threads", type=int, default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from napari_correlax import predict
    from napari_correlax.models import load_classifier
    from napari_correlax.synth import make_phantom

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_classifier(args.model)
    hits = {label: 0 for label in FINDINGS}
    seeds = range(*args.seeds)
    for seed in seeds:
        ph = make_phantom(seed, shape=(1024, 640), view="CC", laterality="LR"[seed % 2],
                          findings=list(FINDINGS))
        result = predict(ph, model, stride=args.stride)
        line = [f"seed {seed}:"]
        for f in ph.findings:
            value, (row, col) = result.peak("prediction", f.label)
            x0, y0, x1, y1 = f.box
            hit = x0 - MARGIN <= col <= x1 + MARGIN and y0 - MARGIN <= row <= y1 + MARGIN
            hits[f.label] += int(hit)
            line.append(f"{f.label} peak {value:.3f} at (row {row:.0f}, col {col:.0f}), "
                        f"box {f.box} {'hit' if hit else 'miss'};")
        print(" ".join(line), flush=True)
    for label in FINDINGS:
        print(f"{label}: {hits[label]}/{len(seeds)} = {hits[label] / len(seeds):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
