"""``correlax dicom [RESULT.npz] --image SOURCE.dcm --out DIR [--verdicts CSV] [--send
HOST:PORT --aet AET]``: maps as Parametric Maps and verdicts as a Comprehensive SR over
their DICOM image, optionally stored on a PACS; see :mod:`napari_correlax.dicom_out`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CorrelaxError

if TYPE_CHECKING:
    from .common import Subparsers


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "dicom",
        help="maps as DICOM Parametric Maps and the reader's verdicts as a DICOM SR, "
        "optionally sent to a PACS",
        description="Write each map of a result (per label and kind) as a DICOM Parametric "
        "Map on the pixel grid of the DICOM image it was computed on (same patient, study "
        "and Frame of Reference, referencing its SOP instance; pixels outside the analysed "
        "area hold the padding value -1000), and/or the reader's verdicts of that image "
        "(a verdict CSV of the test-set reader) as a Comprehensive SR following TID 1500. "
        "With --send, store the written files on a DICOM node with C-STORE; they stay in "
        "--out either way.",
    )
    p.add_argument("result", nargs="?", type=Path, default=None,
                   help="result .npz of `correlax predict`/`explain` (or the analysis dock)")
    p.add_argument("--image", required=True, type=Path,
                   help="the DICOM image the result was computed on")
    p.add_argument("--out", required=True, type=Path, help="output folder (created)")
    p.add_argument("--maps", default=None,
                   help="comma-separated map kinds to write (default: all the result has)")
    p.add_argument("--labels", default=None,
                   help="comma-separated labels to write (default: all)")
    p.add_argument("--verdicts", type=Path, default=None,
                   help="verdict CSV (verdicts.csv of the reader's work folder): write an SR "
                   "of this image's verdicts")
    p.add_argument("--image-id", default=None,
                   help="the image's id in the verdict CSV (default: the file name without "
                   "extension, else its SOP Instance UID)")
    p.add_argument("--settings", default=None,
                   help="settings key of the verdicts, when the image has rows of several")
    p.add_argument("--reader", default="Reader^",
                   help="the reader's name in DICOM form, Family^Given (default Reader^)")
    p.add_argument("--send", metavar="HOST:PORT", default=None,
                   help="store the written files on this DICOM node (C-STORE)")
    p.add_argument("--aet", default="ANY-SCP", help="called AE title of the node (--send)")
    p.add_argument("--calling-aet", default="CORRELAX", help="our AE title (default CORRELAX)")
    p.set_defaults(func=run)


def _names(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def run(args: argparse.Namespace) -> int:
    from ..dicom_out import write_parametric_maps, write_verdict_report
    from ..dicom_out.send import parse_address, send

    if args.result is None and args.verdicts is None:
        raise CorrelaxError("nothing to write: give a RESULT.npz, --verdicts, or both")
    address = parse_address(args.send) if args.send else None
    written = []
    if args.result is not None:
        from ..maps import load_result

        written += write_parametric_maps(load_result(args.result), args.image, args.out,
                                         kinds=_names(args.maps), labels=_names(args.labels))
    if args.verdicts is not None:
        written.append(write_verdict_report(args.verdicts, args.image, args.out,
                                            image_id=args.image_id, settings=args.settings,
                                            reader=args.reader))
    for path in written:
        print(f"wrote {path}")
    if address is not None:
        for item in send(written, *address, called_aet=args.aet, calling_aet=args.calling_aet):
            print(f"stored {item.path.name} as {item.sop_instance_uid} on "
                  f"{args.aet}@{args.send} (status 0x{item.status:04X})")
    return 0
