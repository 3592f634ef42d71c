"""The training loop of docs/method.md §5 (paper §3.3): resumable, single process or DDP.

:func:`train_steps` is a generator: it yields :class:`TrainEvent` s (image caching,
every batch, every epoch) and returns a :class:`TrainResult`; :func:`train` drains it.
The CLI prints the events, the napari dock reads them as JSON lines.

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

import json
import math
import time
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..distributed import join
from ..errors import CorrelaxError
from ..files import atomic_write_text
from ..labels import LABELS
from .crops import CropConfig
from .state import (
    STATE_FILE,
    gather_rng_states,
    mix_seed,
    read_state,
    restore_state,
    save_state,
    seed_everything,
)

if TYPE_CHECKING:
    from ..io.vindr import ImageRecord, VinDrIndex
    from ..models.classifier import Classifier
    from .crops import CropDataset

__all__ = [
    "DEFAULT_VAL_FRACTION",
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
#: Share of the training studies held out for validation when ``select="best"``.
DEFAULT_VAL_FRACTION = 0.1
#: Checkpoint selection rules: highest validation macro F1, or the last epoch.
SELECT_RULES = {"best": "best-val-macro-f1", "last": "last"}
#: Backbones of this project without ImageNet weights (everything else is torchvision's).
OWN_BACKBONES = ("lite", "tiny")


@dataclass
class TrainConfig:
    """Everything ``correlax train`` takes (docs/method.md §5 defaults).

    Paths: ``data`` is the VinDr-layout folder (docs/method.md §11), ``out`` the run folder,
    ``cache`` the fused-image cache (default ``out/cache``).

    ``pretrained`` (fresh starts only; see :func:`load_starting_weights`): ``None``
    (default) for torchvision's ImageNet file when the torch hub cache holds it (random
    weights and a warning when it does not; random weights for ``lite``/``tiny``),
    ``"imagenet"`` for that file or an error, ``"none"`` for random weights, or the path
    of a weights file.

    ``select``: ``"best"`` (highest validation macro F1) or ``"last"`` (last epoch).
    ``val_fraction``: share of the training studies held out for validation (whole
    studies, drawn from ``seed``); ``None`` resolves to :data:`DEFAULT_VAL_FRACTION`
    with ``select="best"`` and to 0 with ``"last"`` or a ``val_split``. ``val_split``:
    validate on this split of the data set instead (``"test"`` is possible but makes
    the test scores of the chosen checkpoint optimistic); ``None`` by default.

    ``batch_size`` is the global batch; ``input_size`` the crop side in pixels;
    ``workers`` the DataLoader worker processes; ``threads`` torch's CPU threads;
    ``device`` ``auto``/``cpu``/``cuda``/``cuda:N``; ``precision`` ``float32`` or
    ``bfloat16`` (autocast). ``fresh`` ignores an existing run in ``out``.
    """

    data: str
    out: str
    backbone: str = "efficientnet_v2_s"
    pretrained: str | None = None
    epochs: int = 50
    batch_size: int = 48
    lr: float = 1e-3
    lr_min: float = 1e-7
    alpha: float = 0.95
    gamma: float = 2.5
    input_size: int = 256
    labels: list[str] = field(default_factory=lambda: list(LABELS))
    seed: int = 0
    select: str = "best"
    val_split: str | None = None
    val_fraction: float | None = None
    threshold: float = 0.5
    crop: CropConfig = field(default_factory=CropConfig)
    device: str = "auto"
    precision: str = "float32"
    workers: int = 0
    threads: int | None = None
    cache: str | None = None
    fresh: bool = False

    def __post_init__(self) -> None:
        if self.val_fraction is None:
            held_out = self.select == "best" and not self.val_split
            self.val_fraction = DEFAULT_VAL_FRACTION if held_out else 0.0
        self.val_fraction = float(self.val_fraction)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able copy (paths as strings)."""
        doc = asdict(self)
        doc["crop"] = self.crop.as_dict()
        return doc


@dataclass
class TrainEvent:
    """A progress event.

    ``kind``: ``"start"`` (data summary, ``selection`` and ``pretrained``),
    ``"warning"`` (something the user should know, in ``data["message"]``: no ImageNet
    weights found, validation on the test split), ``"cache"`` (images fused so far),
    ``"batch"`` (batches of the current epoch done), ``"epoch"`` (an epoch finished:
    ``data`` holds its metrics record, also written to ``metrics.jsonl``) or
    ``"done"`` (``data["checkpoint"]``: the chosen checkpoint, ``data["epoch"]``: its
    epoch). ``done``/``total`` count what ``kind`` names.
    """

    kind: str
    done: int
    total: int
    data: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """One JSON-able object: ``{"event": kind, "done", "total", **data}``."""
        return {"event": self.kind, "done": self.done, "total": self.total, **self.data}


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
    images, both a split and a share, a share outside [0, 1), or ``select="best"``
    without validation images.
    """
    if config.select not in SELECT_RULES:
        raise CorrelaxError(f"select must be 'best' or 'last', not {config.select!r}")
    fraction = float(config.val_fraction or 0.0)
    if not 0.0 <= fraction < 1.0:
        raise CorrelaxError(f"the validation share must be in [0, 1), not {fraction:g}")
    if config.val_split and fraction > 0:
        raise CorrelaxError("give a validation split or a validation share of the training "
                            "studies, not both")
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
        raise CorrelaxError(
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


# --------------------------------------------------------------------------- the loop


def train_steps(config: TrainConfig) -> Generator[TrainEvent, None, TrainResult]:
    """Train (or resume) a classifier per docs/method.md §5, yielding progress events.

    Reads only the images of :func:`split_records`' training and validation lists.
    Raises CorrelaxError for unusable input: no data set, no training samples, best-epoch
    selection without validation samples, missing or unfitting ``pretrained`` weights,
    an unreadable image, a run folder holding a different run.
    """
    from ..io.vindr import load_vindr
    from ..models.checkpoint import save_checkpoint
    from ..models.classifier import Classifier
    from .crops import (
        CropDataset,
        FusedImageCache,
        build_samples,
        epoch_indices,
        median_box_size,
        sample_weights,
    )

    if config.epochs < 1 or config.batch_size < 1 or config.input_size < 8:
        raise CorrelaxError("epochs and batch size must be at least 1, input size at least 8")
    if config.precision not in ("float32", "bfloat16"):
        raise CorrelaxError(f"precision must be float32 or bfloat16, not {config.precision!r}")
    data = Path(config.data).expanduser()
    if not data.exists():
        raise CorrelaxError("data folder not found", data)
    out = Path(config.out).expanduser()
    dist_ctx = join(config.device)
    device = dist_ctx.device
    try:
        if config.threads:
            torch.set_num_threads(int(config.threads))
        index = load_vindr(data)
        split = split_records(index, config)
        training, validation = split.training, split.validation
        train_samples = build_samples(training, config.labels)
        val_samples = build_samples(validation, config.labels)
        if not train_samples:
            raise CorrelaxError("no training samples (no boxes or No Finding images in the "
                                "'training' split)", data)
        if config.select == "best" and not val_samples:
            raise CorrelaxError("choosing the best epoch needs validation samples, but the "
                                "validation images have none with the run's labels; keep "
                                "the last epoch instead (--select last)", data)
        reference = median_box_size(train_samples) or (float(config.input_size),) * 2
        cache = FusedImageCache(config.cache or out / "cache")
        train_set = CropDataset(training, train_samples, cache, config.input_size, train=True,
                                reference_size=reference, seed=config.seed, config=config.crop,
                                labels=config.labels)
        val_set = CropDataset(validation, val_samples, cache, config.input_size, train=False,
                              reference_size=reference, seed=config.seed, config=config.crop)
        weights = sample_weights(train_set.targets)

        state_path = out / STATE_FILE
        resume = state_path.is_file() and not config.fresh
        doc: dict[str, Any] = {}
        tensors: dict[str, Any] = {}
        if resume:
            doc, tensors = read_state(state_path)
            saved = dict(doc.get("config", {}))
            current = config.as_dict()
            if isinstance(saved.get("crop"), dict):
                # Runs saved before the window-scale options existed had them off.
                saved["crop"] = CropConfig().as_dict() | saved["crop"]
            saved.setdefault("select", "best")  # the only rule before it was a setting
            changed = [k for k in RUN_KEYS if saved.get(k) != current.get(k)]
            if changed:
                raise CorrelaxError(
                    "run folder holds a run with other settings (" + ", ".join(
                        f"{k}: {saved.get(k)!r} there, {current.get(k)!r} now" for k in changed)
                    + "); choose another --out or pass --fresh", out)

        seed_everything(config.seed)
        model = Classifier(config.backbone, config.labels, input_size=config.input_size)
        if resume:
            starting = StartingWeights(str(doc.get("pretrained", "unknown")))
        else:
            starting = load_starting_weights(model, config.pretrained)
        selection = split.selection
        yield TrainEvent("start", 0, config.epochs, {
            "run": str(out), "device": device, "world_size": dist_ctx.world_size,
            "train_images": len(training), "val_images": len(validation),
            "train_samples": len(train_samples), "val_samples": len(val_samples),
            "skipped_missing_files": split.skipped,
            "train_support": _label_counts(train_set.targets, config.labels),
            "val_support": _label_counts(val_set.targets, config.labels),
            "reference_box": list(reference),
            "selection": selection, "pretrained": starting.name, "resumed": resume,
        })
        if starting.warning:
            yield TrainEvent("warning", 0, 0, {"message": starting.warning})
        if config.select == "best" and config.val_split == "test":
            yield TrainEvent("warning", 0, 0, {"message": (
                "the best epoch is chosen on the test split: test scores of this checkpoint "
                "will be optimistic (the default holds out a share of the training studies)")})

        for done, total in cache.prepare(training + validation, dist_ctx.rank,
                                         dist_ctx.world_size):
            yield TrainEvent("cache", done, total)
        dist_ctx.barrier()

        model.to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=config.epochs, eta_min=config.lr_min)
        sampler = torch.Generator().manual_seed(mix_seed(config.seed, 0x5A3))
        seed_everything(mix_seed(config.seed, dist_ctx.rank))
        history: list[dict[str, Any]] = []
        best_score, best_epoch, start = -math.inf, 0, 1
        if resume:
            restore_state(doc, tensors, model, optimizer, scheduler, sampler, dist_ctx.rank,
                     dist_ctx.world_size)
            history = list(doc.get("history", []))
            best_score = float(doc.get("best_score", -math.inf))
            best_epoch = int(doc.get("best_epoch", 0))
            start = int(doc["epoch"]) + 1

        net = _LogitsNet(model)
        if dist_ctx.enabled:
            from torch.nn.parallel import DistributedDataParallel

            net = DistributedDataParallel(
                net, device_ids=[dist_ctx.local_rank] if device.startswith("cuda") else None)
        if dist_ctx.main:
            out.mkdir(parents=True, exist_ok=True)
            if not resume:  # a best checkpoint of an earlier run here is not this run's
                for stale in ("best.safetensors", "best.json"):
                    (out / stale).unlink(missing_ok=True)
            atomic_write_text(out / "config.json", json.dumps(config.as_dict(), indent=2) + "\n")
            atomic_write_text(out / "run.json", json.dumps({
                "selection": selection, "pretrained": starting.name,
                "validation_study_ids": split.validation_studies}, indent=1) + "\n")

        from torch.utils.data import DataLoader

        from ..metrics import macro_f1, per_label_metrics
        from .losses import focal_loss

        per_rank_batch = math.ceil(config.batch_size / dist_ctx.world_size)
        for epoch in range(start, config.epochs + 1):
            t0 = time.perf_counter()
            model.train()
            train_set.set_epoch(epoch)
            order = epoch_indices(weights, len(train_samples), sampler, dist_ctx.rank,
                                  dist_ctx.world_size, extra=train_set.extra_negatives)
            loader = DataLoader(train_set, batch_size=per_rank_batch, sampler=order,
                                num_workers=config.workers,
                                pin_memory=device.startswith("cuda"))
            lr = optimizer.param_groups[0]["lr"]
            total = torch.zeros(2, dtype=torch.float64)
            n_batches = len(loader)
            for b, (x, y) in enumerate(loader):
                x = x.to(device, non_blocking=True)
                y = y.to(device, non_blocking=True)
                with _autocast(device, config.precision):
                    logits = net(x)
                loss = focal_loss(logits.float(), y, config.alpha, config.gamma)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                value = loss.detach().item()
                total += torch.tensor([value * len(y), len(y)], dtype=torch.float64)
                yield TrainEvent("batch", b + 1, n_batches, {
                    "epoch": epoch, "epochs": config.epochs, "loss": value})
            scheduler.step()
            if dist_ctx.enabled:
                import torch.distributed as dist

                reduced = total.to(device)
                dist.all_reduce(reduced)
                total = reduced.cpu()
            train_loss = float(total[0] / max(float(total[1]), 1.0))

            record: dict[str, Any] = {"epoch": epoch, "epochs": config.epochs, "lr": lr,
                                      "train_loss": train_loss}
            if dist_ctx.main:
                probs, targets, val_loss = evaluate_crops(
                    model, val_set, per_rank_batch, device, config.precision,
                    config.alpha, config.gamma)
                rows = per_label_metrics(targets, probs, config.labels, config.threshold) \
                    if len(targets) else []
                improved = False
                if config.select == "last":
                    best_epoch = epoch
                elif macro_f1(rows) > best_score:  # select="best" always has validation
                    best_score, best_epoch, improved = macro_f1(rows), epoch, True
                record.update({
                    "val_loss": val_loss if len(targets) else None,
                    "macro_f1": macro_f1(rows) if rows else None,
                    "metrics": [r.as_dict() for r in rows],
                    "seconds": round(time.perf_counter() - t0, 3),
                    "best": improved,
                })
                history.append(record)
            rng_states = gather_rng_states(dist_ctx)
            if dist_ctx.main:
                info = {"epoch": epoch, "train_config": config.as_dict(), "metrics": record,
                        "selection": selection, "pretrained": starting.name}
                save_state(state_path, model, optimizer, scheduler, sampler, rng_states, {
                    "epoch": epoch, "config": config.as_dict(), "history": history,
                    "best_score": best_score, "best_epoch": best_epoch,
                    "selection": selection, "pretrained": starting.name})
                save_checkpoint(model, out / "last.safetensors", info)
                if record["best"]:
                    save_checkpoint(model, out / "best.safetensors", info)
                atomic_write_text(out / "metrics.jsonl",
                                  "".join(json.dumps(h) + "\n" for h in history))
            dist_ctx.barrier()
            yield TrainEvent("epoch", epoch, config.epochs, record)

        best = out / "best.safetensors"
        last = out / "last.safetensors"
        result = TrainResult(out, best if best.is_file() else None,
                             last if last.is_file() else None, best_epoch, history,
                             selection=selection, pretrained=starting.name)
        result.checkpoint = result.last if config.select == "last" else result.best
        yield TrainEvent("done", config.epochs, config.epochs, {
            "checkpoint": str(result.checkpoint) if result.checkpoint else None,
            "epoch": best_epoch, "selection": selection,
            "best": str(result.best) if result.best else None,
            "last": str(result.last) if result.last else None, "best_epoch": best_epoch})
        return result
    finally:
        dist_ctx.close()


def train(config: TrainConfig) -> TrainResult:
    """Run :func:`train_steps` to the end and return its result."""
    steps = train_steps(config)
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value
