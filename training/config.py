"""Typed config of a training run (the ``run:`` section of ``configs/distill/*.yaml`` and ``configs/pretrain/*.yaml``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .data import DataConfig


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then linear decay (s3prl's distiller runner: lr 2e-4, 7% warm-up, clip 5)."""

    lr: float = 2.0e-4
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1.0e-6
    weight_decay: float = 1.0e-6
    warmup_ratio: float = 0.07
    grad_clip: float = 5.0


@dataclass
class RunConfig:
    max_steps: int = 200000
    seed: int = 0
    checkpoint_every: int = 2500
    log_every: int = 50
    device: str = "auto"   # "auto" = cuda when available (one GPU per rank), else cpu
    threads: int = 0       # torch CPU threads per process; 0 = leave torch's default
    max_minutes: float = 0.0  # wall-clock cap (0 = none): stop early, checkpointed, e.g. to keep a demo on budget
    # with max_minutes: shorten the LR schedule to the steps that fit in the cap (re-estimated every
    # SCHEDULE_EVERY steps from the measured step time), so a run cut by its cap still decays its LR to zero
    # instead of stopping at a high LR mid-schedule
    fit_schedule_to_time: bool = False
    # autocast dtype of the forward pass (common/precision.py): bf16 on CPU or GPU, fp16 on GPU only (GradScaler);
    # weights, optimizer and checkpoints stay fp32. --precision sets it.
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    # TF32 tensor cores for fp32 matmuls/convolutions on CUDA (common/precision.py set_tf32); false: exact fp32
    tf32: bool = True
    # global batches per optimizer step (gradients summed, each batch's per-frame loss weighing 1/grad_accum):
    # a larger effective batch than memory holds; the step count, LR schedule and checkpoints count optimizer steps
    grad_accum: int = 1
    # torch.distributed timeout for joining and for every collective (torchrun runs): the longest a rank may wait
    # for the others, e.g. while rank 0 alone fits pretraining's k-means (torch's nccl default, 10 min, is too short)
    dist_timeout_minutes: float = 120.0
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


# settings a --resume may change (they take effect in the resumed run); any other change is refused
# (common/run_record.py). max_steps: the LR schedule is re-drawn to the new end (Trainer.load_checkpoint).
SAFE_ON_RESUME = frozenset(f"config.run.{k}" for k in (
    "max_steps", "max_minutes", "checkpoint_every", "log_every", "threads", "device", "data.num_workers",
    "dist_timeout_minutes", "tf32"))
