"""The ``torchrun`` process group, joined the same way by training and evaluation.

Under ``torchrun --nproc-per-node N`` the environment names this process's rank
(``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``); :func:`join` joins (or reuses) the process
group and picks the device of this rank: ``cuda:<LOCAL_RANK>`` on a machine with GPUs
when the device is ``auto``/``cuda``, else the device asked for (``auto`` → ``cpu``).
Without ``torchrun`` it returns a group of one and touches nothing in
``torch.distributed``. :func:`rank`, :func:`world_size` and :func:`rank_tag` read the
same environment without joining (for what a process prints).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["ProcessGroup", "join", "rank", "rank_tag", "world_size"]

_T = TypeVar("_T")


def rank() -> int:
    """This process's rank under ``torchrun`` (``RANK``), 0 without it."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """The number of processes under ``torchrun`` (``WORLD_SIZE``), 1 without it."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank_tag() -> str:
    """``"[rank 1] "`` before a line a process prints when there are several, else ``""``."""
    return f"[rank {rank()}] " if world_size() > 1 else ""


@dataclass
class ProcessGroup:
    """This process's place in the run and the device it computes on.

    ``owns`` is True when :func:`join` created the group (then :meth:`close` destroys it).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"
    owns: bool = False

    @property
    def enabled(self) -> bool:
        """True with more than one process."""
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """True on rank 0 (the process that writes shared files)."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank (no-op alone)."""
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def gather(self, value: _T) -> list[_T]:
        """Every rank's ``value`` (picklable, small), in rank order."""
        if not self.enabled:
            return [value]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out

    def close(self) -> None:
        """Destroy the process group if :func:`join` created it."""
        if self.owns:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self.owns = False


def join(device: str = "auto", *, gpu_backend: bool = True,
         timeout_hours: float = 2.0) -> ProcessGroup:
    """Join the ``torchrun`` process group (if any) and choose this rank's device.

    ``gpu_backend`` selects NCCL when the ranks compute on GPUs (training all-reduces
    gradients there); False keeps gloo, enough for barriers and small objects
    (evaluation). ``device`` is ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    """
    from .maps.runtime import resolve_device

    if world_size() <= 1:
        return ProcessGroup(device=resolve_device(device))
    import torch
    import torch.distributed as dist

    use_cuda = torch.cuda.is_available() and device in ("auto", "cuda", "")
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if use_cuda and gpu_backend else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(hours=timeout_hours))
        owns = True
    global_rank = dist.get_rank()
    local = int(os.environ.get("LOCAL_RANK", str(global_rank)))
    if use_cuda:
        local_device = local % torch.cuda.device_count()
        torch.cuda.set_device(local_device)
        chosen = f"cuda:{local_device}"
    else:
        chosen = "cpu" if device in ("auto", "") else device
    return ProcessGroup(global_rank, dist.get_world_size(), local, chosen, owns)
