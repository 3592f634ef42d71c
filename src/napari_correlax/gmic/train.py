"""Training GMIC from image-level labels (docs/method.md §9, [CAM-GMIC] §III).

:func:`train_gmic_steps` is a generator like the classifier's
:func:`~napari_correlax.train.train_steps`: it yields the same
:class:`~napari_correlax.train.TrainEvent` kinds (``start``, ``warning``, ``cache``,
``batch``, ``epoch``, ``done``) with the same fields, so ``correlax gmic train
--progress json`` feeds the napari training dock's watcher
(:class:`~napari_correlax.train.watch.TrainWatch`) unchanged; :func:`train_gmic` drains it.

Recipe ([CAM-GMIC]): images with a positive label (default ``Mass``) against normal
images (:mod:`.data`), resized to the input size (2944 × 1920 by default) with the
augmentation of :mod:`.data`; starting from the published weights (``init``, the
class-dependent heads afresh when the class count differs) or from scratch; 50 epochs,
batch 6; Adam with a constant learning rate (``lr``, 1e-5 by default: [CAM-GMIC] gives
none). The map that picks the K patches is ``train_cam`` (:mod:`.cams`): GMIC's own
saliency (``"cam"``) or a gradient CAM of the same forward pass. The loss is
:func:`gmic_loss`.

**β.** [CAM-GMIC] Eq. 2 adds β·Σ_ij |A^c_ij| with β = 3.26. Read literally (a sum over
the 46 × 30 = 1380 cells), the term is about 640 × 3.26 ≈ 2000 on a fresh model against
BCE terms of about 1: the saliency would be driven to 0 before anything is learned, so
the printed β cannot go with a plain sum. This project reads L_reg as the **mean** over
the cells (``reg="mean"``, the default): β = 3.26 then weighs the average saliency
(≈ 0.76 on a fresh model, commensurate with the BCE terms) and does not depend on the
input size; it equals a sum with β / (h·w) (2.36e-3 per cell at 46 × 30).
``reg="sum"`` takes the printed formula literally, for a β given on that scale (the
other reading: an exponent lost in print, β = 3.26e-5 or so).

Run folder (only rank 0 writes; every file is replaced atomically): ``last.safetensors``
(+ ``.json``), the model after the latest epoch (:func:`~.checkpoint.save_gmic`; its
``info["training"]`` holds the settings, ``train_cam`` among them, and
``info["metrics"]`` the epoch's record); ``last.train.safetensors`` (+ ``.json``), the
resume state (:mod:`napari_correlax.train.state`: model, Adam, sampler, every rank's
random streams); ``metrics.jsonl`` (one JSON object per epoch); ``config.json``;
``run.json`` (``selection``: the last epoch, ``pretrained``: the initial weights' file or
``"none"``); ``cache/`` (:class:`~.data.InputCache`) unless another folder is given.

Resuming: a folder holding ``last.train.safetensors`` continues after its last epoch
with the same settings (anything but ``epochs``, ``device``, ``workers``, ``threads``
and ``cache`` changed is refused; raising ``epochs`` trains on). The next epoch then
matches an uninterrupted run exactly on the same hardware, thread count and number of
processes: augmentations depend only on (seed, epoch, image), and the sampler's
generator, Adam's state and every rank's random streams are restored.

Distributed: under ``torchrun`` (``WORLD_SIZE`` > 1) the process group is joined as the
classifier's loop does (:func:`~napari_correlax.distributed.join`: NCCL on GPUs), the
model is wrapped in ``DistributedDataParallel``, every rank shuffles the same epoch
order and keeps its shard (:func:`~napari_correlax.train.crops.shard_indices`), and
``batch_size`` is the global batch (``⌈batch / world⌉`` per rank). Batch norm uses each
rank's own batch.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Generator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from ..distributed import join
from ..errors import CorrelaxError
from ..files import atomic_write_text
from ..train.fit import TrainEvent
from ..train.state import (
    STATE_FILE,
    gather_rng_states,
    mix_seed,
    read_state,
    restore_state,
    save_state,
    seed_everything,
)
from .cams import check_cam
from .config import FITS, INPUT_SIZE, GMICConfig
from .data import NEGATIVES, GMICImageSet, InputCache, check_classes, image_targets

if TYPE_CHECKING:
    from .network import GMICOutput

__all__ = [
    "REGULARISERS",
    "GMICTrainConfig",
    "GMICTrainResult",
    "gmic_loss",
    "train_gmic",
    "train_gmic_steps",
]

#: Format of GMIC's resume file (the classifier's loop refuses it, and this one the
#: classifier's).
STATE_FORMAT = "napari-correlax-gmic-training-state"
#: How the saliency regulariser reduces over the grid cells (see the module notes).
REGULARISERS = ("mean", "sum")
#: Settings that define a run: a resume must not change them.
RUN_KEYS = ("train_cam", "positive", "negatives", "batch_size", "lr", "beta", "reg",
            "input_size", "fit", "K", "crop_shape", "percent_t", "global_filters",
            "global_stages", "local_width", "flip_p", "crop_noise", "seed", "init")


def gmic_loss(out: GMICOutput, target: torch.Tensor, beta: float = 3.26, reg: str = "mean"
              ) -> tuple[torch.Tensor, dict[str, float]]:
    """[CAM-GMIC] Eq. 2 for a batch; returns the loss and its four parts.

    ``L = Σ_c [BCE(y_c, ŷ_global,c) + BCE(y_c, ŷ_local,c) + BCE(y_c, ŷ_fusion,c)
    + β·R(A_c)]``, averaged over the images of the batch (BCE on the probabilities,
    as :func:`torch.nn.functional.binary_cross_entropy` computes it, logs clamped at
    −100). ``R(A_c)`` is the mean of the saliency map A_c (values in (0, 1), so |A| = A)
    over its h·w cells with ``reg="mean"``, their sum with ``reg="sum"`` (module notes).
    ``target``: (N, C) in {0, 1}.
    """
    if reg not in REGULARISERS:
        raise CorrelaxError(f"reg must be one of {list(REGULARISERS)}, not {reg!r}")
    y = target.to(out.y_fusion.dtype)

    def bce(p: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy(p, y, reduction="none").sum(dim=1).mean()

    parts = {"global": bce(out.y_global), "local": bce(out.y_local), "fusion": bce(out.y_fusion)}
    a = out.saliency.abs()
    cells = a.mean(dim=(2, 3)) if reg == "mean" else a.sum(dim=(2, 3))
    parts["reg"] = float(beta) * cells.sum(dim=1).mean()
    total = parts["global"] + parts["local"] + parts["fusion"] + parts["reg"]
    return total, {k: float(v.detach()) for k, v in parts.items()}


@dataclass
class GMICTrainConfig:
    """Everything ``correlax gmic train`` takes (module notes for the recipe).

    ``data``: VinDr-layout folder; ``out``: run folder; ``cache``: input cache (default
    ``out/cache``). ``train_cam``: the map that picks the patches (:data:`~.cams.TRAIN_CAMS`).
    ``positive``: the labels trained as outputs (one each); ``negatives``: ``"normal"``
    or ``"all"`` (:mod:`.data`). ``init``: initial weights (official or a checkpoint;
    None: from scratch). ``beta``, ``reg``: the saliency regulariser. ``input_size``
    (rows, cols), ``fit``, ``K``, ``crop_shape``, ``percent_t`` (None: the initial
    weights' value, else 0.02), ``global_filters`` / ``global_stages`` / ``local_width``:
    the model
    (:class:`~.config.GMICConfig`). ``flip_p``, ``crop_noise``: augmentation.
    ``batch_size`` is the global batch. ``device``: ``auto``/``cpu``/``cuda``/``cuda:N``;
    ``workers``: DataLoader processes; ``threads``: torch's CPU threads; ``fresh``:
    ignore a run in ``out``.
    """

    data: str
    out: str
    train_cam: str = "cam"
    positive: list[str] = field(default_factory=lambda: ["Mass"])
    negatives: str = "normal"
    init: str | None = None
    epochs: int = 50
    batch_size: int = 6
    lr: float = 1e-5
    beta: float = 3.26
    reg: str = "mean"
    input_size: tuple[int, int] = INPUT_SIZE
    fit: str = "resize"
    K: int = 6
    crop_shape: tuple[int, int] = (256, 256)
    percent_t: float | None = None
    global_filters: int = 16
    global_stages: int = 5
    local_width: int = 64
    flip_p: float = 0.5
    crop_noise: float = 0.1
    seed: int = 0
    device: str = "auto"
    workers: int = 0
    threads: int | None = None
    cache: str | None = None
    fresh: bool = False

    def __post_init__(self) -> None:
        self.train_cam = check_cam(self.train_cam)
        self.positive = check_classes(self.positive)
        self.input_size = (int(self.input_size[0]), int(self.input_size[1]))
        self.crop_shape = (int(self.crop_shape[0]), int(self.crop_shape[1]))
        problems = []
        if self.epochs < 1 or self.batch_size < 1:
            problems.append("epochs and batch size must be at least 1")
        if self.negatives not in NEGATIVES:
            problems.append(f"negatives must be one of {list(NEGATIVES)}")
        if self.reg not in REGULARISERS:
            problems.append(f"reg must be one of {list(REGULARISERS)}")
        if self.fit not in FITS:
            problems.append(f"fit must be one of {list(FITS)}")
        if self.lr <= 0 or self.beta < 0:
            problems.append("the learning rate must be positive and β not negative")
        if not 0.0 <= self.flip_p <= 1.0 or not 0.0 <= self.crop_noise < 1.0:
            problems.append("flip_p must lie in [0, 1] and crop_noise in [0, 1)")
        if min(self.crop_shape) < 1 or any(c > s for c, s in zip(self.crop_shape,
                                                                   self.input_size)):
            problems.append(f"the patch size {self.crop_shape} must fit in the input size "
                            f"{self.input_size}")
        if problems:
            raise CorrelaxError("invalid GMIC training settings: " + "; ".join(problems))

    def as_dict(self) -> dict[str, Any]:
        """JSON-able copy (tuples as lists)."""
        doc = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in doc.items()}

    def model_config(self, percent_t: float) -> GMICConfig:
        """The :class:`~.config.GMICConfig` of the model trained."""
        return GMICConfig(num_classes=len(self.positive), class_names=tuple(self.positive),
                          K=self.K, crop_shape=self.crop_shape, percent_t=percent_t,
                          input_size=self.input_size, fit=self.fit,
                          global_filters=self.global_filters, global_stages=self.global_stages,
                          local_width=self.local_width)


@dataclass
class GMICTrainResult:
    """A finished run: its folder, the last epoch's checkpoint, per-epoch metrics and the
    initial weights' file name (``"none"``: from scratch)."""

    run: Path
    checkpoint: Path | None
    epoch: int
    history: list[dict[str, Any]]
    pretrained: str = "none"


def train_gmic_steps(config: GMICTrainConfig) -> Generator[TrainEvent, None, GMICTrainResult]:
    """Train (or resume) GMIC per the module notes, yielding progress events.

    Reads only the ``training`` split's images chosen by :func:`~.data.image_targets`.
    Raises CorrelaxError for unusable input: no data set, no positive or no negative
    image, unfitting initial weights, an unreadable image, a run folder holding a
    different run.
    """
    from ..io.vindr import load_vindr
    from ..train.crops import shard_indices
    from .checkpoint import load_initial_weights, save_gmic
    from .network import GMIC

    data = Path(config.data).expanduser()
    if not data.exists():
        raise CorrelaxError("data folder not found", data)
    out = Path(config.out).expanduser()
    group = join(config.device)
    device = group.device
    try:
        if config.threads:
            torch.set_num_threads(int(config.threads))
        index = load_vindr(data)
        missing = {str(p) for p in index.missing}
        usable = [r for r in index.split("training") if str(r.path) not in missing]
        records, targets = image_targets(usable, config.positive, config.negatives)
        positives = {c: int(n) for c, n in zip(config.positive, targets.sum(axis=0))}
        negatives = int((targets.sum(axis=1) == 0).sum())
        if not any(positives.values()) or not negatives:
            raise CorrelaxError(
                f"the training split needs positive and negative images; found "
                f"{sum(positives.values())} with {', '.join(config.positive)} and {negatives} "
                f"{'normal' if config.negatives == 'normal' else 'other'} images", data)

        state_path = out / STATE_FILE
        resume = state_path.is_file() and not config.fresh
        doc: dict[str, Any] = {}
        tensors: dict[str, Any] = {}
        if resume:
            doc, tensors = read_state(state_path, STATE_FORMAT)
            saved, current = dict(doc.get("config", {})), config.as_dict()
            changed = [k for k in RUN_KEYS if saved.get(k) != current.get(k)]
            if changed:
                raise CorrelaxError(
                    "run folder holds a run with other settings (" + ", ".join(
                        f"{k}: {saved.get(k)!r} there, {current.get(k)!r} now" for k in changed)
                    + "); choose another --out or pass --fresh", out)

        seed_everything(config.seed)
        percent_t = config.percent_t
        init_info: dict[str, Any] = {}
        if resume:
            percent_t = percent_t or (doc.get("model") or {}).get("percent_t")
        model = GMIC(config.model_config(percent_t or 0.02))
        if config.init and not resume:
            init_info = load_initial_weights(model, config.init)
            percent_t = percent_t or init_info["percent_t"]
        percent_t = percent_t or 0.02
        model.config = replace(model.config, percent_t=float(percent_t))
        pretrained = (str(doc.get("pretrained", "unknown")) if resume
                      else init_info.get("file", "none"))
        selection = {"rule": "last", "split": None}
        yield TrainEvent("start", 0, config.epochs, {
            "run": str(out), "device": device, "world_size": group.world_size,
            "train_images": len(records), "val_images": 0,
            "train_samples": len(records), "val_samples": 0,
            "skipped_missing_files": len(index.split("training")) - len(usable),
            "positives": positives, "negatives": negatives, "classes": list(config.positive),
            "train_cam": config.train_cam, "selection": selection, "pretrained": pretrained,
            "resumed": resume,
        })
        if init_info.get("started_afresh"):
            yield TrainEvent("warning", 0, 0, {"message": (
                f"{init_info['file']} has outputs {', '.join(init_info['classes'])}; the "
                f"class-dependent heads ({', '.join(init_info['started_afresh'])}) start from "
                f"fresh weights for {', '.join(config.positive)}")})

        cache = InputCache(config.cache or out / "cache", config.input_size, config.fit)
        for done, total in cache.prepare(records, group.rank, group.world_size):
            yield TrainEvent("cache", done, total)
        group.barrier()
        dataset = GMICImageSet(records, targets, cache, train=True, seed=config.seed,
                               flip_p=config.flip_p, crop_noise=config.crop_noise)

        model.to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        sampler = torch.Generator().manual_seed(mix_seed(config.seed, 0x6A1))
        seed_everything(mix_seed(config.seed, group.rank))
        history: list[dict[str, Any]] = []
        start = 1
        if resume:
            restore_state(doc, tensors, model, optimizer, None, sampler, group.rank,
                          group.world_size)
            history = list(doc.get("history", []))
            start = int(doc["epoch"]) + 1

        net: Any = model
        if group.enabled:
            from torch.nn.parallel import DistributedDataParallel

            net = DistributedDataParallel(
                model, device_ids=[group.local_rank] if device.startswith("cuda") else None)
        training_info = {**config.as_dict(), "percent_t": percent_t, "pretrained": pretrained,
                         "classes": list(config.positive), "images": len(records),
                         "positives": positives, "negatives_count": negatives}
        if group.main:
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / "config.json", json.dumps(config.as_dict(), indent=2) + "\n")
            atomic_write_text(out / "run.json", json.dumps({
                "selection": selection, "pretrained": pretrained, "init": init_info,
                "train_cam": config.train_cam}, indent=1) + "\n")

        from torch.utils.data import DataLoader

        per_rank = math.ceil(config.batch_size / group.world_size)
        for epoch in range(start, config.epochs + 1):
            t0 = time.perf_counter()
            model.train()
            dataset.set_epoch(epoch)
            order = shard_indices(torch.randperm(len(dataset), generator=sampler).tolist(),
                                  group.rank, group.world_size)
            loader = DataLoader(dataset, batch_size=per_rank, sampler=order,
                                num_workers=config.workers,
                                pin_memory=device.startswith("cuda"))
            sums = torch.zeros(7, dtype=torch.float64)  # loss, 4 parts, correct, images
            n_batches = len(loader)
            for b, (x, y) in enumerate(loader):
                x = x.to(device, non_blocking=True)
                y = y.to(device, non_blocking=True)
                output = net(x, retrieval_map=config.train_cam)
                loss, parts = gmic_loss(output, y, config.beta, config.reg)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                value, n = float(loss.detach()), len(y)
                correct = ((output.y_fusion.detach() >= 0.5) == (y >= 0.5)).float().mean(dim=1)
                sums += torch.tensor([value * n, parts["global"] * n, parts["local"] * n,
                                      parts["fusion"] * n, parts["reg"] * n,
                                      float(correct.sum()), n], dtype=torch.float64)
                yield TrainEvent("batch", b + 1, n_batches, {
                    "epoch": epoch, "epochs": config.epochs, "loss": value})
            if group.enabled:
                import torch.distributed as dist

                reduced = sums.to(device)
                dist.all_reduce(reduced)
                sums = reduced.cpu()
            images = max(float(sums[6]), 1.0)
            seconds = time.perf_counter() - t0
            record: dict[str, Any] = {
                "epoch": epoch, "epochs": config.epochs, "lr": config.lr,
                "train_loss": float(sums[0]) / images,
                "loss_global": float(sums[1]) / images, "loss_local": float(sums[2]) / images,
                "loss_fusion": float(sums[3]) / images, "loss_reg": float(sums[4]) / images,
                "train_accuracy": float(sums[5]) / images,
                "seconds": round(seconds, 3),
                "images_per_second": round(float(sums[6]) / max(seconds, 1e-9), 3),
            }
            history = [h for h in history if h.get("epoch") != epoch] + [record]
            rng_states = gather_rng_states(group)
            if group.main:
                save_state(state_path, model, optimizer, None, sampler, rng_states, {
                    "epoch": epoch, "config": config.as_dict(), "history": history,
                    "pretrained": pretrained, "model": model.config.to_dict()},
                    fmt=STATE_FORMAT)
                save_gmic(model, out / "last.safetensors", {
                    "training": {**training_info, "epoch": epoch}, "metrics": record})
                atomic_write_text(out / "metrics.jsonl",
                                  "".join(json.dumps(h) + "\n" for h in history))
            group.barrier()
            yield TrainEvent("epoch", epoch, config.epochs, record)

        last = out / "last.safetensors"
        result = GMICTrainResult(out, last if last.is_file() else None, config.epochs,
                                 history, pretrained)
        yield TrainEvent("done", config.epochs, config.epochs, {
            "checkpoint": str(result.checkpoint) if result.checkpoint else None,
            "epoch": config.epochs, "selection": selection,
            "best": None, "last": str(result.checkpoint) if result.checkpoint else None,
            "best_epoch": config.epochs})
        return result
    finally:
        group.close()


def train_gmic(config: GMICTrainConfig) -> GMICTrainResult:
    """Run :func:`train_gmic_steps` to the end and return its result."""
    steps = train_gmic_steps(config)
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value
