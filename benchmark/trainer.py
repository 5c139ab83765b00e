"""The one training loop shared by every task: seconds-sized batches, gradient accumulation, clipping, eval on dev
every N updates, best-on-dev checkpoint (dev only, never test), early stopping, and exact resume.

Checkpoints (atomic writes, in ``ckpt_dir``): ``last.pt`` holds everything needed to continue — model (and upstream
when trainable), optimizer, scheduler, step, sampler position (epoch, batch index), RNG states, best dev metric —
and ``best.pt`` the weights of the best dev evaluation so far.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from tqdm import tqdm

from common.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from tasks.base import Task

from .batching import epoch_batches

if TYPE_CHECKING:
    from .engine import RunContext

log = logging.getLogger(__name__)


@dataclass
class TrainOutcome:
    best_dev: float | None  # the best dev value of the primary metric (None: never evaluated)
    steps: int              # optimiser updates done


def build_optimizer(params: list[nn.Parameter], task: Task, lr: float) -> tuple[torch.optim.Optimizer, object]:
    cfg = task.config.optimizer
    cls = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
    opt = cls(params, lr=lr, weight_decay=cfg.weight_decay)
    warmup = max(0, cfg.warmup_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    return opt, sched


def _trainable_modules(ctx: RunContext, model: nn.Module) -> dict[str, nn.Module]:
    mods = {"model": model}
    if ctx.options.upstream_trainable:
        mods["upstream"] = ctx.upstream
    return mods


def train(ctx: RunContext, task: Task, model: nn.Module, lr: float, max_steps: int, ckpt_dir: Path,
          resume: bool = False) -> TrainOutcome:
    """Train ``model`` (weighted sum + head) on ``task``'s train split; returns with the best-on-dev weights loaded."""
    cfg = task.config
    seed = ctx.options.seed
    mods = _trainable_modules(ctx, model)
    params = [p for m in mods.values() for p in m.parameters() if p.requires_grad]
    opt, sched = build_optimizer(params, task, lr)
    crop_rng = torch.Generator().manual_seed(seed + 17)
    state = {"step": 0, "epoch": 0, "batch": 0, "best": None, "best_step": 0, "bad_evals": 0, "dev": {}}
    last, best = ckpt_dir / "last.pt", ckpt_dir / "best.pt"
    if resume and last.is_file():
        saved = load_checkpoint(last)  # weights_only: a planted last.pt never runs code
        for k, m in mods.items():
            m.load_state_dict(saved[k])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        state = saved["state"]
        crop_rng.set_state(saved["rng"]["crop"])
        set_rng_state(saved["rng"])
        log.info("resumed from %s at step %d", last, state["step"])
    elif not resume:
        torch.manual_seed(seed)

    train_utts = ctx.load_split("train")
    durations = [u.duration for u in train_utts]
    crop_s = cfg.batch.train_crop_seconds
    eff_durations = [min(d, crop_s) if crop_s > 0 else d for d in durations]
    weights = task.train_sampling_weights(train_utts)
    source = ctx.train_source()
    accum = max(1, cfg.batch.grad_accum)

    def checkpoint() -> None:
        rng = {"crop": crop_rng.get_state(), **rng_state()}  # tensors and ints: loads with weights_only=True
        save_checkpoint({**{k: m.state_dict() for k, m in mods.items()}, "optimizer": opt.state_dict(),
               "scheduler": sched.state_dict(), "state": state, "rng": rng, "lr": lr}, last)

    model.train()
    bar = tqdm(total=max_steps, initial=state["step"], desc=f"{task.name} train", unit="step", leave=False)
    stop = state["step"] >= max_steps
    while not stop:
        batches = epoch_batches(eff_durations, cfg.batch.max_seconds, seed, state["epoch"], weights)
        while state["batch"] < len(batches) and not stop:
            opt.zero_grad(set_to_none=True)
            loss_sum = 0.0
            for _ in range(accum):
                if state["batch"] >= len(batches):
                    break
                idx = batches[state["batch"]]
                state["batch"] += 1
                utts = [train_utts[i] for i in idx]
                crops = None
                if crop_s > 0:
                    crops = [(float(torch.rand(1, generator=crop_rng)) * (u.duration - crop_s), crop_s)
                             if u.duration > crop_s else None for u in utts]
                fb = source.batch(utts, crops)
                out = model(fb.hidden, fb.lengths)
                loss = task.loss(out, fb.lengths, fb.utts) / accum
                loss.backward()
                loss_sum += loss.detach().item()
            if cfg.optimizer.grad_clip > 0:
                nn.utils.clip_grad_norm_(params, cfg.optimizer.grad_clip)
            opt.step()
            sched.step()
            state["step"] += 1
            step = state["step"]
            bar.update(1)
            if step % cfg.train.log_every == 0 or step == 1:
                ctx.log_scalar("train/loss", loss_sum, step)
                bar.set_postfix(loss=f"{loss_sum:.3f}")
            if step % cfg.train.eval_every == 0 or step >= max_steps:
                dev = ctx.evaluate_split(model, "dev")
                model.train()
                for name, value in dev.items():
                    ctx.log_scalar(f"dev/{name}", value, step)
                value = dev[task.primary_metric]
                if task.better(value, state["best"]):
                    state.update(best=value, best_step=step, bad_evals=0, dev=dev)
                    save_checkpoint({k: m.state_dict() for k, m in mods.items()}, best)
                else:
                    state["bad_evals"] += 1
                if step >= max_steps or (cfg.train.patience and state["bad_evals"] >= cfg.train.patience):
                    stop = True
                checkpoint()
            if step >= max_steps:
                stop = True
        if state["batch"] >= len(batches):
            state["epoch"] += 1
            state["batch"] = 0
    bar.close()
    if best.is_file():
        saved = load_checkpoint(best)
        for k, m in mods.items():
            m.load_state_dict(saved[k])
    model.eval()
    return TrainOutcome(state["best"], state["step"])
