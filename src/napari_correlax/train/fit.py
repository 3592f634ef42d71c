"""Training the classifier (docs/method.md §5, paper §3.3): resumable, single process or DDP.

:func:`train_steps` is a generator: it yields :class:`TrainEvent` s (image caching,
every batch, every epoch) and returns a :class:`TrainResult`; :func:`train` drains it.
The CLI prints the events, the napari dock reads them as JSON lines. The run itself is
the shared fit loop (:func:`~.loop.fit_steps`); this module supplies the classifier's
part (crop data sets, focal loss, validation, best/last checkpoints). The settings and
their defaults are :class:`~.settings.TrainConfig`.

Recipe: focal loss (α = 0.95, γ = 2.5) on the logits, Adam (lr 1e-3), cosine annealing
of the learning rate to 1e-7 over the run's epochs (stepped once per epoch), the crop
data set of :mod:`.crops` drawn by inverse-label-frequency weighted sampling with
replacement (as many draws per epoch as there are training samples). Epochs are
numbered from 1. Opt-in, off by default: window-scale samples matching sliding-window
inference (``crop.window_share``, ``crop.window_negatives``; see :mod:`.crops`), whose
``K`` negatives are added to each epoch's draws and shuffled in with the sampler's
generator.

Model selection (docs/method.md §5) never looks at the test split unless told to:

- ``select="best"`` (default): the checkpoint of the epoch with the highest validation
  macro F1 (mean over labels with validation support; the earliest epoch on a tie).
  The validation images are a share of the *training* studies (``val_fraction``,
  default 0.1): studies are drawn whole, so every image of a study is on one side, by
  a generator seeded from ``seed`` alone (:func:`split_records`). Those studies are
  not trained on. ``val_split`` names a split of the data set to validate on instead
  (e.g. ``"test"``: possible, not recommended, since the test scores of a checkpoint
  chosen on the test images are optimistic; a warning event says so).
- ``select="last"``: the last epoch's checkpoint, as the paper's authors did; no
  validation set is needed (``val_fraction`` defaults to 0 then), though one can still
  be given to watch the validation metrics.

Only the training images and the validation images are ever read. Validation runs
every epoch on the validation crops (box crops; centre crops for No Finding): focal
loss and per-label accuracy, precision, recall, F1 and support at threshold 0.5
(Table 3 layout). How the checkpoint was chosen is recorded as ``selection``
(``{"rule": "best-val-macro-f1" | "last", "split": "training[val 10% of studies, seed
0]" | "test" | None, ...}``) in every checkpoint's ``info``, in ``run.json`` and in the
``start`` event.

Starting weights (docs/method.md §4, §5; fresh starts only, :func:`load_starting_weights`):
torchvision backbones start from torchvision's ImageNet file when it is in the torch
hub cache (``torch.hub.get_dir()/checkpoints``), or from the file given as
``pretrained``. When the cache lacks it, the run says so once (a ``warning`` event)
and trains from random weights. Nothing is downloaded. ``lite`` and ``tiny`` have no
ImageNet weights and start from random weights without a warning. The checkpoints'
``info`` and ``run.json`` record ``"pretrained"``: the weights file's name, or
``"none"``.

Run folder (only rank 0 writes; every file is replaced atomically):

- ``best.safetensors`` (``select="best"`` only) / ``last.safetensors`` (+ ``.json``):
  classifier checkpoints (:func:`~napari_correlax.models.save_checkpoint`) with the
  config, metrics, ``selection`` and ``pretrained``. A fresh start removes a ``best``
  checkpoint left by an earlier run in the folder.
- ``last.train.safetensors``: everything a resume needs, in one file so it is always
  consistent: model weights (``model.*``) and optimizer tensors (``optim.*``) as
  tensors; in its JSON metadata (mirrored in ``last.train.json``) the epoch, optimizer
  scalars and param groups, scheduler state, the sampler's generator state, each
  rank's torch / CUDA / NumPy / Python ``random`` states, the best score and the
  metric history. No pickle anywhere.
- ``metrics.jsonl``: one JSON object per epoch. ``config.json``: the run's settings.
- ``run.json``: how the checkpoint is chosen (``selection``), the starting weights
  (``pretrained``) and the ids of the validation studies (``validation_study_ids``).
- ``cache/``: the fused-image cache (:class:`~.crops.FusedImageCache`) unless another
  folder is given.

Resuming: a run folder that holds ``last.train.safetensors`` continues after its last
epoch with the same settings (a different backbone, label list, epochs, batch size,
learning rate, seed, input size or crop recipe is refused); the next epoch then matches
the uninterrupted run exactly on the same hardware, thread count and number of processes
(crops depend only on seed, epoch and sample index; the sampler's generator and every
rank's random streams are restored). Resumed with another number of processes, each rank
starts fresh random streams seeded from (seed, epoch, rank).

Distributed: under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the process
group is set up with ``nccl`` on CUDA and ``gloo`` on CPU, the model is wrapped in
``DistributedDataParallel``, every rank draws the same weighted indices and keeps its
shard, and ``batch_size`` is the global batch (each rank takes ``⌈batch / world⌉``).
Rank 0 validates and writes; the others wait at a barrier.
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..errors import CorrelaxError
from .loop import Finish, Resume, Start, TrainEvent, fit_steps, per_rank_batch
from .settings import DEFAULT_VAL_FRACTION, SELECT_RULES, CropConfig, TrainConfig
from .state import STATE_FORMAT, mix_seed

if TYPE_CHECKING:
    from ..io.vindr import ImageRecord, VinDrIndex
    from ..models.classifier import Classifier
    from .crops import CropDataset, FusedImageCache

__all__ = [
    "DEFAULT_VAL_FRACTION",
    "NoValidationError",
    "StartingWeights",
    "TrainConfig",
    "TrainEvent",
    "TrainResult",
    "TrainSplit",
    "evaluate_crops",
    "load_starting_weights",
    "split_records",
    "train",
    "train_steps",
]

#: Settings that define a run: a resume must not change them.
RUN_KEYS = ("backbone", "labels", "input_size", "epochs", "batch_size", "lr", "lr_min",
            "alpha", "gamma", "seed", "select", "val_split", "val_fraction", "crop")
#: Backbones of this project without ImageNet weights (everything else is torchvision's).
OWN_BACKBONES = ("lite", "tiny")
#: Salt of the seed of the sampler's generator.
SAMPLER_SALT = 0x5A3


class NoValidationError(CorrelaxError):
    """Best-epoch selection without validation images or samples to choose on."""


@dataclass
class TrainResult:
    """Where a finished run put its checkpoints, and its per-epoch metrics.

    ``checkpoint`` is the chosen one (``best`` or ``last`` as ``selection["rule"]``
    says) and ``best_epoch`` its epoch; ``best`` is ``None`` with ``select="last"``.
    ``pretrained``: the starting weights' file name, or ``"none"``.
    """

    run: Path
    best: Path | None
    last: Path | None
    best_epoch: int
    history: list[dict[str, Any]]
    checkpoint: Path | None = None
    selection: dict[str, Any] = field(default_factory=dict)
    pretrained: str = "none"


@dataclass
class TrainSplit:
    """Which images a run trains on and which it validates on.

    ``selection`` is the metadata recorded with the run (``rule``, ``split``, counts);
    ``validation_studies`` the sorted study ids of the validation images.
    """

    training: list[ImageRecord]
    validation: list[ImageRecord]
    skipped: int
    selection: dict[str, Any]

    @property
    def validation_studies(self) -> list[str]:
        """Sorted study ids of the validation images."""
        return sorted({r.study_id for r in self.validation})


@dataclass
class StartingWeights:
    """Where a fresh run's backbone weights come from.

    ``name``: the weights file's name, or ``"none"`` (random weights); ``path``: that
    file; ``warning``: what to tell the user (ImageNet weights expected but not found).
    """

    name: str
    path: Path | None = None
    warning: str | None = None


# --------------------------------------------------------------------------- helpers


def split_records(index: VinDrIndex, config: TrainConfig) -> TrainSplit:
    """Training and validation images of a run (docs/method.md §5), without reading any image.

    Images whose files are missing are skipped (counted in ``skipped``). With
    ``config.val_split`` the validation images are that split's; otherwise
    ``val_fraction`` of the ``training`` split's studies (rounded, at least one, and at
    least one study left to train on) are held out whole, chosen by a generator seeded
    from ``config.seed`` alone, so the same seed gives the same studies. Images of other
    splits (``test``) are never part of either list unless named by ``val_split``.

    Raises CorrelaxError: a validation split that is the training split or has no
    images, or ``select="best"`` without validation images (:class:`TrainConfig`
    refuses both a split and a share, and a share outside [0, 1)).
    """
    fraction = float(config.val_fraction or 0.0)
    missing = {str(p) for p in index.missing}
    usable = [r for r in index.images if str(r.path) not in missing]
    training = [r for r in usable if r.split == "training"]
    studies = sorted({r.study_id for r in training})
    if config.val_split:
        if config.val_split == "training":
            raise CorrelaxError("the validation split cannot be the training split; use a "
                                "validation share of the training studies instead")
        validation = [r for r in usable if r.split == config.val_split]
        if not validation:
            raise CorrelaxError(f"the data set has no images in split {config.val_split!r}",
                                index.root)
        described: str | None = config.val_split
    elif fraction > 0:
        rng = np.random.default_rng(mix_seed(config.seed, 0x7A1))
        n_val = min(max(1, round(len(studies) * fraction)), len(studies) - 1)
        held = {studies[i] for i in rng.permutation(len(studies))[:n_val]}
        validation = [r for r in training if r.study_id in held]
        training = [r for r in training if r.study_id not in held]
        described = f"training[val {fraction * 100:g}% of studies, seed {config.seed}]"
    else:
        validation, described = [], None
    # (without any training study, train_steps reports that there is nothing to train on)
    if config.select == "best" and not validation and studies:
        raise NoValidationError(
            "choosing the best epoch needs validation images, but "
            + (f"the training split has only {len(studies)} "
               f"stud{'y' if len(studies) == 1 else 'ies'} to hold out from"
               if fraction > 0 else "no validation share or split was given")
            + "; keep the last epoch instead (--select last)", index.root)
    selection = {
        "rule": SELECT_RULES[config.select],
        "split": described,
        "validation_studies": len({r.study_id for r in validation}),
        "validation_images": len(validation),
        "training_studies": len({r.study_id for r in training}),
        "training_images": len(training),
    }
    return TrainSplit(training, validation, len(index.images) - len(usable), selection)


def load_starting_weights(model: Classifier, pretrained: str | None) -> StartingWeights:
    """Load a fresh run's backbone weights into ``model`` (docs/method.md §4, §5); never downloads.

    ``pretrained``: ``None`` loads torchvision's ImageNet file for a torchvision backbone
    when it is in the torch hub cache (``torch.hub.get_dir()/checkpoints/<file of the
    DEFAULT weights>``); when it is not there the backbone keeps its random weights and
    the result carries a warning. ``lite``/``tiny`` keep random weights silently.
    ``"imagenet"`` requires that file (CorrelaxError when missing); ``"none"`` keeps the
    random weights; anything else is the path of a ``.safetensors``/``.pth`` state dict
    (see :meth:`~napari_correlax.models.Classifier.load_pretrained_backbone`).
    """
    from ..models.classifier import resolve_pretrained

    backbone = model.backbone_name
    if pretrained == "none":
        return StartingWeights("none")
    if pretrained is None:
        if backbone in OWN_BACKBONES:
            return StartingWeights("none")
        try:
            path = resolve_pretrained(backbone, "imagenet")
        except CorrelaxError as exc:
            return StartingWeights("none", warning=(
                f"no ImageNet weights for {backbone}: {exc.path or 'the torch cache'} is "
                "missing, so training starts from random weights (the paper starts from "
                "ImageNet). Nothing is downloaded: put torchvision's file there or pass "
                "--pretrained FILE (--pretrained none silences this)"))
    else:
        path = resolve_pretrained(backbone, pretrained)
    model.load_pretrained_backbone(path)
    return StartingWeights(path.name, path)


def _label_counts(targets: np.ndarray, labels: Sequence[str]) -> dict[str, int]:
    if not len(targets):
        return dict.fromkeys(labels, 0)
    return {lab: int(n) for lab, n in zip(labels, (targets > 0).sum(axis=0))}


class _LogitsNet(nn.Module):
    """``normalize → features → logits`` as one module, so DDP can wrap it."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.inner = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.inner
        return m.logits(m.features(m.normalize(x)))


def _autocast(device: str, precision: str) -> Any:
    import contextlib

    if precision == "float32":
        return contextlib.nullcontext()
    kind = "cuda" if device.startswith("cuda") else "cpu"
    return torch.autocast(kind, dtype=torch.bfloat16)


def evaluate_crops(model: Classifier, dataset: CropDataset, batch_size: int = 64,
                   device: str = "cpu", precision: str = "float32", alpha: float = 0.95,
                   gamma: float = 2.5) -> tuple[np.ndarray, np.ndarray, float]:
    """Run ``model`` over a crop data set in eval mode.

    Returns ``(probabilities (N, C), targets (N, C), mean focal loss)``; the loss is 0
    for an empty data set.
    """
    from torch.utils.data import DataLoader

    from .losses import focal_loss

    was_training = model.training
    model.eval()
    probs, targets, losses = [], [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    with torch.no_grad():
        for x, y in loader:
            x = x.to(device)
            with _autocast(device, precision):
                logits = model.logits(model.features(model.normalize(x)))
            logits = logits.float().cpu()
            losses.append(float(focal_loss(logits, y, alpha, gamma, reduction="sum")))
            probs.append(torch.sigmoid(logits).numpy())
            targets.append(y.numpy())
    model.train(was_training)
    n_labels = len(model.labels)
    if not probs:
        return np.zeros((0, n_labels), np.float32), np.zeros((0, n_labels), np.float32), 0.0
    p, t = np.concatenate(probs), np.concatenate(targets)
    return p, t, float(sum(losses) / t.size)


# --------------------------------------------------------------------------- the task


class _ClassifierTask:
    """The classifier's part of the fit loop (:class:`~.loop.FitTask`): crop data sets,
    focal loss, validation macro F1 and best/last checkpoints."""

    state_format = STATE_FORMAT
    run_keys = RUN_KEYS
    sampler_salt = SAMPLER_SALT

    def __init__(self, settings: TrainConfig) -> None:
        if settings.epochs < 1 or settings.batch_size < 1 or settings.input_size < 8:
            raise CorrelaxError("epochs and batch size must be at least 1, input size at "
                                "least 8")
        if settings.precision not in ("float32", "bfloat16"):
            raise CorrelaxError(f"precision must be float32 or bfloat16, not "
                                f"{settings.precision!r}")
        self.settings = settings
        self.data = Path(settings.data).expanduser()
        if not self.data.exists():
            raise CorrelaxError("data folder not found", self.data)
        self.best_score, self.best_epoch = -math.inf, 0
        self.starting = StartingWeights("none")

    def load(self) -> None:
        from ..io.vindr import load_vindr
        from .crops import (
            CropDataset,
            FusedImageCache,
            build_samples,
            median_box_size,
            sample_weights,
        )

        s = self.settings
        self.split = split_records(load_vindr(self.data), s)
        train_samples = build_samples(self.split.training, s.labels)
        val_samples = build_samples(self.split.validation, s.labels)
        if not train_samples:
            raise CorrelaxError("no training samples (no boxes or No Finding images in the "
                                "'training' split)", self.data)
        if s.select == "best" and not val_samples:
            raise NoValidationError("choosing the best epoch needs validation samples, but the "
                                "validation images have none with the run's labels; keep "
                                "the last epoch instead (--select last)", self.data)
        self.reference = median_box_size(train_samples) or (float(s.input_size),) * 2
        self.image_cache: FusedImageCache = FusedImageCache(
            s.cache or Path(s.out).expanduser() / "cache")
        common = {"reference_size": self.reference, "seed": s.seed, "config": s.crop}
        self.train_set = CropDataset(self.split.training, train_samples, self.image_cache,
                                     s.input_size, train=True, labels=s.labels, **common)
        self.val_set = CropDataset(self.split.validation, val_samples, self.image_cache,
                                   s.input_size, train=False, **common)
        self.weights = sample_weights(self.train_set.targets)

    @staticmethod
    def upgrade(saved: dict[str, Any]) -> dict[str, Any]:
        if isinstance(saved.get("crop"), dict):
            # Runs saved before the window-scale options existed had them off.
            saved["crop"] = CropConfig().as_dict() | saved["crop"]
        saved.setdefault("select", "best")  # the only rule before it was a setting
        return saved

    def start(self, resume: Resume) -> Start:
        from ..models.classifier import Classifier

        s, split = self.settings, self.split
        self.model = Classifier(s.backbone, s.labels, input_size=s.input_size)
        self.starting = (StartingWeights(str(resume.doc.get("pretrained", "unknown")))
                         if resume.active else load_starting_weights(self.model, s.pretrained))
        warnings = [self.starting.warning] if self.starting.warning else []
        if s.select == "best" and s.val_split == "test":
            warnings.append(
                "the best epoch is chosen on the test split: test scores of this checkpoint "
                "will be optimistic (the default holds out a share of the training studies)")
        return Start({
            "train_images": len(split.training), "val_images": len(split.validation),
            "train_samples": len(self.train_set), "val_samples": len(self.val_set),
            "skipped_missing_files": split.skipped,
            "train_support": _label_counts(self.train_set.targets, s.labels),
            "val_support": _label_counts(self.val_set.targets, s.labels),
            "reference_box": list(self.reference),
            "selection": split.selection, "pretrained": self.starting.name}, warnings)

    def cache(self, rank: int, world_size: int) -> Iterator[tuple[int, int]]:
        return self.image_cache.prepare(self.split.training + self.split.validation, rank,
                                        world_size)

    def network(self) -> nn.Module:
        return _LogitsNet(self.model)

    def schedule(self, optimizer: torch.optim.Optimizer) -> Any:
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=self.settings.epochs, eta_min=self.settings.lr_min)

    def restore(self, doc: dict[str, Any]) -> None:
        self.best_score = float(doc.get("best_score", -math.inf))
        self.best_epoch = int(doc.get("best_epoch", 0))

    def begin(self, out: Path, resumed: bool) -> dict[str, Any]:
        if not resumed:  # a best checkpoint of an earlier run here is not this run's
            for stale in ("best.safetensors", "best.json"):
                (out / stale).unlink(missing_ok=True)
        return {"selection": self.split.selection, "pretrained": self.starting.name,
                "validation_study_ids": self.split.validation_studies}

    def batches(self, epoch: int, sampler: torch.Generator, rank: int, world_size: int
                ) -> tuple[Any, list[int]]:
        from .crops import epoch_indices

        self.train_set.set_epoch(epoch)
        order = epoch_indices(self.weights, len(self.train_set.samples), sampler, rank,
                              world_size, extra=self.train_set.extra_negatives)
        return self.train_set, order

    def batch_loss(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor
                   ) -> tuple[torch.Tensor, list[float]]:
        from .losses import focal_loss

        s = self.settings
        with _autocast(str(x.device), s.precision):
            logits = net(x)
        loss = focal_loss(logits.float(), y, s.alpha, s.gamma)
        return loss, [loss.detach().item() * len(y), len(y)]

    def record(self, epoch: int, sums: torch.Tensor, lr: float, t0: float, group: Any
               ) -> dict[str, Any]:
        s = self.settings
        record: dict[str, Any] = {"epoch": epoch, "epochs": s.epochs, "lr": lr,
                                  "train_loss": float(sums[0] / max(float(sums[1]), 1.0))}
        if group.main:
            record.update(self._validate(epoch, group))
            record["seconds"] = round(time.perf_counter() - t0, 3)
            record["best"] = record.pop("_best")
        return record

    def _validate(self, epoch: int, group: Any) -> dict[str, Any]:
        """Validation loss and per-label metrics of the epoch; updates the best epoch."""
        from ..metrics import macro_f1, per_label_metrics

        s = self.settings
        probs, targets, val_loss = evaluate_crops(
            self.model, self.val_set, per_rank_batch(s.batch_size, group.world_size),
            group.device, s.precision, s.alpha, s.gamma)
        rows = per_label_metrics(targets, probs, s.labels, s.threshold) if len(targets) else []
        improved = False
        if s.select == "last":
            self.best_epoch = epoch
        elif macro_f1(rows) > self.best_score:  # select="best" always has validation
            self.best_score, self.best_epoch, improved = macro_f1(rows), epoch, True
        return {"val_loss": val_loss if len(targets) else None,
                "macro_f1": macro_f1(rows) if rows else None,
                "metrics": [r.as_dict() for r in rows], "_best": improved}

    def state_info(self) -> dict[str, Any]:
        return {"best_score": self.best_score, "best_epoch": self.best_epoch,
                "selection": self.split.selection, "pretrained": self.starting.name}

    def save(self, out: Path, epoch: int, record: dict[str, Any]) -> None:
        from ..models.checkpoint import save_checkpoint

        info = {"epoch": epoch, "train_config": self.settings.as_dict(), "metrics": record,
                "selection": self.split.selection, "pretrained": self.starting.name}
        save_checkpoint(self.model, out / "last.safetensors", info)
        if record["best"]:
            save_checkpoint(self.model, out / "best.safetensors", info)

    def finish(self, out: Path) -> Finish:
        best, last = out / "best.safetensors", out / "last.safetensors"
        best_file = best if best.is_file() else None
        last_file = last if last.is_file() else None
        chosen = last_file if self.settings.select == "last" else best_file
        return Finish(chosen, self.best_epoch, best_file, last_file, self.split.selection)


def train_steps(config: TrainConfig) -> Generator[TrainEvent, None, TrainResult]:
    """Train (or resume) a classifier per docs/method.md §5, yielding progress events.

    Reads only the images of :func:`split_records`' training and validation lists.
    Raises CorrelaxError for unusable input: no data set, no training samples, best-epoch
    selection without validation samples, missing or unfitting ``pretrained`` weights,
    an unreadable image, a run folder holding a different run.
    """
    task = _ClassifierTask(config)
    history = yield from fit_steps(task)
    out = Path(config.out).expanduser()
    finish = task.finish(out)
    return TrainResult(out, finish.best, finish.last, task.best_epoch, history,
                       finish.checkpoint, task.split.selection, task.starting.name)


def train(config: TrainConfig) -> TrainResult:
    """Run :func:`train_steps` to the end and return its result."""
    from ..maps.runtime import drain

    return drain(train_steps(config))
