"""Sending DICOM files to a PACS or any storage SCP with C-STORE (pynetdicom).

:func:`send` opens one association, proposing each file's SOP class with the transfer
syntax it is stored in, stores every file and returns what the peer accepted. A peer
that cannot be reached, rejects or aborts the association, or answers a C-STORE with a
failure status raises :class:`~napari_correlax.errors.CorrelaxError` naming the peer
and the reason; the files are never touched.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import CorrelaxError

__all__ = ["Stored", "parse_address", "send"]

#: Seconds to wait for the connection, the association and each response.
TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Stored:
    """One instance the peer accepted: its file, SOP Instance UID and C-STORE status
    (0x0000 success, 0xB000–0xB007 warnings)."""

    path: Path
    sop_instance_uid: str
    status: int


def parse_address(text: str) -> tuple[str, int]:
    """``"HOST:PORT"`` as ``(host, port)``; CorrelaxError when it is not one."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise CorrelaxError(f"{text!r} is not HOST:PORT (a port 1–65535)")
    return host.strip("[]"), int(port)


def send(paths: Sequence[str | os.PathLike[str]], host: str, port: int, *, called_aet: str,
         calling_aet: str = "CORRELAX", timeout: float = TIMEOUT_S) -> list[Stored]:
    """Store ``paths`` (DICOM files) on ``called_aet`` at ``host:port``; see the module
    docstring. Returns one :class:`Stored` per file, in order."""
    import pydicom
    from pynetdicom import AE

    datasets = [(Path(p), pydicom.dcmread(p)) for p in paths]
    peer = f"{called_aet}@{host}:{port}"
    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.connection_timeout = timeout
    contexts = {(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for _, ds in datasets}
    for sop_class, syntax in sorted(contexts):
        ae.add_requested_context(sop_class, syntax)
    _check_reachable(host, port, peer, timeout)
    assoc = ae.associate(host, port, ae_title=called_aet)
    if not assoc.is_established:
        why = "rejected" if assoc.is_rejected else "aborted"
        raise CorrelaxError(f"DICOM peer {peer} {why} the association (is {calling_aet} "
                            "allowed to store there?)")
    stored = []
    try:
        for path, ds in datasets:
            status = assoc.send_c_store(ds)
            code = int(getattr(status, "Status", -1)) if status else -1
            if code == -1:
                raise CorrelaxError(f"DICOM peer {peer} did not answer the C-STORE of {path.name}")
            if code != 0 and not 0xB000 <= code <= 0xB007:
                raise CorrelaxError(f"DICOM peer {peer} refused {path.name} "
                                    f"(C-STORE status 0x{code:04X})")
            stored.append(Stored(path, str(ds.SOPInstanceUID), code))
    finally:
        if assoc.is_established:
            assoc.release()
    return stored


def _check_reachable(host: str, port: int, peer: str, timeout: float) -> None:
    """CorrelaxError naming the reason when no TCP connection to the peer opens (pynetdicom
    reports that only as an aborted association)."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise CorrelaxError(f"DICOM peer {peer} could not be reached ({reason})") from None
