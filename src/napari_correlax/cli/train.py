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
from ..train.settings import TrainConfig
from .common import run_with_progress
from .options import add_options, settings_from_args

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
    add_options(p, TrainConfig)
    p.add_argument("--progress", choices=("text", "json"), default="text",
                   help="text (default) or JSON lines on stdout")
    p.set_defaults(func=run)


def _config(args: argparse.Namespace) -> TrainConfig:
    return settings_from_args(TrainConfig, args, data=str(args.data), out=str(args.out))


def print_event(event: Any, prog: str = "correlax train") -> None:
    """Print one :class:`~napari_correlax.train.TrainEvent` as text: the start, each epoch
    and the chosen checkpoint on stdout, warnings on stderr (``prog: warning: …``).
    Fusing and batch counts are the progress bar's (:func:`train_progress`)."""
    d = event.data
    if event.kind == "start" and "positives" in d:  # a GMIC run: image-level labels
        counts = ", ".join(f"{n} {lab}" for lab, n in d["positives"].items())
        print(f"training GMIC on {d['train_images']} images ({counts}, {d['negatives']} "
              f"negative), patches picked by {d['train_cam']}"
              f"{'' if d['train_cam'] == 'cam' else ' (by the saliency where it is empty)'}; "
              "keeping the last epoch; "
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
        empty = (f" empty CAM maps {d['empty_cam_maps']}/{d['cam_maps']}"
                 if d.get("empty_cam_maps") else "")
        print(f"epoch {d['epoch']}/{d['epochs']} lr {d['lr']:.2e} train_loss "
              f"{d['train_loss']:.4f}{val}{empty} ({d.get('seconds', 0):.1f} s){mark}",
              flush=True)
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
