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
from typing import Iterator

import torch
from torch import nn
from tqdm import tqdm

from common import distributed
from common.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from common.precision import autocast, grad_scaler
from tasks.base import Task

from .batching import epoch_batches
from .evaluation import Evaluator
from .features import BatchRequest
from .run_data import FeatureSources, RunSplits

log = logging.getLogger(__name__)


@dataclass
class TrainOutcome:
    best_dev: float | None  # the best dev value of the selection metric (None: never evaluated)
    steps: int              # optimiser updates done


class ScalarLog:
    """TensorBoard scalars of one run in ``run_dir/tensorboard``: rank 0 alone writes, and the writer opens with the
    first scalar."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.is_main = distributed.is_main()
        self._writer = None

    def add(self, name: str, value: float, step: int) -> None:
        if not self.is_main:
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        self._writer.add_scalar(name, value, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _warmup(steps: int):
    steps = max(0, steps)
    return lambda s: min(1.0, (s + 1) / steps) if steps else 1.0


def build_optimizer(params: list[nn.Parameter], task: Task, lr: float,
                    upstream_params: list[nn.Parameter] | None = None) -> tuple[torch.optim.Optimizer, object]:
    """The head's optimizer (``optimizer``: lr, linear warm-up then constant); with ``upstream_params`` (fine-tuning)
    a second parameter group with the upstream's own lr, weight decay and warm-up (``upstream_optimizer``)."""
    cfg = task.config.optimizer
    cls = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
    groups = [{"params": params}]
    lambdas = [_warmup(cfg.warmup_steps)]
    if upstream_params:
        up = task.config.upstream_optimizer
        groups.append({"params": upstream_params, "lr": up.lr, "weight_decay": up.weight_decay})
        lambdas.append(_warmup(up.warmup_steps))
    opt = cls(groups, lr=lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambdas if len(lambdas) > 1 else lambdas[0])
    return opt, sched


def _as_float(out):
    """Floating tensors of a head's output (a tensor, or tuples/lists/dicts of them) in fp32, so task losses (CTC,
    softmax cross-entropy, PIT BCE) run in full precision after a bf16/fp16 forward."""
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, (list, tuple)):
        return type(out)(_as_float(o) for o in out)
    if isinstance(out, dict):
        return {k: _as_float(v) for k, v in out.items()}
    return out


def train(task: Task, model: nn.Module, splits: RunSplits, sources: FeatureSources, evaluator: Evaluator,
          scalars: ScalarLog, lr: float, max_steps: int, ckpt_dir: Path, *, seed: int, precision: str, device: str,
          upstream: nn.Module | None = None, resume: bool = False) -> TrainOutcome:
    """Train ``model`` (weighted sum + head) on ``task``'s train split; returns with the best-on-dev weights loaded.

    ``upstream``: a fine-tuned upstream (``--upstream-trainable``) trained, checkpointed and restored with ``model``
    (features then come from it live, with gradients); ``precision``: autocast of the training steps."""
    cfg = task.config
    mods = {"model": model} if upstream is None else {"model": model, "upstream": upstream}
    params = [p for m in mods.values() for p in m.parameters() if p.requires_grad]
    upstream_params = [p for p in mods["upstream"].parameters() if p.requires_grad] if "upstream" in mods else []
    opt, sched = build_optimizer([p for p in model.parameters() if p.requires_grad], task, lr, upstream_params)
    scaler = grad_scaler(precision, device)  # enabled for fp16 on GPU only
    crop_rng = torch.Generator().manual_seed(seed + 17)
    state = {"step": 0, "epoch": 0, "batch": 0, "best": None, "best_step": 0, "bad_evals": 0, "dev": {}}
    last, best = ckpt_dir / "last.pt", ckpt_dir / "best.pt"
    if resume and last.is_file():
        saved = load_checkpoint(last)  # weights_only: a planted last.pt never runs code
        for k, m in mods.items():
            m.load_state_dict(saved[k])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        if saved.get("scaler"):  # fp16 on GPU: the loss scale carries over
            scaler.load_state_dict(saved["scaler"])
        state = saved["state"]
        crop_rng.set_state(saved["rng"]["crop"])
        set_rng_state(saved["rng"])
        log.info("resumed from %s at step %d", last, state["step"])
    else:  # a fresh run, or --resume with no checkpoint yet: both start from the same seeded state, bit for bit
        torch.manual_seed(seed)

    train_utts = splits.load("train")
    durations = [u.duration for u in train_utts]
    crop_s = cfg.batch.train_crop_seconds
    eff_durations = [min(d, crop_s) if crop_s > 0 else d for d in durations]
    weights = task.train_sampling_weights(train_utts)
    source = sources.for_run(trainable=upstream is not None)
    accum = max(1, cfg.batch.grad_accum)
    world, main = distributed.world(), distributed.is_main()
    # under torchrun: DDP averages the gradients of the ranks' shares of each global batch (see benchmark/engine.py)
    step_model = model if world == 1 else nn.parallel.DistributedDataParallel(
        model, device_ids=[torch.device(device).index] if device.startswith("cuda") else None,
        find_unused_parameters=True)

    def checkpoint() -> None:
        if not main:
            return
        rng = {"crop": consumed_crop, **rng_state()}  # tensors and ints: loads with weights_only=True
        save_checkpoint({**{k: m.state_dict() for k, m in mods.items()}, "optimizer": opt.state_dict(),
               "scheduler": sched.state_dict(), "scaler": scaler.state_dict(), "state": state, "rng": rng,
               "lr": lr}, last)

    for m in mods.values():  # a fine-tuned upstream trains too (its dropout active)
        m.train()
    bar = tqdm(total=max_steps, initial=state["step"], desc=f"{task.name} train", unit="step", leave=False,
               disable=not main)
    stop = state["step"] >= max_steps
    consumed_crop = crop_rng.get_state()  # the crop state after the last batch trained on (the loader draws ahead)

    def requests(batches: list[list[int]]) -> Iterator[BatchRequest]:
        """This epoch's remaining batches as this rank trains on them, crops drawn in batch order."""
        for pos in range(state["batch"], len(batches)):
            utts = [train_utts[i] for i in batches[pos]]
            crops = None
            if crop_s > 0:  # drawn for the whole global batch on every rank: the same crops as 1 process
                crops = [(float(torch.rand(1, generator=crop_rng)) * (u.duration - crop_s), crop_s)
                         if u.duration > crop_s else None for u in utts]
            share = 1.0
            if world > 1:
                # this rank's utterances; its loss (a mean over them) weighs by its share of the batch, so DDP's
                # average over ranks is the mean over the whole batch. A rank left without any runs one
                # utterance at weight 0 (DDP needs every rank in every backward).
                mine = list(range(distributed.rank(), len(utts), world))
                share = len(mine) * world / len(utts)
                mine = mine or [0]
                utts = [utts[i] for i in mine]
                crops = [crops[i] for i in mine] if crops else None
            yield BatchRequest(utts, crops, (pos, share, crop_rng.get_state()))

    while not stop:
        batches = epoch_batches(eff_durations, cfg.batch.max_seconds, seed, state["epoch"], weights)
        stream = source.stream(requests(batches))
        while state["batch"] < len(batches) and not stop:
            opt.zero_grad(set_to_none=True)
            loss_sum = 0.0
            for _ in range(accum):
                if state["batch"] >= len(batches):
                    break
                with autocast(precision, device):
                    request, fb = next(stream)
                    out = step_model(fb.hidden, fb.lengths)
                pos, share, consumed_crop = request.tag
                state["batch"] = pos + 1
                loss = task.loss(_as_float(out), fb.lengths, fb.utts) * (share / accum)
                scaler.scale(loss).backward()
                loss_sum += float(distributed.all_reduce(loss.detach().float().clone())) / world
            scaler.unscale_(opt)  # clip the true gradients
            clip = cfg.optimizer.grad_clip if cfg.optimizer.grad_clip > 0 else float("inf")
            grad_norm = nn.utils.clip_grad_norm_(params, clip)
            if scaler.is_enabled() or torch.isfinite(grad_norm):  # the fp16 scaler skips non-finite steps itself
                scaler.step(opt)
                scaler.update()
            else:  # s3prl skips the update when the norm is NaN (downstream/runner.py:350-351); inf too here
                log.warning("step %d: gradient norm is %s, update skipped", state["step"] + 1, float(grad_norm))
            sched.step()
            state["step"] += 1
            step = state["step"]
            bar.update(1)
            if step % cfg.train.log_every == 0 or step == 1:
                scalars.add("train/loss", loss_sum, step)
                bar.set_postfix(loss=f"{loss_sum:.3f}")
            if step % cfg.train.eval_every == 0 or step >= max_steps:
                dev = evaluator.evaluate_split(model, "dev")
                for m in mods.values():
                    m.train()
                for name, value in dev.items():
                    scalars.add(f"dev/{name}", value, step)
                value = dev[task.selection()[0]]
                if task.better(value, state["best"]):
                    state.update(best=value, best_step=step, bad_evals=0, dev=dev)
                    if main:
                        save_checkpoint({k: m.state_dict() for k, m in mods.items()}, best)
                else:
                    state["bad_evals"] += 1
                if step >= max_steps or (cfg.train.patience and state["bad_evals"] >= cfg.train.patience):
                    stop = True
                checkpoint()
            if step >= max_steps:
                stop = True
        stream.close()  # stops the loader's workers
        if state["batch"] >= len(batches):
            state["epoch"] += 1
            state["batch"] = 0
    bar.close()
    distributed.barrier()  # rank 0 has written best.pt
    if best.is_file():
        saved = load_checkpoint(best)
        for k, m in mods.items():
            m.load_state_dict(saved[k])
    for m in mods.values():
        m.eval()
    return TrainOutcome(state["best"], state["step"])
