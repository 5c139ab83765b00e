"""The one training loop for distillation and teacher pretraining: DDP, resume, TensorBoard, tqdm, loss plot.

An *objective* is an ``nn.Module`` whose ``forward(batch)`` returns a dict with
``loss_sum`` (scalar: the loss summed over this rank's valid frames), ``frames`` (scalar: how many) and ``parts``
(name → summed per-frame loss, for logging). Frozen modules (teachers) live under the attribute ``teacher`` and are
left out of checkpoints. The loop normalises by the *global* frame count, so 1 process and N processes at the same
global batch compute the same gradients (up to float rounding).

Checkpoints (``checkpoints/last.pt``) are written atomically every ``checkpoint_every`` steps with the model,
optimizer, scheduler, step, data position (epoch, batch) and RNG states; ``resume=True`` continues from there and
ends with the same weights as an uninterrupted run (the random state is also re-seeded from (seed, step, rank) at
every step, so masking and dropout do not depend on where a run was interrupted).
"""
from __future__ import annotations

import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from common.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from common.distributed import DistEnv, all_reduce
from common.io import atomic_write_text
from common.precision import autocast, grad_scaler

from .config import RunConfig
from .data import SecondsBatchSampler, SkipReport, UnlabelledAudio, epoch_loader

log = logging.getLogger(__name__)

SCHEDULE_EVERY = 20  # steps between re-estimates of the step time (fit_schedule_to_time)


def _seed_step(seed: int, step: int, rank: int) -> None:
    s = (seed * 1_000_003 + step * 101 + rank) % (2 ** 31)
    torch.manual_seed(s)
    np.random.seed(s)
    random.seed(s)


def lr_factor(step: int, horizon: int, warmup_ratio: float) -> float:
    """The LR multiplier at optimiser ``step`` (0-based) of a schedule ending at ``horizon``: linear warm-up over
    ``ceil(horizon * warmup_ratio)`` steps (at least 1), then linear decay to 0 at ``horizon``."""
    warmup = max(1, int(math.ceil(horizon * warmup_ratio)))
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (horizon - step) / max(1, horizon - warmup))


def trainable_state(objective: nn.Module) -> dict[str, torch.Tensor]:
    """The objective's state without the frozen teacher."""
    return {k: v for k, v in objective.state_dict().items() if not k.startswith("teacher.")}


class Trainer:
    """Runs ``objective`` over unlabelled audio; see the module docstring."""

    def __init__(self, objective: nn.Module, cfg: RunConfig, entries: list[tuple[Path, int]], out_dir: str | Path,
                 skip_report: SkipReport, env: DistEnv, run_config_dict: dict | None = None, label: str = "train"):
        self.cfg, self.env, self.out = cfg, env, Path(out_dir)
        self.label = label  # the progress bar's name: which phase of a run this is
        self.objective = objective.to(env.device)
        self.skips = skip_report
        self.dataset = UnlabelledAudio(entries, cfg.data, cfg.seed)
        self.sampler = SecondsBatchSampler(self.dataset, cfg.data, cfg.seed, env.rank, env.world)
        params = [p for p in self.objective.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the objective has no trainable parameters")
        o = cfg.optim
        self.optimizer = torch.optim.AdamW(params, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)
        self.horizon = cfg.max_steps  # the step the LR schedule ends at (fewer with fit_schedule_to_time)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, self.horizon, o.warmup_ratio))
        self.scaler = grad_scaler(cfg.precision, env.device)
        self.model: nn.Module = self.objective
        if env.world > 1:
            self.model = nn.parallel.DistributedDataParallel(
                self.objective, device_ids=[env.device.index] if env.device.type == "cuda" else None)
        self.step, self.epoch, self.batch_pos = 0, 0, 0
        self.history: list[dict] = []
        self.run_config_dict = run_config_dict or {}
        self.ckpt_path = self.out / "checkpoints" / "last.pt"

    # ---------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> None:
        if not self.env.is_main:
            return
        state = {"step": self.step, "epoch": self.epoch, "batch": self.batch_pos,
                 "model": trainable_state(self.objective), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                 "horizon": self.horizon, "rng": rng_state(),
                 "history": self.history,
                 "config": self.run_config_dict}
        save_checkpoint(state, self.ckpt_path)

    def load_checkpoint(self) -> bool:
        """Restore from ``checkpoints/last.pt`` when present; returns whether it was."""
        if not self.ckpt_path.is_file():
            return False
        state = load_checkpoint(self.ckpt_path, self.env.device)  # weights_only: a planted file never runs code
        missing, unexpected = self.objective.load_state_dict(state["model"], strict=False)
        bad = [k for k in missing if not k.startswith("teacher.")] + list(unexpected)
        if bad:
            raise ValueError(f"{self.ckpt_path}: checkpoint does not match this config (keys {bad[:5]}...)")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):  # fp16 on GPU: the loss scale carries over
            self.scaler.load_state_dict(state["scaler"])
        # a fitted horizon carries over (this session re-fits it to its own minutes); otherwise, as for a resume
        # with a larger --max-steps, the schedule runs to this config's max_steps
        saved = int(state.get("horizon", self.cfg.max_steps))
        self._set_horizon(min(saved, self.cfg.max_steps) if self.cfg.fit_schedule_to_time else self.cfg.max_steps)
        set_rng_state(state["rng"])
        self.step, self.epoch, self.batch_pos = state["step"], state["epoch"], state["batch"]
        self.history = list(state["history"])
        log.info("resumed from %s at step %d", self.ckpt_path, self.step)
        return True

    # ---------------------------------------------------------------- the loop
    def fit(self, resume: bool = False, after_backward: Callable[[int], None] | None = None) -> list[dict]:
        """Train to ``max_steps``; returns the loss history (one dict per step).

        ``after_backward(step)`` runs between backward and the optimizer step (e.g. to drop the gradients of parts
        that stay frozen for the first steps).
        """
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        if resume:
            self.load_checkpoint()
        elif self.ckpt_path.exists():
            raise FileExistsError(f"{self.ckpt_path} exists: pass --resume to continue it, or use a new --output")
        writer = SummaryWriter(str(self.out / "tensorboard")) if self.env.is_main else None
        bar = tqdm(total=self.cfg.max_steps, initial=self.step, disable=not self.env.is_main, desc=self.label,
                   dynamic_ncols=True)
        self.objective.train()
        started = time.time()
        timing = None  # (step, time) after this session's first step, which is slower than the rest
        while self.step < self.horizon:
            loader = epoch_loader(self.dataset, self.sampler, self.epoch, self.batch_pos, self.cfg.data.num_workers)
            for batch in loader:
                self.batch_pos += 1
                for index, reason in batch["failed"]:
                    self.skips.add(self.dataset.entries[index][0], f"failed while training: {reason}")
                record = self._train_step(batch, after_backward)
                if record is None:
                    continue
                self.history.append(record)
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.4f}")
                if writer is not None and (self.step % self.cfg.log_every == 0 or self.step == 1):
                    for k, v in record.items():
                        if k != "step":
                            writer.add_scalar(f"train/{k}", v, self.step)
                out_of_time = self._out_of_time(started)
                if out_of_time:
                    log.warning("run.max_minutes=%g reached: stopping at step %d of %d", self.cfg.max_minutes,
                                self.step, self.horizon)
                if timing is None:
                    timing = (self.step, time.time())
                elif self.cfg.fit_schedule_to_time and self.cfg.max_minutes > 0 and \
                        (self.step - timing[0]) % SCHEDULE_EVERY == 0:
                    self._fit_schedule(started, timing)
                    bar.total = self.horizon
                done = self.step >= self.horizon
                if self.step % self.cfg.checkpoint_every == 0 or done or out_of_time:
                    self.save_checkpoint()
                if done or out_of_time:
                    break
            else:
                self.epoch, self.batch_pos = self.epoch + 1, 0
                continue
            break
        bar.close()
        if writer is not None:
            writer.close()
        if self.env.is_main:
            self.skips.write(self.out)
            self._write_history(time.time() - started)
        return self.history

    def _fit_schedule(self, started: float, timing: tuple[int, float]) -> None:
        """Move the schedule's end to the last step that fits before ``max_minutes`` at the measured pace (never
        past ``max_steps``); decided on rank 0 and shared."""
        first_step, first_time = timing
        now = time.time()
        per_step = max(1e-6, (now - first_time) / max(1, self.step - first_step))
        left = 60 * self.cfg.max_minutes - (now - started)
        horizon = torch.tensor(float(min(self.cfg.max_steps, self.step + max(1, int(left / per_step)))),
                               device=self.env.device)
        if self.env.world > 1:
            dist.broadcast(horizon, src=0)
        if abs(int(horizon.item()) - self.horizon) > 0.02 * self.horizon:  # not every small drift of the pace
            log.info("schedule fitted to run.max_minutes=%g: LR reaches zero at step %d (%.2f s per step)",
                     self.cfg.max_minutes, int(horizon.item()), per_step)
        self._set_horizon(int(horizon.item()))

    def _set_horizon(self, horizon: int) -> None:
        self.horizon = horizon  # the scheduler's lr_factor reads it from the next step() on
        # set this step's LR now too, so that it follows the new curve
        factor = lr_factor(self.scheduler.last_epoch, horizon, self.cfg.optim.warmup_ratio)
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
            group["lr"] = base * factor

    def _out_of_time(self, started: float) -> bool:
        """Whether ``max_minutes`` has passed (decided on rank 0 and shared, so all ranks stop together)."""
        if self.cfg.max_minutes <= 0:
            return False
        flag = torch.tensor(float(time.time() - started > 60 * self.cfg.max_minutes), device=self.env.device)
        if self.env.world > 1:
            dist.broadcast(flag, src=0)
        return bool(flag.item())

    def _train_step(self, batch: dict, after_backward: Callable[[int], None] | None) -> dict | None:
        env = self.env
        has_data = torch.tensor(float(batch["wav"].shape[0] > 0), device=env.device)
        if all_reduce(has_data, dist.ReduceOp.MIN).item() == 0:
            return None  # every rank must skip together, or DDP would wait forever
        _seed_step(self.cfg.seed, self.step, env.rank)
        batch = {k: v.to(env.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        with autocast(self.cfg.precision, env.device):
            out = self.model(batch)
        global_frames = all_reduce(out["frames"].detach().float().clone()).clamp(min=1)
        # DDP averages gradients over ranks, hence "* world": the result is d(global sum / global frames)
        loss = out["loss_sum"].float() / global_frames * env.world
        self.scaler.scale(loss).backward()
        if after_backward is not None:
            after_backward(self.step)
        self.scaler.unscale_(self.optimizer)  # clip the true gradients (a no-op unless fp16 on GPU)
        grad_norm = torch.nn.utils.clip_grad_norm_(
            [p for p in self.objective.parameters() if p.requires_grad], self.cfg.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        sums = torch.stack([out["loss_sum"].detach().float()] + [v.detach().float() for v in out["parts"].values()])
        sums = all_reduce(sums) / global_frames
        record = {"step": self.step, "loss": float(sums[0]), "lr": self.scheduler.get_last_lr()[0],
                  "grad_norm": float(grad_norm)}
        record.update({name: float(v) for name, v in zip(out["parts"], sums[1:])})
        return record

    def _write_history(self, seconds: float) -> None:
        from .plots import plot_losses

        lines = "".join(json.dumps(r) + "\n" for r in self.history)
        atomic_write_text(self.out / "loss_history.jsonl", lines)
        plot_losses(self.history, self.out / "loss.png")
        log.info("trained %d steps in %.1f s", self.step, seconds)
