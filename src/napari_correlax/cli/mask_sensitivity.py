"""``correlax mask-sensitivity IMAGE...``: paper Fig. 7 (docs/method.md §7, paper §4.3).

For sampled tissue windows of each image, ``|ρ_N − ρ_2560|`` for N in
{128, 256, 512, 1024, 2048}, pooled over images and windows. The **distance**
correlation ρ(S_h, S_ŷ) comes first, as in the paper's Fig. 7; the label correlations
ρ(S_h, ŷ_M[:, c]) follow separately (pooled over labels, then per label). Writes into
``--out``: ``mask_sensitivity.csv`` (one block of rows per correlation, distance first,
named in the ``correlation`` column), ``mask_sensitivity.json`` (the same tables,
per-image tables, the smallest N within the paper's 0.025, settings),
``mask_sensitivity.npz`` (every ρ) and ``mask_sensitivity.png`` (box plots on a log
scale, distance in the first panel); prints the distance table, then the pooled label
table.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CorrelaxError
from ..files import atomic_write, atomic_write_text
from .common import (
    Subparsers,
    add_runtime_options,
    existing_files,
    run_with_progress,
    settings_from,
)

if TYPE_CHECKING:
    from ..maps.sensitivity import MaskSensitivity

STEM = "mask_sensitivity"


def register(sub: Subparsers) -> None:
    from ..maps.sensitivity import DEFAULT_COUNTS, DEFAULT_REFERENCE, DEFAULT_WINDOWS
    from ..maps.settings import DEFAULT_MASK_BATCH, DEFAULT_STRIDE

    p = sub.add_parser(
        "mask-sensitivity",
        help="how CorRELAX correlations change with the number of masks (paper Fig. 7)",
        description="Compare correlations from the first N masks with those from the first "
        f"{DEFAULT_REFERENCE} masks, per window, for N in {list(DEFAULT_COUNTS)}: the distance "
        "correlation first (what the paper's Fig. 7 shows), then the label correlations. "
        f"Writes {STEM}.csv, .json, .npz and .png (box plots) into --out and prints the "
        "tables.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="DICOM, PNG, TIFF or PGM files")
    p.add_argument("--model", default=None, help="checkpoint (.safetensors); default: demo model")
    p.add_argument("--out", type=Path, default=Path("."), help="output folder (default: here)")
    p.add_argument("--counts", type=int, nargs="+", default=list(DEFAULT_COUNTS),
                   help="numbers of masks to compare (default: %(default)s)")
    p.add_argument("--reference", type=int, default=DEFAULT_REFERENCE,
                   help=f"reference number of masks (default {DEFAULT_REFERENCE})")
    p.add_argument("--windows", type=int, default=DEFAULT_WINDOWS,
                   help=f"tissue windows sampled per image, 0 = all (default {DEFAULT_WINDOWS}; "
                   "each costs --reference forward passes)")
    p.add_argument("--seed", type=int, default=0, help="seed of masks and window sample")
    p.add_argument("--stride", type=int, default=DEFAULT_STRIDE,
                   help=f"window step in pixels (default {DEFAULT_STRIDE})")
    p.add_argument("--mask-batch", type=int, default=DEFAULT_MASK_BATCH,
                   help=f"masked forward passes per batch (default {DEFAULT_MASK_BATCH})")
    add_runtime_options(p)
    p.set_defaults(func=run)


COLUMNS = ("masks", "values", "mean", "median", "p95", "max")


def format_table(rows: list[dict[str, float]]) -> str:
    """Plain-text table of :meth:`MaskSensitivity.table` rows."""
    lines = [f"{'masks':>7} {'values':>7} {'mean':>9} {'median':>9} {'p95':>9} {'max':>9}"]
    for r in rows:
        lines.append(f"{r['masks']:>7} {r['values']:>7} {r['mean']:>9.5f} {r['median']:>9.5f} "
                     f"{r['p95']:>9.5f} {r['max']:>9.5f}")
    return "\n".join(lines)


def table_csv(sections: list[tuple[str, list[dict[str, float]]]]) -> str:
    """CSV text of :meth:`MaskSensitivity.sections`: a ``correlation`` column naming the
    block (``distance``, ``all labels``, then each label), then :data:`COLUMNS`."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["correlation", *COLUMNS])
    for name, rows in sections:
        for r in rows:
            writer.writerow([name, *(r[k] for k in COLUMNS)])
    return buf.getvalue()


def report_doc(result: MaskSensitivity, tolerance: float | None = None) -> dict[str, Any]:
    """The JSON document's tables for a (pooled) result, distance first.

    ``table_distance`` (paper Fig. 7), ``table_labels`` (label correlations pooled),
    ``table_per_label``, and ``distance_within_tolerance``: the smallest N from which the
    distance's mean ``|Δρ|`` stays below ``tolerance`` (default the paper's 0.025).
    """
    from ..maps.sensitivity import PAPER_TOLERANCE

    tol = PAPER_TOLERANCE if tolerance is None else tolerance
    return {
        "table_distance": result.distance_table(),
        "table_labels": result.label_table(),
        "table_per_label": {name: result.table([name]) for name in result.label_names},
        "distance_within_tolerance": {"tolerance": tol,
                                      "from_masks": result.smallest_count_within(tol)},
    }


def run(args: argparse.Namespace) -> int:
    from .. import read_mammogram
    from ..maps.sensitivity import PAPER_DESIGN, combine, mask_sensitivity_steps, save_boxplot
    from ..models import load_classifier
    from .common import tune_cpu_allocator

    paths = existing_files(args.images)
    settings = settings_from(args, "correlax").with_(design=PAPER_DESIGN)
    runtime = settings.runtime()
    if runtime.device == "cpu":
        tune_cpu_allocator()
    model = load_classifier(args.model, device=runtime.device)
    results, done_paths, per_image, failures = [], [], {}, 0
    for path in paths:
        try:
            mammo = read_mammogram(path)
            res = run_with_progress(
                mask_sensitivity_steps(
                    mammo, model, settings, counts=args.counts, reference=args.reference,
                    windows=args.windows or None,
                ),
                path.name,
            )
        except CorrelaxError as exc:
            print(f"correlax mask-sensitivity: error: {exc}", file=sys.stderr)
            failures += 1
            continue
        results.append(res)
        done_paths.append(str(path))
        per_image[str(path)] = {"windows": res.windows.tolist(),
                                "table_distance": res.distance_table(),
                                "table_labels": res.label_table()}
    if not results:
        return 2
    pooled = combine(results)
    args.out.mkdir(parents=True, exist_ok=True)
    base = args.out / STEM
    atomic_write_text(base.with_suffix(".csv"), table_csv(pooled.sections()))
    doc = {
        "counts": list(pooled.counts),
        "reference": pooled.reference,
        "correlations": pooled.names,
        **report_doc(pooled),
        "images": per_image,
        "settings": {"windows": args.windows, "seed": args.seed, "stride": args.stride},
    }
    atomic_write_text(base.with_suffix(".json"), json.dumps(doc, indent=2))

    def write_npz(fh: Any) -> None:
        buf = io.BytesIO()
        image_index = np.concatenate([np.full(len(r.windows), i) for i, r in enumerate(results)])
        np.savez_compressed(
            buf, rho=pooled.rho, counts=np.asarray(pooled.counts), reference=pooled.reference,
            names=np.asarray(pooled.names, dtype=str), windows=pooled.windows,
            image_index=image_index,
            images=np.asarray(done_paths, dtype=str),
        )
        fh.write(buf.getvalue())

    atomic_write(base.with_suffix(".npz"), write_npz)
    save_boxplot(base.with_suffix(".png"), pooled)
    windows = pooled.rho.shape[0]
    print(f"distance rho(S_h, S_yhat): |rho_N - rho_{pooled.reference}| over {windows} windows "
          "(paper Fig. 7)")
    print(format_table(pooled.distance_table()))
    within = doc["distance_within_tolerance"]
    if within["from_masks"] is not None:
        print(f"mean below {within['tolerance']:g} from N = {within['from_masks']} "
              "(paper: from 256)")
    else:
        print(f"mean not below {within['tolerance']:g} at the largest N (paper: from 256)")
    if pooled.label_names:
        print(f"\nlabel correlations rho(S_h, yhat_M[:, c]), pooled over "
              f"{len(pooled.label_names)} labels and {windows} windows")
        print(format_table(pooled.label_table()))
    print(f"-> {base}.csv, .json, .npz, .png")
    return 2 if failures else 0
