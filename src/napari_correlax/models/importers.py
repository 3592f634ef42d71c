"""Classifiers trained elsewhere, brought into the project's checkpoint format (docs/method.md §4).

Two formats of PyTorch state dict are read, both with the paper's head
``Dropout → Linear(D, hidden) → ReLU → Linear(hidden, C)`` under the torchvision model's
own head attribute (``classifier``, or ``fc`` for ResNets):

``codigotesis``
    What the paper authors' training code saves: ``torch.save({"model_state_dict": sd,
    ...})`` of torchvision ``efficientnet_v2_s`` with that head (``hidden`` = 512, eight
    outputs), from the plain module or from ``create_feature_extractor`` (same key
    names). It was trained on ``[0, 1]`` inputs without ImageNet normalisation, on images
    read with the DICOM VOI LUT, an 8-bit first channel and 8-bit CLAHE with the
    background kept at 0 (:data:`CODIGOTESIS_PREPROCESSING`); its label order is docs/method.md §3.
``torchvision``
    A plain state dict of any torchvision backbone of :data:`~.classifier.BACKBONES`
    with the same head; normalisation, labels and preprocessing are given by the caller.

Files are read with ``torch.load(..., weights_only=True)`` (or as safetensors), which
refuses pickled code. A missing bias of a head ``Linear`` (saved with ``bias=False``)
becomes zeros; keys saved through ``nn.DataParallel`` (``module.`` prefix) are accepted.
Keys or shapes that do not fit raise :class:`~napari_correlax.errors.CorrelaxError`
naming the first few of each.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CorrelaxError
from ..labels import LABELS
from ..preprocess import Preprocessing

if TYPE_CHECKING:
    import torch

    from .classifier import Classifier

__all__ = [
    "CODIGOTESIS_PREPROCESSING",
    "FORMATS",
    "import_codigotesis",
    "import_model",
    "import_to_checkpoint",
    "import_torchvision",
    "name_listing",
    "read_state_dict",
    "read_weights",
]

#: Names accepted by :func:`import_model` (and ``correlax import-model --format``).
FORMATS: tuple[str, ...] = ("codigotesis", "torchvision")

#: How the authors' code makes a model input from a mammogram (docs/method.md §2): DICOM VOI LUT
#: before min–max scaling, 8-bit first channel, 8-bit CLAHE, background re-zeroed.
CODIGOTESIS_PREPROCESSING = Preprocessing(
    base_bits=8, clahe_bits=8, background_zero=True, voi_lut=True
)

#: Backbones of the project that are not torchvision models.
_NOT_TORCHVISION = ("lite", "tiny")
#: How many names of each kind an error message lists.
_LISTED = 5


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Tensors of a saved state dict, by key, without ever unpickling code.

    ``path`` is a ``.safetensors`` file or a ``torch.save`` file read with
    ``weights_only=True``; a ``{"model_state_dict": ...}`` or ``{"state_dict": ...}``
    wrapper (as training scripts save with their optimiser state) is opened.
    """
    return _read(path)[0]


def read_weights(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state dict, provenance)`` of a file, read as :func:`read_state_dict` does.

    The provenance is a JSON-able dict: the file's name, SHA-256 and size in bytes, and
    the training epoch when a wrapper says; importers store it in a checkpoint's ``info``.
    """
    return _read(path)


def import_codigotesis(
    path: str | os.PathLike[str], *, labels: Sequence[str] | None = None
) -> Classifier:
    """A :class:`~.classifier.Classifier` from the paper authors' checkpoint.

    ``efficientnet_v2_s`` backbone, no input normalisation (mean 0, std 1: inputs are
    the ``[0, 1]`` fused image), :data:`CODIGOTESIS_PREPROCESSING`, and ``labels``
    (default: docs/method.md §3, the authors' order). Returned in eval mode on the CPU, with
    ``checkpoint_info["imported"]`` saying where the weights came from.
    """
    state, source = _read(path)
    return _build(
        state, path, "efficientnet_v2_s", labels,
        mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
        preprocessing=CODIGOTESIS_PREPROCESSING,
        source={"format": "codigotesis", **source},
    )


def import_torchvision(
    path: str | os.PathLike[str],
    backbone: str = "efficientnet_v2_s",
    *,
    labels: Sequence[str] | None = None,
    imagenet_normalisation: bool = True,
    preprocessing: Preprocessing | None = None,
) -> Classifier:
    """A :class:`~.classifier.Classifier` from a torchvision state dict with the paper's head.

    ``backbone`` is a torchvision model name of :data:`~.classifier.BACKBONES`. Without
    ``labels`` the head must have as many outputs as docs/method.md §3 has labels. The model
    normalises inputs with the ImageNet mean/std when ``imagenet_normalisation``, else
    not at all; ``preprocessing`` defaults to the paper's profile (:class:`Preprocessing`).
    Returned in eval mode on the CPU, with ``checkpoint_info["imported"]`` as
    :func:`import_codigotesis`.
    """
    from .classifier import BACKBONES, IMAGENET_MEAN, IMAGENET_STD

    if backbone not in BACKBONES or backbone in _NOT_TORCHVISION:
        names = sorted(b for b in BACKBONES if b not in _NOT_TORCHVISION)
        raise CorrelaxError(f"unknown torchvision backbone {backbone!r}; choose one of {names}")
    state, source = _read(path)
    unit = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if imagenet_normalisation else unit
    return _build(state, path, backbone, labels, mean=mean, std=std,
                  preprocessing=preprocessing or Preprocessing(),
                  source={"format": "torchvision", **source})


def import_model(path: str | os.PathLike[str], format: str = "codigotesis",
                 **options: Any) -> Classifier:
    """:func:`import_codigotesis` or :func:`import_torchvision` by ``format`` name."""
    if format == "codigotesis":
        return import_codigotesis(path, **options)
    if format == "torchvision":
        return import_torchvision(path, **options)
    raise CorrelaxError(f"unknown model format {format!r}; choose one of {list(FORMATS)}")


def import_to_checkpoint(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    format: str = "codigotesis",
    **options: Any,
) -> Path:
    """Import ``path`` (:func:`import_model`) and save it as a project checkpoint at ``out``.

    The checkpoint's ``info`` records where the weights came from (file name, format,
    SHA-256 and size of the source file, training epoch when the file says). Returns the
    ``.safetensors`` path written.
    """
    from .checkpoint import save_checkpoint

    model = import_model(path, format, **options)
    return save_checkpoint(model, out, info=model.checkpoint_info)


# ----------------------------------------------------------------------------- details


def _read(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(state dict, provenance)`` of a file: see :func:`read_state_dict`.

    The provenance (file name, SHA-256, size, training epoch when the wrapper says) is
    what :func:`import_to_checkpoint` stores in the checkpoint's ``info``.
    """
    p = Path(path)
    if not p.is_file():
        raise CorrelaxError("file not found" if not p.exists() else "not a file", p)
    source: dict[str, Any] = {"file": p.name, "sha256": _sha256(p), "bytes": p.stat().st_size}
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            doc: Any = load_file(str(p))
        except Exception as exc:
            raise CorrelaxError(f"not a readable safetensors file ({_short(exc)})", p) from exc
        return _unwrap(doc, p, source), source
    import torch

    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols, say
            warnings.simplefilter("ignore")
            doc = torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CorrelaxError(_unpickling_reason(exc), p) from exc
    except Exception as exc:
        raise CorrelaxError(f"not a PyTorch checkpoint ({_short(exc)})", p) from exc
    return _unwrap(doc, p, source), source


def _unpickling_reason(exc: BaseException) -> str:
    """Why ``torch.load(..., weights_only=True)`` refused a file, in one line."""
    text = " ".join(str(exc).split())
    found = re.search(r"GLOBAL (\S+) was not an allowed global", text)
    if found:
        return (
            f"refused: the file holds pickled Python objects other than tensors "
            f"({found.group(1)}: code, or a whole pickled model); only state dicts of "
            "tensors are read, and nothing in the file was run"
        )
    detail = re.search(r"WeightsUnpickler error: (.*?)(?: Check the documentation|$)", text)
    why = detail.group(1).strip() if detail else _short(exc)
    return (
        f"not a PyTorch checkpoint that can be read as plain tensors ({why[:200]}); "
        "nothing in the file was run"
    )


def _unwrap(doc: Any, path: Path, source: dict[str, Any]) -> dict[str, Any]:
    """The tensor state dict inside what was read; a wrapper's ``epoch`` goes to ``source``."""
    import torch

    if isinstance(doc, Mapping):
        for key in ("model_state_dict", "state_dict"):
            if key in doc and isinstance(doc[key], Mapping):
                if isinstance(doc.get("epoch"), int):
                    source["epoch"] = int(doc["epoch"])
                doc = doc[key]
                break
    if not isinstance(doc, Mapping) or not doc:
        raise CorrelaxError("file holds no state dict (a mapping of names to tensors)", path)
    odd = [str(k) for k, v in doc.items() if not isinstance(v, torch.Tensor)]
    if odd:
        raise CorrelaxError(
            f"not a state dict: entries that are not tensors: {name_listing(odd)}", path
        )
    state = {str(k): v for k, v in doc.items()}
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _build(
    state: dict[str, Any],
    path: str | os.PathLike[str],
    backbone: str,
    labels: Sequence[str] | None,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    preprocessing: Preprocessing,
    source: dict[str, Any],
) -> Any:
    """Classifier of ``backbone`` holding ``state``'s weights (keys mapped, shapes checked)."""
    import torch

    from .classifier import HEAD_ATTR, Classifier

    head = HEAD_ATTR.get(backbone, "classifier")
    first, last = state.get(f"{head}.1.weight"), state.get(f"{head}.3.weight")
    n_out = int(last.shape[0]) if last is not None and last.ndim == 2 else None
    if labels is None:
        if n_out is not None and n_out != len(LABELS):
            raise CorrelaxError(
                f"the head has {n_out} outputs, not the {len(LABELS)} labels of docs/method.md §3; "
                f"give {n_out} label names",
                path,
            )
        labels = LABELS
    hidden = int(first.shape[0]) if first is not None and first.ndim == 2 else 512
    model = Classifier(
        backbone, list(labels), hidden=hidden, mean=mean, std=std,
        preprocessing=preprocessing.to_dict(),
    )
    own = model.state_dict()
    # target key (the project's) -> source key (the file's)
    source_of = {k: k[len("encoder."):] for k in own if k.startswith("encoder.")}
    source_of.update({k: f"{head}.{k[len('classifier.'):]}"
                      for k in own if k.startswith("classifier.")})
    optional = {k for k in source_of if k.startswith("classifier.") and k.endswith(".bias")}
    wanted = set(source_of.values())
    missing = [s for t, s in source_of.items() if s not in state and t not in optional]
    unexpected = [k for k in state if k not in wanted]
    mismatched = [
        f"{s} (file {tuple(state[s].shape)}, model {tuple(own[t].shape)})"
        for t, s in source_of.items()
        if s in state and tuple(state[s].shape) != tuple(own[t].shape)
    ]
    if missing or unexpected or mismatched:
        parts = key_misfits(missing, unexpected, mismatched)
        raise CorrelaxError(
            f"weights do not fit a {backbone} classifier with {len(labels)} labels "
            f"and the head Linear(D, {hidden}) → Linear({hidden}, {len(labels)}); "
            + "; ".join(parts),
            path,
        )
    loaded = {}
    for t, s in source_of.items():
        if s in state:
            loaded[t] = state[s]
        else:  # a head Linear saved without bias
            loaded[t] = torch.zeros_like(own[t])
    loaded["mean"], loaded["std"] = own["mean"], own["std"]
    try:
        model.load_state_dict(loaded, strict=True)
    except Exception as exc:  # dtype that cannot be copied, for instance
        raise CorrelaxError(f"weights cannot be loaded ({_short(exc)})", path) from exc
    model.checkpoint_info = {
        "imported": source,
        "model_card": f"Imported from {source['file']} ({source['format']} format); "
        "weights trained outside napari-correlax.",
    }
    return model.eval()


def key_misfits(missing: list[str], unexpected: list[str], mismatched: list[str]
                ) -> list[str]:
    """The parts of a "weights do not fit" error: missing keys, unexpected keys and shape
    mismatches, each listed (shortened) when there are any."""
    named = (("missing keys", missing), ("unexpected keys", unexpected),
             ("shape mismatches", mismatched))
    return [f"{what}: {name_listing(keys)}" for what, keys in named if keys]


def name_listing(names: Sequence[str]) -> str:
    """The first few names, comma-separated, with how many more there are."""
    shown = ", ".join(names[:_LISTED])
    more = len(names) - _LISTED
    return f"{shown} (+{more} more)" if more > 0 else shown


def _short(exc: BaseException) -> str:
    """A one-line description of a library exception (long messages cut)."""
    text = " ".join(str(exc).split())
    if len(text) > 200:
        text = text[:197] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
