"""What a resumable training run saves and restores, shared by the classifier's loop
(:mod:`.fit`) and GMIC's (:mod:`napari_correlax.gmic.train`).

A run folder's resume file (``last.train.safetensors``) holds, in one file so it is
always consistent: the model weights (``model.*``) and the optimizer's tensors
(``optim.<param id>.<name>``) as tensors, and in its metadata (mirrored in
``last.train.json``) a JSON document with the epoch, the optimizer's scalars and param
groups, the learning-rate schedule's state (if any), the epoch sampler's generator
state, each rank's torch / CUDA / NumPy / Python ``random`` states and whatever the
loop adds (its config, history). No pickle anywhere. ``format`` names the loop, so one
loop never resumes the other's run.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CorrelaxError
from ..files import atomic_write_bytes, atomic_write_text

__all__ = [
    "STATE_FILE",
    "STATE_FORMAT",
    "STATE_KEY",
    "gather_rng_states",
    "mix_seed",
    "read_state",
    "restore_state",
    "rng_state",
    "save_state",
    "seed_everything",
    "set_rng_state",
]

#: Format of the classifier's resume file.
STATE_FORMAT = "napari-correlax-training-state"
#: safetensors metadata key of the JSON document.
STATE_KEY = "napari_correlax_training"
#: Name of the resume file in a run folder.
STATE_FILE = "last.train.safetensors"


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (stable across runs and platforms)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0]
               >> np.uint64(1))


def rng_state() -> dict[str, Any]:
    """This process's torch, CUDA, NumPy (global) and Python ``random`` states, JSON-able."""
    np_state = np.random.get_state()  # noqa: NPY002 (the global stream is what is saved)
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state().tolist(),
        "cuda": ([s.tolist() for s in torch.cuda.get_rng_state_all()]
                 if torch.cuda.is_available() and torch.cuda.is_initialized() else None),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])
    name, keys, pos, has_gauss, cached = state["numpy"]
    legacy = (name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached)
    np.random.set_state(legacy)  # noqa: NPY002
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def seed_everything(seed: int) -> None:
    """Seed torch, NumPy's global stream and Python's ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002
    random.seed(seed)


def gather_rng_states(group: Any) -> list[dict[str, Any]]:
    """Every rank's :func:`rng_state`, in rank order (``group``: a
    :class:`~napari_correlax.distributed.ProcessGroup`)."""
    return group.gather(rng_state())


def save_state(path: Path, model: Any, optimizer: Any, scheduler: Any | None, sampler: Any,
               rng: list[dict[str, Any]], doc: dict[str, Any], *,
               fmt: str = STATE_FORMAT) -> None:
    """Write the resume file (tensors + JSON metadata) and its JSON mirror, atomically.

    ``scheduler`` may be None (a run without a learning-rate schedule); ``sampler`` is the
    epoch sampler's ``torch.Generator``; ``rng`` every rank's :func:`rng_state`; ``doc``
    the loop's own fields (it must hold ``epoch`` and ``config`` with a ``seed``).
    """
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {
        f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in opt["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[k] = v
    meta = {
        **doc,
        "format": fmt,
        "version": 1,
        "optimizer": {"param_groups": opt["param_groups"], "scalars": scalars},
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "sampler": sampler.get_state().tolist(),
        "rng": rng,
    }
    text = json.dumps(meta)
    atomic_write_bytes(path, save(tensors, metadata={STATE_KEY: text}))
    atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=1) + "\n")


def read_state(path: Path, fmt: str = STATE_FORMAT) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metadata document, tensors) of a resume file; CorrelaxError when unusable or
    written by another loop (``fmt``)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        doc = json.loads(meta[STATE_KEY])
        tensors = load_file(str(path))
    except Exception as exc:
        raise CorrelaxError(f"cannot read the training state ({exc}); start with --fresh",
                            path) from exc
    if doc.get("format") != fmt:
        found = doc.get("format") or "unknown"
        raise CorrelaxError(f"the run folder holds another kind of training run ({found}, "
                            f"not {fmt}); choose another folder or pass --fresh", path)
    return doc, tensors


def restore_state(doc: dict[str, Any], tensors: dict[str, Any], model: Any, optimizer: Any,
                  scheduler: Any | None, sampler: Any, rank: int, world_size: int) -> None:
    """Load what :func:`save_state` wrote into the model, optimizer, schedule, sampler and
    this rank's random streams (fresh streams seeded from (seed, epoch, rank) when the
    run was saved with another number of processes)."""
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    for pid, extra in doc["optimizer"]["scalars"].items():
        state.setdefault(int(pid), {}).update(extra)
    optimizer.load_state_dict({"state": state, "param_groups": doc["optimizer"]["param_groups"]})
    if scheduler is not None and doc.get("scheduler") is not None:
        scheduler.load_state_dict(doc["scheduler"])
    sampler.set_state(torch.tensor(doc["sampler"], dtype=torch.uint8))
    saved = doc.get("rng") or []
    if len(saved) == world_size:
        set_rng_state(saved[rank])
    else:  # another world size: per-rank streams cannot continue, start them afresh
        seed_everything(mix_seed(doc["config"]["seed"], doc["epoch"], rank))
