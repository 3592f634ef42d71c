"""The GMIC network (docs/method.md §9) with the official module and parameter names.

Module tree, in the order the official state dict lists it: ``ds_net`` (global
network, a pre-activation ResNet-22 on the 1-channel image), ``left_postprocess_net``
(1×1 convolution to one saliency map per class), ``dn_resnet`` (local network, a
ResNet-18 trunk on each patch repeated to 3 channels), ``mil_attn_V``, ``mil_attn_U``,
``mil_attn_w`` (gated attention), ``classifier_linear`` (local prediction) and
``fusion_dnn`` (fusion of the global and local features). The state dict of the default
model has the 258 entries of the published weights, key for key.

Inputs are N×1×H×W float32 tensors standardised per image (:func:`.preprocess.gmic_input`);
the published models take 2944×1920 px, which gives a 46×30 saliency grid. Smaller inputs
run too (the grid then follows :func:`.config.feature_grid_size`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

from ..errors import CorrelaxError
from .cams import cam_maps
from .config import ATTENTION_DIM, GMICConfig, feature_grid_size
from .retrieval import cells_to_pixels, crop_patches, retrieve_windows, top_t_pool, window_cells

__all__ = [
    "FEATURE_LAYER",
    "GMIC",
    "GMICOutput",
    "GMICResult",
    "GlobalNetwork",
    "GlobalScore",
    "LocalNetwork",
    "PreActivationBlock",
    "SaliencyHead",
]

#: Name (in ``model.named_modules()``) of the module whose output is the global feature
#: map h_g (N×256×h×w, after the final batch norm and ReLU): the layer CAM methods target.
FEATURE_LAYER = "ds_net.relu"


def _conv3x3(inplanes: int, planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(inplanes, planes, kernel_size=3, stride=stride, padding=1, bias=False)


class PreActivationBlock(nn.Module):
    """Pre-activation basic block of the global network.

    a = ReLU(bn1(x)); out = conv2(ReLU(bn2(conv1(a)))) + shortcut, with no ReLU after the
    sum. The shortcut is x, or ``downsample`` (a bias-free 1×1 convolution) applied to
    the *activated* input a in the first block of each stage.
    """

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 project: bool = False) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.downsample = (
            nn.Sequential(nn.Conv2d(inplanes, planes, kernel_size=1, stride=stride, bias=False))
            if project else None
        )
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = self.relu(self.bn1(x))
        shortcut = x if self.downsample is None else self.downsample(activated)
        out = self.conv2(self.relu(self.bn2(self.conv1(activated))))
        return out + shortcut


class GlobalNetwork(nn.Module):
    """ResNet-22 over the whole image: N×1×H×W → h_g, N×256×h×w (stride 64).

    7×7/2 convolution (16 channels, no batch norm after it), 3×3/2 max-pool without
    padding, five stages of two :class:`PreActivationBlock` (16, 32, 64, 128, 256
    channels; strides 1, 2, 2, 2, 2; every stage's first block projects its shortcut),
    then ``final_bn`` and ``relu``.
    """

    def __init__(self, filters: int = 16, stages: int = 5) -> None:
        super().__init__()
        self.first_conv = nn.Conv2d(1, filters, kernel_size=7, stride=2, padding=3, bias=False)
        self.first_pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=0)
        self.layer_list = nn.ModuleList()
        inplanes = filters
        for stage in range(stages):
            planes = filters * 2**stage
            stride = 1 if stage == 0 else 2
            self.layer_list.append(nn.Sequential(
                PreActivationBlock(inplanes, planes, stride, project=True),
                PreActivationBlock(planes, planes),
            ))
            inplanes = planes
        self.final_bn = nn.BatchNorm2d(inplanes)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.first_pool(self.first_conv(x))
        for stage in self.layer_list:
            h = stage(h)
        return self.relu(self.final_bn(h))


class SaliencyHead(nn.Module):
    """``gn_conv_last``: bias-free 1×1 convolution, 256 → classes; the saliency map is
    its sigmoid."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.gn_conv_last = nn.Conv2d(channels, num_classes, kernel_size=1, bias=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.gn_conv_last(features))


class LocalNetwork(ResNet):
    """torchvision's ResNet-18 without ``avgpool`` and ``fc`` (same key names, same
    initialisation): N×3×h×w patches → N×512×(h/32)×(w/32) feature maps.

    ``width`` (64 in ResNet-18) sets the channels of the first stage; the four stages
    have width, 2·width, 4·width and 8·width channels (a narrower trunk of the same
    layout, for tests and small experiments).
    """

    def __init__(self, width: int = 64) -> None:
        super().__init__(BasicBlock, [2, 2, 2, 2])
        del self.avgpool, self.fc
        if width != 64:
            self.inplanes = width
            self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.layer1 = self._make_layer(BasicBlock, width, 2)
            self.layer2 = self._make_layer(BasicBlock, 2 * width, 2, stride=2)
            self.layer3 = self._make_layer(BasicBlock, 4 * width, 2, stride=2)
            self.layer4 = self._make_layer(BasicBlock, 8 * width, 2, stride=2)
            for m in self.modules():  # torchvision's initialisation
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.constant_(m.weight, 1)
                    nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


@dataclass
class GMICOutput:
    """What :meth:`GMIC.forward` computes, as tensors (differentiable where GMIC is).

    ``y_global``, ``y_local``, ``y_fusion``: (N, C) probabilities. ``saliency``: (N, C, h, w)
    sigmoid saliency maps on the grid. ``patch_cells``: (N, K, 2) int64 upper-left grid
    cells (row, col) of the retrieved patches, in retrieval order; ``patch_locations``:
    the same corners in input pixels. ``attention``: (N, K) weights, summing to 1 per
    image, in retrieval order. ``features``: the global feature map h_g (N, 256, h, w;
    ``post_processing_dim`` channels), the output of :data:`FEATURE_LAYER`.
    ``retrieval_map``: the map that picked the patches (``saliency`` itself unless
    another map was given), detached.
    """

    y_global: torch.Tensor
    y_local: torch.Tensor
    y_fusion: torch.Tensor
    saliency: torch.Tensor
    patch_cells: torch.Tensor
    patch_locations: torch.Tensor
    attention: torch.Tensor
    features: torch.Tensor | None = None
    retrieval_map: torch.Tensor | None = None


@dataclass(frozen=True)
class GMICResult:
    """One run of GMIC on a batch (:meth:`GMIC.run`), as numpy arrays.

    Attributes
    ----------
    y_global, y_local, y_fusion
        (N, C) float32 probabilities of the global, local and fusion branches; ``y_fusion``
        is the model's prediction. Columns follow ``class_names``.
    saliency
        (N, C, h, w) float32 saliency maps in [0, 1] on the grid (46×30 at 2944×1920);
        grid cell (i, j) covers input rows ≈ [i·H/h, (i+1)·H/h) and columns alike.
    patch_locations
        (N, K, 2) int64 upper-left corners (row, col) of the retrieved patches in input
        pixels, in retrieval order; each patch spans ``crop_shape`` pixels from there
        (clipped to the input at its borders).
    patch_cells
        The same corners as grid cells.
    attention
        (N, K) float32 attention weights of the patches, in retrieval order (sum 1).
    class_names, crop_shape, input_shape
        Output names, patch size and input size (rows, cols) in pixels.
    """

    y_global: np.ndarray
    y_local: np.ndarray
    y_fusion: np.ndarray
    saliency: np.ndarray
    patch_locations: np.ndarray
    patch_cells: np.ndarray
    attention: np.ndarray
    class_names: tuple[str, ...]
    crop_shape: tuple[int, int]
    input_shape: tuple[int, int]

    def patch_boxes(self) -> np.ndarray:
        """(N, K, 4) int64 ``(top, left, bottom, right)`` of each patch in input pixels,
        half-open and clipped to the input."""
        top = self.patch_locations[..., 0]
        left = self.patch_locations[..., 1]
        bottom = np.minimum(top + self.crop_shape[0], self.input_shape[0])
        right = np.minimum(left + self.crop_shape[1], self.input_shape[1])
        return np.stack([top, left, bottom, right], axis=-1).astype(np.int64)


class GMIC(nn.Module):
    """Globally-Aware Multiple Instance Classifier (docs/method.md §9).

    ``GMIC(config)`` builds the network with random weights (PyTorch's defaults for the
    global network and the heads, torchvision's initialisation for the local network);
    :func:`~napari_correlax.gmic.load_gmic` loads published or saved weights.
    """

    def __init__(self, config: GMICConfig | None = None) -> None:
        super().__init__()
        config = config or GMICConfig()
        self.config = config
        c = config.num_classes
        channels = int(config.post_processing_dim)
        self.ds_net = GlobalNetwork(config.global_filters, config.global_stages)
        self.left_postprocess_net = SaliencyHead(channels, c)
        local = 8 * int(config.local_width)
        self.dn_resnet = LocalNetwork(config.local_width)
        self.mil_attn_V = nn.Linear(local, ATTENTION_DIM, bias=False)
        self.mil_attn_U = nn.Linear(local, ATTENTION_DIM, bias=False)
        self.mil_attn_w = nn.Linear(ATTENTION_DIM, 1, bias=False)
        self.classifier_linear = nn.Linear(local, c, bias=False)
        self.fusion_dnn = nn.Linear(channels + local, c)

    # ------------------------------------------------------------------ parts

    @property
    def feature_layer(self) -> nn.Module:
        """The module named :data:`FEATURE_LAYER`: its output is h_g."""
        return self.ds_net.relu

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.config.class_names

    def local_features(self, patches: torch.Tensor) -> torch.Tensor:
        """(N, K, h, w) patches → (N, K, 512) features: each patch repeated to 3 channels
        through ``dn_resnet``, then averaged over its feature map."""
        n, k, h, w = patches.shape
        maps = self.dn_resnet(patches.reshape(n * k, 1, h, w).expand(-1, 3, -1, -1))
        return maps.mean(dim=(2, 3)).reshape(n, k, -1)

    def attend(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gated attention over (N, K, 512) features: returns (z (N, 512), weights (N, K))
        with weights = softmax_k w·(tanh(V h_k) ⊙ sigmoid(U h_k))."""
        gate = torch.tanh(self.mil_attn_V(features)) * torch.sigmoid(self.mil_attn_U(features))
        weights = torch.softmax(self.mil_attn_w(gate).squeeze(-1), dim=1)
        return (weights.unsqueeze(-1) * features).sum(dim=1), weights

    # ---------------------------------------------------------------- forward

    def forward(self, x: torch.Tensor, retrieval_map: torch.Tensor | str | None = None
                ) -> GMICOutput:
        """All outputs for an N×1×H×W standardised input (see :class:`GMICOutput`).

        ``retrieval_map`` chooses the map that picks the patches: None for the model's
        own, ``config.train_cam`` (the map it was trained with); ``"cam"`` for GMIC's own
        saliency (the official model); the name of a gradient CAM of
        :data:`~.cams.TRAIN_CAMS` (``"gradcam"``, ``"gradcam++"``, ``"xgradcam"``,
        ``"layercam"``) for that method's map of this forward pass's h_g
        (:func:`~.cams.cam_maps`); or a tensor (N, C', h', w'), any non-negative map on
        any grid covering the input, whose grid then sets the patch size in cells.
        """
        _check_input(x, self.config.global_stages)
        cfg = self.config
        height, width = int(x.shape[2]), int(x.shape[3])
        features = self.ds_net(x)
        saliency = self.left_postprocess_net(features)
        y_global = top_t_pool(saliency, cfg.percent_t)
        if retrieval_map is None or isinstance(retrieval_map, str):
            picking = cam_maps(self, features, saliency, retrieval_map or cfg.train_cam)
        else:
            picking = retrieval_map
        grid = (int(picking.shape[2]), int(picking.shape[3]))
        window = window_cells(cfg.crop_shape, (height, width), grid)
        cells = retrieve_windows(picking, window, cfg.K, fallback=saliency)
        corners = cells_to_pixels(cells, grid, (height, width))
        patches = crop_patches(x[:, 0], corners, cfg.crop_shape)
        local = self.local_features(patches)
        z, attention = self.attend(local)
        y_local = torch.sigmoid(self.classifier_linear(z))
        pooled = features.amax(dim=(2, 3))
        y_fusion = torch.sigmoid(self.fusion_dnn(torch.cat([pooled, z], dim=1)))
        return GMICOutput(y_global, y_local, y_fusion, saliency, cells, corners, attention,
                          features, picking.detach())

    def run(self, x: Any, retrieval_map: torch.Tensor | str | None = None) -> GMICResult:
        """:meth:`forward` without gradients on the model's device; numpy results.

        ``x``: N×1×H×W (or 1×H×W, or H×W) standardised input, array or tensor. The
        model's mode is left as it is (models from ``load_gmic`` are in eval mode).
        """
        param = next(self.parameters())
        t = torch.as_tensor(x)
        while t.ndim < 4:
            t = t.unsqueeze(0)
        t = t.to(device=param.device, dtype=torch.float32)
        with torch.no_grad():
            out = self.forward(t, retrieval_map)

        def arr(v: torch.Tensor) -> np.ndarray:
            return v.detach().cpu().numpy()

        return GMICResult(
            y_global=arr(out.y_global), y_local=arr(out.y_local), y_fusion=arr(out.y_fusion),
            saliency=arr(out.saliency), patch_locations=arr(out.patch_locations),
            patch_cells=arr(out.patch_cells), attention=arr(out.attention),
            class_names=self.config.class_names, crop_shape=self.config.crop_shape,
            input_shape=(int(t.shape[2]), int(t.shape[3])),
        )

    def extra_repr(self) -> str:
        cfg = self.config
        return (f"classes={list(cfg.class_names)}, K={cfg.K}, crop_shape={cfg.crop_shape}, "
                f"percent_t={cfg.percent_t}, grid={cfg.cam_size}, train_cam={cfg.train_cam}")


class GlobalScore(nn.Module):
    """The global branch of a GMIC as a plain classifier for CAM libraries: N×1×H×W input
    → (N, C) global logits, the top-t mean of the saliency logits (the cells whose sigmoid
    values make ŷ_global), with h_g at ``self.gmic.ds_net.relu``.

    ``GradCAM(model=GlobalScore(gmic), target_layers=[gmic.ds_net.relu])`` with
    ``ClassifierOutputTarget(c)`` explains the score :func:`~.cams.gradient_cam_maps`
    explains (the library switches the model it is given to eval mode).
    """

    def __init__(self, gmic: GMIC) -> None:
        super().__init__()
        self.gmic = gmic

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.gmic
        logits = g.left_postprocess_net.gn_conv_last(g.ds_net(x))
        return top_t_pool(logits, g.config.percent_t)


def _check_input(x: torch.Tensor, stages: int) -> None:
    if x.ndim != 4 or x.shape[1] != 1:
        raise CorrelaxError(f"GMIC takes an N×1×H×W input, not shape {tuple(x.shape)}")
    feature_grid_size((int(x.shape[2]), int(x.shape[3])), stages)
