"""``correlax synth DIR --n N``: synthetic mammograms in the VinDr-Mammo layout (method §11)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .common import Subparsers


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "synth",
        help="generate phantom mammograms with findings in the VinDr-Mammo layout",
        description="Write N phantom mammograms (DICOM, MONOCHROME1/2, 12-16 bit, with "
        "ImagerPixelSpacing) with findings of every label, plus finding_annotations.csv and "
        "breast-level_annotations.csv, into DIR.",
    )
    p.add_argument("out", type=Path, metavar="DIR", help="output folder (created)")
    p.add_argument("--n", type=int, default=8, help="number of images (default 8)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--size", nargs=2, type=int, default=(2048, 1024), metavar=("H", "W"),
                   help="image height and width in pixels (default 2048 1024)")
    p.add_argument("--test-fraction", type=float, default=0.25, help="share of test images")
    p.add_argument("--difficulty", choices=("standard", "hard"), default="standard",
                   help="standard (default): the findings the demo model was trained on; "
                   "hard: masses of radius 3-10 px with contrast at most 0.05, tight "
                   "clusters of microcalcifications, about 40%% of them within 30 px of "
                   "the skin line (same breasts as standard)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import CorrelaxError
    from ..synth import write_vindr_dataset

    if args.n < 1:
        raise CorrelaxError("--n must be at least 1")
    root = write_vindr_dataset(
        args.out, args.n, seed=args.seed, shape=tuple(args.size),
        test_fraction=args.test_fraction, difficulty=args.difficulty,
    )
    print(f"wrote {args.n} images to {root}")
    return 0
