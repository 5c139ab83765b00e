"""Distil a teacher upstream into a small student (DistilHuBERT and the variants of Wang et al. 2022).

    python run_distill.py --config configs/distill/distilhubert.yaml --teacher hubert_mini \
        --data data/mini_superb/unlabeled --output results/distill/run1 [--max-steps N] [--resume] [-o key=value]

Export a student or teacher for on-device use (ONNX, onnxruntime; ``--quantize dynamic`` also writes FILE.int8.onnx,
``--quantize fp16`` FILE.fp16.onnx)::

    python run_distill.py export --student DIR --format onnx --out FILE.onnx [--quantize dynamic]

Multi-process: ``torchrun --nproc_per_node N run_distill.py ...`` (gloo on CPU, nccl on GPUs); the global batch
(``run.data.max_batch_seconds``) stays the same whatever N. ``--output`` then loads with ``build_upstream(DIR)``.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from common.cli import resume_command, run_main
from training.cli import run_parser

if TYPE_CHECKING:
    from distill.objectives import DistillObjective
    from upstream.hubert import HubertUpstream

# torch and everything built on it are imported inside the functions, after the arguments are parsed: --help and
# argument errors are answered at once instead of after seconds of imports

log = logging.getLogger("run_distill")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = run_parser(__doc__, "configs/distill/<recipe>.yaml", "output directory (student checkpoint, logs, plots)",
                   "continue from OUTPUT/checkpoints/last.pt",
                   epilog="other commands:\n  run_distill.py export   write a student or teacher as ONNX (fp32, "
                   "int8, fp16); run_distill.py export --help")
    p.add_argument("--teacher", required=True, help="registered upstream name or checkpoint path")
    p.add_argument("--teacher-ckpt", default=None, metavar="PATH",
                   help="weights of a pretrained teacher name (e.g. --teacher hubert_base --teacher-ckpt "
                   "hubert_base_ls960.pt)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow a full unpickle of a legacy teacher checkpoint you trust (it can run code in it)")
    return p.parse_args(argv)


def _export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run_distill.py export", allow_abbrev=False,
                                description="Export a HuBERT-family upstream (student or teacher) to ONNX.")
    p.add_argument("--student", required=True,
                   help="upstream to export: a distilled student dir, any checkpoint path or a registered name")
    p.add_argument("--format", required=True, choices=["onnx"], help="export format")
    p.add_argument("--out", required=True, help="output .onnx file (fp32)")
    p.add_argument("--quantize", choices=["dynamic", "fp16"], default=None,
                   help="also write FILE.int8.onnx (onnxruntime dynamic int8 of the weight matmuls) or "
                        "FILE.fp16.onnx (fp16 weights, for GPUs)")
    return p


def export_command(argv: list[str]) -> int:
    """``run_distill.py export``: bad input (unknown upstream, unsupported family, unwritable --out) prints one line
    naming it and returns 2; nothing half-written is left at ``--out``."""
    args = _export_parser().parse_args(argv)
    from benchmark.upstream_stats import count_macs_per_second
    from upstream import build_upstream
    from upstream.hubert import HubertUpstream
    from upstream.onnx_export import (UnsupportedModelError, convert_fp16, export_onnx, quantize_dynamic_int8,
                                      quantized_path)

    out = Path(args.out)
    if out.suffix != ".onnx":
        print(f"error: --out {out}: expected a file name ending in .onnx", file=sys.stderr)
        return 2
    if out.is_dir():
        print(f"error: --out {out}: is a directory; expected a .onnx file name", file=sys.stderr)
        return 2
    try:
        upstream = build_upstream(args.student)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: --student {args.student}: {e}", file=sys.stderr)
        return 2
    if not isinstance(upstream, HubertUpstream):
        print(f"error: --student {args.student}: {type(upstream).__name__} is not a HuBERT-family upstream; only "
              "HuBERT teachers and students (CNN or Fbank front end) export to ONNX", file=sys.stderr)
        return 2
    upstream.eval().requires_grad_(False)  # frozen, as the benchmark runs it (FlopCounterMode needs this too)
    try:
        written = [export_onnx(upstream, out, source=str(args.student),
                               macs_per_second=count_macs_per_second(upstream))]
        if args.quantize == "dynamic":
            written.append(quantize_dynamic_int8(out, quantized_path(out, "dynamic")))
        elif args.quantize == "fp16":
            written.append(convert_fp16(out, quantized_path(out, "fp16")))
    except UnsupportedModelError as e:
        print(f"error: --student {args.student}: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: --out {out}: cannot write ({e.strerror or e})", file=sys.stderr)
        return 2
    for path in written:
        print(f"written: {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


def export_student(objective: DistillObjective) -> HubertUpstream:
    """The trained student as an upstream. The DistilHuBERT paper drops the prediction heads; s3prl's distiller
    upstream (what SUPERB ran) appends their outputs to hidden_states. ``objective.export_heads`` does the latter."""
    import dataclasses

    from upstream.hubert import HubertModel, HubertUpstream

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
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["export"]:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        return run_main(lambda: export_command(argv[1:]))
    args = parse_args(argv)
    return run_main(lambda: _run(args), resume_hint="the output folder keeps its last checkpoint "
                    f"(every run.checkpoint_every steps); continue with: {resume_command('run_distill.py', argv)}")


def _run(args: argparse.Namespace) -> int:
    import torch
    import yaml

    from common.config import to_dict
    from common.io import atomic_write_text
    from common.run_record import check_run_folder
    from distill.config import DistillConfig
    from distill.objectives import DistillObjective
    from training.cli import start_run
    from training.config import SAFE_ON_RESUME
    from training.data import SkipReport, collect_audio_files, scan_audio
    from training.loop import Trainer
    from upstream import build_upstream
    from upstream.base import count_parameters
    from upstream.checkpoints import WEIGHTS_FILE, save_upstream

    cfg, env = start_run(DistillConfig, args)
    out = Path(args.output)
    torch.manual_seed(cfg.run.seed)  # same student init on every rank (DDP also broadcasts rank 0's weights)

    run_info = {"config": to_dict(cfg), "teacher": str(args.teacher), "data": [str(d) for d in args.data],
                "world_size": env.world}
    # compared with the folder's run before anything is written: a refused command changes nothing there
    progress = (out / "checkpoints" / "last.pt").exists() or (out / WEIGHTS_FILE).exists()
    changed = check_run_folder(out / "distill_config.yaml", run_info, args.resume, progress, SAFE_ON_RESUME,
                               "distillation")
    if changed:
        log.info("resuming with changed settings (they apply from here on): %s", ", ".join(changed))
    teacher = build_upstream(args.teacher, checkpoint=args.teacher_ckpt, trust_pickle=args.trust_pickle)
    objective = DistillObjective(cfg, teacher)  # checks teacher/student shapes before any training
    report = SkipReport()
    entries = scan_audio(collect_audio_files(args.data), cfg.run.data, report)
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
