"""``correlax gmic ...``: the GMIC model (docs/method.md §9).

- ``correlax gmic import OFFICIAL.p --out gmic.safetensors`` converts published GMIC
  weights into the project's checkpoint (safetensors + JSON with the configuration); see
  :mod:`napari_correlax.gmic.checkpoint`.
- ``correlax gmic train DATA --out RUN [--train-cam xgradcam]`` trains GMIC from
  image-level labels ([CAM-GMIC]'s recipe, :mod:`napari_correlax.gmic.train`);
  ``--progress json`` prints the events the napari training dock reads, and
  ``torchrun --nproc-per-node N -m napari_correlax.cli gmic train ...`` trains with
  DistributedDataParallel.
- ``correlax gmic evaluate DATA --model CKPT [CKPT ...] --test-cam cam,gradcam,...
  --out DIR`` writes [CAM-GMIC]'s Table I (classification) and Table II (TPR@FPPI per
  training and test CAM) with the FROC curves (:mod:`napari_correlax.gmic.evaluate`);
  per image results are cached, so a stopped run resumes, and ``torchrun`` shares the
  images among processes.
"""

from __future__ import annotations

import argparse
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import add_check_option, run_split_job, run_with_progress

if TYPE_CHECKING:
    from .common import Subparsers


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "gmic",
        help="GMIC: import published weights, train, evaluate, predict single images",
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
    _register_train(actions)
    _register_evaluate(actions)
    _register_predict(actions)


def _retrieval_option(p: argparse.ArgumentParser) -> None:
    from ..gmic.cams import TRAIN_CAMS

    p.add_argument("--retrieval-cam", default=None, choices=TRAIN_CAMS, metavar="CAM",
                   help="the map that picks the patches (default: each model's own, the CAM "
                   f"it was trained with; one of {', '.join(TRAIN_CAMS)})")


def _register_predict(actions: Any) -> None:
    from ..gmic.cams import TRAIN_CAMS

    p = actions.add_parser(
        "predict",
        help="GMIC's outputs and figure for single images, as the official runner",
        description="Run one GMIC, or several averaged (--model M1 M2 ..., e.g. the five "
        "published models: the NaN-mean of their outputs), on each image. Writes "
        "predictions.csv (per class: y_global, y_local, y_fusion) and per image a PNG: the "
        "input with its ground-truth boxes (when --data names its data set), the patch "
        "map, a saliency panel per class and the K patches with their attention.",
    )
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="mammograms")
    p.add_argument("--model", "--models", nargs="+", required=True, dest="models",
                   type=Path, metavar="CKPT", help="GMIC checkpoints (.safetensors)")
    p.add_argument("--out", required=True, type=Path, help="output folder (created)")
    p.add_argument("--cam", default="cam", choices=TRAIN_CAMS, metavar="CAM",
                   help="map drawn per class (default: GMIC's saliency, cam)")
    _retrieval_option(p)
    p.add_argument("--laterality", default="auto", choices=("auto", "L", "R"),
                   help="breast side (default auto: the file's metadata, else detected)")
    p.add_argument("--data", type=Path, default=None,
                   help="data set in the VinDr-Mammo layout holding the images, for boxes")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.set_defaults(func=run_predict)


def _register_evaluate(actions: Any) -> None:
    from ..gmic.cams import TRAIN_CAMS

    p = actions.add_parser(
        "evaluate",
        help="classification (Table I) and detection (Table II) of GMIC checkpoints",
        description="Run GMIC checkpoints on a split of a data set in the VinDr-Mammo layout "
        "and write the CAM-GMIC paper's Table I (accuracy, AUC, TPR, TNR, FNR of the fusion "
        "output at the threshold, per checkpoint) and Table II (one row per checkpoint, "
        "named by the CAM it was trained with, one column per test CAM: the FROC operating "
        "point TPR@FPPI at IoU > 0.3 of that CAM's map in original pixels) as CSV and "
        "Markdown, with froc.csv, froc.png, report.md and report.json. Per image and "
        "checkpoint results are cached under DIR/cache (running again resumes). For several "
        "processes or GPUs: `torchrun --nproc-per-node N -m napari_correlax.cli gmic "
        "evaluate ...` (rank 0 writes).",
    )
    p.add_argument("data", type=Path, help="folder with finding_annotations.csv and images/")
    p.add_argument("--model", "--models", nargs="+", required=True, dest="models",
                   metavar="CKPT", help="GMIC checkpoints (.safetensors, or run folders)")
    p.add_argument("--test-cam", default=",".join(TRAIN_CAMS), metavar="NAMES",
                   help=f"comma-separated CAMs that localise (default {','.join(TRAIN_CAMS)})")
    p.add_argument("--out", required=True, type=Path, help="output folder (created)")
    p.add_argument("--split", default="test", help="split to evaluate (default: test)")
    p.add_argument("--positive", nargs="+", default=None, metavar="LABEL",
                   help="data set label of each output, in order (default: the outputs' "
                   "names, which must be labels; needed for the published benign/malignant "
                   "weights)")
    p.add_argument("--negatives", choices=("normal", "all"), default="normal",
                   help="negative images: normal ones (default) or every image without the "
                   "label")
    p.add_argument("--detect-on", choices=("positives", "all"), default="positives",
                   help="images counted in Table II: those with a box of the label (default, "
                   "as the paper) or all evaluated images")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="fusion output counted positive at or above this (0.5)")
    p.add_argument("--limit", type=int, default=None, help="only the first N images of the split")
    add_check_option(p)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    _retrieval_option(p)
    p.set_defaults(func=run_evaluate)


def _register_train(actions: Any) -> None:
    from ..gmic.config import GMICTrainConfig
    from .options import add_options

    p = actions.add_parser(
        "train",
        help="train GMIC from image-level labels (normal vs mass by default)",
        description="Train GMIC on the training split of a data set in the VinDr-Mammo "
        "layout with image-level labels only: images with a finding of a --positive label "
        "against normal images, resized to the input size, with horizontal flips, random "
        "crops and standardisation; the loss is BCE on the global, local and fusion "
        "outputs plus β times the saliency regulariser. The map that picks the K patches "
        "is --train-cam. Writes last.safetensors (+ .json) after every epoch, the resume "
        "state, metrics.jsonl, config.json and run.json to the run folder; running again "
        "on the same folder resumes (a higher --epochs trains on). Use `torchrun "
        "--nproc-per-node N -m napari_correlax.cli gmic train ...` for several GPUs.",
    )
    p.add_argument("data", type=Path, help="folder with finding_annotations.csv and images/")
    p.add_argument("--out", required=True, type=Path, help="run folder (created; resumed if "
                   "it holds a run)")
    add_options(p, GMICTrainConfig)
    p.add_argument("--progress", choices=("text", "json"), default="text",
                   help="text (default) or JSON lines on stdout (the napari dock's format)")
    p.set_defaults(func=run_train)


def run_import(args: argparse.Namespace) -> int:
    from ..gmic.checkpoint import import_gmic

    path, model = import_gmic(args.source, args.out, top_t=args.top_t)
    cfg = model.config
    print(f"wrote {path} (from {args.source.name}: GMIC, classes {', '.join(cfg.class_names)}, "
          f"K={cfg.K}, top-t {cfg.percent_t:g})")
    return 0


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run_train(args: argparse.Namespace) -> int:
    from ..errors import CorrelaxError
    from ..gmic.config import GMICTrainConfig
    from ..gmic.train import train_gmic_steps
    from .options import settings_from_args
    from .train import run_train_events

    if not args.data.exists():
        raise CorrelaxError("data folder not found", args.data)
    if args.init and not Path(args.init).is_file():
        raise CorrelaxError("initial weights not found", args.init)
    config = settings_from_args(GMICTrainConfig, args, data=str(args.data),
                                out=str(args.out))
    # Stop (the napari dock, torchrun tearing down) unwinds normally: finished epochs stay.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    run_train_events(train_gmic_steps(config), args.progress, "correlax gmic train")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from ..gmic.evaluate import GMICEvaluationConfig, gmic_evaluate_steps

    config = GMICEvaluationConfig(
        data=args.data, out=args.out, models=list(args.models), test_cams=args.test_cam,
        split=args.split, positive=args.positive, negatives=args.negatives,
        detect_on=args.detect_on, threshold=args.threshold, limit=args.limit,
        device=args.device, check=args.check, retrieval_cam=args.retrieval_cam)
    report = run_split_job(gmic_evaluate_steps(config), "gmic evaluate")
    if report is None:
        return 0
    print(report.tables["table1"].to_markdown())
    print(report.tables["table2"].to_markdown())
    print(f"tables in {report.out}")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from ..errors import CorrelaxError
    from ..gmic.checkpoint import load_gmic
    from ..gmic.predict import gmic_predict_steps

    for path in [*args.images, *args.models]:
        if not path.is_file():
            raise CorrelaxError("file not found", path)
    boxes = None
    if args.data is not None:
        from ..io.vindr import load_vindr

        boxes = {Path(r.path).resolve(): list(r.boxes) for r in load_vindr(args.data).images}
    from ..maps.runtime import resolve_device

    device = resolve_device(args.device)
    models = [load_gmic(m, device=device) for m in args.models]
    side = None if args.laterality == "auto" else args.laterality
    done = run_with_progress(
        gmic_predict_steps(args.images, models, args.out, cam=args.cam,
                           retrieval_cam=args.retrieval_cam, laterality=side, boxes=boxes),
        "correlax gmic predict")
    for p in done:
        fused = ", ".join(f"{c} {v:.3f}" for c, v in zip(p.class_names, p.y_fusion))
        print(f"{p.name}: y_fusion {fused}")
    print(f"predictions.csv and figures in {args.out}")
    return 0
