"""``correlax import-model FILE --out MODEL``: a classifier trained elsewhere as a checkpoint.

Reads the paper authors' checkpoints (``--format codigotesis``) or a torchvision state
dict with the paper's head (``--format torchvision``) and writes the project's
safetensors + JSON checkpoint (docs/method.md §4); see :mod:`napari_correlax.models.importers`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .common import Subparsers


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "import-model",
        help="convert a classifier trained elsewhere into a napari-correlax checkpoint",
        description="Convert a PyTorch state dict into a napari-correlax checkpoint "
        "(.safetensors + .json). --format codigotesis reads what the paper authors' "
        "training code saves (EfficientNetV2-S, inputs in [0, 1] without ImageNet "
        "normalisation, DICOM VOI LUT and 8-bit CLAHE preprocessing, the eight docs/method.md §3 "
        "labels). --format torchvision reads a torchvision backbone's state dict whose "
        "head is Dropout, Linear(D, 512), ReLU, Linear(512, C). Files are read with "
        "weights_only=True: a file holding pickled code is refused.",
    )
    p.add_argument("source", type=Path, metavar="FILE",
                   help="state dict (.pth/.pt from torch.save, or .safetensors)")
    p.add_argument("--out", required=True, type=Path, help="checkpoint to write (.safetensors)")
    p.add_argument("--format", choices=("codigotesis", "torchvision"), default="codigotesis",
                   help="what FILE holds (default codigotesis)")
    p.add_argument("--backbone", default=None,
                   help="torchvision format: the backbone (default efficientnet_v2_s; also "
                   "resnet50, densenet121, mobilenet_v3_large, ...)")
    p.add_argument("--labels", nargs="+", default=None, metavar="NAME",
                   help="output label names in order (default: the eight labels of method §3)")
    p.add_argument("--imagenet-normalisation", action=argparse.BooleanOptionalAction,
                   default=None,
                   help="torchvision format: whether the model normalises its [0, 1] inputs "
                   "with the ImageNet mean/std (default yes)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import CorrelaxError
    from ..models.importers import import_to_checkpoint

    options: dict[str, Any] = {"labels": args.labels}
    if args.format == "codigotesis":
        if args.backbone not in (None, "efficientnet_v2_s"):
            raise CorrelaxError("--format codigotesis is always efficientnet_v2_s; "
                                "--backbone is for --format torchvision")
        if args.imagenet_normalisation is not None:
            raise CorrelaxError("--format codigotesis models take inputs without ImageNet "
                                "normalisation; --imagenet-normalisation is for --format "
                                "torchvision")
    else:
        options["backbone"] = args.backbone or "efficientnet_v2_s"
        if args.imagenet_normalisation is not None:
            options["imagenet_normalisation"] = args.imagenet_normalisation
    path = import_to_checkpoint(args.source, args.out, args.format, **options)
    print(f"wrote {path} (from {args.source.name}, {args.format} format)")
    return 0
