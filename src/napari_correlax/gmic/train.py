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

The run itself is the shared fit loop (:func:`~napari_correlax.train.loop.fit_steps`);
this module supplies GMIC's part of it (data set, loss, epoch record, checkpoint).
The settings and their defaults are :class:`~.config.GMICTrainConfig`.

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

Distributed: under ``torchrun`` (``WORLD_SIZE`` > 1) the process group is joined
(:func:`~napari_correlax.distributed.join`: NCCL on GPUs), the
model is wrapped in ``DistributedDataParallel``, every rank shuffles the same epoch
order and keeps its shard (:func:`~napari_correlax.train.crops.shard_indices`), and
``batch_size`` is the global batch (``⌈batch / world⌉`` per rank). Batch norm uses each
rank's own batch.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from ..errors import CorrelaxError
from ..train.loop import Finish, Resume, Start, TrainEvent, fit_steps
from .config import DEFAULT_TOP_T, REGULARISERS, GMICTrainConfig
from .data import GMICImageSet, InputCache, image_targets

if TYPE_CHECKING:
    from .network import GMIC, GMICOutput

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
#: Settings that define a run: a resume must not change them.
RUN_KEYS = ("train_cam", "positive", "negatives", "batch_size", "lr", "beta", "reg",
            "input_size", "fit", "K", "crop_shape", "top_t", "global_filters",
            "global_stages", "local_width", "flip_p", "crop_noise", "seed", "init")
#: Salt of the seed of the sampler's generator.
SAMPLER_SALT = 0x6A1


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
class GMICTrainResult:
    """A finished run: its folder, the last epoch's checkpoint, per-epoch metrics and the
    initial weights' file name (``"none"``: from scratch)."""

    run: Path
    checkpoint: Path | None
    epoch: int
    history: list[dict[str, Any]]
    pretrained: str = "none"


#: How a GMIC run chooses its checkpoint: the last epoch, no validation.
SELECTION = {"rule": "last", "split": None}


def _with_top_t(model: GMIC, top_t: float) -> GMIC:
    """A GMIC like ``model`` (same weights) whose top-t pooling fraction is ``top_t``."""
    from dataclasses import replace

    from .network import GMIC

    rebuilt = GMIC(replace(model.config, percent_t=float(top_t)))
    rebuilt.load_state_dict(model.state_dict())
    return rebuilt


class _GMICTask:
    """GMIC's part of the fit loop (:class:`~napari_correlax.train.loop.FitTask`): images
    with image-level labels, the loss of [CAM-GMIC] Eq. 2, the last epoch's checkpoint."""

    state_format = STATE_FORMAT
    run_keys = RUN_KEYS
    sampler_salt = SAMPLER_SALT

    def __init__(self, settings: GMICTrainConfig) -> None:
        self.settings = settings
        self.data = Path(settings.data).expanduser()
        if not self.data.exists():
            raise CorrelaxError("data folder not found", self.data)
        self.pretrained = "none"
        self.training_info: dict[str, Any] = {}
        self.init_info: dict[str, Any] = {}

    def load(self) -> None:
        from ..io.vindr import load_vindr

        s = self.settings
        index = load_vindr(self.data)
        missing = {str(p) for p in index.missing}
        usable = [r for r in index.split("training") if str(r.path) not in missing]
        self.skipped = len(index.split("training")) - len(usable)
        self.records, targets = image_targets(usable, s.positive, s.negatives)
        self.positives = {c: int(n) for c, n in zip(s.positive, targets.sum(axis=0))}
        self.negatives = int((targets.sum(axis=1) == 0).sum())
        if not any(self.positives.values()) or not self.negatives:
            raise CorrelaxError(
                f"the training split needs positive and negative images; found "
                f"{sum(self.positives.values())} with {', '.join(s.positive)} and "
                f"{self.negatives} {'normal' if s.negatives == 'normal' else 'other'} images",
                self.data)
        self.input_cache = InputCache(s.cache or Path(s.out).expanduser() / "cache",
                                      s.input_size, s.fit)
        self.dataset = GMICImageSet(self.records, targets, self.input_cache, train=True,
                                    seed=s.seed, flip_p=s.flip_p, crop_noise=s.crop_noise)

    @staticmethod
    def upgrade(saved: dict[str, Any]) -> dict[str, Any]:
        if "percent_t" in saved:  # runs saved before top_t was the settings' name
            saved["top_t"] = saved.pop("percent_t")
        return saved

    def start(self, resume: Resume) -> Start:
        from .checkpoint import load_initial_weights
        from .network import GMIC

        s = self.settings
        top_t = s.top_t
        if resume.active:
            top_t = top_t or (resume.doc.get("model") or {}).get("percent_t")
        self.model = GMIC(s.model_config(top_t or DEFAULT_TOP_T))
        if s.init and not resume.active:
            self.init_info = load_initial_weights(self.model, s.init)
            if not top_t and self.init_info["percent_t"] != self.model.config.top_t:
                self.model = _with_top_t(self.model, self.init_info["percent_t"])
        self.pretrained = (str(resume.doc.get("pretrained", "unknown")) if resume.active
                           else self.init_info.get("file", "none"))
        self.training_info = {
            **s.as_dict(), "top_t": self.model.config.top_t, "pretrained": self.pretrained,
            "classes": list(s.positive), "images": len(self.records),
            "positives": self.positives, "negatives_count": self.negatives}
        return Start({
            "train_images": len(self.records), "val_images": 0,
            "train_samples": len(self.records), "val_samples": 0,
            "skipped_missing_files": self.skipped, "positives": self.positives,
            "negatives": self.negatives, "classes": list(s.positive),
            "train_cam": s.train_cam, "selection": SELECTION, "pretrained": self.pretrained,
        }, self._warnings())

    def _warnings(self) -> list[str]:
        info, out = self.init_info, []
        if not self.settings.init and self.pretrained == "none":
            out.append("training from scratch: the CAM-GMIC recipe fine-tunes the NYU "
                       "weights (--init sample_model_1.p, see docs/method.md §9)")
        if info.get("started_afresh"):
            out.append(f"{info['file']} has outputs {', '.join(info['classes'])}; the "
                       f"class-dependent heads ({', '.join(info['started_afresh'])}) start "
                       f"from fresh weights for {', '.join(self.settings.positive)}")
        return out

    def cache(self, rank: int, world_size: int) -> Iterator[tuple[int, int]]:
        return self.input_cache.prepare(self.records, rank, world_size)

    def network(self) -> torch.nn.Module:
        return self.model

    @staticmethod
    def schedule(optimizer: torch.optim.Optimizer) -> None:
        return None  # a constant learning rate

    def restore(self, doc: dict[str, Any]) -> None:
        pass  # nothing of GMIC's own beyond the loop's state

    def begin(self, out: Path, resumed: bool) -> dict[str, Any]:
        return {"selection": SELECTION, "pretrained": self.pretrained, "init": self.init_info,
                "train_cam": self.settings.train_cam}

    def batches(self, epoch: int, sampler: torch.Generator, rank: int, world_size: int
                ) -> tuple[Any, list[int]]:
        from ..train.crops import shard_indices

        self.dataset.set_epoch(epoch)
        order = torch.randperm(len(self.dataset), generator=sampler).tolist()
        return self.dataset, shard_indices(order, rank, world_size)

    def batch_loss(self, net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor
                   ) -> tuple[torch.Tensor, list[float]]:
        s = self.settings
        from .retrieval import empty_class_maps

        output = net(x, retrieval_map=s.train_cam)
        loss, parts = gmic_loss(output, y, s.beta, s.reg)
        value, n = float(loss.detach()), len(y)
        correct = ((output.y_fusion.detach() >= 0.5) == (y >= 0.5)).float().mean(dim=1)
        empty = empty_class_maps(output.retrieval_map)
        # loss, its four parts, correct outputs, images, empty CAM maps, CAM maps
        return loss, [value * n, parts["global"] * n, parts["local"] * n,
                      parts["fusion"] * n, parts["reg"] * n, float(correct.sum()), n,
                      float(empty.sum()), float(empty.numel())]

    def record(self, epoch: int, sums: torch.Tensor, lr: float, t0: float, group: Any
               ) -> dict[str, Any]:
        images = max(float(sums[6]), 1.0)
        seconds = time.perf_counter() - t0
        return {
            "epoch": epoch, "epochs": self.settings.epochs, "lr": lr,
            "train_loss": float(sums[0]) / images,
            "loss_global": float(sums[1]) / images, "loss_local": float(sums[2]) / images,
            "loss_fusion": float(sums[3]) / images, "loss_reg": float(sums[4]) / images,
            "train_accuracy": float(sums[5]) / images,
            # class maps of the training CAM that were flat (zero) for an image: their
            # patches came from GMIC's saliency (docs/method.md §9, retrieval)
            "empty_cam_maps": int(sums[7]), "cam_maps": int(sums[8]),
            "seconds": round(seconds, 3),
            "images_per_second": round(float(sums[6]) / max(seconds, 1e-9), 3),
        }

    def state_info(self) -> dict[str, Any]:
        return {"pretrained": self.pretrained, "model": self.model.config.to_dict()}

    def save(self, out: Path, epoch: int, record: dict[str, Any]) -> None:
        from .checkpoint import save_gmic

        save_gmic(self.model, out / "last.safetensors", {
            "training": {**self.training_info, "epoch": epoch}, "metrics": record})

    def finish(self, out: Path) -> Finish:
        last = out / "last.safetensors"
        chosen = last if last.is_file() else None
        return Finish(chosen, self.settings.epochs, None, chosen, SELECTION)


def train_gmic_steps(config: GMICTrainConfig) -> Generator[TrainEvent, None, GMICTrainResult]:
    """Train (or resume) GMIC per the module notes, yielding progress events.

    Reads only the ``training`` split's images chosen by :func:`~.data.image_targets`.
    Raises CorrelaxError for unusable input: no data set, no positive or no negative
    image, unfitting initial weights, an unreadable image, a run folder holding a
    different run.
    """
    task = _GMICTask(config)
    history = yield from fit_steps(task)
    out = Path(config.out).expanduser()
    return GMICTrainResult(out, task.finish(out).checkpoint, config.epochs, history,
                           task.pretrained)


def train_gmic(config: GMICTrainConfig) -> GMICTrainResult:
    """Run :func:`train_gmic_steps` to the end and return its result."""
    from ..maps.runtime import drain

    return drain(train_gmic_steps(config))
