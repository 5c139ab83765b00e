"""bf16 vs fp32 training-step time (a distillation step and a task-head step) and 2-process vs 1-process DDP
throughput, side by side in one run.

    python bench/precision_ddp.py [--device cpu|cuda] [--repeats 5] [--steps 6]

1. Distillation: hubert_mini's architecture (random weights) teaches its 2-layer DistilHuBERT student; one step =
   teacher forward + student forward/backward + AdamW, under ``common.precision.autocast``.
2. Task head: the ASR head (projector + 2-layer BiLSTM, demo size 256, or SUPERB's 1024 with ``--full-head``) on
   random features of hubert_mini's width; one step = forward, CTC loss, backward, Adam.
   Each precision's steps are interleaved with the other's; the fastest of ``--repeats`` rounds is reported (load
   from other processes only adds time).
3. DDP: the same head, the same global batch, trained by 1 process and by 2 gloo processes (one thread each, each
   rank half the batch, gradients all-reduced as ``torchrun run_benchmark.py`` does); utterances per second.
On a shared machine the numbers move from run to run; compare the ratios printed in one run.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.timing import add_timing_options, interleaved_times, set_threads  # noqa: E402
from common.audio import SAMPLE_RATE  # noqa: E402
from common.config import load_config  # noqa: E402
from common.precision import autocast  # noqa: E402
from distill.config import DistillConfig  # noqa: E402
from distill.objectives import DistillObjective  # noqa: E402
from downstream.ctc_heads import BiLSTMCTCHead, ctc_loss  # noqa: E402
from upstream.builtin import HUBERT_MINI, random_upstream  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def distill_step_fn(device: str, batch: int, seconds: float):
    torch.manual_seed(0)
    teacher = random_upstream(HUBERT_MINI).to(device)
    cfg = load_config(DistillConfig, ROOT / "configs" / "distill" / "distilhubert_mini.yaml")
    objective = DistillObjective(cfg, teacher).to(device).train()
    opt = torch.optim.AdamW([p for p in objective.parameters() if p.requires_grad], lr=1e-4)
    g = torch.Generator().manual_seed(1)
    data = {"wav": (torch.randn(batch, int(seconds * SAMPLE_RATE), generator=g) * 0.1).to(device),
            "wav_lengths": torch.full((batch,), int(seconds * SAMPLE_RATE), device=device)}

    def step(precision: str) -> None:
        with autocast(precision, device):
            out = objective(data)
        (out["loss_sum"].float() / out["frames"]).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def head_batch(batch: int, frames: int, dim: int, vocab: int, seed: int = 2):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(batch, frames, dim, generator=g)
    lengths = torch.full((batch,), frames)
    targets = [torch.randint(1, vocab, (frames // 4,), generator=g).tolist() for _ in range(batch)]
    return feats, lengths, targets


def head_step_fn(device: str, batch: int, frames: int, hidden: int):
    torch.manual_seed(0)
    dim, vocab = HUBERT_MINI.embed_dim, 30
    head = BiLSTMCTCHead(dim, vocab, hidden, hidden, 2, 0.2).to(device).train()
    opt = torch.optim.Adam(head.parameters(), lr=1e-4)
    feats, lengths, targets = head_batch(batch, frames, dim, vocab)
    feats = feats.to(device)

    def step(precision: str) -> None:
        with autocast(precision, device):
            out = head(feats, lengths)
        ctc_loss(out.float(), lengths, targets).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def fastest(step, precisions: list[str], repeats: int, steps: int) -> dict[str, float]:
    def run(p: str) -> None:
        for _ in range(steps):
            step(p)

    # warm-up: oneDNN picks its kernels on the first calls
    times = interleaved_times({p: partial(run, p) for p in precisions}, repeats, warm_up=True)
    return {p: min(t) / steps for p, t in times.items()}


def _ddp_worker(rank: int, world: int, port: int, batch: int, frames: int, hidden: int, steps: int, out) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    dim, vocab = HUBERT_MINI.embed_dim, 30
    head = BiLSTMCTCHead(dim, vocab, hidden, hidden, 2, 0.2).train()
    model = head if world == 1 else torch.nn.parallel.DistributedDataParallel(head)
    opt = torch.optim.Adam(head.parameters(), lr=1e-4)
    feats, lengths, targets = head_batch(batch, frames, dim, vocab)
    mine = list(range(rank, batch, world))
    feats, lengths, targets = feats[mine], lengths[mine], [targets[i] for i in mine]

    def step() -> None:
        ctc_loss(model(feats, lengths), lengths, targets).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up
    if world > 1:
        dist.barrier()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if world > 1:
        dist.barrier()
    if rank == 0:
        out.put(time.perf_counter() - start)
    if world > 1:
        dist.destroy_process_group()


def ddp_throughput(world: int, batch: int, frames: int, hidden: int, steps: int) -> float:
    """Utterances per second over ``steps`` steps of a ``batch``-utterance global batch on ``world`` processes."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    procs = [ctx.Process(target=_ddp_worker, args=(r, world, port, batch, frames, hidden, steps, queue))
             for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    if any(p.exitcode != 0 for p in procs):
        raise RuntimeError(f"a DDP worker failed: exit codes {[p.exitcode for p in procs]}")
    return batch * steps / queue.get()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add_timing_options(p, repeats=5, threads=1)  # --threads: torch threads for the precision timings
    p.add_argument("--steps", type=int, default=3, help="steps per timed round")
    p.add_argument("--full-head", action="store_true", help="SUPERB's 1024-wide ASR head instead of 256")
    args = p.parse_args(argv)
    set_threads(args.threads)
    hidden = 1024 if args.full_head else 256
    precisions = ["fp32", "bf16"] + (["fp16"] if args.device.startswith("cuda") else [])
    print(f"device {args.device}, {torch.get_num_threads()} thread(s); fastest of {args.repeats} rounds of "
          f"{args.steps} steps")

    d = fastest(distill_step_fn(args.device, batch=4, seconds=2.0), precisions, args.repeats, args.steps)
    h = fastest(head_step_fn(args.device, batch=8, frames=250, hidden=hidden), precisions, args.repeats, args.steps)
    print(f"\n{'step (ms)':<44}" + "".join(f"{p:>10}" for p in precisions) + "   speed-up vs fp32")
    for name, t in (("distillation hubert_mini -> 2 layers, 4 x 2 s", d),
                    (f"ASR head BiLSTM {hidden}, 8 x 250 frames", h)):
        ratios = "  ".join(f"{p} {t['fp32'] / t[p]:.2f}x" for p in precisions[1:])
        print(f"{name:<44}" + "".join(f"{1000 * t[p]:>10.1f}" for p in precisions) + f"   {ratios}")

    one = ddp_throughput(1, batch=8, frames=250, hidden=hidden, steps=args.steps * 2)
    two = ddp_throughput(2, batch=8, frames=250, hidden=hidden, steps=args.steps * 2)
    print(f"\nDDP, ASR head BiLSTM {hidden}, global batch 8 x 250 frames, 1 thread per process (gloo):")
    print(f"  1 process : {one:8.1f} utt/s")
    print(f"  2 processes: {two:8.1f} utt/s   ({two / one:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
