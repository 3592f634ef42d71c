"""``correlax gmic ...``: the GMIC model (docs/method.md §9).

``correlax gmic import OFFICIAL.p --out gmic.safetensors`` converts published GMIC
weights into the project's checkpoint (safetensors + JSON with the configuration); see
:mod:`napari_correlax.gmic.checkpoint`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .common import Subparsers


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "gmic",
        help="GMIC: import published weights",
        description="The Globally-Aware Multiple Instance Classifier (GMIC).",
    )
    actions = p.add_subparsers(dest="gmic_command", metavar="ACTION", required=True)
    imp = actions.add_parser(
        "import",
        help="convert official GMIC weights into a napari-correlax checkpoint",
        description="Read a GMIC state dict (the official sample_model_<i>.p files, any "
        "torch.save of one, or a napari-correlax GMIC checkpoint) with weights_only=True "
        "(a file holding pickled code is refused and nothing in it runs), check every key "
        "and shape, and write a .safetensors checkpoint with its configuration and a .json "
        "copy of it.",
    )
    imp.add_argument("source", type=Path, metavar="FILE", help="GMIC weights (.p, .pth, .pt "
                     "or .safetensors)")
    imp.add_argument("--out", required=True, type=Path, help="checkpoint to write "
                     "(.safetensors)")
    imp.add_argument("--top-t", type=float, default=None, metavar="T",
                     help="top-t pooling fraction in (0, 1] (default: the official value for "
                     "sample_model_1..5 by file name, else 0.02)")
    imp.set_defaults(func=run_import)


def run_import(args: argparse.Namespace) -> int:
    from ..gmic.checkpoint import import_gmic

    path, model = import_gmic(args.source, args.out, top_t=args.top_t)
    cfg = model.config
    print(f"wrote {path} (from {args.source.name}: GMIC, classes {', '.join(cfg.class_names)}, "
          f"K={cfg.K}, top-t {cfg.percent_t:g})")
    return 0
