"""Multi-process benchmark runs under ``torchrun`` (one task head trained with DDP).

``torchrun --nproc_per_node N run_benchmark.py ...``: every rank builds the same task, upstream and batches; the
feature cache is filled with each rank extracting its share of the missing utterances; each global training batch
(``batch.max_seconds``, the same whatever N) is split across ranks and the per-rank losses are weighted by their
share of the batch, so the averaged gradient equals the 1-process gradient of the whole batch; rank 0 alone writes
checkpoints, predictions, TensorBoard logs and results rows. Dev/test evaluation runs whole on every rank (the same
weights give the same metric), so only training and extraction are split. gloo on CPUs, nccl on GPUs (rank r uses
``cuda:LOCAL_RANK``).
"""
from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def setup(device: str) -> str:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1); returns the device this rank uses."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return device
    use_cuda = device.startswith("cuda")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return device


def teardown() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
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


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def shard(items: list, of_rank: int | None = None) -> list:
    """This rank's share of ``items`` (every ``world``-th item from position ``rank``)."""
    return items[(rank() if of_rank is None else of_rank)::world()]
