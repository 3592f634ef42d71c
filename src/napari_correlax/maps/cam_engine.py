"""Raw CAM-family maps of a batch of model inputs (docs/method.md §8).

:class:`CamEngine` turns a batch of model-normalised images into one low-resolution map
per (label, image) at the target layer's resolution, **after** the ReLU that every method
of pytorch-grad-cam applies and **before** its per-image min–max scaling
(``scale_cam_image``), so that maps of different windows stay comparable. The channel
weightings are the library's (``get_cam_image`` of its classes); this module only feeds
them:

- *Gradient methods* (Grad-CAM, Grad-CAM++, XGrad-CAM, LayerCAM, HiRes-CAM): one forward
  pass per batch (LayerCAM takes its maps at the last :data:`LAYERCAM_STAGES` stages of
  the backbone, ending at the target layer, and fuses them as the library does with
  several target layers, :func:`~.cam_stitch.fuse_layers`); the network before the
  (first) target layer runs without autograd, and for each label one backward pass from
  that label's logit to the target layer only (the library backpropagates into every
  parameter, once per label). Items of a batch are
  independent in eval mode, so one backward of ``Σ_b z_b,c`` gives every item's
  gradient.
- *Eigen-CAM*: one forward pass; the map does not depend on the label. The SVD's sign
  is fixed per image (:func:`orient_projections`).
- *CAM* (Zhou et al.): one forward pass; ``Σ_k w_ck A_k`` with ``w`` the weights of a
  one-layer linear head (the project's own few lines; the library does not have it).
- *Score-CAM, Ablation-CAM*: the library's own call per image and label, which runs
  one forward pass per batch of channels. It runs in a worker thread whose model wrapper
  reports each forward pass, so the caller can show the true cost and stop within one
  batch. The first label's channel passes are recorded, and the same passes of the
  other labels (the same inputs, so the same outputs) are replayed from the record
  instead of being run again.
"""

from __future__ import annotations

import contextlib
import math
import queue
import threading
from collections.abc import Generator, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import CorrelaxError
from .cam_layers import LogitNet, linear_head, model_logits, resolve_target_layer, stage_layers
from .cam_stitch import fuse_layers
from .runtime import Runtime

__all__ = ["CAM_NAMES", "GRADIENT", "LABEL_FREE", "LAYERCAM_STAGES", "PERTURBATION",
           "CamEngine", "orient_projections"]

#: Registry name → pytorch-grad-cam class name, by how the method is fed.
GRADIENT = {"gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "xgradcam": "XGradCAM",
            "layercam": "LayerCAM", "hirescam": "HiResCAM"}
LABEL_FREE = {"eigencam": "EigenCAM"}
PERTURBATION = {"scorecam": "ScoreCAM", "ablationcam": "AblationCAM"}
#: Every method the engine computes ("cam" is the project's own, for linear heads).
CAM_NAMES = ("cam", *GRADIENT, *LABEL_FREE, *PERTURBATION)
#: Backbone stages LayerCAM combines by default (its paper's definition: several stages).
LAYERCAM_STAGES = 3

#: Forward passes of a library call before its channel passes: Score-CAM's activation
#: pass; Ablation-CAM's activation pass and its pass for the unablated scores.
_LIVE_CALLS = {"scorecam": 1, "ablationcam": 2}


class _Stopped(Exception):
    """Raised inside the worker thread when the caller closed the computation."""


def _library_class(name: str) -> type:
    """The pytorch-grad-cam class ``name``, keeping its raw map in ``.kept`` on each call."""
    import pytorch_grad_cam

    if name in PERTURBATION.values():
        _quiet_progress_bars()
    base = getattr(pytorch_grad_cam, name)

    def get_cam_image(self: Any, *args: Any, **kwargs: Any) -> np.ndarray:
        # The library's weighting, kept before its ReLU and min–max scaling.
        cam = base.get_cam_image(self, *args, **kwargs)
        self.kept = np.asarray(cam, dtype=np.float32)
        return cam

    return type(f"Keeping{name}", (base,), {"get_cam_image": get_cam_image})


def _quiet_progress_bars() -> None:
    """Score-CAM and Ablation-CAM draw a terminal progress bar per image and label; the
    caller shows :class:`~napari_correlax.maps.runtime.Progress` events instead. (This
    silences those two library modules for the whole process.)"""
    import types

    from pytorch_grad_cam import ablation_cam, score_cam

    quiet = types.SimpleNamespace(tqdm=lambda iterable, *args, **kwargs: iterable)
    score_cam.tqdm = quiet  # type: ignore[attr-defined]
    ablation_cam.tqdm = quiet  # type: ignore[attr-defined]


class _ReplayNet(LogitNet):
    """:class:`LogitNet` that records a library call's channel passes and replays them.

    Within one library call, the first ``live`` forward passes always run (they feed the
    library's hooks); later ones are recorded when ``replaying`` is False and returned
    from the record, in the same order, when it is True.
    """

    def __init__(self, model: Any, live: int) -> None:
        super().__init__(model)
        self.live = live
        self.calls = 0
        self.replaying = False
        self.recorded: list[torch.Tensor] = []
        self.check: Any = None

    def begin(self, replay: bool) -> None:
        self.calls, self.replaying = 0, replay
        if not replay:
            self.recorded = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.replaying and self.calls > self.live:
            if self.check is not None:
                self.check()
            out = self.recorded[self.calls - self.live - 1]
            if out.shape[0] != x.shape[0]:
                raise RuntimeError("replayed forward pass does not match the recorded one")
            return out
        out = super().forward(x)
        if self.calls > self.live:
            self.recorded.append(out.detach())
        return out


class CamEngine:
    """Raw maps of one CAM-family method at one target layer, for chosen labels.

    Parameters
    ----------
    model:
        A classifier with ``features`` and ``logits`` (or ``head``), already on the
        runtime's device in eval mode.
    method:
        Registry name (``"gradcam"``, ``"scorecam"``, …).
    target_layer:
        Dotted module name, or None for the model's default.
    labels:
        Indices of the labels (model output columns) to explain.
    runtime:
        Device, precision and threads; ``runtime.batch_size`` is also the number of
        channels per forward pass of Score-CAM and Ablation-CAM.
    stages:
        LayerCAM only: how many backbone stages to combine, ending at the target layer
        (:func:`~.cam_layers.stage_layers`; default :data:`LAYERCAM_STAGES`, 1 for the
        target layer alone). Other methods use the target layer alone.
    scale:
        How several stages' maps are fused (``"raw"`` or ``"window"``,
        :func:`~.cam_stitch.fuse_layers`); unused with one layer.
    """

    def __init__(self, model: Any, method: str, target_layer: str | None,
                 labels: Sequence[int], runtime: Runtime, *, stages: int | None = None,
                 scale: str = "raw") -> None:
        if method not in (*GRADIENT, *LABEL_FREE, *PERTURBATION, "cam"):
            raise CorrelaxError(f"unknown CAM method {method!r}")
        self.model = model
        self.method = method
        self.labels = [int(c) for c in labels]
        self.rt = runtime
        self.layer_name, self.layer = resolve_target_layer(model, target_layer)
        self.stage_names = [self.layer_name]
        if stages is not None and method != "layercam":
            raise CorrelaxError(f"only LayerCAM combines stages; {method} takes its maps at "
                                "one target layer (leave 'layers' unset)")
        if method == "layercam":
            count = LAYERCAM_STAGES if stages is None else int(stages)
            if count < 1:
                raise CorrelaxError(f"LayerCAM needs at least 1 stage, not {count}")
            self.stage_names = stage_layers(model, self.layer_name, count)
        self.stages = [model.get_submodule(name) for name in self.stage_names]
        self.scale = scale
        self.channels, self.pooled = self._probe()
        self.weight: torch.Tensor | None = None
        if method == "cam":
            if not self.pooled:
                raise CorrelaxError(
                    f"CAM needs the layer whose average-pooled output is the feature vector; "
                    f"{self.layer_name!r} is not that layer")
            self.weight = linear_head(model).weight.detach()[self.labels].float()
        self.library: Any = None
        if method in PERTURBATION:
            self.net: LogitNet = _ReplayNet(model, _LIVE_CALLS[method])
            self.library = self._perturbation_library()
        elif method != "cam":
            self.net = LogitNet(model)
            self.library = _library_class({**GRADIENT, **LABEL_FREE}[method])(
                self.net, [self.layer])
            # Only its weighting is used; its hooks would copy every activation.
            self.library.activations_and_grads.release()

    # -- facts ------------------------------------------------------------------------
    @property
    def label_free(self) -> bool:
        """The maps do not depend on the label (Eigen-CAM): one map per image."""
        return self.method in LABEL_FREE

    @property
    def fused(self) -> bool:
        """The maps combine several stages: :meth:`run` returns them at the input's size,
        already in :attr:`scale` (:func:`~.cam_stitch.fuse_layers`)."""
        return len(self.stages) > 1

    @property
    def maps_per_image(self) -> int:
        """Maps :meth:`run` returns per image: 1 if label-free, else one per label."""
        return 1 if self.label_free else len(self.labels)

    @property
    def steps_forward(self) -> bool:
        """:meth:`run` yields once per forward pass (Score-CAM, Ablation-CAM)."""
        return self.method in PERTURBATION

    def forwards_per_image(self) -> int:
        """Forward passes :meth:`run` makes per image (what its yields count)."""
        if self.method not in PERTURBATION:
            return 1
        batches = math.ceil(self.channels / self.rt.batch_size)
        return _LIVE_CALLS[self.method] * len(self.labels) + batches

    def close(self) -> None:
        """Remove the library's hooks from the model."""
        if self.library is not None:
            self.library.activations_and_grads.release()

    # -- computing --------------------------------------------------------------------
    def run(self, x: torch.Tensor) -> Generator[int, None, tuple[np.ndarray, np.ndarray]]:
        """Raw maps of model-normalised ``x`` ``(B, 3, H, W)`` on the runtime's device.

        Returns ``(maps, logits)``: ``maps`` float32 ``(maps_per_image, B, h, w)`` at the
        target layer's resolution, after the ReLU, before any scaling; ``logits``
        ``(B, C)`` float32 of the same forward pass. Yields 1 after each forward pass
        when :attr:`steps_forward`, nothing otherwise.
        """
        if self.method in PERTURBATION:
            return (yield from self._perturbation(x))
        if self.method in GRADIENT:
            return self._gradient(x)
        return self._activation_only(x)

    @contextlib.contextmanager
    def _context(self) -> Iterator[None]:
        """Thread count and autocast of the runtime (autograd stays available)."""
        old = torch.get_num_threads()
        if self.rt.threads:
            torch.set_num_threads(int(self.rt.threads))
        dev_type = self.rt.device.split(":")[0]
        cast = (torch.autocast(dev_type, dtype=getattr(torch, self.rt.precision))
                if self.rt.precision != "float32" else contextlib.nullcontext())
        try:
            with cast:
                yield
        finally:
            if self.rt.threads:
                torch.set_num_threads(old)

    def _forward(self, x: torch.Tensor, gradient: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, activations)``; with ``gradient``, the activations are a leaf that
        requires grad and only the network after the target layer records a graph."""
        logits, captured = self._forward_stages(x, gradient, [self.layer])
        return logits, captured[0]

    def _forward_stages(self, x: torch.Tensor, gradient: bool, layers: list[nn.Module]
                        ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(logits, activations of each of layers)``. With ``gradient``, the first
        layer to run gives a leaf that requires grad, the graph starts there, and the
        later layers' outputs are kept as they enter the rest of the network."""
        captured: dict[int, list[torch.Tensor]] = {k: [] for k in range(len(layers))}

        def hook_of(k: int) -> Any:
            def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> Any:
                if not gradient:
                    captured[k].append(output)
                    return None
                if not output.requires_grad:
                    torch.set_grad_enabled(True)  # restored by the caller's finally
                    output = output.detach().requires_grad_(True)
                captured[k].append(output)
                # A copy goes on, so a later in-place operation (DenseNet's ReLU) cannot
                # change the tensor the gradients are taken at.
                return output.clone()
            return hook

        handles = [layer.register_forward_hook(hook_of(k)) for k, layer in enumerate(layers)]
        previous = torch.is_grad_enabled()
        try:
            torch.set_grad_enabled(False)
            logits = model_logits(self.model, x)
        finally:
            torch.set_grad_enabled(previous)
            for handle in handles:
                handle.remove()
        for k, name in enumerate(self.stage_names if len(layers) > 1 else [self.layer_name]):
            if len(captured[k]) != 1:
                raise CorrelaxError(
                    f"target layer {name!r} ran {len(captured[k])} times in one forward "
                    "pass; choose a layer that runs once")
        return logits, [captured[k][0] for k in range(len(layers))]

    def _probe(self) -> tuple[int, bool]:
        """Channels of the target layer's output, and whether its spatial mean is the
        feature vector (the layer global pooling reduces, which CAM needs)."""
        size = int(getattr(self.model, "input_size", 224))
        device = next(self.model.parameters()).device
        gen = torch.Generator().manual_seed(0)
        x = torch.rand(1, 3, size, size, generator=gen).to(device)
        captured: list[Any] = []
        handle = self.layer.register_forward_hook(lambda m, i, o: captured.append(o))
        try:
            with torch.no_grad():
                h = self.model.features(x)
        finally:
            handle.remove()
        if len(captured) != 1 or not isinstance(captured[0], torch.Tensor) \
                or captured[0].ndim != 4:
            shape = tuple(captured[0].shape) if captured and hasattr(captured[0], "shape") else None
            raise CorrelaxError(
                f"target layer {self.layer_name!r} gives no single 2-D feature map "
                f"(output shape {shape}, called {len(captured)} times per forward pass)")
        act = captured[0].float()
        pooled = act.shape[1] == h.shape[1] and torch.allclose(
            act.mean(dim=(2, 3)), h.float(), rtol=1e-4, atol=1e-5)
        return int(act.shape[1]), bool(pooled)

    def _gradient(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        if self.fused:
            return self._gradient_stages(x)
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        with self._context():
            logits, leaf = self._forward(x, gradient=True)
            grads = []
            for k, c in enumerate(self.labels):
                (g,) = torch.autograd.grad(logits[:, c].sum(), leaf,
                                           retain_graph=k < len(self.labels) - 1)
                grads.append(g.detach())
        acts = leaf.detach().float().cpu().numpy()
        grad = torch.stack(grads).float().cpu().numpy()  # (L, B, K, h, w)
        n_labels, batch = grad.shape[:2]
        stacked_acts = np.broadcast_to(acts, grad.shape).reshape(-1, *acts.shape[1:])
        targets = [ClassifierOutputTarget(c) for c in self.labels for _ in range(batch)]
        cams = self.library.get_cam_image(x, self.layer, targets, stacked_acts,
                                          grad.reshape(stacked_acts.shape), False)
        maps = np.maximum(np.asarray(cams, dtype=np.float32), 0)
        return maps.reshape(n_labels, batch, *maps.shape[1:]), _numpy(logits)

    def _gradient_stages(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """LayerCAM over several stages: each stage's map (the library's weighting, after
        its ReLU), fused at the input's size (:func:`~.cam_stitch.fuse_layers`)."""
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        with self._context():
            logits, acts = self._forward_stages(x, True, self.stages)
            grads: list[list[np.ndarray]] = []
            for k, c in enumerate(self.labels):
                g = torch.autograd.grad(logits[:, c].sum(), acts,
                                        retain_graph=k < len(self.labels) - 1)
                grads.append([_numpy(t) for t in g])
        batch = x.shape[0]
        targets = [ClassifierOutputTarget(c) for c in self.labels for _ in range(batch)]
        per_stage = []
        for s, (layer, act) in enumerate(zip(self.stages, acts)):
            a = _numpy(act)
            g = np.stack([grads[k][s] for k in range(len(self.labels))])  # (L, B, K, h, w)
            stacked = np.broadcast_to(a, g.shape).reshape(-1, *a.shape[1:])
            cams = self.library.get_cam_image(x, layer, targets, stacked,
                                              g.reshape(stacked.shape), False)
            per_stage.append(np.maximum(np.asarray(cams, dtype=np.float32), 0))
        size = (int(x.shape[-2]), int(x.shape[-1]))
        maps = fuse_layers(per_stage, size, self.scale)
        return maps.reshape(len(self.labels), batch, *size), _numpy(logits)

    def _activation_only(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        with self._context(), torch.no_grad():
            logits, acts = self._forward(x, gradient=False)
            if self.method == "cam":
                assert self.weight is not None
                cams = torch.einsum("lk,bkhw->lbhw", self.weight.to(acts.device),
                                    acts.float())
                maps = np.maximum(_numpy(cams), 0)
                return maps, _numpy(logits)
        # Eigen-CAM: the library's projection on the first principal component, oriented.
        activations = _numpy(acts)
        cams = self.library.get_cam_image(x, self.layer, None, activations, None, False)
        oriented = orient_projections(np.asarray(cams, dtype=np.float32), activations)
        return np.maximum(oriented, 0)[None], _numpy(logits)

    # -- Score-CAM and Ablation-CAM ---------------------------------------------------------
    def _perturbation_library(self) -> Any:
        cls = _library_class(PERTURBATION[self.method])
        if self.method == "ablationcam":
            from pytorch_grad_cam.ablation_layer import AblationLayer

            # An ablation layer of its own (the library's default one is shared).
            return cls(self.net, [self.layer], reshape_transform=_float32,
                       ablation_layer=AblationLayer(), batch_size=self.rt.batch_size)
        library = cls(self.net, [self.layer], reshape_transform=_float32)
        library.batch_size = self.rt.batch_size
        return library

    def _library_maps(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Every label's library call on ``x``; runs in the worker thread."""
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        net = self.net
        assert isinstance(net, _ReplayNet)
        maps, logits = [], None
        with self._context():
            for k, c in enumerate(self.labels):
                net.begin(replay=k > 0)
                self.library(x, targets=[ClassifierOutputTarget(c)] * x.shape[0])
                maps.append(np.maximum(self.library.kept, 0))
                if logits is None:
                    logits = _numpy(self.library.outputs)
        assert logits is not None
        return np.stack(maps), logits

    def _perturbation(self, x: torch.Tensor
                      ) -> Generator[int, None, tuple[np.ndarray, np.ndarray]]:
        events: queue.Queue[str] = queue.Queue(maxsize=1)
        stop = threading.Event()
        outcome: dict[str, Any] = {}

        def put(item: str) -> bool:
            """Hand ``item`` to the caller; False once the caller stopped."""
            while not stop.is_set():
                try:
                    events.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        def check(_batch: int = 0) -> None:
            if stop.is_set():
                raise _Stopped

        def done(_batch: int) -> None:
            if not put("forward"):
                raise _Stopped

        def work() -> None:
            try:
                outcome["result"] = self._library_maps(x)
            except _Stopped:
                return
            except BaseException as exc:  # handed to the caller's thread
                outcome["error"] = exc
            put("end")

        self.net.before, self.net.after = check, done
        assert isinstance(self.net, _ReplayNet)
        self.net.check = check
        worker = threading.Thread(target=work, name="correlax-cam", daemon=True)
        worker.start()
        try:
            while events.get() == "forward":
                yield 1
            worker.join()
            if "error" in outcome:
                raise outcome["error"]
            return outcome["result"]
        finally:
            stop.set()
            while worker.is_alive():
                with contextlib.suppress(queue.Empty):
                    events.get(timeout=0.05)
            self.net.before = self.net.after = self.net.check = None
            self._restore_layer()

    def _restore_layer(self) -> None:
        """Put the target layer back if Ablation-CAM was stopped while it was swapped out."""
        if self.method == "ablationcam":
            from pytorch_grad_cam.utils.find_layers import replace_layer_recursive

            replace_layer_recursive(self.net, self.library.ablation_layer, self.layer)


def orient_projections(projections: np.ndarray, activations: np.ndarray) -> np.ndarray:
    """Eigen-CAM projections ``(B, h, w)`` with the SVD's arbitrary sign fixed per image.

    The first principal component is defined up to its sign, and the library returns
    whichever sign the SVD gives, so neighbouring windows can show a region or its
    complement. Each projection is flipped when it correlates negatively, over positions,
    with its image's activation sum over channels ``activations.sum(axis=1)`` (``(B, K,
    h, w)``): the map then points where the layer responds most. A projection
    uncorrelated with the sum keeps the library's sign.
    """
    out = np.array(projections, dtype=np.float32, copy=True)
    total = np.asarray(activations, dtype=np.float64).sum(axis=1)
    for b in range(len(out)):
        p = out[b].astype(np.float64).ravel()
        a = total[b].ravel()
        if float((p - p.mean()) @ (a - a.mean())) < 0:
            out[b] = -out[b]
    return out


def _float32(t: torch.Tensor) -> torch.Tensor:
    """The library keeps activations as NumPy arrays, which have no bfloat16: under
    autocast they are handed over in float32."""
    return t.float()


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()
