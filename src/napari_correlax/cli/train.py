"""``correlax train DATA --out RUN``: train the classifier of method §4 with the recipe of §5.

Progress goes to stderr (a bar on a terminal, a line every few seconds in a log file),
warnings to stderr as one line each, and one line per epoch to stdout; ``--progress
json`` writes every event (warnings included) as one JSON object per line on stdout
instead (what the napari training dock reads). Under ``torchrun --nproc-per-node N`` the
same command trains with DistributedDataParallel; only rank 0 prints and writes.

The checkpoint is chosen on a validation share of the training studies (``--select
best``, the default) or is the last epoch (``--select last``); the test split is read
only when ``--val-split test`` asks for it. Torchvision backbones start from ImageNet
weights found in the torch hub cache or given with ``--pretrained``; nothing is
downloaded.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Generator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import CorrelaxError
from .common import run_with_progress

if TYPE_CHECKING:
    from .common import Shown, Subparsers

_R = TypeVar("_R")


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "train",
        help="train the classifier on a data set in the VinDr-Mammo layout",
        description="Train the multi-label classifier with the paper's recipe (box crops "
        "re-drawn every epoch, inverse-frequency sampling, focal loss, Adam with cosine "
        "annealing). The checkpoint kept is the epoch with the best validation macro F1 on a "
        "held-out share of the training studies, or the last epoch (--select last); the "
        "test split is never read unless --val-split test asks for it. Writes the "
        "checkpoints (.safetensors + .json), metrics.jsonl, run.json and the resume state to "
        "the run folder; running again on the same folder resumes. Use "
        "`torchrun --nproc-per-node N -m napari_correlax.cli train ...` for several GPUs.",
    )
    p.add_argument("data", type=Path, help="folder with finding_annotations.csv and images/")
    p.add_argument("--out", required=True, type=Path, help="run folder (created; resumed if "
                   "it holds an unfinished run)")
    p.add_argument("--backbone", default="efficientnet_v2_s",
                   help="efficientnet_v2_s (default), resnet50, densenet121, "
                   "mobilenet_v3_large, lite, tiny, ...")
    p.add_argument("--pretrained", default=None, metavar="FILE",
                   help="starting backbone weights (.safetensors or .pth state dict); "
                   "'imagenet' to require torchvision's file in the torch hub cache; 'none' "
                   "for random weights. Default: torchvision backbones use the cached "
                   "ImageNet file when present, else random weights with a warning; lite "
                   "and tiny start from random weights. Never downloaded")
    p.add_argument("--epochs", type=int, default=50, help="epochs (default 50)")
    p.add_argument("--batch-size", "--batch", type=int, default=48, dest="batch_size",
                   help="global batch size, split over processes (default 48)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--lr-min", type=float, default=1e-7,
                   help="end of the cosine schedule (default 1e-7)")
    p.add_argument("--input-size", type=int, default=256, help="crop side in pixels (256)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw (0)")
    p.add_argument("--select", choices=("best", "last"), default="best",
                   help="checkpoint to keep: 'best' validation macro F1 (default) or the "
                   "'last' epoch (as the paper's authors did; needs no validation set)")
    p.add_argument("--val-fraction", type=float, default=None, metavar="F",
                   help="share of the training studies held out for validation, whole "
                   "studies drawn from --seed (default 0.1 with --select best, 0 with "
                   "--select last)")
    p.add_argument("--val-split", default=None, metavar="NAME",
                   help="validate on this split of the data set instead of a share of the "
                   "training studies, e.g. 'test' (not recommended: choosing the epoch on "
                   "test images makes the test scores optimistic)")
    p.add_argument("--cache", type=Path, default=None,
                   help="fused-image cache folder (default RUN/cache); share it between runs")
    p.add_argument("--window-share", type=float, default=0.0, metavar="P",
                   help="opt-in: share of positive samples drawn as native-scale windows of "
                   "input-size pixels around the box (sliding-window scale; default 0 = off)")
    p.add_argument("--window-negatives", type=int, default=0, metavar="K",
                   help="opt-in: K native-scale tissue windows overlapping no box added per "
                   "epoch as No Finding samples (default 0 = off)")
    p.add_argument("--fresh", action="store_true", help="start over even if RUN holds a run")
    g = p.add_argument_group("runtime")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    g.add_argument("--precision", default="float32", choices=("float32", "bfloat16"),
                   help="autocast precision (bfloat16 is faster on recent GPUs)")
    g.add_argument("--workers", type=int, default=0, help="data loader processes (0)")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    g.add_argument("--progress", choices=("text", "json"), default="text",
                   help="text (default) or JSON lines on stdout")
    p.set_defaults(func=run)


def _config(args: argparse.Namespace) -> Any:
    from ..train.crops import CropConfig
    from ..train.fit import TrainConfig

    if not 0.0 <= args.window_share <= 1.0 or args.window_negatives < 0:
        raise CorrelaxError("--window-share must be in [0, 1] and --window-negatives at least 0")
    if args.val_fraction is not None and not 0.0 <= args.val_fraction < 1.0:
        raise CorrelaxError("--val-fraction must be in [0, 1)")
    if args.val_split and args.val_fraction:
        raise CorrelaxError("give --val-split or --val-fraction, not both")
    return TrainConfig(
        data=str(args.data), out=str(args.out), backbone=args.backbone,
        pretrained=args.pretrained, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, lr_min=args.lr_min, input_size=args.input_size, seed=args.seed,
        select=args.select, val_split=args.val_split, val_fraction=args.val_fraction,
        cache=str(args.cache) if args.cache else None, fresh=args.fresh, device=args.device,
        precision=args.precision, workers=args.workers, threads=args.threads,
        crop=CropConfig(window_share=args.window_share, window_negatives=args.window_negatives),
    )


def print_event(event: Any, prog: str = "correlax train") -> None:
    """Print one :class:`~napari_correlax.train.TrainEvent` as text: the start, each epoch
    and the chosen checkpoint on stdout, warnings on stderr (``prog: warning: …``).
    Fusing and batch counts are the progress bar's (:func:`train_progress`)."""
    d = event.data
    if event.kind == "start" and "positives" in d:  # a GMIC run: image-level labels
        counts = ", ".join(f"{n} {lab}" for lab, n in d["positives"].items())
        print(f"training GMIC on {d['train_images']} images ({counts}, {d['negatives']} "
              f"negative), patches picked by {d['train_cam']}; keeping the last epoch; "
              f"starting weights: {d['pretrained']} ({d['device']}, {d['world_size']} "
              "process(es))", flush=True)
    elif event.kind == "start":
        sel = d["selection"]
        val = (f"validating on {d['val_samples']} from {d['val_images']} ({sel['split']})"
               if d["val_images"] else "no validation")
        print(f"training {d['train_samples']} samples from {d['train_images']} images, {val}; "
              f"keeping the {'last epoch' if sel['rule'] == 'last' else 'best epoch'}; "
              f"starting weights: {d['pretrained']} "
              f"({d['device']}, {d['world_size']} process(es))", flush=True)
    elif event.kind == "warning":
        print(f"{prog}: warning: {d['message']}", file=sys.stderr, flush=True)
    elif event.kind == "epoch":
        val = "" if d.get("val_loss") is None else (
            f" val_loss {d['val_loss']:.4f} macro_F1 {d['macro_f1']:.4f}")
        mark = " *best*" if d.get("best") else ""
        print(f"epoch {d['epoch']}/{d['epochs']} lr {d['lr']:.2e} train_loss "
              f"{d['train_loss']:.4f}{val} ({d.get('seconds', 0):.1f} s){mark}", flush=True)
    elif event.kind == "done":
        rule = "last epoch" if d["selection"]["rule"] == "last" else "best validation macro F1"
        print(f"checkpoint: {d['checkpoint']} (epoch {d['epoch']}, {rule})", flush=True)


def train_progress(event: Any) -> Shown:
    """What the progress bar shows for a training event: images fused into the cache, or
    batches of the current epoch with the running loss; None for the other events."""
    from ..maps.runtime import Progress

    d = event.data
    if event.kind == "cache":
        return Progress("caching", event.done, event.total)
    if event.kind == "batch":
        loss = f" loss {d['loss']:.4f}" if "loss" in d else ""
        return Progress(f"epoch {d['epoch']}/{d['epochs']}", event.done, event.total), loss
    return None


def _print_json(event: Any) -> None:
    print(json.dumps(event.as_json()), flush=True)


def run_train_events(steps: Generator[Any, None, _R], progress: str, prog: str) -> _R:
    """Run a training generator to the end, rank 0 reporting: ``progress`` ``"json"``
    prints every event as a JSON line on stdout (what the napari training dock reads),
    ``"text"`` prints :func:`print_event` lines with a progress bar on stderr."""
    if progress == "json":
        return run_with_progress(steps, prog, on_event=_print_json, main_only=True)
    return run_with_progress(steps, prog, on_event=partial(print_event, prog=prog),
                             progress_of=train_progress, main_only=True)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    from ..train.fit import train_steps

    if not args.data.exists():
        raise CorrelaxError("data folder not found", args.data)
    if (args.pretrained and args.pretrained not in ("imagenet", "none")
            and not Path(args.pretrained).is_file()):
        raise CorrelaxError("pretrained weights file not found", args.pretrained)
    config = _config(args)
    # A stop request (the napari dock's Stop, torchrun tearing down) unwinds normally, so
    # temp files of an unfinished write are removed; finished epochs stay on disk.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    run_train_events(train_steps(config), args.progress, "correlax train")
    return 0
