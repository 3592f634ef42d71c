"""CorRELAX engine benchmark: speed, adaptive accuracy, focus, memory.

Prints, measured in one run on one model and one phantom (breast about 2000 × 1000 px):

1. throughput: masked forward passes/s of ``explain_windows`` against the raw forward
   throughput of the same model (as the engine runs it: BatchNorm folded) at the same
   batch size (target ≥ 0.9); also the raw throughput of the model as given;
2. time per window: the engine against a naive one-window-at-a-time implementation
   that stores every mask and output and calls ``np.corrcoef`` (ratio), at fixed N and
   with the adaptive default, plus how far their correlations differ;
3. adaptive: mean masks per window (target ≤ 512) and mean / 95th percentile
   ``|ρ_adaptive − ρ_2560|`` (target mean ≤ 0.025) over sampled tissue windows, and the
   paper's Fig. 7 table from the same N = 2560 reference run;
4. focus: share of tissue windows fully explained at the default focus share, and the
   projected masked passes / time for the whole image with and without focus;
5. peak memory of ``explain_windows`` at N = 2560 against N = 256 (fresh processes;
   target ratio ≤ 1.2).

``--whole-image`` also times ``explain`` on the phantom with default settings.

Usage: ``python benchmarks/correlax.py [--model CKPT | --backbone lite] [--windows 12]``
Timings on a shared machine are noisy: compare ratios taken in the same run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from napari_correlax.cli.common import tune_cpu_allocator
from napari_correlax.maps import drain, explain, explain_windows
from napari_correlax.maps.image_explain import focus_windows
from napari_correlax.maps.mask_engine import unmasked_pass
from napari_correlax.maps.masks import make_mask_grids
from napari_correlax.maps.runtime import Runtime, inference_model
from napari_correlax.maps.sensitivity import mask_sensitivity_windows
from napari_correlax.maps.settings import (
    DEFAULT_FOCUS_SHARE,
    DEFAULT_MIN_MASKS,
    DEFAULT_TOLERANCE,
)
from napari_correlax.maps.sliding import WindowFeeder, prepare_image
from napari_correlax.models.checkpoint import DEMO_CHECKPOINT
from napari_correlax.models.classifier import Classifier

REFERENCE = 2560
COUNTS = (128, 256, 512, 1024, 2048)


def load_model(args: argparse.Namespace) -> tuple[Classifier, str]:
    from napari_correlax.models import load_classifier

    if args.model:
        return load_classifier(args.model), f"checkpoint {args.model}"
    if args.backbone == "demo":
        if DEMO_CHECKPOINT.is_file():
            return load_classifier(), "demo checkpoint"
        args.backbone = "lite"
    torch.manual_seed(0)
    return Classifier(args.backbone).eval(), f"untrained {args.backbone} (seed 0)"


def make_image(seed: int = 0) -> np.ndarray:
    from napari_correlax.synth import make_phantom

    findings = ["Mass", "Suspicious Calcification"]
    return make_phantom(seed, shape=(2400, 1200), findings=findings).pixels


def unit_windows(prep, flat: np.ndarray) -> torch.Tensor:
    """``(B, 3, S, S)`` fused [0, 1] windows (image space: what explain_windows takes)."""
    return torch.from_numpy(prep.windows(flat)).permute(0, 3, 1, 2)


def naive_correlax(model, window: torch.Tensor, n: int, seed: int, batch: int):
    """One window at a time: store all n full-size masks and outputs, then np.corrcoef.

    ``window`` is [0, 1] (image space): masked, then normalised by the model, as docs/method.md §7.
    """
    size = window.shape[-1]
    masks = F.interpolate(make_mask_grids(n, seed)[:, None], size=(size, size),
                          mode="bilinear", align_corners=False)
    with torch.inference_mode():
        h0 = model.features(model.normalize(window[None]))
        y0 = model.head(h0)
        hs, ys = [], []
        for i in range(0, n, batch):
            h = model.features(model.normalize(window[None] * masks[i : i + batch]))
            hs.append(h)
            ys.append(model.head(h))
        h, y = torch.cat(hs).double(), torch.cat(ys).double()
    s_h = F.cosine_similarity(h0.double(), h, dim=1).numpy()
    s_y = F.cosine_similarity(y0.double(), y, dim=1).numpy()
    c = np.corrcoef(np.vstack([s_h, s_y, y.numpy().T]))[0, 1:]
    m = masks[:, 0].double().numpy()
    relevance = np.tensordot(s_h, m, axes=1) / m.sum(axis=0)
    return np.nan_to_num(c), relevance


def memory_child(args: argparse.Namespace) -> None:
    """Run in a fresh process: peak RSS growth of one explain_windows call.

    glibc's allocator is left as it is here: it returns large freed blocks at once, so
    RSS follows live memory (the tuned allocator keeps freed memory and would measure
    its own history instead).
    """
    model, _ = load_model(args)
    x = torch.rand((args.mem_windows, 3, model.input_size, model.input_size))
    explain_windows(model, x[:1], masks=DEFAULT_MIN_MASKS, batch_size=args.batch)  # warm-up

    def status(key: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) * 1024
        return 0

    base = status("VmRSS:")
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark
    explain_windows(model, x, masks=args.memory_child, batch_size=args.batch)
    print(json.dumps({"base": base, "peak": status("VmHWM:")}))


def measure_memory(args: argparse.Namespace, n: int) -> dict[str, int]:
    cmd = [sys.executable, __file__, "--memory-child", str(n), "--batch", str(args.batch),
           "--backbone", args.backbone, "--mem-windows", str(args.mem_windows)]
    if args.model:
        cmd += ["--model", args.model]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=900)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="checkpoint (.safetensors)")
    ap.add_argument("--backbone", default="demo",
                    help="'demo' (shipped model; untrained lite if absent) or a backbone name")
    ap.add_argument("--windows", type=int, default=12, help="windows for the adaptive test")
    ap.add_argument("--batch", type=int, default=128, help="masked passes per batch")
    ap.add_argument("--whole-image", action="store_true", help="also time explain() on it")
    ap.add_argument("--no-malloc-tuning", action="store_true",
                    help="leave glibc's allocator as it is (the CLI tunes it)")
    ap.add_argument("--sections", default="12345", help="which sections to run, e.g. 13")
    ap.add_argument("--mem-windows", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--memory-child", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        memory_child(args)
        return
    tuned = False if args.no_malloc_tuning else tune_cpu_allocator()
    model, what = load_model(args)
    rt = Runtime(device="cpu")
    model = rt.prepare_model(model)
    fast = inference_model(model)
    img = make_image()
    prep = prepare_image(img, model)
    flat = np.flatnonzero(prep.active.ravel())
    print(f"model: {what}; image {img.shape}, {len(flat)} tissue windows of "
          f"{prep.grid.n_windows}; batch {args.batch}; threads {torch.get_num_threads()}; "
          f"malloc tuning {'on' if tuned else 'off'}")

    crops = unit_windows(prep, flat[:: max(1, len(flat) // 64)][:64])
    engine_rate = throughput_section(args, model, fast, crops) if "1" in args.sections else None
    naive_s = naive_section(args, model, crops) if "2" in args.sections else None
    if "3" in args.sections or "4" in args.sections:
        adaptive_and_focus(args, model, fast, rt, prep, flat, engine_rate, naive_s)
    if "5" in args.sections:
        memory_section(args)
    if args.whole_image:
        t = time.perf_counter()
        res = explain(img, model, runtime=rt)
        total = time.perf_counter() - t
        st = res.stats
        print(f"\n6. explain() on the phantom, defaults: {total:.1f} s; "
              f"{st.windows_focus} focus windows, {st.masks_total:,} masked passes "
              f"({st.masked_passes_per_second}/s), timings {st.seconds}")


def throughput_section(args: argparse.Namespace, model, fast, crops) -> float:
    """Section 1; returns the engine's masked passes/s on the mixed workload."""
    size = model.input_size
    masks = F.interpolate(make_mask_grids(args.batch, 9)[:, None], size=(size, size),
                          mode="bilinear", align_corners=False)
    # The raw forward's input: the masked, normalised windows, built beforehand.
    xb = model.normalize(crops[:1] * masks).contiguous(memory_format=torch.channels_last)

    def raw_rate(m, reps: int) -> float:
        with torch.inference_mode():
            m.head(m.features(xb))
            t = time.perf_counter()
            for _ in range(reps):
                m.head(m.features(xb)).float().cpu()
        return reps * args.batch / (time.perf_counter() - t)

    def engine(n_windows: int, n_masks: int) -> float:
        t = time.perf_counter()
        explain_windows(model, crops[:n_windows], masks=n_masks, batch_size=args.batch)
        return n_windows * n_masks / (time.perf_counter() - t)

    # Same number of passes (24 batches) in each: 8 windows x 384 masks (first 128 from
    # the engine's cache, the rest made per batch) and 24 windows x 128 (the focus-mode
    # minimum, all cached).
    n_win, n_masks, n_min = 8, 3 * args.batch, 24
    engine(1, args.batch)  # warm-up
    raw_plain = raw_rate(model, 8)
    runs = {"raw": [], "mixed": [], "minimum": []}
    for _ in range(3):  # interleaved, medians: the machine may be shared
        runs["raw"].append(raw_rate(fast, n_win * n_masks // args.batch))
        runs["mixed"].append(engine(n_win, n_masks))
        runs["minimum"].append(engine(n_min, DEFAULT_MIN_MASKS))
    raw_fast, mixed, minimum = (float(np.median(runs[k])) for k in ("raw", "mixed", "minimum"))
    print("\n1. throughput (masked forward passes/s; medians of 3 interleaved runs)")
    print(f"   raw forward, model as given      {raw_plain:8.1f}")
    print(f"   raw forward, BatchNorm folded    {raw_fast:8.1f}   ({raw_fast / raw_plain:.2f}x)")
    print(f"   explain_windows {n_win} x {n_masks} masks  {mixed:8.1f}   ratio to raw (folded) "
          f"{mixed / raw_fast:.3f} (target >= 0.9), to the model as given "
          f"{mixed / raw_plain:.3f}")
    print(f"   explain_windows {n_min} x {DEFAULT_MIN_MASKS} masks {minimum:8.1f}   ratio to raw "
          f"(folded) {minimum / raw_fast:.3f}")
    return mixed


def naive_section(args: argparse.Namespace, model, crops) -> float:
    """Section 2; returns the naive seconds per window."""
    t = time.perf_counter()
    c_naive, rel_naive = naive_correlax(model, crops[0], REFERENCE, 0, args.batch)
    naive_s = time.perf_counter() - t
    t = time.perf_counter()
    ours = explain_windows(model, crops[:2], masks=REFERENCE, batch_size=args.batch)
    ours_s = (time.perf_counter() - t) / 2
    diff_c = np.abs(np.r_[ours.distance[0], ours.correlation[0]] - c_naive).max()
    diff_r = np.abs(ours.relevance[0] - rel_naive).max()
    print(f"\n2. time per window at N = {REFERENCE}")
    print(f"   naive (one window, stores all)   {naive_s:8.2f} s")
    print(f"   engine (fixed N)                 {ours_s:8.2f} s   speed-up {naive_s / ours_s:.2f}x")
    print(f"   max |rho_engine - rho_naive| {diff_c:.2e}; max |relevance diff| {diff_r:.2e}")
    return naive_s


def adaptive_and_focus(args, model, fast, rt, prep, flat, engine_rate, naive_s) -> None:
    """Sections 3 (adaptive against N = 2560, Fig. 7) and 4 (focus share, projection)."""
    rng = np.random.default_rng(1)
    pick = np.sort(rng.choice(flat, size=min(args.windows, len(flat)), replace=False))
    xs = unit_windows(prep, pick)
    t = time.perf_counter()
    sens = mask_sensitivity_windows(model, xs, COUNTS, REFERENCE, seed=0, batch_size=args.batch)
    ref_s = time.perf_counter() - t
    t = time.perf_counter()
    ada = explain_windows(model, xs, masks=REFERENCE, adaptive=True, batch_size=args.batch)
    ada_s = time.perf_counter() - t
    rho_ref = sens.rho[:, -1]
    rho_ada = np.column_stack([ada.distance, ada.correlation])
    delta = np.abs(rho_ada - rho_ref)
    varying = ~ada.constant
    per_window_ada = ada_s / len(pick)
    print(f"\n3. adaptive (tolerance {DEFAULT_TOLERANCE}, {len(pick)} random tissue windows, "
          f"{delta.size} correlations, {int(ada.constant.sum())} constant)")
    print(f"   masks per window: mean {ada.masks_used.mean():.0f} (target <= 512; "
          f"{REFERENCE / ada.masks_used.mean():.1f}x fewer than {REFERENCE}), median "
          f"{np.median(ada.masks_used):.0f}, min {ada.masks_used.min()}, max "
          f"{ada.masks_used.max()}")
    print(f"   |rho_adaptive - rho_{REFERENCE}|: mean {delta.mean():.4f} (target <= 0.025), "
          f"p95 {np.percentile(delta, 95):.4f}, max {delta.max():.4f}")
    if varying.any() and not varying.all():
        dv = delta[varying]
        print(f"   non-constant correlations only: mean {dv.mean():.4f}, "
              f"p95 {np.percentile(dv, 95):.4f}")
    line = f"   time per window: adaptive {per_window_ada:.2f} s"
    if naive_s:
        line += f" vs naive at N = {REFERENCE} {naive_s:.2f} s ({naive_s / per_window_ada:.1f}x)"
    print(line + f"; fixed-N reference run {ref_s / len(pick):.2f} s")
    for title, rows in ((f"Fig. 7 from the N = {REFERENCE} run (|rho_N - rho_{REFERENCE}|), "
                         "distance correlation:", sens.distance_table()),
                        ("   label correlations, pooled:", sens.label_table())):
        print(f"   {title.strip()}")
        for row in rows:
            print(f"     N = {row['masks']:5d}: mean {row['mean']:.4f}  median "
                  f"{row['median']:.4f}  p95 {row['p95']:.4f}  max {row['max']:.4f}")

    _, y0 = drain(unmasked_pass(WindowFeeder(prep, fast, rt), flat))
    per_window = np.zeros((len(model.labels), prep.grid.n_windows))
    per_window[:, flat] = y0.T
    per_window = per_window.reshape(len(model.labels), *prep.grid.shape)
    focus = focus_windows(per_window, model.labels, prep.active, DEFAULT_FOCUS_SHARE)
    n_focus = int(focus.sum())
    mean_ada = float(ada.masks_used.mean())
    passes_focus = n_focus * mean_ada + (len(flat) - n_focus) * DEFAULT_MIN_MASKS
    passes_all = len(flat) * mean_ada
    lesion = per_window[1:].max(axis=0)[prep.active]
    print(f"\n4. focus (share {DEFAULT_FOCUS_SHARE}): {n_focus} of {len(flat)} tissue "
          f"windows fully explained ({n_focus / len(flat):.1%}); lesion probability "
          f"quantiles 50/90/100%: {np.percentile(lesion, [50, 90, 100]).round(3).tolist()}")
    line = f"   projected masked passes: focus {passes_focus:,.0f}, no focus {passes_all:,.0f}"
    if engine_rate:
        line += (f" (~{passes_focus / engine_rate:.0f} s and ~{passes_all / engine_rate:.0f} s "
                 "at the rate of section 1)")
    print(line)


def memory_section(args: argparse.Namespace) -> None:
    """Section 5: peak RSS of explain_windows at N = 256 and N = 2560, fresh processes."""
    low = measure_memory(args, 256)
    high = measure_memory(args, REFERENCE)
    grow_low = max(low["peak"] - low["base"], 1)
    grow_high = max(high["peak"] - high["base"], 1)
    mib = 2.0**20
    print(f"\n5. peak memory of explain_windows ({args.mem_windows} window, fresh processes, "
          "default allocator)")
    print(f"   N = 256:  peak RSS {low['peak'] / mib:7.1f} MiB "
          f"(+{grow_low / mib:.1f} over baseline)")
    print(f"   N = {REFERENCE}: peak RSS {high['peak'] / mib:7.1f} MiB (+{grow_high / mib:.1f})")
    print(f"   ratio N = {REFERENCE} / N = 256: peak {high['peak'] / low['peak']:.3f}, growth "
          f"{grow_high / grow_low:.3f} (target <= 1.2)")


if __name__ == "__main__":
    main()
