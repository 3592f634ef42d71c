"""Like-for-like comparison of map methods on hard phantoms, with intervals and paired tests.

The standard phantoms are large and conspicuous and the demo model was trained on them,
so every method that follows the model points correctly and nothing separates the
methods. This script asks the question on findings the model never saw
(``correlax synth --difficulty hard``: masses of radius 3-10 px and contrast <= 0.05,
tight microcalcification clusters, some within 30 px of the skin line):

1. writes ``--images`` hard phantoms (all in the test split, each with 1-3 findings);
2. runs ``correlax compare`` on them: every method on the same images, model, stride and
   map settings; the methods named in ``--global`` run in a second folder in global
   mode (the breast resized to 512 px, out of the model's training scale) and are
   labelled so;
3. reads each method's pointing-game verdicts (``pointing-verdicts.csv``) and prints per
   method and label the rate with its Wilson 95 % interval and the exact McNemar p-value
   against ``--reference`` on the discordant (image, label) pairs, per label and pooled
   (:mod:`napari_correlax.evaluate.paired`), and the seconds per image of each method.

Tables go to ``WORK/phantoms.md`` and ``WORK/phantoms.csv``; ``compare`` keeps its own
outputs (and its cache: running again resumes) under ``WORK/compare-*``.

The full comparison (the default: 64 images of 1024 x 640 px, stride 48, CorRELAX at its
default settings and eight methods) takes hours on a 2-core CPU. A small version runs in
minutes, e.g.::

    python benchmarks/compare_phantoms.py --work /tmp/hard --images 6 --size 512 320 \\
        --methods prediction,gradcam,gradcam++,eigencam --global scorecam --reference prediction

Measured on a shared 2-core CPU (demo model, 6 images of 512 x 320, stride 48, one torch
thread; wall seconds per image): prediction 1.1, Grad-CAM 6.8, Grad-CAM++ 3.3, Eigen-CAM
3.2, CorRELAX (default settings) 184, Score-CAM global 104. Windowed methods grow with the
number of windows (about 4x at 1024 x 640); global ones do not.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import time
from pathlib import Path

from napari_correlax.cli import main as correlax
from napari_correlax.evaluate.paired import POOLED, paired_rows, wilson_interval
from napari_correlax.labels import NO_FINDING

METHODS = "prediction,correlax,gradcam,gradcam++,layercam,eigencam"
GLOBAL = "scorecam,ablationcam"
GLOBAL_TAG = " (global 512 px)"


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True, help="folder for data and results")
    ap.add_argument("--images", type=int, default=64, help="hard phantoms (default 64)")
    ap.add_argument("--size", nargs=2, type=int, default=(1024, 640), metavar=("H", "W"),
                    help="phantom size in pixels (default 1024 640, the demo's training size)")
    ap.add_argument("--seed", type=int, default=7, help="data set seed (default 7)")
    ap.add_argument("--stride", type=int, default=48, help="window stride (default 48)")
    ap.add_argument("--methods", default=METHODS,
                    help=f"windowed methods (default {METHODS})")
    ap.add_argument("--global", dest="global_methods", default=GLOBAL,
                    help=f"methods run in global mode (default {GLOBAL}; '' for none)")
    ap.add_argument("--global-limit", type=int, default=None,
                    help="run the global methods on the first N images only (they take "
                         "minutes per image on a CPU); paired tests use the shared images")
    ap.add_argument("--reference", default="correlax",
                    help="method the others are tested against (default correlax)")
    ap.add_argument("--model", default=None, help="checkpoint (default: the demo model)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--compare-args", default="",
                    help="further `correlax compare` options, e.g. '--masks 512'")
    return ap.parse_args()


def make_data(args: argparse.Namespace) -> Path:
    from napari_correlax.synth import write_vindr_dataset

    data = args.work / "data"
    if not (data / "finding_annotations.csv").is_file():
        write_vindr_dataset(data, args.images, seed=args.seed, shape=tuple(args.size),
                            test_fraction=1.0, no_finding_fraction=0.0, difficulty="hard")
    return data


def run_compare(args: argparse.Namespace, data: Path, methods: str, mode: str) -> Path:
    out = args.work / f"compare-{mode}"
    argv = ["compare", str(data), "--out", str(out), "--methods", methods, "--mode", mode,
            "--stride", str(args.stride), "--device", args.device,
            *shlex.split(args.compare_args)]
    if mode == "global" and args.global_limit:
        argv += ["--limit", str(args.global_limit)]
    if args.model:
        argv += ["--model", args.model]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    status = correlax(argv)
    if status:
        raise SystemExit(f"correlax compare exited with {status}")
    return out


def read_hits(out: Path, tag: str = "") -> tuple[dict[str, dict], dict[str, float], list[str]]:
    """Per method: {(image_id, label): hit} from compare's verdicts, seconds per image, and
    the methods compare found equal ("xgradcam = gradcam", from compare.json's same_as)."""
    doc = json.loads((out / "compare.json").read_text())
    method_of = {key: name + tag for name, key in doc["keys"].items()}
    hits: dict[str, dict] = {name: {} for name in method_of.values()}
    with open(out / "pointing-verdicts.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            name = method_of.get(row["settings"])
            if name is None or row["label"] == NO_FINDING or not row["auto_verdict"]:
                continue
            hits[name][(row["image_id"], row["label"])] = row["auto_verdict"] == "hit"
    seconds = {name + tag: s for name, s in doc["seconds_per_image"].items()}
    equal = [f"{name}{tag} = {first}{tag}" for name, first in doc.get("same_as", {}).items()]
    return hits, seconds, equal


def rate_table(hits: dict[str, dict], labels: list[str]) -> list[list[str]]:
    rows = []
    for name, table in hits.items():
        cells = [name]
        for label in [*labels, POOLED]:
            got = [v for (_, lab), v in table.items() if label in (POOLED, lab)]
            if not got:
                cells.append("–")
                continue
            low, high = wilson_interval(sum(got), len(got))
            cells.append(f"{sum(got)}/{len(got)} = {sum(got) / len(got):.2f} "
                         f"[{low:.2f}, {high:.2f}]")
        rows.append(cells)
    return rows


def markdown(columns: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join([*lines, *("| " + " | ".join(map(str, r)) + " |" for r in rows)])


def main() -> None:
    args = parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = make_data(args)
    hits: dict[str, dict] = {}
    seconds: dict[str, float] = {}
    equal: list[str] = []
    for methods, mode, tag in ((args.methods, "windowed", ""),
                               (args.global_methods, "global", GLOBAL_TAG)):
        if methods.strip():
            found, secs, same = read_hits(run_compare(args, data, methods, mode), tag)
            hits.update(found)
            seconds.update(secs)
            equal += same
    labels = sorted({lab for table in hits.values() for _, lab in table})
    if args.reference not in hits:
        raise SystemExit(f"--reference {args.reference!r} is not among the methods run")
    paired = paired_rows(hits, labels, against=args.reference)
    images = len({image for table in hits.values() for image, _ in table})
    limited = (f" (global methods: the first {args.global_limit}; their paired tests use "
               "those images only)" if args.global_limit and args.global_methods.strip()
               else "")
    text = [f"# Hard phantoms: {images} images of {args.size[0]}×{args.size[1]} px, stride "
            f"{args.stride}{limited}", "",
            "Pointing game: hits/support = rate [Wilson 95 % interval].", "",
            markdown(["Method", *labels, POOLED], rate_table(hits, labels)), "",
            "Equal maps on every image: " + ("; ".join(equal) or "none") + ".", "",
            f"Exact McNemar test against {args.reference} on the discordant (image, label) "
            "pairs (ref only / other only).", "",
            markdown(["Method", "Label", "both", "ref only", "other only", "neither", "p"],
                     [[r.method_b, r.label, r.counts.both, r.counts.a_only, r.counts.b_only,
                       r.counts.neither, f"{r.counts.p_value:.3g}"] for r in paired]), "",
            markdown(["Method", "Seconds per image"],
                     [[m, f"{s:.2f}"] for m, s in seconds.items()]), "",
            f"Total {time.perf_counter() - t0:.0f} s."]
    (args.work / "phantoms.md").write_text("\n".join(text) + "\n")
    with open(args.work / "phantoms.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["method_a", "method_b", "label", "both", "a_only", "b_only",
                         "neither", "p_value"])
        for r in paired:
            c = r.counts
            writer.writerow([r.method_a, r.method_b, r.label, c.both, c.a_only, c.b_only,
                             c.neither, f"{c.p_value:.6g}"])
    print("\n".join(text))


if __name__ == "__main__":
    main()
