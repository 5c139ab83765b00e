"""The ``run_benchmark.py`` command line: benchmark an upstream on SUPERB tasks, render the report, manage the cache.

    python run_benchmark.py --upstream fbank --task ks [--profile demo] [-o optimizer.lr=1e-3] ...
    python run_benchmark.py --upstream fbank --task ks ic sid     # several tasks (or `all`) in one process
    python run_benchmark.py report [--results-dir results]
    python run_benchmark.py cache [--cache-dir DIR] [--remove HASH ...] [--unused-days N]
    python run_benchmark.py --upstream fbank --task custom --manifest data.csv   # your own labelled data
    python run_benchmark.py predict --run RUN_DIR audio1.wav audio2.flac [--list files.txt] [--out preds.jsonl]
    python run_benchmark.py evaluate --run RUN_DIR [--split test]   # re-score the best checkpoint, no training
    torchrun --nproc_per_node N run_benchmark.py --upstream ... --task ks   # one head, DDP over N processes

A run trains the task head on frozen (cached) upstream features, picks the best checkpoint on dev, evaluates
dev and test, and appends one row per metric and split to ``<results-dir>/results.csv``.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

DEFAULT_DATA_ROOT = Path("data/mini_superb")


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train and evaluate SUPERB tasks on an upstream "
                                "(`run_benchmark.py report` renders the comparison table).")
    p.add_argument("--upstream", required=True, help="registered upstream name or checkpoint path")
    p.add_argument("--upstream-ckpt", "-k", type=Path, default=None, metavar="PATH",
                   help="weights of a pretrained name (hubert_base, hubert_large, distilhubert, ...), as s3prl's -k: "
                   "fairseq .pt, s3prl .ckpt, Hugging Face dir or ours")
    p.add_argument("--random-init", action="store_true",
                   help="benchmark a pretrained name's architecture with random weights (recorded in the results)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow a full unpickle of a legacy checkpoint you trust (it can run code stored in it)")
    p.add_argument("--task", required=True, nargs="+",
                   help="task names (pr, ks, ic, sid, er, asr, ...) run one after another, or `all`")
    p.add_argument("--manifest", type=Path, default=None,
                   help="--task custom: a labelled .csv/.jsonl manifest or lhotse CutSet (see docs/MANIFEST.md)")
    p.add_argument("--data-root", type=Path, default=None,
                   help=f"folder holding the datasets under their official names (default {DEFAULT_DATA_ROOT})")
    p.add_argument("--results-dir", type=Path, default=Path("results"))
    p.add_argument("--max-steps", type=int, default=None, help="override train.max_steps")
    p.add_argument("--resume", action="store_true", help="continue the unfinished run with the same config")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted config override, e.g. -o optimizer.lr=1e-3 (repeatable; unknown keys are errors)")
    p.add_argument("--profile", default=None, help="named override set from the task YAML (e.g. demo)")
    p.add_argument("--layer", type=int, default=None, help="use hidden state K instead of the weighted sum")
    p.add_argument("--upstream-trainable", action="store_true",
                   help="fine-tune the upstream too (no cache; its own lr and warm-up: -o upstream_optimizer.lr=...; "
                   "CNN front end frozen; saved to the run folder)")
    p.add_argument("--unfreeze-front-end", action="store_true",
                   help="with --upstream-trainable: train the CNN front end too (upstream_optimizer.freeze_front_end)")
    p.add_argument("--lr-sweep", action="store_true", help="choose the learning rate on dev over sweep.grid")
    p.add_argument("--cache", choices=["auto", "on", "off"], default="auto",
                   help="feature cache policy: auto caches when the size estimate fits the budget, else runs on live "
                   "features; on refuses up front when it does not fit; off never writes it (default auto)")
    p.add_argument("--no-cache", dest="cache", action="store_const", const="off", help="the same as --cache off")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="feature cache (default $DISTILSUPERB_CACHE/features, else "
                   "$XDG_CACHE_HOME/distilsuperb/features, i.e. ~/.cache/distilsuperb/features)")
    p.add_argument("--cache-max-gb", type=float, default=None,
                   help="the most one run may write to the cache, in GB (default: 80%% of the cache disk's free space)")
    p.add_argument("--feature-ram-gb", type=float, default=2.0,
                   help="cached features kept in RAM during a run, so each file is read once (default 2; 0: none)")
    p.add_argument("--fold", type=int, default=None, help="cross-validation fold (ER: test session 1..5)")
    p.add_argument("--skip-bad-audio", action="store_true",
                   help="skip unreadable audio files (listed in the run folder) instead of stopping")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                   help="autocast dtype of the training steps: bf16 on CPU/GPU, fp16 on GPU only (GradScaler)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 is much faster on a busy shared machine)")
    return p


def _report_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run_benchmark.py report",
                                description="Table (markdown + CSV) and plots of every upstream x task result.")
    p.add_argument("--results-dir", type=Path, default=Path("results"))
    p.add_argument("--out-dir", type=Path, default=None, help="where to write report files (default: results dir)")
    p.add_argument("--reference", type=Path, default=None, help="SUPERB reference YAML "
                   "(default configs/superb_reference.yaml)")
    p.add_argument("--teacher", default=None, help="the teacher row of the distillation picture (default "
                   "hubert_mini when present)")
    p.add_argument("--students", nargs="+", default=None, help="its student rows (default: every row but the "
                   "teacher and the FBANK rows)")
    return p


def _cache_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run_benchmark.py cache",
                                description="List the feature cache's upstream folders (size, last use), or delete "
                                "some. Nothing is evicted automatically: every retrained upstream adds a folder.")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="default $DISTILSUPERB_CACHE/features, else $XDG_CACHE_HOME/distilsuperb/features, i.e. "
                   "~/.cache/distilsuperb/features")
    p.add_argument("--remove", nargs="+", default=[], metavar="HASH", help="delete these folders (hash prefixes)")
    p.add_argument("--unused-days", type=float, default=None,
                   help="delete folders no run used for N days (folders without a recorded use count as unused)")
    return p


def _finished_run_parser(command: str, description: str) -> argparse.ArgumentParser:
    """The parser of a subcommand that works on a finished run folder (``predict``, ``evaluate``): ``--run`` and
    ``--device``."""
    p = argparse.ArgumentParser(prog=f"run_benchmark.py {command}", description=description)
    p.add_argument("--run", type=Path, required=True, help="run folder results/<upstream>/<task>/<run-id>")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    return p


def _predict_parser() -> argparse.ArgumentParser:
    p = _finished_run_parser("predict", "Apply a finished run's upstream (hash-checked) and best head to audio "
                             "files: class + probabilities, transcript, slots, ASV embedding, SD RTTM.")
    p.add_argument("audio", nargs="*", type=Path, help="audio files (any format soundfile reads; resampled to 16 kHz)")
    p.add_argument("--list", type=Path, default=None, help="text file with one audio path per line")
    p.add_argument("--out", type=Path, default=None,
                   help="write one JSON line per file here (default: print a summary line per file only)")
    return p


def _evaluate_parser() -> argparse.ArgumentParser:
    p = _finished_run_parser("evaluate", "Re-score a finished run's best checkpoint on a split without training; "
                             "appends results rows whose run_id ends in ':reeval-<time>'.")
    p.add_argument("--split", nargs="+", default=["test"], choices=["dev", "test"])
    return p


def predict_command(argv: list[str]) -> int:
    import json

    from benchmark.apply import format_prediction, load_run, predict_files
    from common.io import atomic_write_text

    args = _predict_parser().parse_args(argv)
    paths = list(args.audio)
    if args.list is not None:
        if not args.list.is_file():
            raise FileNotFoundError(f"--list {args.list}: file not found")
        base = args.list.parent
        paths += [Path(x.strip()) if Path(x.strip()).is_absolute() else base / x.strip()
                  for x in args.list.read_text().splitlines() if x.strip()]
    if not paths:
        raise ValueError("predict: no audio files (give paths, or --list files.txt)")
    run = load_run(args.run, args.device)
    records = predict_files(run, paths)
    for rec in records:
        print(format_prediction(rec))
    if args.out is not None:
        atomic_write_text(args.out, "".join(json.dumps(r, default=str) + "\n" for r in records))
        print(f"written: {args.out}")
    return 0


def evaluate_command(argv: list[str]) -> int:
    from benchmark.apply import evaluate_run

    args = _evaluate_parser().parse_args(argv)
    out = evaluate_run(args.run, args.split, args.device)
    for split, metrics in out["metrics"].items():
        print(f"re-evaluation {split}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    print(f"rows appended to {out['results_csv']}; predictions in {out['folder']}")
    return 0


def cache_command(argv: list[str]) -> int:
    from benchmark.cache import default_cache_dir, list_cache, remove_cache_entries

    args = _cache_parser().parse_args(argv)
    root = args.cache_dir or default_cache_dir()
    if args.remove or args.unused_days is not None:
        removed = remove_cache_entries(root, args.remove, args.unused_days)  # ValueError: one line, exit 2 (run_main)
        for e in removed:
            print(f"removed {e.path.name}  {e.bytes / 1e9:.2f} GB  {e.upstream}")
        print(f"freed {sum(e.bytes for e in removed) / 1e9:.2f} GB")
        return 0
    entries = list_cache(root)
    print(f"{root}: {len(entries)} upstreams, {sum(e.bytes for e in entries) / 1e9:.2f} GB")
    orphans = sum(e.orphans_removed for e in entries)
    if orphans:
        print(f"  removed {orphans} orphan .tmp files left by killed runs")
    kept = sum(e.tmp_kept for e in entries)
    if kept:
        print(f"  left {kept} .tmp files younger than an hour alone (a run may be writing them; they are removed "
              f"once older)")
    for e in entries:
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_used)) if e.last_used else "unknown"
        print(f"  {e.path.name}  {e.bytes / 1e9:7.2f} GB  {e.files:6d} files  last used {used}  {e.upstream}")
    return 0


def report_command(argv: list[str]) -> int:
    from benchmark.report import build_report

    args = _report_parser().parse_args(argv)
    report = build_report(args.results_dir, args.out_dir, args.reference, args.teacher, args.students)
    print(report.markdown)
    print(f"\nwritten: {', '.join(str(p) for p in report.files)}")
    return 0


def _run_one(options) -> int:
    """One task's run (``options``: a ``benchmark.engine.RunOptions``) and its metrics printed; exit code 0."""
    from benchmark.engine import run_task
    from common import distributed

    summary = run_task(options)
    if not distributed.is_main():
        return 0
    for split, metrics in summary["metrics"].items():
        print(f"{options.task} {split}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    if summary.get("skipped_audio"):
        print(f"{options.task}: skipped {summary['skipped_audio']} bad audio file(s), listed in "
              f"{Path(summary['run_dir']) / 'skipped_audio.json'}")
    print(f"run folder: {summary['run_dir']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import upstream  # noqa: F401  (registers the built-in upstreams)

    from common.cli import run_main

    if argv[:1] == ["cache"]:
        return run_main(lambda: cache_command(argv[1:]))
    if argv[:1] == ["report"]:
        return run_main(lambda: report_command(argv[1:]))
    if argv[:1] == ["predict"]:
        return run_main(lambda: predict_command(argv[1:]))
    if argv[:1] == ["evaluate"]:
        return run_main(lambda: evaluate_command(argv[1:]))

    args = _run_parser().parse_args(argv)
    from benchmark.engine import RunOptions
    from tasks.registry import list_tasks

    tasks = list_tasks() if args.task == ["all"] else args.task
    manifest_override = []
    if args.manifest is not None:
        if "custom" not in tasks:
            print("error: --manifest is for --task custom", file=sys.stderr)
            return 2
        manifest_override = [f"data.manifest={args.manifest.resolve()}"]
    data_root = args.data_root or DEFAULT_DATA_ROOT
    if args.data_root is None and not DEFAULT_DATA_ROOT.is_dir() and tasks != ["custom"]:
        print(f"error: no --data-root given and {DEFAULT_DATA_ROOT} does not exist; build the offline corpus with "
              f"`python -m synth --out {DEFAULT_DATA_ROOT} --size tiny` or pass --data-root", file=sys.stderr)
        return 2
    if args.unfreeze_front_end:
        if not args.upstream_trainable:
            print("error: --unfreeze-front-end only applies with --upstream-trainable", file=sys.stderr)
            return 2
        args.override.append("upstream_optimizer.freeze_front_end=false")
    from common.precision import PrecisionError, check_precision

    try:
        import torch

        check_precision(args.precision, args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except PrecisionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.fold is not None and len(tasks) > 1:
        print(f"error: --fold selects a fold of one task (er); got --task {' '.join(args.task)}", file=sys.stderr)
        return 2
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    import torch

    from common import distributed

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if distributed.launched_world() > 1:  # under torchrun: join the process group; one device per rank
        device = str(distributed.setup_distributed(device).device)
    failed = []
    for task in tasks:  # one process for several tasks: torch is imported once, and one bad task stops no other
        options = RunOptions(upstream=args.upstream, task=task, data_root=data_root, results_dir=args.results_dir,
                             seed=args.seed, max_steps=args.max_steps, resume=args.resume, layer=args.layer,
                             upstream_trainable=args.upstream_trainable, lr_sweep=args.lr_sweep,
                             cache=args.cache, cache_dir=args.cache_dir, cache_max_gb=args.cache_max_gb,
                             skip_bad_audio=args.skip_bad_audio, profile=args.profile,
                             overrides=args.override + (manifest_override if task == "custom" else []),
                             fold=args.fold, feature_ram_gb=args.feature_ram_gb, precision=args.precision,
                             upstream_ckpt=args.upstream_ckpt, random_init=args.random_init,
                             trust_pickle=args.trust_pickle)
        options.device = device
        if run_main(lambda: _run_one(options)) != 0:  # a user error: one line, the next task still runs
            failed.append(task)
    if failed and len(tasks) > 1:
        print(f"error: {len(failed)} of {len(tasks)} tasks failed: {' '.join(failed)}", file=sys.stderr)
    distributed.teardown()
    return 2 if failed else 0

