"""CPU inference engines compared: PyTorch (the project's path) vs ONNX Runtime vs OpenVINO.

For each model (the shipped demo model; EfficientNetV2-S with random weights, built by
torchvision without a download) and thread count, one batch of windows (default 64 of
256 px, normalised random pixels) runs ``features`` + ``head``:

- ``torch``: the path the maps use (BatchNorm folded, channels_last, inference mode);
- ``onnx`` / ``openvino``: the exported graph (:mod:`napari_correlax.maps.engines`),
  when the runtime is installed.

The engines run interleaved (engine after engine within each repeat), so load from other
processes on a shared machine hits all of them alike. Prints each engine's median
windows/s with its range, the median of the per-repeat ratios to PyTorch with their
range, and the largest absolute difference of the probabilities (and of ``h``) to
PyTorch's on the same batch.

Usage: ``python benchmarks/engines.py [--models demo efficientnet_v2_s] [--threads 1 2]
[--batch 64] [--repeats 6]``
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from typing import Any

import numpy as np
import torch

from napari_correlax.maps.engines import ENGINES, EngineModel, engine_model
from napari_correlax.maps.runtime import Runtime, inference_model
from napari_correlax.models import load_classifier
from napari_correlax.models.classifier import Classifier


def build(name: str) -> Any:
    model = load_classifier() if name == "demo" else Classifier(name)
    return inference_model(Runtime(device="cpu").prepare_model(model))


def forward(model: Any, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    with torch.inference_mode():
        h = model.features(x)
        y = model.head(h)
        return h.float().cpu().numpy(), y.float().cpu().numpy()


def spread(values: list[float], digits: int = 1) -> str:
    """``median [min–max]``."""
    med, lo, hi = statistics.median(values), min(values), max(values)
    return f"{med:.{digits}f} [{lo:.{digits}f}–{hi:.{digits}f}]"


def measure(name: str, threads: int, batch: int, repeats: int, engines: list[str]) -> None:
    torch.set_num_threads(threads)
    base = build(name)
    models = {"torch": base}
    for engine in engines:
        if engine == "torch":
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            wrapped = engine_model(base, engine, threads=threads)
        if isinstance(wrapped, EngineModel):
            models[engine] = wrapped
        else:
            print(f"  {engine}: skipped ({caught[-1].message if caught else 'not available'})")
    size = int(base.input_size)
    gen = torch.Generator().manual_seed(0)
    x = base.normalize(torch.rand((batch, 3, size, size), generator=gen))
    x = x.contiguous(memory_format=torch.channels_last)
    outputs = {k: forward(m, x) for k, m in models.items()}  # warm-up + outputs
    rates: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(repeats):
        for k, m in models.items():
            t = time.perf_counter()
            forward(m, x)
            rates[k].append(batch / (time.perf_counter() - t))
    h0, y0 = outputs["torch"]
    print(f"{name}, {threads} thread(s), batch {batch}, {size} px, {repeats} repeats:")
    print(f"  {'engine':9s} {'windows/s median [range]':>30s} {'ratio to torch':>26s} "
          f"{'max|Δŷ|':>9s} {'max|Δh|':>9s}")
    for k in models:
        ratio = [a / b for a, b in zip(rates[k], rates["torch"])]
        h, y = outputs[k]
        print(f"  {k:9s} {spread(rates[k]):>30s} {spread(ratio, 2):>26s} "
              f"{np.abs(y - y0).max():9.1e} {np.abs(h - h0).max():9.1e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["demo", "efficientnet_v2_s"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    args = ap.parse_args()
    print(f"torch {torch.__version__}")
    for name in args.models:
        for threads in args.threads:
            measure(name, threads, args.batch, args.repeats, args.engines)


if __name__ == "__main__":
    main()
