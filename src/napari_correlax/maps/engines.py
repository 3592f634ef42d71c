"""Inference engines for the forward passes on a CPU: PyTorch, ONNX Runtime, OpenVINO.

The model's ``features`` and ``head`` are exported once per checkpoint to one ONNX graph
``x → (h, ŷ)`` (``x`` the normalised ``(B, 3, S, S)`` float32 input, ``h`` the pooled
features ``(B, D)``, ``ŷ`` the label probabilities ``(B, C)``). The file is cached beside
the checkpoint as ``<name>.<hash>.onnx`` (``hash``: 16 hex digits of the checkpoint's
SHA-256), or in :func:`engine_cache_dir` when that folder is read-only or the model has no
checkpoint file. Nothing is ever downloaded.

:func:`engine_model` wraps a model so that callers keep calling ``features(x)`` then
``head(h)`` on torch tensors: the first runs the whole graph and the second returns the
``ŷ`` of that same run. When the runtime is not installed, or the run is not on the CPU
in float32, the PyTorch model is used, with one warning line.

ONNX Runtime comes with ``pip install napari-correlax[all]`` (or ``[onnx]``), OpenVINO
with ``[openvino]``. ``benchmarks/engines.py`` measures them against PyTorch.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CorrelaxError

__all__ = [
    "ENGINES",
    "EngineModel",
    "engine_cache_dir",
    "engine_model",
    "export_onnx",
    "onnx_path",
]

#: ONNX operator set of the exported graphs.
OPSET = 17
#: Engines a :class:`~napari_correlax.maps.runtime.Runtime` may name.
ENGINES = ("torch", "onnx", "openvino")

_Run = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
_sessions: dict[tuple[str, str, int], _Run] = {}


def engine_cache_dir() -> Path:
    """Folder for exported graphs of models whose checkpoint folder is not writable:
    ``$CORRELAX_CACHE/engines``, else ``$XDG_CACHE_HOME`` (or ``~/.cache``)
    ``/napari-correlax/engines``."""
    root = os.environ.get("CORRELAX_CACHE")
    if root:
        return Path(root) / "engines"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "napari-correlax" / "engines"


def _base_model(model: Any) -> Any:
    """The module under the views of a model (:func:`~.runtime.inference_model`'s folded
    view, :class:`EngineModel`): each keeps the model it wraps as ``model``."""
    import torch

    while not isinstance(model, torch.nn.Module) and hasattr(model, "model"):
        model = model.model
    return model


def onnx_path(model: Any) -> Path:
    """Where the exported graph of ``model`` lives (whether or not it exists yet)."""
    from .fingerprint import model_fingerprint

    base = _base_model(model)
    name, digest = model_fingerprint(base)  # a file stem or a class name
    fname = f"{name}.{digest}.onnx"
    ckpt = getattr(base, "checkpoint_path", None)
    if ckpt and Path(ckpt).is_file() and os.access(Path(ckpt).parent, os.W_OK):
        return Path(ckpt).parent / fname
    return engine_cache_dir() / fname


def _features_head(model: Any) -> Any:
    """``x → (h, ŷ)`` of a model, as one module for the exporter."""
    import torch

    class FeaturesHead(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h = self.model.features(x)
            return h, self.model.head(h)

    return FeaturesHead().eval()


def export_onnx(model: Any, path: str | os.PathLike[str] | None = None) -> Path:
    """Export ``model``'s ``features`` + ``head`` to ONNX at ``path`` (default
    :func:`onnx_path`) unless the file exists; returns the path. Written atomically."""
    import tempfile

    import torch

    from ..files import atomic_write_bytes

    base = _base_model(model)
    out = Path(path) if path is not None else onnx_path(base)
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    size = int(getattr(base, "input_size", 256))
    device = next(base.parameters()).device
    x = torch.zeros((2, 3, size, size), dtype=torch.float32, device=device)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_file = Path(tmp) / "graph.onnx"
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _features_head(base.eval()), (x,), str(tmp_file), input_names=["x"],
                output_names=["h", "y"], opset_version=OPSET, dynamo=False,
                dynamic_axes={"x": {0: "batch"}, "h": {0: "batch"}, "y": {0: "batch"}},
            )
        atomic_write_bytes(out, tmp_file.read_bytes())
    return out


def _onnx_session(path: Path, threads: int) -> _Run:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, y = session.run(["h", "y"], {"x": x})
        return h, y

    return run


def _openvino_session(path: Path, threads: int) -> _Run:
    import openvino as ov

    compiled = ov.Core().compile_model(
        str(path), "CPU", {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        res = request.infer({0: x})
        return np.array(res[compiled.output(0)]), np.array(res[compiled.output(1)])

    return run


_OPENERS: dict[str, tuple[str, Callable[[Path, int], _Run]]] = {
    "onnx": ("onnxruntime", _onnx_session),
    "openvino": ("openvino", _openvino_session),
}


class EngineModel:
    """A model whose ``features`` + ``head`` run through an exported graph.

    ``features(x)`` takes the normalised ``(B, 3, S, S)`` tensor (any memory layout) and
    returns ``h`` as a CPU float32 tensor; ``head(h)`` returns the ``ŷ`` computed in the
    same run when given that ``h`` (otherwise it runs the PyTorch head). Every other
    attribute is the wrapped model's.
    """

    def __init__(self, model: Any, run: _Run, engine: str) -> None:
        self.model = model
        self.engine = engine
        self._run = run
        self._last: tuple[Any, Any] | None = None

    def features(self, x: Any) -> Any:
        import torch

        arr = np.ascontiguousarray(x.detach().float().cpu().numpy())
        h, y = self._run(arr)
        h_t, y_t = torch.from_numpy(h), torch.from_numpy(y)
        self._last = (h_t, y_t)
        return h_t

    def head(self, h: Any) -> Any:
        if self._last is not None and h is self._last[0]:
            return self._last[1]
        return self.model.head(h)

    def __call__(self, x: Any) -> Any:
        return self.head(self.features(x))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


def engine_model(model: Any, engine: str, *, threads: int | None = None,
                 device: str = "cpu", precision: str = "float32") -> Any:
    """``model`` running on ``engine`` (one of :data:`ENGINES`), or ``model`` itself.

    ``"torch"`` returns ``model``. Other engines need ``device == "cpu"``, ``precision ==
    "float32"``, a :class:`~napari_correlax.models.classifier.Classifier` and the runtime
    installed; otherwise a warning says why and ``model`` is returned. ``threads``: the
    runtime's intra-op threads (None: torch's current setting).
    """
    if engine not in ENGINES:
        raise CorrelaxError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine == "torch":
        return model
    from ..models.classifier import Classifier

    module, opener = _OPENERS[engine]
    base = _base_model(model)
    why = None
    if device.split(":")[0] != "cpu" or precision != "float32":
        why = f"it runs on the CPU in float32 only (here {device}, {precision})"
    elif not isinstance(base, Classifier):
        why = f"{type(base).__name__} models are not exported"
    else:
        import importlib.util

        if importlib.util.find_spec(module) is None:
            why = f"{module} is not installed"
    if why is None:
        try:
            run = _session(base, engine, opener, threads)
        except ImportError as exc:
            why = f"{module} does not import ({exc})"
    if why is not None:
        warnings.warn(f"engine {engine!r} not used, running PyTorch: {why}", stacklevel=2)
        return model
    return EngineModel(model, run, engine)


def _session(base: Any, engine: str, opener: Callable[[Path, int], _Run],
             threads: int | None) -> _Run:
    import torch

    path = export_onnx(base)
    n = int(threads or torch.get_num_threads())
    key = (str(path), engine, n)
    if key not in _sessions:
        _sessions[key] = opener(path, n)
    return _sessions[key]
