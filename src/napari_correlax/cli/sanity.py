"""``correlax sanity IMAGE --methods ... --out DIR``: do the maps depend on the model?
Cascading model randomisation (Adebayo et al., 2018); see
:mod:`napari_correlax.evaluate.sanity`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .common import add_cam_mode_option, add_map_options, add_runtime_options, settings_from

if TYPE_CHECKING:
    from .common import Subparsers

#: Methods checked when --methods is not given.
DEFAULT_METHODS = "prediction,correlax,gradcam,gradcam++,layercam,eigencam"


def register(sub: Subparsers) -> None:
    from ..evaluate.sanity import DEFAULT_THRESHOLD

    p = sub.add_parser(
        "sanity",
        help="model-randomisation sanity check of map methods (Adebayo et al., 2018)",
        description="Recompute each method's map on IMAGE with the classifier's head, then "
        "successively deeper backbone stages, re-initialised (cascading, seeded), and "
        "report the Spearman rank correlation of every map with the trained model's. A "
        "method whose map barely changes when every weight is random explains the image, "
        "not the model, and is flagged. Writes sanity.csv (per method, step and label) "
        "and sanity.md (per method and step) into DIR.",
    )
    p.add_argument("image", type=Path, metavar="IMAGE", help="DICOM, PNG, TIFF or PGM file")
    p.add_argument("--model", default=None, help="checkpoint (.safetensors); default: demo model")
    p.add_argument("--out", required=True, type=Path, help="output folder (created)")
    p.add_argument("--methods", default=DEFAULT_METHODS,
                   help=f"comma-separated map methods (default {DEFAULT_METHODS}; "
                   "`correlax compare --list` names them all)")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help="flag a method whose mean |Spearman rho| over labels with every "
                   f"weight random exceeds this (default {DEFAULT_THRESHOLD}: halfway "
                   "between an unrelated map, 0, and the same map, 1)")
    add_cam_mode_option(p)
    add_map_options(p)
    add_runtime_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import CorrelaxError
    from ..evaluate.sanity import sanity_steps
    from ..files import atomic_write_text
    from ..io import read_mammogram
    from ..models import load_classifier
    from .common import existing_files, run_with_progress

    if not 0.0 <= args.threshold <= 1.0:
        raise CorrelaxError(f"--threshold must lie in 0..1, not {args.threshold}")
    (path,) = existing_files([str(args.image)])
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    settings = settings_from(args, "prediction").with_(options={"mode": args.mode})
    model = load_classifier(args.model, device=settings.runtime().device)
    mammogram = read_mammogram(path)
    report = run_with_progress(
        sanity_steps(mammogram, model, methods, settings, threshold=args.threshold,
                     seed=args.seed), path.name)
    for name, why in report.errors.items():
        print(f"correlax sanity: left out {name}: {why}", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "sanity.csv", report.long_table().to_csv())
    table = report.table()
    atomic_write_text(args.out / "sanity.md", table.to_markdown())
    print(table.to_markdown())
    for name in report.flagged:
        print(f"FLAGGED {name}: mean |rho| {report.final(name):.3f} > {args.threshold:g} with "
              "every weight random; its map follows the image, not the model")
    print(f"tables in {args.out}")
    return 0
