"""Multi-process runs under ``torchrun``, for the benchmark engine and the training loop of distillation and
pretraining: joining the process group (gloo on CPUs, nccl on GPUs, rank r on ``cuda:LOCAL_RANK``) and the
collectives they use. In a single process every collective is the identity or a no-op, so callers need no branch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class DistEnv:
    """This process's place in a run: its rank, the number of ranks and the device it computes on."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def uses_cuda(device: str) -> bool:
    """Whether ``device`` (``"auto"``: cuda when available, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``) means a GPU."""
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


class DeviceError(ValueError):
    """A device this machine cannot compute on (a ValueError: the command lines print it in one line, exit 2)."""


def check_device(device: str, where: str = "--device") -> None:
    """Raise :class:`DeviceError` naming ``where`` unless ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``, or
    any torch device string) is usable here: torch must parse it, and a CUDA device needs a visible GPU (before
    this check, ``--device cuda`` on a machine without one ended in torch's driver traceback)."""
    if device == "auto":
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise DeviceError(f"{where} {device!r}: not a device; expected cpu, cuda or cuda:N") from None
    if dev.type != "cuda":
        return
    if not torch.cuda.is_available():
        raise DeviceError(f"{where} {device}: no CUDA GPU is usable on this machine (no GPU, no driver, or a "
                          "CPU-only torch build); use cpu (or leave {where} unset: cuda when available)")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise DeviceError(f"{where} {device}: this machine has {torch.cuda.device_count()} GPU(s), "
                          f"cuda:0..cuda:{torch.cuda.device_count() - 1}")


def launched_world() -> int:
    """The number of processes torchrun started (``WORLD_SIZE``; 1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup_distributed(device: str = "auto") -> DistEnv:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1): nccl for GPUs, gloo on CPU. A GPU
    process computes on ``cuda:LOCAL_RANK`` (one GPU per rank)."""
    world, rank = launched_world(), int(os.environ.get("RANK", "0"))
    use_cuda = uses_cuda(device)
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return DistEnv(rank, world, dev)


def teardown() -> None:
    """Leave the process group (after every rank arrives), if this process joined one."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0: the process that writes files (checkpoints, results, logs)."""
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (any picklable value)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order."""
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce(value: torch.Tensor, op: dist.ReduceOp | None = None) -> torch.Tensor:
    """``value`` reduced in place over the ranks (``op``: a ``torch.distributed.ReduceOp``, default SUM)."""
    if dist.is_initialized():
        dist.all_reduce(value, op=op or dist.ReduceOp.SUM)
    return value


def shard(items: list, of_rank: int | None = None) -> list:
    """This rank's share of ``items`` (every ``world``-th item from position ``rank``)."""
    return items[(rank() if of_rank is None else of_rank)::world()]
