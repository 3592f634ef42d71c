"""Where CAM-family maps are taken in a classifier, and what score they explain
(docs/method.md §8).

- The *target layer* is a module of the model named by its dotted path, so that
  ``model.get_submodule(name)`` gives it back. By default it is the backbone's last
  convolutional stage, whose feature map is average-pooled into the feature vector ``h``
  (:data:`DEFAULT_LAYERS`; other models: the last module with a spatial output).
- *Stages* (:func:`stage_layers`): the last module of each spatial resolution among the
  target layer's siblings, the layers LayerCAM combines.
- The *score* is the label's logit, the pre-sigmoid output of the head
  (``model.logits(model.features(x))``), as in the CAM literature.
  :class:`LogitNet` wraps a model into a module that returns those logits for
  model-normalised input, which is what pytorch-grad-cam calls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import CorrelaxError

__all__ = [
    "DEFAULT_LAYERS",
    "LogitNet",
    "default_target_layer",
    "feature_map_sizes",
    "linear_head",
    "model_logits",
    "resolve_target_layer",
    "stage_layers",
]

#: Default target layer per backbone of :data:`~napari_correlax.models.classifier.BACKBONES`;
#: ``{last}`` is the index of the last block of ``encoder.features``.
DEFAULT_LAYERS: dict[str, str] = {
    "efficientnet_v2_s": "encoder.features.{last}",
    "efficientnet_v2_m": "encoder.features.{last}",
    "mobilenet_v3_small": "encoder.features.{last}",
    "mobilenet_v3_large": "encoder.features.{last}",
    "resnet18": "encoder.layer4",
    "resnet50": "encoder.layer4",
    "densenet121": "encoder.features",
    "lite": "encoder.body.8",
    "tiny": "encoder.body.7",
}

#: Logits of models without a ``logits`` method are ``logit(head)``, clamped this far
#: from 0 and 1.
_PROBABILITY_EPS = 1e-7


def model_logits(model: Any, x: torch.Tensor) -> torch.Tensor:
    """``(B, C)`` pre-sigmoid label scores of model-normalised ``(B, 3, H, W)`` input.

    ``model.logits(model.features(x))`` when the model has ``logits`` (every
    :class:`~napari_correlax.models.classifier.Classifier`); otherwise the logit of the
    head's probabilities, clamped to ``[1e-7, 1 − 1e-7]`` first.
    """
    h = model.features(x)
    if hasattr(model, "logits"):
        return model.logits(h)
    p = model.head(h).clamp(_PROBABILITY_EPS, 1.0 - _PROBABILITY_EPS)
    return torch.log(p) - torch.log1p(-p)


class LogitNet(nn.Module):
    """A model as pytorch-grad-cam calls it: normalised images → label logits ``(B, C)``.

    ``before`` and ``after`` (optional) are called around every forward pass with its
    batch size; ``before`` may raise to stop a computation that runs inside the library.
    """

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.net = model
        self.before: Callable[[int], None] | None = None
        self.after: Callable[[int], None] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.before is not None:
            self.before(int(x.shape[0]))
        out = model_logits(self.net, x)
        if self.after is not None:
            self.after(int(x.shape[0]))
        return out


def default_target_layer(model: Any) -> str:
    """Dotted name of the default target layer of ``model`` (docs/method.md §8).

    Known backbones use :data:`DEFAULT_LAYERS`; any other model the last module, in the
    order modules finish their forward pass, whose output is a 4-D feature map with more
    than one spatial position on an input of the model's size (the map that the global
    pooling reduces to ``h``).
    """
    backbone = getattr(model, "backbone_name", None)
    if backbone in DEFAULT_LAYERS:
        pattern = DEFAULT_LAYERS[backbone]
        features = getattr(getattr(model, "encoder", None), "features", None)
        last = len(features) - 1 if isinstance(features, nn.Sequential) else 0
        name = pattern.format(last=last)
        if _has_module(model, name):
            return name
    return _last_spatial_module(model)


def feature_map_sizes(model: Any, modules: dict[str, nn.Module]
                      ) -> list[tuple[str, tuple[int, int]]]:
    """``(name, (h, w))`` of each of ``modules`` whose output is a 4-D feature map, in the
    order the modules finish on one forward pass of ``model.features`` over a zero input
    of the model's size (224 px without ``input_size``)."""
    seen: list[tuple[str, tuple[int, int]]] = []

    def note(name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor) and output.ndim == 4:
                seen.append((name, (int(output.shape[-2]), int(output.shape[-1]))))
        return hook

    handles = [module.register_forward_hook(note(name)) for name, module in modules.items()]
    size = int(getattr(model, "input_size", 224))
    try:
        device = next(model.parameters()).device
        with torch.no_grad():
            model.features(torch.zeros(1, 3, size, size, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return seen


def _has_module(model: Any, name: str) -> bool:
    try:
        model.get_submodule(name)
    except (AttributeError, IndexError):
        return False
    return True


def _last_spatial_module(model: Any) -> str:
    """The last module (in order of completion) with a ``(B, K, h, w)``, ``h·w > 1`` output."""
    modules = {name: module for name, module in model.named_modules() if name}
    finished = [name for name, (h, w) in feature_map_sizes(model, modules) if h * w > 1]
    if not finished:
        raise CorrelaxError("the model has no layer with a 2-D feature map to take CAMs from")
    return finished[-1]


def candidate_layers(model: Any, limit: int = 8) -> list[str]:
    """A few valid target-layer names: the last shallow modules of the backbone
    (``encoder``, when the model has one)."""
    names = [n for n, _ in model.named_modules() if n and n.count(".") <= 2]
    inside = [n for n in names if n.startswith("encoder.")]
    return (inside or names)[-limit:]


def resolve_target_layer(model: Any, name: str | None) -> tuple[str, nn.Module]:
    """``(name, module)`` of the target layer: ``name`` (a dotted module path such as
    ``"encoder.layer4"``), or the model's default (:func:`default_target_layer`) for None.

    CorrelaxError for a name the model does not have, listing a few it has.
    """
    if name is None or str(name) == "":
        name = default_target_layer(model)
    name = str(name)
    try:
        module = model.get_submodule(name)
    except (AttributeError, IndexError):
        module = None
    if module is None or module is model:
        raise CorrelaxError(
            f"the model has no layer {name!r}; target layers are dotted module names such as "
            + ", ".join(repr(n) for n in candidate_layers(model))
            + f" (default {default_target_layer(model)!r})")
    return name, module


def stage_layers(model: Any, name: str, count: int) -> list[str]:
    """Dotted names of the last ``count`` backbone stages, ending with layer ``name``.

    A stage is the last module of one spatial resolution among ``name``'s siblings (the
    children of its parent, up to and including it) whose output is a 4-D feature map on
    an input of the model's size: ``encoder.layer2``, ``layer3``, ``layer4`` of a ResNet,
    ``encoder.features.3``, ``.5``, ``.7`` of EfficientNetV2-S. Fewer names when the
    parent has fewer stages (a DenseNet's default layer is the only one); ``count`` < 1
    is taken as 1.
    """
    count = max(int(count), 1)
    parent_name, _, _ = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    siblings = []
    for child, module in parent.named_children():
        siblings.append((f"{parent_name}.{child}" if parent_name else child, module))
        if siblings[-1][0] == name:
            break
    sizes = dict(feature_map_sizes(model, dict(siblings)))
    spatial = [key for key, _ in siblings if key in sizes]
    stages = [key for key, after in zip(spatial, [*spatial[1:], None])
              if after is None or sizes[after] != sizes[key]]
    if not stages or stages[-1] != name:
        stages.append(name)
    return stages[-count:]


def linear_head(model: Any) -> nn.Linear:
    """The single linear layer of a one-layer head (plain CAM, docs/method.md §8).

    CAM weighs each feature channel by its weight in the linear layer that maps the
    pooled features to the label scores; that is only defined when the head is one
    linear layer (``Classifier(..., hidden=0)``: Dropout → Linear). CorrelaxError otherwise.
    """
    head = getattr(model, "classifier", None)
    layers = [m for m in head.modules() if not isinstance(m, nn.Sequential)] if isinstance(
        head, nn.Module) else []
    linear = [m for m in layers if isinstance(m, nn.Linear)]
    others = [m for m in layers if not isinstance(m, (nn.Linear, nn.Dropout, nn.Identity))]
    if len(linear) == 1 and not others:
        return linear[0]
    shape = " → ".join(type(m).__name__ for m in layers) or "unknown"
    raise CorrelaxError(
        f"CAM (Zhou et al.) needs a head that is one linear layer after the pooled features; "
        f"this model's head is {shape}, whose class scores are not a weighted sum of the "
        "feature channels. Use Grad-CAM (equal to CAM up to a constant factor on a linear "
        "head) or a model trained with a one-layer head (hidden=0)")
