"""Training settings as data: the one home of every default of ``correlax train``.

:class:`TrainConfig` (the classifier, docs/method.md §5) and
:class:`~napari_correlax.gmic.config.GMICTrainConfig` (GMIC, §9) are frozen dataclasses.
Each field that the command line offers carries its help text, flag and value type in
its metadata (:func:`option`), so that

- ``correlax train`` and ``correlax gmic train`` build their options from the fields
  (:func:`napari_correlax.cli.options.add_options`) and their settings from the parsed
  options (:func:`napari_correlax.cli.options.settings_from_args`);
- the napari training dock binds its controls to the same fields and starts the child
  process with :func:`command_line`, the inverse of parsing;
- no default is written anywhere else.

Nothing here imports torch, so the dock can read the settings without loading it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import CorrelaxError
from ..labels import LABELS

__all__ = [
    "DEFAULT_VAL_FRACTION",
    "SELECT_RULES",
    "CropConfig",
    "TrainConfig",
    "cli_fields",
    "command_line",
    "default_of",
    "flag_of",
    "help_of",
    "option",
    "shared_option",
]

#: Share of the training studies held out for validation when ``select="best"``.
DEFAULT_VAL_FRACTION = 0.1
#: Checkpoint selection rules: highest validation macro F1, or the last epoch.
SELECT_RULES = {"best": "best-val-macro-f1", "last": "last"}


def option(default: Any = dataclasses.MISSING, *, help: str, flag: str | None = None,
           aliases: Sequence[str] = (), type: Callable[[str], Any] | None = None,
           choices: Sequence[str] | None = None, metavar: str | Sequence[str] | None = None,
           group: str | None = None, factory: Callable[[], Any] | None = None) -> Any:
    """A dataclass field offered on the command line.

    ``help`` may use ``%(default)s``; ``flag`` defaults to ``--`` + the field name with
    dashes; ``type`` converts one command-line word (default: the type of ``default``;
    needed when the default is None); ``group``: the argparse group (``"runtime"``).
    A tuple default takes as many words as it has items, a list default one or more.
    """
    meta = {"help": help, "flag": flag, "aliases": tuple(aliases), "type": type,
            "choices": tuple(choices) if choices else None, "metavar": metavar,
            "group": group}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


#: Options both training commands take, with the same meaning (:func:`shared_option`).
SHARED_OPTIONS: dict[str, dict[str, Any]] = {
    "seed": {"default": 0, "help": "seed of every random draw (%(default)s)"},
    "fresh": {"default": False, "help": "start over even if RUN holds a run"},
    "device": {"default": "auto", "group": "runtime", "help": "cpu, cuda, cuda:N or auto"},
    "workers": {"default": 0, "group": "runtime",
                "help": "data loader processes (%(default)s)"},
    "threads": {"default": None, "type": int, "group": "runtime",
                "help": "torch CPU threads"},
}


def shared_option(name: str) -> Any:
    """The field of an option both training commands take (:data:`SHARED_OPTIONS`)."""
    return option(**SHARED_OPTIONS[name])


def cli_fields(cls: type) -> Iterator[tuple[tuple[str, ...], dataclasses.Field]]:
    """``(path, field)`` of every command-line field of a settings class, in order; a
    field holding a settings dataclass contributes its own fields (path of two names)."""
    for f in dataclasses.fields(cls):
        if "help" in f.metadata:
            yield (f.name,), f
        elif f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(
                f.default_factory):
            for (name,), inner in cli_fields(f.default_factory):  # type: ignore[arg-type]
                yield (f.name, name), inner


def flag_of(f: dataclasses.Field) -> str:
    """The command-line flag of a field (``batch_size`` → ``--batch-size``)."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def default_of(f: dataclasses.Field) -> Any:
    """A field's default value (calling its factory)."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def help_of(f: dataclasses.Field) -> str:
    """A field's help text with its default filled in (for tooltips)."""
    default = default_of(f)
    if isinstance(default, (tuple, list)):
        default = " ".join(str(v) for v in default)
    return f.metadata["help"] % {"default": default}


def _get(settings: Any, path: tuple[str, ...]) -> Any:
    value = settings
    for name in path:
        value = getattr(value, name)
    return value


def _words(value: Any) -> list[str]:
    if isinstance(value, (tuple, list)):
        return [str(v) for v in value]
    return [str(value)]


def command_line(settings: Any, always: Sequence[str] = ()) -> list[str]:
    """The arguments of ``correlax train`` / ``correlax gmic train`` that give ``settings``:
    ``DATA --out RUN``, then the options named in ``always`` and every other option whose
    value differs from its default (parsing them back gives ``settings``)."""
    argv = [str(settings.data), "--out", str(settings.out)]
    for path, f in cli_fields(type(settings)):
        value = _get(settings, path)
        if path[-1] not in always and _at_default(settings, path, f):
            continue
        if isinstance(value, bool):
            argv += [flag_of(f)] if value else []
        elif value is not None:
            argv += [flag_of(f), *_words(value)]
    return argv


def _at_default(settings: Any, path: tuple[str, ...], f: dataclasses.Field) -> bool:
    """True when the option adds nothing: the settings with the field at its default (and
    resolved by the class, e.g. ``val_fraction=None``) hold the same value."""
    value = _get(settings, path)
    if value == default_of(f):
        return True
    if len(path) > 1:
        return False
    try:
        return _get(dataclasses.replace(settings, **{path[0]: default_of(f)}), path) == value
    except CorrelaxError:
        return False


def _set(obj: Any, **values: Any) -> None:
    """Assign fields of a frozen dataclass while it normalises itself."""
    for name, value in values.items():
        object.__setattr__(obj, name, value)


@dataclass(frozen=True)
class CropConfig:
    """Crop and augmentation parameters (docs/method.md §5); ranges are inclusive.

    ``window_share`` and ``window_negatives`` (opt-in window-scale samples, see
    :mod:`.crops`) are offered on the command line.
    """

    scale: tuple[float, float] = (0.05, 5.0)
    aspect: tuple[float, float] = (0.33, 1.66)
    flip_p: float = 0.5
    rotate_p: float = 0.5
    max_rotation_deg: float = 30.0
    jitter_p: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.05
    window_share: float = option(
        0.0, metavar="P", help="opt-in: share of positive samples drawn as native-scale "
        "windows of input-size pixels around the box (sliding-window scale; default "
        "%(default)s = off)")
    window_central: float = 0.5
    window_negatives: int = option(
        0, metavar="K", help="opt-in: K native-scale tissue windows overlapping no box "
        "added per epoch as No Finding samples (default %(default)s = off)")
    window_tissue: float = 0.75

    def __post_init__(self) -> None:
        if not 0.0 <= self.window_share <= 1.0 or self.window_negatives < 0:
            raise CorrelaxError("the window share must be in [0, 1] and the window negatives "
                                "at least 0")

    def as_dict(self) -> dict[str, Any]:
        """JSON-able copy."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``correlax train`` takes (docs/method.md §5 defaults).

    Paths: ``data`` is the VinDr-layout folder (docs/method.md §11), ``out`` the run folder,
    ``cache`` the fused-image cache (default ``out/cache``).

    ``pretrained`` (fresh starts only; see :func:`~.fit.load_starting_weights`): ``None``
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
    backbone: str = option(
        "efficientnet_v2_s", help="the network under the paper's head: %(default)s "
        "(default, the paper's), resnet50, densenet121, mobilenet_v3_large, lite (fast on "
        "CPUs), tiny, ...")
    pretrained: str | None = option(
        None, type=str, metavar="FILE",
        help="starting backbone weights (.safetensors or .pth state dict); 'imagenet' to "
        "require torchvision's file in the torch hub cache; 'none' for random weights. "
        "Default: torchvision backbones use the cached ImageNet file when present, else "
        "random weights with a warning; lite and tiny start from random weights. Never "
        "downloaded")
    epochs: int = option(50, help="passes over the training samples (default %(default)s)")
    batch_size: int = option(48, aliases=("--batch",),
                             help="global batch size: crops per optimisation step, split "
                             "over processes (default %(default)s); lower it when memory "
                             "runs out")
    lr: float = option(1e-3, help="Adam learning rate (default %(default)s)")
    lr_min: float = option(1e-7, help="end of the cosine schedule (default %(default)s)")
    alpha: float = 0.95
    gamma: float = 2.5
    input_size: int = option(256, help="crop side in pixels (%(default)s)")
    labels: list[str] = field(default_factory=lambda: list(LABELS))
    seed: int = shared_option("seed")
    select: str = option(
        "best", choices=tuple(SELECT_RULES),
        help="checkpoint to keep: 'best' validation macro F1 (default) or the 'last' epoch "
        "(as the paper's authors did; needs no validation set)")
    val_split: str | None = option(
        None, type=str, metavar="NAME",
        help="validate on this split of the data set instead of a share of the training "
        "studies, e.g. 'test' (not recommended: choosing the epoch on test images makes "
        "the test scores optimistic)")
    val_fraction: float | None = option(
        None, type=float, metavar="F",
        help="share of the training studies held out for validation, whole studies drawn "
        f"from --seed (default {DEFAULT_VAL_FRACTION:g} with --select best, 0 with --select "
        "last)")
    threshold: float = 0.5
    crop: CropConfig = field(default_factory=CropConfig)
    cache: str | None = option(None, type=str,
                               help="fused-image cache folder (default RUN/cache); share it "
                               "between runs")
    fresh: bool = shared_option("fresh")
    device: str = shared_option("device")
    precision: str = option("float32", group="runtime", choices=("float32", "bfloat16"),
                            help="autocast precision (bfloat16 is faster on recent GPUs)")
    workers: int = shared_option("workers")
    threads: int | None = shared_option("threads")

    #: The ``correlax`` action that trains with these settings.
    command = ("train",)

    def __post_init__(self) -> None:
        fraction = self.val_fraction
        if fraction is None:
            held_out = self.select == "best" and not self.val_split
            fraction = DEFAULT_VAL_FRACTION if held_out else 0.0
        _set(self, val_fraction=float(fraction), data=str(self.data), out=str(self.out),
             labels=list(self.labels))
        if self.select not in SELECT_RULES:
            raise CorrelaxError(f"select must be 'best' or 'last', not {self.select!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise CorrelaxError(f"the validation share must be in [0, 1), not "
                                f"{self.val_fraction:g}")
        if self.val_split and self.val_fraction > 0:
            raise CorrelaxError("give a validation split or a validation share of the "
                                "training studies, not both")

    def as_dict(self) -> dict[str, Any]:
        """JSON-able copy (paths as strings)."""
        doc = asdict(self)
        doc["crop"] = self.crop.as_dict()
        return doc
