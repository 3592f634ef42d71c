"""``correlax evaluate DATA --out DIR``: pointing game, crop metrics and FROC over a split.

Runs prediction + CorRELAX over every image of the split (cached per image, so an
interrupted run resumes), then writes the paper's Table 4 (pointing game, with both the
support-weighted mean and the paper's hits per image with a lesion, see
:mod:`napari_correlax.evaluate.pointing`) and Table 3 (crop classification) as CSV and
Markdown, a FROC summary, the per-finding verdicts and
a report. ``torchrun --nproc-per-node N -m napari_correlax.cli evaluate ...`` shares the
images among N processes; rank 0 writes the tables. See
:mod:`napari_correlax.evaluate.runner`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from .common import (
    add_check_option,
    add_map_options,
    add_runtime_options,
    run_split_job,
    settings_from,
)

if TYPE_CHECKING:
    from .common import Subparsers


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "evaluate",
        help="pointing game (Table 4), crop metrics (Table 3) and FROC over a data set split",
        description="Evaluate a classifier and its CorRELAX maps on a data set in the "
        "VinDr-Mammo layout. Per image, maps and crop scores are cached under "
        "DIR/cache/<key>/ (running again resumes); rank 0 writes pointing.csv/.md, "
        "classification.csv/.md, detection.csv/.md, froc.csv, pointing-verdicts.csv, "
        "report.md and report.json. The pointing table ends with two summary rows: the "
        "mean weighted by support, and hits per image with a lesion (how the paper's "
        "Table 4 computes its 'Weighted Mean Accuracy'; it can exceed 1). "
        "Missing or unreadable images are listed before any "
        "model work starts and left out. For several processes or GPUs: "
        "`torchrun --nproc-per-node N -m napari_correlax.cli evaluate ...`.",
    )
    p.add_argument("data", type=Path, help="folder with finding_annotations.csv and images/")
    p.add_argument("--out", required=True, type=Path, help="output folder (created)")
    p.add_argument("--model", default=None, help="checkpoint (.safetensors); default: demo model")
    p.add_argument("--split", default="test", help="split to evaluate (default: test)")
    p.add_argument("--limit", type=int, default=None, help="only the first N images of the split")
    add_map_options(p)
    p.add_argument("--method", default="correlax",
                   help="map method to score (a registered name: correlax, prediction, …; "
                   "default correlax)")
    p.add_argument("--predict-only", action="store_true",
                   help="prediction maps only (same as --method prediction)")
    e = p.add_argument_group("evaluation")
    add_check_option(e)
    e.add_argument("--no-froc", dest="froc", action="store_false",
                   help="skip the detection (FROC) summary")
    e.add_argument("--threshold", type=float, default=0.5,
                   help="probability counted as positive in the crop metrics (0.5)")
    add_runtime_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import CorrelaxError
    from ..evaluate.runner import EvaluationConfig, evaluate_steps

    if args.masks < 1:
        raise CorrelaxError("--masks must be at least 1")
    from ..maps.methods import get_method

    settings = settings_from(args, get_method(
        "prediction" if args.predict_only else args.method).name)
    config = EvaluationConfig(
        data=args.data, out=args.out, model=args.model, split=args.split, settings=settings,
        limit=args.limit, check=args.check, froc=args.froc, threshold=args.threshold,
    )
    report = run_split_job(evaluate_steps(config), "evaluate")
    if report is None:
        return 0
    print(report.tables["pointing"].to_markdown())
    if "classification" in report.tables:
        print(report.tables["classification"].to_markdown())
    print(f"{len(report.evaluated)} of {report.images} images evaluated in "
          f"{report.seconds:.1f} s; tables in {Path(report.out)}")
    return 0
