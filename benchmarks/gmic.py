"""Speed of ``GMIC.run`` against a straightforward per-image implementation of the same
network, and GMIC's training speed with each CAM that picks the patches.

Inference: both run on the same random-weight model and the same standardised input
(default 2944×1920, the published models' size). The straightforward version, written
here, goes image by image: global network, saliency, sort-based top-t pooling, greedy
retrieval with a window-by-window search, each patch cut in a Python loop and passed
through the local network on its own, attention and fusion. Prints seconds per image
for both, their ratio (target: ``run`` not slower, ratio ≥ 1) and the largest
difference between their outputs; also the time of ``gmic_input`` on a mammogram-sized
phantom.

Training (``--train``): training steps of the published architecture in train mode (forward
with the patches picked by each CAM, the loss of :func:`~napari_correlax.gmic.train.gmic_loss`,
backward, Adam) on a batch of ``--n`` random inputs; prints images per second per CAM
and each gradient CAM's rate relative to GMIC's own (``cam``: the extra cost of the
gradient CAM, which works on the head only, target ≥ 0.9).

Usage: ``python benchmarks/gmic.py [--n 2] [--size 2944 1920] [--repeats 2] [--device cpu]
[--train] [--skip-run] [--cams cam,xgradcam]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from napari_correlax.gmic import GMIC, gmic_input
from napari_correlax.gmic.network import GMICResult


def straightforward(model: GMIC, x: torch.Tensor) -> dict[str, np.ndarray]:
    """The network image by image and patch by patch (no batching, no vectorisation)."""
    cfg = model.config
    out: dict[str, list] = {k: [] for k in ("y_global", "y_local", "y_fusion", "locations")}
    height, width = x.shape[2:]
    for image in x:
        h_g = model.ds_net(image[None])
        saliency = torch.sigmoid(model.left_postprocess_net.gn_conv_last(h_g))[0]
        c, h, w = saliency.shape
        k = max(1, round(h * w * cfg.percent_t))
        out["y_global"].append(saliency.reshape(c, -1).sort(dim=1, descending=True)
                               .values[:, :k].mean(dim=1))
        score = torch.zeros(h, w)
        for m in saliency.cpu():
            span = m.max() - m.min()
            score += (m - m.min()) / span if span > 0 else 0
        wh = min(max(1, round(cfg.crop_shape[0] * h / height)), h)
        ww = min(max(1, round(cfg.crop_shape[1] * w / width)), w)
        features, corners = [], []
        plane = image[0]
        for _ in range(cfg.K):
            best, best_value = (0, 0), -float("inf")
            for r in range(h - wh + 1):
                for col in range(w - ww + 1):
                    value = float(score[r:r + wh, col:col + ww].mean())
                    if value > best_value:
                        best, best_value = (r, col), value
            score[best[0]:best[0] + wh, best[1]:best[1] + ww] = 0
            top = int(np.around(best[0] / h * height))
            left = int(np.around(best[1] / w * width))
            corners.append((top, left))
            r0, r1 = min(top, height), min(top + cfg.crop_shape[0], height)
            c0, c1 = min(left, width), min(left + cfg.crop_shape[1], width)
            patch = torch.full(cfg.crop_shape, float(plane.min()), device=plane.device)
            patch[cfg.crop_shape[0] - (r1 - r0):, cfg.crop_shape[1] - (c1 - c0):] = \
                plane[r0:r1, c0:c1]
            fmap = model.dn_resnet(patch[None, None].expand(1, 3, -1, -1))
            features.append(fmap.mean(dim=(2, 3))[0])
        h_k = torch.stack(features)
        gate = torch.tanh(model.mil_attn_V(h_k)) * torch.sigmoid(model.mil_attn_U(h_k))
        attention = torch.softmax(model.mil_attn_w(gate)[:, 0], dim=0)
        z = (attention[:, None] * h_k).sum(dim=0)
        out["y_local"].append(torch.sigmoid(model.classifier_linear(z)))
        pooled = h_g[0].amax(dim=(1, 2))
        out["y_fusion"].append(torch.sigmoid(model.fusion_dnn(torch.cat([pooled, z]))))
        out["locations"].append(torch.tensor(corners))
    return {k: torch.stack(v).cpu().numpy() for k, v in out.items()}


def phantom(shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    inside = ((yy - h / 2) / (0.45 * h)) ** 2 + (xx / (0.85 * w)) ** 2 < 1
    rng = np.random.default_rng(0)
    return np.where(inside, 0.3 + 0.4 * rng.random(shape), 0).astype(np.float32)


def training_rates(args: argparse.Namespace) -> None:
    """Images per second of training steps with each CAM picking the patches."""
    from napari_correlax.gmic import GMICConfig
    from napari_correlax.gmic.train import gmic_loss

    torch.manual_seed(0)
    model = GMIC(GMICConfig(num_classes=1, class_names=("Mass",),
                            input_size=tuple(args.size))).train().to(args.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
    x = torch.randn(args.n, 1, *args.size, generator=torch.Generator().manual_seed(1))
    x = x.to(args.device)
    y = torch.tensor([[float(i % 2)] for i in range(args.n)], device=args.device)

    def step(cam: str) -> None:
        loss, _ = gmic_loss(model(x, retrieval_map=cam), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    cams = [c.strip() for c in args.cams.split(",") if c.strip()]
    rates: dict[str, float] = {}
    for cam in cams:
        step(cam)  # warm-up
        best = float("inf")
        for _ in range(args.repeats):
            sync()
            start = time.perf_counter()
            step(cam)
            sync()
            best = min(best, time.perf_counter() - start)
        rates[cam] = args.n / best
    print(f"training steps, batch {args.n}×1×{args.size[0]}×{args.size[1]} on {args.device}, "
          f"torch threads {torch.get_num_threads()}, best of {args.repeats}")
    for cam, rate in rates.items():
        relative = f"  ({rate / rates['cam']:.2f} of cam)" if "cam" in rates and cam != "cam" \
            else ""
        print(f"train with {cam:<10} {rate:8.3f} images/s{relative}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2, help="images per batch")
    ap.add_argument("--size", nargs=2, type=int, default=(2944, 1920))
    ap.add_argument("--repeats", type=int, default=2, help="interleaved repeats (best kept)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--train", action="store_true", help="also measure training steps")
    ap.add_argument("--skip-run", action="store_true", help="skip the inference comparison")
    ap.add_argument("--cams", default="cam,gradcam,gradcam++,xgradcam,layercam",
                    help="CAMs picking the patches in the training measurement")
    args = ap.parse_args()

    if not args.skip_run:
        inference(args)
    if args.train:
        training_rates(args)


def inference(args: argparse.Namespace) -> None:
    """``GMIC.run`` against the straightforward implementation (module docstring)."""
    torch.manual_seed(0)
    model = GMIC().eval().to(args.device)
    x = torch.randn(args.n, 1, *args.size, generator=torch.Generator().manual_seed(1))
    x = x.to(args.device)

    def timed(fn):
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        value = fn()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return value, time.perf_counter() - start

    best_run = best_loop = float("inf")
    result: GMICResult | None = None
    reference: dict[str, np.ndarray] = {}
    with torch.no_grad():
        model.run(x[:1])  # warm-up
        for _ in range(args.repeats):
            result, seconds = timed(lambda: model.run(x))
            best_run = min(best_run, seconds)
            reference, seconds = timed(lambda: straightforward(model, x))
            best_loop = min(best_loop, seconds)
    assert result is not None
    diff = max(float(np.abs(getattr(result, k) - reference[k]).max())
               for k in ("y_global", "y_local", "y_fusion"))
    same_patches = bool((result.patch_locations == reference["locations"]).all())

    mammogram = phantom((3518, 2800))
    _, prep_seconds = timed(lambda: gmic_input(mammogram, "R"))

    print(f"input {args.n}×1×{args.size[0]}×{args.size[1]} on {args.device}, "
          f"torch threads {torch.get_num_threads()}, best of {args.repeats}")
    print(f"GMIC.run:            {best_run / args.n:8.3f} s/image")
    print(f"straightforward:     {best_loop / args.n:8.3f} s/image")
    print(f"ratio (straightforward / run): {best_loop / best_run:.2f}  (target ≥ 1)")
    print(f"largest output difference: {diff:.2e}; same patches: {same_patches}")
    print(f"gmic_input on a 3518×2800 phantom: {prep_seconds:.3f} s")


if __name__ == "__main__":
    main()
