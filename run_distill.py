"""Distil a teacher upstream into a small student (DistilHuBERT and the variants of Wang et al. 2022).

    python run_distill.py --config configs/distill/distilhubert.yaml --teacher hubert_mini \
        --data data/mini_superb/unlabeled --output results/distill/run1 [--max-steps N] [--resume] [-o key=value]

Multi-process: ``torchrun --nproc_per_node N run_distill.py ...`` (gloo on CPU, nccl on GPUs); the global batch
(``run.data.max_batch_seconds``) stays the same whatever N. ``--output`` then loads with ``build_upstream(DIR)``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

import torch
import yaml

from common.cli import run_main
from common.config import to_dict
from common.io import atomic_write_text
from distill.config import DistillConfig
from distill.objectives import DistillObjective
from training.cli import run_parser, start_run
from training.data import SkipReport, collect_audio_files, scan_audio
from training.loop import Trainer
from upstream import build_upstream
from upstream.base import count_parameters
from upstream.checkpoints import save_upstream
from upstream.hubert import HubertModel, HubertUpstream

log = logging.getLogger("run_distill")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = run_parser(__doc__, "configs/distill/<recipe>.yaml", "output directory (student checkpoint, logs, plots)",
                   "continue from OUTPUT/checkpoints/last.pt")
    p.add_argument("--teacher", required=True, help="registered upstream name or checkpoint path")
    return p.parse_args(argv)


def export_student(objective: DistillObjective) -> HubertUpstream:
    """The trained student as an upstream. The DistilHuBERT paper drops the prediction heads; s3prl's distiller
    upstream (what SUPERB ran) appends their outputs to hidden_states. ``objective.export_heads`` does the latter."""
    student = objective.student
    if student.pred_heads is None:
        return HubertUpstream(student)
    if objective.cfg.objective.export_heads:
        return HubertUpstream(student, include_pred_heads=True)
    bare = HubertModel(dataclasses.replace(student.cfg, pred_layer_ids=()))
    state = {k: v for k, v in student.state_dict().items() if not k.startswith("pred_heads.")}
    bare.load_state_dict(state)
    return HubertUpstream(bare)


def main(argv: list[str] | None = None) -> int:
    """Exit code 0, or 2 with one ``error:`` line for bad input and unwritable output (common/cli.py)."""
    args = parse_args(argv)
    return run_main(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    cfg, env = start_run(DistillConfig, args)
    out = Path(args.output)
    torch.manual_seed(cfg.run.seed)  # same student init on every rank (DDP also broadcasts rank 0's weights)

    teacher = build_upstream(args.teacher)
    objective = DistillObjective(cfg, teacher)  # checks teacher/student shapes before any training
    report = SkipReport()
    entries = scan_audio(collect_audio_files(args.data), cfg.run.data, report)
    run_info = {"config": to_dict(cfg), "teacher": str(args.teacher), "data": [str(d) for d in args.data],
                "world_size": env.world}
    if env.is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "distill_config.yaml", yaml.safe_dump(run_info, sort_keys=False))
        log.info("teacher %s: %.2fM params; student: %.2fM params (with heads), %d training files",
                 args.teacher, count_parameters(teacher) / 1e6, count_parameters(objective.student) / 1e6,
                 len(entries))
    trainer = Trainer(objective, cfg.run, entries, out, report, env, run_info)
    hook = objective.frontend_only_hook() if cfg.student.frontend_warmup_steps > 0 else None
    started = time.time()
    history = trainer.fit(resume=args.resume, after_backward=hook)
    if env.is_main:
        student = export_student(objective)
        save_upstream(student, out)
        summary = {"steps": trainer.step, "final_loss": history[-1]["loss"] if history else None,
                   "seconds": round(time.time() - started, 1),
                   "teacher_params": count_parameters(teacher), "student_params": count_parameters(student),
                   "skipped_files": len(report.skipped)}
        atomic_write_text(out / "distill_summary.json", json.dumps(summary, indent=2) + "\n")
        log.info("student written to %s: %s", out, summary)
    if env.world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
