"""The multi-label lesion classifier (docs/method.md §4, paper §3.3).

A torchvision backbone whose own classification layer is replaced by the identity, so
it returns the pooled feature vector ``h ∈ R^D``, followed by the paper's head
``Dropout(0.5) → Linear(D, 512) → ReLU → Linear(512, C) → Sigmoid``, or, with
``hidden=0``, a single linear layer ``Dropout(0.5) → Linear(D, C) → Sigmoid`` (the head
for which class-activation maps in the strict sense are defined, docs/method.md §8).

Inputs are ``(B, 3, S, S)`` float tensors, already ImageNet-normalised
(:meth:`Classifier.normalize` does that from ``[0, 1]`` RGB).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CorrelaxError
from ..labels import LABELS
from ..preprocess import Preprocessing

__all__ = [
    "BACKBONES",
    "HEAD_ATTR",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Classifier",
    "build_backbone",
    "resolve_pretrained",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


class TinyBackbone(nn.Module):
    """A four-layer CNN (D = 32) for tests and CPU demos; not a serious model."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, width, 3, stride=2, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.out_features = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _separable(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    """Depthwise 3×3 + pointwise 1×1 convolution, each with BatchNorm and ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, 3, stride, 1, groups=c_in, bias=False),
        nn.BatchNorm2d(c_in),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_in, c_out, 1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class LiteBackbone(nn.Module):
    """Compact depthwise-separable CNN (D = 192, ~62k parameters) for CPU work.

    About 4× the throughput of ``mobilenet_v3_small`` on a 2-core CPU at 256 px, which
    is what makes full CorRELAX runs on a laptop practical; the shipped demo model uses it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
            _separable(16, 32, 2),
            _separable(32, 64, 2),
            _separable(64, 64, 1),
            _separable(64, 128, 2),
            _separable(128, 128, 1),
            _separable(128, 192, 2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.out_features = 192

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _torchvision(name: str, head_attr: str) -> Callable[[], tuple[nn.Module, int]]:
    """Builder for a torchvision model whose classification layer becomes the identity."""

    def build() -> tuple[nn.Module, int]:
        import torchvision

        net = getattr(torchvision.models, name)(weights=None)
        old_head = getattr(net, head_attr)
        first = old_head if isinstance(old_head, nn.Linear) else next(
            m for m in old_head.modules() if isinstance(m, nn.Linear)
        )
        setattr(net, head_attr, nn.Identity())
        return net, first.in_features

    return build


def _own(cls: type[nn.Module]) -> Callable[[], tuple[nn.Module, int]]:
    def build() -> tuple[nn.Module, int]:
        net = cls()
        return net, int(net.out_features)

    return build


#: torchvision backbones whose classification layer is called ``fc`` (others: ``classifier``).
HEAD_ATTR: dict[str, str] = {"resnet18": "fc", "resnet50": "fc"}

#: backbone name -> builder returning (module mapping images to (B, D), D). Every name
#: except ``lite`` and ``tiny`` is also the torchvision model name (for ImageNet weights).
BACKBONES: dict[str, Callable[[], tuple[nn.Module, int]]] = {
    **{name: _torchvision(name, HEAD_ATTR.get(name, "classifier"))
       for name in ("efficientnet_v2_s", "efficientnet_v2_m", "resnet18", "resnet50",
                    "densenet121", "mobilenet_v3_small", "mobilenet_v3_large")},
    "lite": _own(LiteBackbone),
    "tiny": _own(TinyBackbone),
}


def build_backbone(name: str) -> tuple[nn.Module, int]:
    """Backbone module (images → pooled features ``(B, D)``) and its feature size D."""
    if name not in BACKBONES:
        raise CorrelaxError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[name]()


class Classifier(nn.Module):
    """Backbone + the paper's head, exposing ``features`` and ``head`` separately.

    Parameters
    ----------
    backbone:
        Key of :data:`BACKBONES`.
    labels:
        Output label names, in order (docs/method.md §3 by default).
    input_size:
        Side of the square model input, pixels (256 in the paper).
    hidden:
        Width of the head's hidden layer (paper: 512); 0 makes the head one linear
        layer after the dropout.
    dropout:
        Dropout probability before the head's first linear layer (training only).
    preprocessing:
        JSON-able :class:`~napari_correlax.preprocess.Preprocessing` the model expects
        (CLAHE bit depth, clip limits, tiles, background rule, VOI LUT); stored in
        checkpoints and applied at inference. None: the paper's profile.
    """

    #: Set only on loaded or imported models (:func:`~napari_correlax.models.load_classifier`,
    #: :mod:`~napari_correlax.models.importers`): the checkpoint file and its ``info``.
    checkpoint_path: str
    checkpoint_info: dict[str, Any]

    def __init__(
        self,
        backbone: str = "efficientnet_v2_s",
        labels: Sequence[str] = LABELS,
        *,
        input_size: int = 256,
        hidden: int = 512,
        dropout: float = 0.5,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        preprocessing: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.backbone_name = backbone
        self.labels: list[str] = list(labels)
        self.input_size = int(input_size)
        self.hidden = int(hidden)
        self.dropout = float(dropout)
        self.preprocessing = (
            Preprocessing.from_dict(preprocessing) if preprocessing else Preprocessing()
        ).to_dict()
        if self.hidden < 0:
            raise CorrelaxError(f"hidden must be 0 (one linear layer) or positive, not {hidden}")
        self.encoder, self.feature_dim = build_backbone(backbone)
        if self.hidden:
            self.classifier = nn.Sequential(
                nn.Dropout(self.dropout),
                nn.Linear(self.feature_dim, self.hidden),
                nn.ReLU(inplace=True),
                nn.Linear(self.hidden, len(self.labels)),
            )
        else:
            self.classifier = nn.Sequential(
                nn.Dropout(self.dropout),
                nn.Linear(self.feature_dim, len(self.labels)),
            )
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1))

    # -- the two halves CorRELAX needs --------------------------------------------------
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled feature vector ``h``, shape ``(B, D)``, from normalised ``(B, 3, S, S)``."""
        return self.encoder(x).flatten(1)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid scores ``(B, C)`` (what the focal loss trains on)."""
        return self.classifier(h)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """Label probabilities ``ŷ ∈ [0, 1]^C``, shape ``(B, C)``."""
        return torch.sigmoid(self.classifier(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    #: ``normalize`` acts on each pixel alone, so a whole image may be normalised once
    #: and windows cut from it afterwards (:class:`~napari_correlax.maps.sliding.WindowFeeder`).
    pointwise_normalize = True

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet-normalise ``[0, 1]`` RGB ``(B, 3, H, W)`` (any ``H``, ``W``; per pixel)."""
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    # -- metadata --------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments (stored in checkpoints)."""
        return {
            "backbone": self.backbone_name,
            "labels": list(self.labels),
            "input_size": self.input_size,
            "hidden": self.hidden,
            "dropout": self.dropout,
            "mean": [float(v) for v in self.mean.flatten()],
            "std": [float(v) for v in self.std.flatten()],
            "preprocessing": self.preprocessing,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Classifier:
        """Inverse of :meth:`config`."""
        return cls(
            config["backbone"],
            config["labels"],
            input_size=config.get("input_size", 256),
            hidden=config.get("hidden", 512),
            dropout=config.get("dropout", 0.5),
            mean=config.get("mean", IMAGENET_MEAN),
            std=config.get("std", IMAGENET_STD),
            preprocessing=config.get("preprocessing"),
        )

    def load_pretrained_backbone(self, source: str | Path) -> None:
        """Load ImageNet (or other) backbone weights from a local file, never the network.

        ``source`` is a ``.safetensors`` or torchvision ``.pth`` state dict (read with
        ``weights_only=True``, which refuses pickled code), or ``"imagenet"`` to look for
        torchvision's own file in the torch hub cache.
        """
        path = resolve_pretrained(self.backbone_name, source)
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                state = load_file(str(path))
            else:
                state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CorrelaxError(f"cannot read pretrained weights ({exc})", path) from exc
        own = self.encoder.state_dict()
        usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        if len(usable) < 0.9 * len(own):
            raise CorrelaxError(
                f"weights do not fit backbone {self.backbone_name!r} "
                f"({len(usable)} of {len(own)} tensors match)",
                path,
            )
        self.encoder.load_state_dict(usable, strict=False)


def resolve_pretrained(backbone: str, source: str | Path) -> Path:
    """The weights file for ``source``: a local file, or for ``"imagenet"`` torchvision's
    own file in the torch hub cache (CorrelaxError when missing; never downloaded)."""
    if str(source) != "imagenet":
        path = Path(source).expanduser()
        if not path.is_file():
            raise CorrelaxError("pretrained weights file not found", path)
        return path
    if backbone not in BACKBONES or backbone in ("lite", "tiny"):
        raise CorrelaxError(f"backbone {backbone!r} has no ImageNet weights")
    import torchvision

    weights = torchvision.models.get_model_weights(backbone).DEFAULT
    filename = weights.url.rsplit("/", 1)[-1]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if not cached.is_file():
        raise CorrelaxError(
            "ImageNet weights are not in the torch cache and are never downloaded at run time; "
            f"put {filename} there or pass the file with --pretrained",
            cached,
        )
    return cached
