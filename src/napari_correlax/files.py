"""Safe file writing: every file a user keeps is written atomically.

A temp file in the destination folder is written, flushed and renamed over the target
(``os.replace`` is atomic on POSIX and Windows), so a crash or kill leaves either the
old file or the new one, never half of one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_csv", "atomic_write_text"]


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(fh)`` on a temp file beside ``path``, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Atomically replace ``path`` with ``data``."""
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Atomically replace ``path`` with UTF-8 ``text``."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_csv(path: str | os.PathLike[str], header: Sequence[str],
                     rows: Iterable[Sequence[Any]]) -> Path:
    """A UTF-8 CSV file (``header`` then ``rows``, the csv module's quoting, ``\n`` line
    ends), written atomically; returns the path."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


def npz_reason(exc: BaseException) -> str:
    """Why ``np.load(..., allow_pickle=False)`` refused a file, in words for users.

    numpy's message about ``allow_pickle`` advises what the plugin never does (loading
    pickled Python objects runs code), so it becomes a plain statement instead.
    """
    if "allow_pickle" in str(exc):
        return "it holds Python objects, which are never loaded (only plain arrays are)"
    return f"{type(exc).__name__}: {exc}"
