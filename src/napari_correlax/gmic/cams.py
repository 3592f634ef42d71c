"""CAM methods inside GMIC (docs/method.md §9): the maps that pick patches or localise.

[CAM-GMIC] swaps the map GMIC uses to choose its K patches during training, and the map
used to localise masses at test time, among five methods (:data:`TRAIN_CAMS`):

``"cam"``
    GMIC's own saliency map A = sigmoid(1×1 conv(h_g)) — the official model.
``"gradcam"``, ``"gradcam++"``, ``"xgradcam"``, ``"layercam"``
    pytorch-grad-cam's Grad-CAM, Grad-CAM++, XGrad-CAM and LayerCAM on the global
    network's last feature layer, ``ds_net.relu`` (:data:`~.network.FEATURE_LAYER`, h_g).

Choices [CAM-GMIC] leaves open, as made here:

* **The score differentiated** for class c is the global branch's logit: the top-t mean
  of the saliency *logits* (the 1×1 convolution's output, before the sigmoid) over the
  top-t cells, the same cells whose sigmoid values give ŷ_global,c. Its gradient with
  respect to h_g is w_c / k at those k cells and 0 elsewhere, so the weights come from
  the cells that decide the global prediction, and unlike ŷ_global itself it does not
  vanish when the sigmoid saturates on a confident image (float32 gives σ' = 0 beyond a
  logit of about 17, which would leave an empty map). h_g reaches the score only through
  that head, image by image, so the gradient is taken on a detached copy of h_g through
  the head alone: the same numbers a hook on ``ds_net.relu`` and a backward pass of the
  whole network give (pytorch-grad-cam's way with :class:`~.network.GlobalScore`),
  without a second pass through the network and without touching batch-norm statistics
  or parameter gradients during training.
* **Weights and map** are the library's own (its ``get_cam_image`` on those activations
  and gradients), followed by its ReLU. One map per class, in class order.
* **What the gradient CAMs reduce to.** The score is linear in h_g at the k top-t cells,
  y^c = (1/k) Σ_{i∈T} z^c_i with the saliency logit z^c_i = Σ_j w_cj h_g,j(i). Grad-CAM's
  channel weights are then w_cj/(h·w) and its map is exactly ReLU(z^c)/(h·w): non-zero only
  where the saliency is above 0.5; XGrad-CAM and Grad-CAM++ take their weights from the
  cells of T; LayerCAM is (1/k) Σ_j ReLU(w_cj) h_g,j on T and 0 elsewhere. A class whose
  logits are all negative (most normal images for a trained one-output model) thus has an
  empty Grad-CAM map, and LayerCAM's map runs out after the windows covering T: retrieval
  then falls back on GMIC's saliency (:func:`~.retrieval.retrieve_windows`), so the K
  patches stay distinct; :func:`~.retrieval.empty_class_maps` counts such maps.
* Titles are the CAM family's (the map methods of :data:`napari_correlax.maps.methods.METHODS`).
* **Resolution.** The map stays at the layer's own resolution, which is the saliency
  grid (46 × 30 at 2944 × 1920): no upsampling and no min–max scaling before retrieval
  (retrieval min–max normalises each class map itself, :func:`~.retrieval.retrieve_windows`).
  For display and detection, :func:`unit_maps` scales each image's class map to [0, 1]
  as the library's ``scale_cam_image`` does, and the maps are warped to the mammogram by
  :meth:`~.preprocess.InputTransform.map_to_original`.

Nothing here imports torch or pytorch-grad-cam at module level.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CorrelaxError

if TYPE_CHECKING:
    import torch

    from .network import GMIC

__all__ = [
    "TRAIN_CAMS",
    "cam_maps",
    "cam_title",
    "check_cam",
    "check_cams",
    "gradient_cam_maps",
    "unit_maps",
]

#: CAM methods GMIC can pick patches with and localise with, in the papers' order:
#: ``"cam"`` is GMIC's own saliency map, the others are the CAM family's gradient methods
#: (their pytorch-grad-cam classes: :data:`napari_correlax.maps.cam_engine.GRADIENT`).
TRAIN_CAMS: tuple[str, ...] = ("cam", "gradcam", "gradcam++", "xgradcam", "layercam")
_SPELLINGS = {"grad-cam": "gradcam", "gradcampp": "gradcam++", "gradcamplusplus": "gradcam++",
              "grad-cam++": "gradcam++", "xgrad-cam": "xgradcam", "layer-cam": "layercam"}


def check_cam(name: str) -> str:
    """The canonical name of a CAM method of :data:`TRAIN_CAMS` (case and hyphens
    ignored); CorrelaxError naming the choices otherwise."""
    key = str(name).strip().lower()
    key = _SPELLINGS.get(key, key)
    if key not in TRAIN_CAMS:
        raise CorrelaxError(f"unknown CAM method {name!r}; choose one of "
                            f"{', '.join(TRAIN_CAMS)}")
    return key


def check_cams(names: str | list[str] | tuple[str, ...]) -> list[str]:
    """:func:`check_cam` of each name (a list, or one comma-separated string), in order,
    without repeats."""
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    out = list(dict.fromkeys(check_cam(n) for n in names))
    if not out:
        raise CorrelaxError("no CAM method given")
    return out


_library: dict[str, Any] = {}


def _library_cam(name: str) -> Any:
    """A pytorch-grad-cam object of the method ``name``, used only for its weighting
    (``get_cam_image``): it is bound to a one-layer stand-in model, so creating it never
    switches the GMIC model to eval mode nor hooks into it."""
    cam = _library.get(name)
    if cam is None:
        import pytorch_grad_cam
        from torch import nn

        from ..maps.cam_engine import GRADIENT

        stand_in = nn.Sequential(nn.Conv2d(1, 1, 1))
        cam = getattr(pytorch_grad_cam, GRADIENT[name])(
            model=stand_in, target_layers=[stand_in[0]])
        cam.activations_and_grads.release()
        _library[name] = cam
    return cam


def gradient_cam_maps(model: GMIC, features: torch.Tensor, method: str) -> torch.Tensor:
    """The gradient CAM ``method`` of every class on the global feature map.

    ``features``: h_g, (N, K, h, w), the output of ``ds_net.relu`` for the batch (may be
    part of a training graph; it is not differentiated through). Returns (N, C, h, w)
    float32 on the features' device, ``ReLU(Σ_k α_k^c A^k)`` (LayerCAM:
    ``ReLU(Σ_k ReLU(∂y^c/∂A^k) ∘ A^k)``) with the score ``y^c`` the top-t mean of class
    c's saliency logits (see the module notes), before any scaling.
    """
    import torch

    from .retrieval import top_t_pool

    method = check_cam(method)
    if method == "cam":
        raise CorrelaxError("'cam' is GMIC's own saliency map, not a gradient CAM")
    cam = _library_cam(method)
    acts = features.detach().float().requires_grad_(True)
    with torch.enable_grad():
        logits = model.left_postprocess_net.gn_conv_last(acts)
        scores = top_t_pool(logits, model.config.percent_t)
        classes = scores.shape[1]
        activations = acts.detach().cpu().numpy()
        maps = []
        for c in range(classes):
            (grads,) = torch.autograd.grad(scores[:, c].sum(), acts,
                                           retain_graph=c < classes - 1)
            image = cam.get_cam_image(None, None, None, activations,
                                      grads.detach().cpu().numpy(), False)
            maps.append(np.maximum(image, 0))
    stacked = np.stack(maps, axis=1).astype(np.float32, copy=False)
    return torch.from_numpy(stacked).to(features.device)


def cam_maps(model: GMIC, features: torch.Tensor, saliency: torch.Tensor,
             method: str) -> torch.Tensor:
    """(N, C, h, w) map of ``method`` for a batch: ``saliency`` itself (detached) for
    ``"cam"``, else :func:`gradient_cam_maps` of ``features``."""
    method = check_cam(method)
    if method == "cam":
        return saliency.detach()
    return gradient_cam_maps(model, features, method)


def unit_maps(maps: np.ndarray) -> np.ndarray:
    """Each (…, h, w) map min–max scaled to [0, 1] on its own, ``(m − min) / (max − min)``
    (a constant map gives 0): what a pytorch-grad-cam call returns for one layer (it
    scales twice with a 1e-7 guard, which leaves the maximum at 1 to about 1e-7); float32."""
    m = np.asarray(maps, dtype=np.float64)
    low = m.min(axis=(-2, -1), keepdims=True)
    span = m.max(axis=(-2, -1), keepdims=True) - low
    safe = np.where(span > 0, span, 1.0)
    return np.where(span > 0, (m - low) / safe, 0.0).astype(np.float32)


def cam_title(name: str) -> str:
    """The printed name of a CAM method (``"Grad-CAM++"``)."""
    from ..maps.methods import get_method

    return get_method(check_cam(name)).title
