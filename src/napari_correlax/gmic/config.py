"""GMIC settings (docs/method.md §9): the model's hyper-parameters, stored with checkpoints
(:class:`GMICConfig`), and the training settings of ``correlax gmic train``
(:class:`GMICTrainConfig`, the one home of their defaults).

:class:`GMICConfig`'s field names follow the official GMIC implementation's parameter
dictionary (``K``, ``crop_shape``, ``percent_t``, ``post_processing_dim``,
``num_classes``, ``cam_size``) so a reader of both can match them; the values default to
the official ones. Everywhere else (the command line, the training settings, the
loaders' keyword) the top-t pooling fraction is called ``top_t``; the official
``percent_t`` is that fraction, and :func:`official_top_t` maps a published file to its
value.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import CorrelaxError
from ..labels import LABELS, NO_FINDING
from ..train.settings import option, shared_option
from .cams import TRAIN_CAMS, check_cam

#: Which images are GMIC's negatives: the No Finding ones, or every image without a
#: positive label (docs/method.md §9).
NEGATIVES: tuple[str, ...] = ("normal", "all")


def check_classes(positive: Sequence[str]) -> list[str]:
    """The positive labels as given (docs/method.md §3 label names, case ignored), in
    order without repeats; CorrelaxError naming the labels for an unknown one."""
    lookup = {lab.lower(): lab for lab in LABELS if lab != NO_FINDING}
    out = []
    for name in positive:
        label = lookup.get(str(name).strip().lower())
        if label is None:
            raise CorrelaxError(f"unknown positive label {name!r}; choose among "
                                f"{', '.join(lookup.values())}")
        out.append(label)
    out = list(dict.fromkeys(out))
    if not out:
        raise CorrelaxError("no positive label given")
    return out


__all__ = [
    "DEFAULT_CLASS_NAMES",
    "DEFAULT_TOP_T",
    "FITS",
    "INPUT_SIZE",
    "OFFICIAL_TOP_T",
    "REGULARISERS",
    "GMICConfig",
    "GMICTrainConfig",
    "feature_grid_size",
    "official_top_t",
]

#: Input size (rows, columns) in pixels of the published models.
INPUT_SIZE: tuple[int, int] = (2944, 1920)
#: Output order of the published models.
DEFAULT_CLASS_NAMES: tuple[str, ...] = ("benign", "malignant")
#: Top-t pooling fraction of each published model, by the number in its file name
#: (``sample_model_<i>.p``).
OFFICIAL_TOP_T: dict[int, float] = {1: 0.02, 2: 0.03, 3: 0.03, 4: 0.05, 5: 0.1}
#: Top-t pooling fraction when nothing else gives one: the first published model's.
DEFAULT_TOP_T: float = OFFICIAL_TOP_T[1]
_OFFICIAL_NAME = re.compile(r"sample_model_(\d+)$")

#: Ways of bringing the breast to the input size (:func:`~.preprocess.gmic_input`):
#: a native-resolution window (the official pipeline) or a resize ([CAM-GMIC]).
FITS: tuple[str, ...] = ("window", "resize")

#: Channels of the global network's feature map (ResNet-22, last stage).
GLOBAL_CHANNELS = 256
#: Base width and number of stages of the published global network (ResNet-22).
GLOBAL_FILTERS = 16
GLOBAL_STAGES = 5
#: Channels of the local network's first stage (ResNet-18).
LOCAL_WIDTH = 64
#: Width of the gated attention's hidden layer.
ATTENTION_DIM = 128


def official_top_t(file_stem: str) -> tuple[float, str]:
    """Top-t pooling fraction of a published GMIC file by its name (``sample_model_<i>``,
    :data:`OFFICIAL_TOP_T`), else :data:`DEFAULT_TOP_T`; with where the value came from."""
    found = _OFFICIAL_NAME.search(file_stem)
    if found and int(found.group(1)) in OFFICIAL_TOP_T:
        return OFFICIAL_TOP_T[int(found.group(1))], f"official table ({file_stem})"
    return DEFAULT_TOP_T, "default (model 1)"


def feature_grid_size(input_size: tuple[int, int], stages: int = GLOBAL_STAGES
                      ) -> tuple[int, int]:
    """Rows and columns of the saliency grid for an input of ``input_size`` pixels.

    The global network's stride-2 layers (7×7 convolution with padding 3, 3×3 max-pool
    without padding, then one stride-2 3×3 convolution with padding 1 at the start of
    every stage after the first) give 46×30 cells for 2944×1920 with the published five
    stages (one cell ≈ 64×64 input pixels; ``2**(stages + 1)`` pixels in general).
    """

    def axis(n: int) -> int:
        n = (n + 2 * 3 - 7) // 2 + 1  # first_conv
        n = (n - 3) // 2 + 1  # first_pool
        for _ in range(stages - 1):
            n = (n + 2 - 3) // 2 + 1  # first block of stages 1 … stages - 1
        return n

    rows, cols = (axis(int(v)) for v in input_size)
    if rows < 1 or cols < 1:
        raise CorrelaxError(f"input of {input_size[0]}×{input_size[1]} px is too small for GMIC")
    return rows, cols


@dataclass(frozen=True)
class GMICConfig:
    """Hyper-parameters of one GMIC model.

    Attributes
    ----------
    num_classes
        Outputs per image (2 for the published models: benign, malignant).
    class_names
        Names of the outputs, in order.
    K
        Number of patches retrieved per image (shared by all classes).
    crop_shape
        Patch size (rows, columns) in input pixels.
    percent_t
        Top-t pooling fraction in (0, 1]: y_global is the mean of the ``round(h·w·t)``
        largest saliency values of each class (at least one).
    post_processing_dim
        Channels of the global feature map: ``global_filters · 2**(global_stages − 1)``
        (256 for the published ResNet-22); derived when not given.
    input_size
        Input size (rows, columns) the model was trained on, in pixels; inputs of other
        sizes still run (the grid follows :func:`feature_grid_size`).
    fit
        How a mammogram is brought to ``input_size`` (:data:`FITS`): ``"window"`` (the
        official native-resolution window) or ``"resize"`` (the breast resized, as
        [CAM-GMIC] trained on VinDr-Mammo).
    global_filters, global_stages
        Width (channels of the first stage) and number of stages of the global network:
        16 and 5 for the published ResNet-22. Smaller networks (fewer stages: a finer
        grid and a smaller receptive field) serve tests and experiments on small
        inputs; they cannot load the published weights.
    local_width
        Channels of the local network's first stage (64 in the published ResNet-18,
        whose features then have ``8 · 64 = 512`` entries); smaller for tests.
    train_cam
        The map that picks the K patches (:data:`~.cams.TRAIN_CAMS`): ``"cam"``, GMIC's own
        saliency (the official model), or the gradient CAM the model was trained with
        ([CAM-GMIC]). :meth:`~.network.GMIC.forward` uses it when no other map is asked
        for, so a model runs as it was trained.
    """

    num_classes: int = 2
    class_names: tuple[str, ...] = field(default=DEFAULT_CLASS_NAMES)
    K: int = 6
    crop_shape: tuple[int, int] = (256, 256)
    percent_t: float = DEFAULT_TOP_T
    post_processing_dim: int | None = None
    input_size: tuple[int, int] = INPUT_SIZE
    fit: str = "window"
    global_filters: int = GLOBAL_FILTERS
    global_stages: int = GLOBAL_STAGES
    local_width: int = LOCAL_WIDTH
    train_cam: str = "cam"

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_names", tuple(str(n) for n in self.class_names))
        object.__setattr__(self, "train_cam", check_cam(self.train_cam))
        object.__setattr__(self, "crop_shape", tuple(int(v) for v in self.crop_shape))
        object.__setattr__(self, "input_size", tuple(int(v) for v in self.input_size))
        problems = []
        if self.num_classes < 1:
            problems.append(f"num_classes must be at least 1, not {self.num_classes}")
        if len(self.class_names) != self.num_classes:
            problems.append(f"{len(self.class_names)} class names for {self.num_classes} classes")
        if self.K < 1:
            problems.append(f"K must be at least 1, not {self.K}")
        if len(self.crop_shape) != 2 or min(self.crop_shape) < 1:
            problems.append(f"crop_shape must be two positive sizes, not {self.crop_shape}")
        if not 0.0 < float(self.percent_t) <= 1.0:
            problems.append(f"percent_t (top t) must lie in (0, 1], not {self.percent_t}")
        if int(self.global_filters) < 1 or not 1 <= int(self.global_stages) <= 8:
            problems.append(f"the global network needs at least 1 filter and 1 to 8 stages, "
                            f"not {self.global_filters} and {self.global_stages}")
        else:
            channels = int(self.global_filters) * 2 ** (int(self.global_stages) - 1)
            if self.post_processing_dim is None:
                object.__setattr__(self, "post_processing_dim", channels)
            elif int(self.post_processing_dim) != channels:
                problems.append(
                    f"post_processing_dim must be {channels} (a global network of "
                    f"{self.global_stages} stages from {self.global_filters} filters), not "
                    f"{self.post_processing_dim}")
        if int(self.local_width) < 1:
            problems.append(f"local_width must be at least 1, not {self.local_width}")
        if len(self.input_size) != 2 or min(self.input_size) < 1:
            problems.append(f"input_size must be two positive sizes, not {self.input_size}")
        if self.fit not in FITS:
            problems.append(f"fit must be one of {list(FITS)}, not {self.fit!r}")
        if problems:
            raise CorrelaxError("invalid GMIC configuration: " + "; ".join(problems))

    @property
    def top_t(self) -> float:
        """The top-t pooling fraction (the official name: ``percent_t``)."""
        return float(self.percent_t)

    @property
    def cam_size(self) -> tuple[int, int]:
        """Saliency grid (rows, columns) at :attr:`input_size` (46×30 for 2944×1920)."""
        return feature_grid_size(self.input_size, self.global_stages)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (lists for tuples; ``cam_size`` added for readers)."""
        doc = asdict(self)
        doc = {k: list(v) if isinstance(v, tuple) else v for k, v in doc.items()}
        doc["cam_size"] = list(self.cam_size)
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> GMICConfig:
        """Inverse of :meth:`to_dict` (``cam_size`` is derived, so it is ignored)."""
        known = {k: v for k, v in doc.items() if k in cls.__dataclass_fields__}
        unknown = sorted(set(doc) - set(known) - {"cam_size"})
        if unknown:
            raise CorrelaxError(f"unknown GMIC configuration keys: {', '.join(unknown)}")
        try:
            return cls(**known)
        except TypeError as exc:
            raise CorrelaxError(f"invalid GMIC configuration ({exc})") from exc


#: How the saliency regulariser reduces over the grid cells (:mod:`.train`'s notes).
REGULARISERS: tuple[str, ...] = ("mean", "sum")


def _pair(value: Any) -> tuple[int, int]:
    return int(value[0]), int(value[1])


@dataclass(frozen=True)
class GMICTrainConfig:
    """Everything ``correlax gmic train`` takes (:mod:`.train`'s notes for the recipe).

    ``data``: VinDr-layout folder; ``out``: run folder; ``cache``: input cache (default
    ``out/cache``). ``train_cam``: the map that picks the patches (:data:`~.cams.TRAIN_CAMS`).
    ``positive``: the labels trained as outputs (one each); ``negatives``: ``"normal"``
    or ``"all"`` (:mod:`.data`). ``init``: initial weights (official or a checkpoint;
    None: from scratch). ``beta``, ``reg``: the saliency regulariser. ``input_size``
    (rows, cols), ``fit``, ``K``, ``crop_shape``, ``top_t`` (None: the initial weights'
    value, else :data:`DEFAULT_TOP_T`), ``global_filters`` / ``global_stages`` /
    ``local_width``: the model (:class:`GMICConfig`). ``flip_p``, ``crop_noise``:
    augmentation. ``batch_size`` is the global batch. ``device``:
    ``auto``/``cpu``/``cuda``/``cuda:N``; ``workers``: DataLoader processes; ``threads``:
    torch's CPU threads; ``fresh``: ignore a run in ``out``.
    """

    data: str
    out: str
    train_cam: str = option(
        "cam", metavar="NAME",
        help=f"map that picks the patches: {', '.join(TRAIN_CAMS)} (default %(default)s: "
        "GMIC's own saliency; the others are pytorch-grad-cam's on the global network's "
        "last layer, ds_net.relu, explaining each class's global logit)")
    positive: list[str] = option(  # noqa: RUF009 (a field with a default factory)
        factory=lambda: ["Mass"], metavar="LABEL",
        help="labels trained as outputs, one each (default: %(default)s); an image is "
        "positive for a label when it has a finding of it")
    negatives: str = option(
        "normal", choices=NEGATIVES,
        help="images trained as negatives: normal (No Finding) images only (default, as "
        "the CAM-GMIC paper), or every image without a positive label")
    init: str | None = option(
        None, type=str, metavar="FILE",
        help="initial weights: official GMIC weights (sample_model_<i>.p) or a GMIC "
        "checkpoint; class-dependent heads start afresh when the class count differs. "
        "Default: from scratch")
    epochs: int = option(50, help="epochs (default %(default)s)")
    batch_size: int = option(6, aliases=("--batch",),
                             help="global batch size, split over processes (default "
                             "%(default)s)")
    lr: float = option(1e-5, help="Adam learning rate (default %(default)s)")
    beta: float = option(
        3.26, help="weight β of the saliency regulariser (default %(default)s, the "
        "paper's). The paper writes the regulariser as the sum of the saliency over the "
        "46×30 cells, but with β = 3.26 that sum outweighs the BCE terms by about 500 "
        "times; this reads it as the mean over the cells (see --reg)")
    reg: str = option(
        "mean", choices=REGULARISERS,
        help="regulariser: mean (default) or sum of the saliency over the grid cells; "
        "with sum give β on that scale (e.g. 3.26e-5)")
    input_size: tuple[int, int] = option(
        INPUT_SIZE, metavar=("H", "W"),
        help="input size in pixels (default %(default)s; smaller for quick tests)")
    fit: str = option(
        "resize", choices=FITS,
        help="resize the breast to the input size (default, as the CAM-GMIC paper) or cut "
        "the official native-resolution window")
    K: int = option(6, flag="--k", help="patches per image (default %(default)s)")
    crop_shape: tuple[int, int] = option(
        (256, 256), flag="--crop-size", metavar=("H", "W"),
        help="patch size in input pixels (default %(default)s)")
    top_t: float | None = option(
        None, type=float, metavar="T",
        help=f"top-t pooling fraction (default: the initial weights', else {DEFAULT_TOP_T})")
    global_filters: int = option(
        GLOBAL_FILTERS, help="first-stage channels of the global network (default %(default)s)")
    global_stages: int = option(
        GLOBAL_STAGES, help="stages of the global network (default %(default)s: ResNet-22)")
    local_width: int = option(
        LOCAL_WIDTH,
        help="first-stage channels of the local network (default %(default)s: ResNet-18)")
    flip_p: float = option(
        0.0, help="probability of mirroring a training image (default %(default)s: every "
        "breast faces right, as GMIC's input and the published weights do)")
    crop_noise: float = option(
        0.1, help="random crops keep 1 − u of each side, u uniform in [0, this] (default "
        "%(default)s)")
    seed: int = shared_option("seed")
    cache: str | None = option(None, type=str,
                               help="input cache folder (default RUN/cache); share it "
                               "between runs")
    fresh: bool = shared_option("fresh")
    device: str = shared_option("device")
    workers: int = shared_option("workers")
    threads: int | None = shared_option("threads")

    #: The ``correlax`` action that trains with these settings.
    command = ("gmic", "train")

    #: A GMIC run keeps its last epoch (the training dock's watcher reads this).
    select = "last"

    def __post_init__(self) -> None:
        for name, value in (("train_cam", check_cam(self.train_cam)),
                            ("positive", check_classes(self.positive)),
                            ("input_size", _pair(self.input_size)),
                            ("crop_shape", _pair(self.crop_shape)),
                            ("data", str(self.data)), ("out", str(self.out))):
            object.__setattr__(self, name, value)
        problems = self._problems()
        if problems:
            raise CorrelaxError("invalid GMIC training settings: " + "; ".join(problems))

    def _problems(self) -> list[str]:
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
        return problems

    def as_dict(self) -> dict[str, Any]:
        """JSON-able copy (tuples as lists)."""
        doc = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in doc.items()}

    def model_config(self, top_t: float) -> GMICConfig:
        """The :class:`GMICConfig` of the model trained, with top-t pooling fraction
        ``top_t``."""
        return GMICConfig(num_classes=len(self.positive), class_names=tuple(self.positive),
                          K=self.K, crop_shape=self.crop_shape, percent_t=top_t,
                          input_size=self.input_size, fit=self.fit,
                          global_filters=self.global_filters, global_stages=self.global_stages,
                          local_width=self.local_width, train_cam=self.train_cam)
