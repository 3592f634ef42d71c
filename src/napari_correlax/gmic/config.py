"""GMIC hyper-parameters (docs/method.md §9): one small dataclass stored with checkpoints.

Field names follow the official GMIC implementation's parameter dictionary (``K``,
``crop_shape``, ``percent_t``, ``post_processing_dim``, ``num_classes``, ``cam_size``) so
a reader of both can match them; the values default to the official ones.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import CorrelaxError

__all__ = [
    "DEFAULT_CLASS_NAMES",
    "FITS",
    "INPUT_SIZE",
    "OFFICIAL_TOP_T",
    "GMICConfig",
    "feature_grid_size",
]

#: Input size (rows, columns) in pixels of the published models.
INPUT_SIZE: tuple[int, int] = (2944, 1920)
#: Output order of the published models.
DEFAULT_CLASS_NAMES: tuple[str, ...] = ("benign", "malignant")
#: Top-t pooling fraction of each published model, by the number in its file name
#: (``sample_model_<i>.p``).
OFFICIAL_TOP_T: dict[int, float] = {1: 0.02, 2: 0.03, 3: 0.03, 4: 0.05, 5: 0.1}

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
    """

    num_classes: int = 2
    class_names: tuple[str, ...] = field(default=DEFAULT_CLASS_NAMES)
    K: int = 6
    crop_shape: tuple[int, int] = (256, 256)
    percent_t: float = 0.02
    post_processing_dim: int | None = None
    input_size: tuple[int, int] = INPUT_SIZE
    fit: str = "window"
    global_filters: int = GLOBAL_FILTERS
    global_stages: int = GLOBAL_STAGES
    local_width: int = LOCAL_WIDTH

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_names", tuple(str(n) for n in self.class_names))
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
