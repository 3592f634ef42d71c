"""``correlax compare DATA --methods correlax,gradcam,... --out DIR``: several map methods
scored the same way (pointing game and FROC) on one split; see
:mod:`napari_correlax.evaluate.compare`. ``torchrun --nproc-per-node N -m
napari_correlax.cli compare ...`` shares the images among N processes."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from .common import (
    add_cam_mode_option,
    add_check_option,
    add_map_options,
    add_runtime_options,
    run_split_job,
    settings_from,
)

if TYPE_CHECKING:
    from .common import Subparsers

#: Methods compared when --methods is not given.
DEFAULT_METHODS = "correlax,gradcam,gradcam++,eigencam"


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "compare",
        help="pointing game and FROC of several map methods (CorRELAX, the Grad-CAM "
        "family, …) on a data set split",
        description="Score several map methods the same way on a data set in the "
        "VinDr-Mammo layout: per method and lesion label, the pointing game (a hit: the "
        "scored map's maximum within 48 px of a box of the label; prediction maps also "
        "≥ 0.25, correlation maps > 0, saliency maps whatever the value) and TPR@FPPI "
        "with IoU > 0.3. Maps are cached per image and method under DIR/cache/ (running "
        "again resumes; the test-set reader reads the same cache). Missing or unreadable "
        "images are listed before any model work starts and left out. All methods of one "
        "folder share images, model and map settings: the first run records them in "
        "DIR/settings.json and a later run with other settings is refused (use --fresh "
        "to start the folder anew). Writes compare.csv (one row per method × label, with "
        "the Wilson 95 % interval and `same_as`, the earlier method whose maps are "
        "equal), paired.csv (exact McNemar test of every pair of methods per label and "
        "pooled), compare.md (rate [interval] per method and label, methods with equal "
        "maps in one row, a sentence per label on significance at 5 %), froc.csv, "
        "froc.png and compare.json. For several processes: `torchrun --nproc-per-node N "
        "-m napari_correlax.cli compare ...`.",
    )
    p.add_argument("data", type=Path, help="folder with finding_annotations.csv and images/")
    p.add_argument("--out", required=True, type=Path, help="output folder (created)")
    p.add_argument("--methods", default=DEFAULT_METHODS,
                   help=f"comma-separated map methods (default {DEFAULT_METHODS}; "
                   "`correlax compare --list` names them all)")
    p.add_argument("--list", action="store_true", help="list the map methods and exit")
    p.add_argument("--model", default=None, help="checkpoint (.safetensors); default: demo model")
    p.add_argument("--split", default="test", help="split to compare on (default: test)")
    p.add_argument("--limit", type=int, default=None, help="only the first N images of the split")
    add_check_option(p)
    p.add_argument("--fresh", action="store_true",
                   help="start the folder anew: delete its cached maps (cache/), tables "
                   "and settings.json, then compute every method again (without it, "
                   "settings other than the folder's are refused)")
    add_cam_mode_option(p)
    add_map_options(p)
    add_runtime_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..evaluate.compare import CompareConfig, compare_steps
    from ..maps.methods import METHODS

    if args.list:
        for name, method in METHODS.items():
            print(f"{name:<12} {method.title}: {method.description}")
        return 0
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    config = CompareConfig(
        data=args.data, out=args.out, methods=methods, model=args.model, split=args.split,
        settings=settings_from(args, "correlax"), options={"mode": args.mode},
        limit=args.limit, check=args.check, fresh=args.fresh)
    report = run_split_job(compare_steps(config), "compare")
    if report is None:
        return 0
    for name in ("pointing", "detection", "times"):
        print(report.tables[name].to_markdown())
    print(f"{report.images} images, {len(report.methods)} methods; tables in {report.out}")
    return 0
