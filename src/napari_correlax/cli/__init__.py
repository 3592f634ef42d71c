"""``correlax`` command line: the same core functions the napari widgets call.

Each subcommand lives in its own module exposing ``register(subparsers)``; the
module adds its parser and sets ``func``. Errors caused by input (``CorrelaxError``)
print one line naming the file and the reason and exit with status 2, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import CorrelaxError

#: Subcommand modules, in help order.
COMMANDS = (
    "predict", "explain", "mask-sensitivity", "synth", "train", "evaluate", "compare",
    "import-model", "gmic", "sanity", "dicom",
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="correlax",
        description="Explain multi-label mammogram classifiers with CorRELAX.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name.replace('-', '_')}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``correlax``; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = args.func(args)
    except CorrelaxError as exc:
        print(f"correlax {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"correlax {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
