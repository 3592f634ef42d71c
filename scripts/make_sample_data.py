"""Regenerate ``sample_data/``: a tiny synthetic data set in the VinDr-Mammo layout (method §11).

Eight phantom mammograms (two studies of four views, one study in each split), 640×400
pixels at 0.1 mm, written by :func:`napari_correlax.synth.write_vindr_dataset` with seed 0:
``images/<study_id>/<image_id>.dicom`` (uncompressed, MONOCHROME2 and MONOCHROME1
alternating, BitsStored 12/14/16), ``finding_annotations.csv`` and
``breast-level_annotations.csv``. The same files come from
``correlax synth sample_data --n 8 --seed 0 --size 640 400``.

Run from the repository root: ``python scripts/make_sample_data.py [--out DIR]``.
The folder may hold a README.md; any other file that is not part of the data set is
reported (exit status 1), since the result would then not be an exact copy.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

N_IMAGES = 8
SEED = 0
SHAPE = (640, 400)  # rows, columns (pixels of 0.1 mm)
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "sample_data"
CSV_FILES = ("finding_annotations.csv", "breast-level_annotations.csv")


def make_sample_data(out: str | Path) -> Path:
    """Write the sample data set into ``out`` (created); returns ``out`` as a Path."""
    from napari_correlax.synth import write_vindr_dataset

    return write_vindr_dataset(out, N_IMAGES, seed=SEED, shape=SHAPE)


def expected_files() -> set[Path]:
    """Paths, relative to the data set folder, that :func:`make_sample_data` writes."""
    from napari_correlax.synth import plan_vindr_dataset

    images = {Path("images", p.study_id, f"{p.image_id}.dicom")
              for p in plan_vindr_dataset(N_IMAGES, seed=SEED)}
    return images | {Path(name) for name in CSV_FILES}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help="output folder (default: sample_data/ of this repository)")
    args = p.parse_args(argv)
    root = make_sample_data(args.out)
    present = {f.relative_to(root) for f in root.rglob("*") if f.is_file()}
    extra = sorted(present - expected_files() - {Path("README.md")})
    print(f"wrote {N_IMAGES} images ({SHAPE[0]}×{SHAPE[1]} px, seed {SEED}) to {root}")
    if extra:
        print(f"{root}: {len(extra)} file(s) not part of the data set, remove them for an "
              f"exact copy: " + ", ".join(str(f) for f in extra), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
