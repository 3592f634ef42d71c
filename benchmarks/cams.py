"""Throughput of windowed CAM-family maps against the raw forward + backward passes.

Prints, measured in one run on the same model, image and batches of windows:

- raw forward + backward windows/s: the model alone on pre-built, pre-normalised batches,
  ``logits[:, c].sum().backward()`` for one label ``c`` (what one call of pytorch-grad-cam
  does per batch: a backward pass into every parameter), and the least a gradient CAM
  needs: the network before the target layer without recording a graph, and the
  backward pass from the logit stopped at the target layer;
- the library called directly, per batch and label (GradCAM; its own forward and
  backward passes, maps scaled per window, no stitching) for reference;
- ``cam(mode="windowed")`` windows/s for gradient CAMs with one label and with every
  label, end to end (fusion, ROI, window cutting, forward, backward, weighting,
  upsampling, stitching) and for the window loop alone; ratios against both raw rates
  (target >= 0.8 against forward + backward);
- ``cam(mode="global")`` seconds per image.

Usage: ``python benchmarks/cams.py [--backbone demo] [--size 2048 1024] [--batch 16]``
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch

from napari_correlax.cli.common import tune_cpu_allocator
from napari_correlax.maps.cam import cam
from napari_correlax.maps.cam_layers import LogitNet, resolve_target_layer
from napari_correlax.maps.runtime import Runtime
from napari_correlax.maps.sliding import WindowFeeder, prepare_image
from napari_correlax.models import load_classifier
from napari_correlax.models.classifier import Classifier


def phantom(shape: tuple[int, int]) -> np.ndarray:
    from napari_correlax.synth import make_phantom

    return make_phantom(0, shape=shape, findings=["Mass"]).pixels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="demo", help="'demo' (shipped model) or a backbone name")
    ap.add_argument("--size", nargs=2, type=int, default=(2048, 1024))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--stride", type=int, default=48)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved repeats (best kept)")
    ap.add_argument("--methods", nargs="+", default=["gradcam", "gradcam++", "xgradcam"])
    ap.add_argument("--global-methods", nargs="+",
                    default=["gradcam", "gradcam++", "xgradcam", "eigencam", "scorecam"])
    args = ap.parse_args()
    tune_cpu_allocator()  # as the CLI does

    torch.manual_seed(0)
    model = load_classifier() if args.backbone == "demo" else Classifier(args.backbone).eval()
    img = phantom(tuple(args.size))
    rt = Runtime(device=args.device, batch_size=args.batch)
    model = rt.prepare_model(model)
    layer_name, layer = resolve_target_layer(model, None)
    prep = prepare_image(img, model, stride=args.stride)
    todo = np.flatnonzero(prep.active.ravel())
    feeder = WindowFeeder(prep, model, rt)
    batches = [feeder.batch(todo[i : i + args.batch]) for i in range(0, len(todo), args.batch)]
    n = len(todo)
    labels = list(model.labels)
    label = labels.index("Mass") if "Mass" in labels else 0
    print(f"model {getattr(model, 'backbone_name', '?')}, target layer {layer_name}, "
          f"image {img.shape}, {n} tissue windows of {prep.grid.n_windows}, batch {args.batch}, "
          f"{len(labels)} labels, device {rt.device}, threads {torch.get_num_threads()}")

    def sync() -> None:
        if rt.device.startswith("cuda"):
            torch.cuda.synchronize()

    def raw_full() -> float:
        t = time.perf_counter()
        for x in batches:
            model.zero_grad(set_to_none=True)
            model.logits(model.features(x))[:, label].sum().backward()
        sync()
        return n / (time.perf_counter() - t)

    def raw_to_layer() -> float:
        seen: list[torch.Tensor] = []

        def hook(_module: Any, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
            torch.set_grad_enabled(True)  # the network after the layer records a graph
            seen.append(output.detach().requires_grad_(True))
            return seen[-1]

        handle = layer.register_forward_hook(hook)
        t = time.perf_counter()
        try:
            for x in batches:
                seen.clear()
                torch.set_grad_enabled(False)
                z = model.logits(model.features(x))
                torch.set_grad_enabled(True)
                torch.autograd.grad(z[:, label].sum(), seen[0])
        finally:
            torch.set_grad_enabled(True)
            handle.remove()
        sync()
        return n / (time.perf_counter() - t)

    def library_direct() -> float:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        lib = GradCAM(LogitNet(model), [layer])
        t = time.perf_counter()
        for x in batches:
            lib(x, [ClassifierOutputTarget(label)] * len(x))
        sync()
        lib.activations_and_grads.release()
        return n / (time.perf_counter() - t)

    def windowed(method: str, chosen: list[str] | None) -> tuple[float, float]:
        t = time.perf_counter()
        result = cam(img, model, method, labels=chosen, stride=args.stride, runtime=rt)
        total = time.perf_counter() - t
        loop = result.stats.seconds["cam"] + result.stats.seconds["stitch"]
        return n / total, n / loop

    raw_full()  # warm-up
    runs: dict[str, list[Any]] = {}
    for _ in range(args.repeats):
        runs.setdefault("raw fwd+bwd", []).append(raw_full())
        runs.setdefault("raw fwd+bwd to layer", []).append(raw_to_layer())
        runs.setdefault("library GradCAM", []).append(library_direct())
        for method in args.methods:
            for chosen, tag in (([labels[label]], "1 label"), (None, f"{len(labels)} labels")):
                runs.setdefault(f"{method} {tag}", []).append(windowed(method, chosen))
    full = max(runs.pop("raw fwd+bwd"))
    to_layer = max(runs.pop("raw fwd+bwd to layer"))
    direct = max(runs.pop("library GradCAM"))
    print(f"{'raw forward + backward (1 label)':40s} {full:8.1f} windows/s")
    print(f"{'raw forward + backward, layer only':40s} {to_layer:8.1f} windows/s")
    print(f"{'library GradCAM per batch (1 label)':40s} {direct:8.1f} windows/s   "
          f"ratio {direct / full:.3f}")
    for name, values in runs.items():
        end = max(v[0] for v in values)
        loop = max(v[1] for v in values)
        print(f"{'cam ' + name:40s} {end:8.1f} windows/s end to end, {loop:8.1f} loop only; "
              f"ratio vs fwd+bwd {end / full:.3f} / {loop / full:.3f}, "
              f"vs layer only {end / to_layer:.3f} / {loop / to_layer:.3f}")

    for method in args.global_methods:
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            cam(img, model, method, mode="global", runtime=rt)
            times.append(time.perf_counter() - t)
        name = f"global {method} ({len(labels)} labels)"
        print(f"{name:40s} {min(times):8.2f} s per image")


if __name__ == "__main__":
    main()
