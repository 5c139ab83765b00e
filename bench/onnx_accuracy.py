"""Accuracy cost of int8: each student in PyTorch (fp32) vs its int8 ONNX export, on the benchmark, in one report.

    python bench/onnx_accuracy.py --students results/demo/distilhubert_mini_cnn results/demo/distilhubert_mini_fbank \
        --tasks all --seeds 0 1 2 --profile demo                # the full measurement (10 tasks x 3 seeds)
    python bench/onnx_accuracy.py --students DIR --tasks ks ic --seeds 0 --data-root TINY_CORPUS   # a subset

Each student is exported with ``run_distill.py export``'s code (``--quantize dynamic``) into
``RESULTS/onnx/<name>.onnx`` + ``<name>.int8.onnx``; then ``fbank`` and ``fbank_no_cmvn`` (the SUPERB_local zero
anchor), every student dir and every int8 file run every task and seed through ``run_benchmark.py`` into
``RESULTS`` (finished runs are skipped on a rerun: their ``DONE`` marker). The report table (``RESULTS/REPORT.md``)
then has one row per upstream, and this script prints per task the fp32 metric, the int8 metric and their
difference, and SUPERB_local of both with their ratio (issue 20's goal: int8 keeps >= 97% of the fp32 student's
SUPERB_local). Only runs of the tasks and seeds asked for are in the table. Before the tasks it prints the int8
file's relative hidden-state error on ``--feature-utts`` files of the corpus's ``unlabeled/`` pool.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def export_pair(student: Path, folder: Path) -> Path:
    """fp32 + int8 ONNX of ``student`` under ``folder`` (reused when present); returns the int8 file."""
    import run_distill
    from upstream.onnx_export import quantized_path

    fp32 = folder / f"{student.name}.onnx"
    int8 = quantized_path(fp32, "dynamic")
    if not int8.is_file():
        code = run_distill.main(["export", "--student", str(student), "--format", "onnx", "--out", str(fp32),
                                 "--quantize", "dynamic"])
        if code != 0:
            raise SystemExit(code)
    return int8


def feature_error(student: Path, int8: Path, audio_dir: Path, count: int) -> list[float]:
    """Relative error ||int8 - fp32|| / ||fp32|| of every hidden state (all valid frames of ``count`` audio files
    under ``audio_dir``, one utterance at a time): the int8 difference at the features, before any task."""
    import torch

    from common.audio import load_audio
    from upstream import build_upstream

    files = sorted(p for p in audio_dir.rglob("*") if p.suffix in (".wav", ".flac"))[:count]
    fp, q = build_upstream(student).eval(), build_upstream(int8)
    num, den = None, None
    for f in files:
        wav = load_audio(f)
        with torch.inference_mode():
            a, b = fp([wav]).hidden_states, q([wav]).hidden_states
        d = [float(((x - y) ** 2).sum()) for x, y in zip(a, b)]
        n = [float((x ** 2).sum()) for x in a]
        num = d if num is None else [u + v for u, v in zip(num, d)]
        den = n if den is None else [u + v for u, v in zip(den, n)]
    return [(u / v) ** 0.5 for u, v in zip(num or [], den or [])]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--students", nargs="+", required=True, help="student dirs (PyTorch checkpoints)")
    p.add_argument("--tasks", nargs="+", default=["all"], help="tasks (default: all ten)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--data-root", default=None, help="default: run_benchmark.py's (data/mini_superb)")
    p.add_argument("--profile", default="demo", help="task config profile (default demo)")
    p.add_argument("--results-dir", type=Path, default=Path("results/onnx_accuracy"))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--fold", type=int, default=None, help="ER fold (default: the task config's)")
    p.add_argument("--feature-utts", type=int, default=20,
                   help="audio files of DATA_ROOT/unlabeled for the hidden-state error (0: skip)")
    args = p.parse_args(argv)

    import run_benchmark
    from benchmark.cli import DEFAULT_DATA_ROOT
    from benchmark.report import build_report
    from benchmark.results import safe_name
    from tasks.registry import list_tasks

    tasks = list_tasks() if args.tasks == ["all"] else args.tasks
    students = [Path(s) for s in args.students]
    pairs = [(s, export_pair(s, args.results_dir / "onnx")) for s in students]
    data_root = Path(args.data_root) if args.data_root else DEFAULT_DATA_ROOT
    if args.feature_utts > 0 and (data_root / "unlabeled").is_dir():
        for student, int8 in pairs:
            errors = feature_error(student, int8, data_root / "unlabeled", args.feature_utts)
            print(f"{student.name}: int8 relative hidden-state error over {args.feature_utts} files of "
                  f"{data_root / 'unlabeled'}: " + " ".join(f"{e:.4f}" for e in errors))
    upstreams = ["fbank", "fbank_no_cmvn"] + [str(u) for pair in pairs for u in pair]
    common = ["--results-dir", str(args.results_dir), "--profile", args.profile, "--resume"]
    common += ["--data-root", args.data_root] if args.data_root else []
    common += ["--threads", str(args.threads)] if args.threads else []
    failed = []
    for upstream in upstreams:
        for task in tasks:
            for seed in args.seeds:
                extra = ["--fold", str(args.fold)] if (task == "er" and args.fold) else []
                code = run_benchmark.main(["--upstream", upstream, "--task", task, "--seed", str(seed)] + common
                                          + extra)
                if code != 0:
                    failed.append(f"{safe_name(upstream)}/{task}/s{seed}")
    report = build_report(args.results_dir, args.results_dir, None)
    table = report.table.set_index("upstream")
    print(f"\nint8 ONNX vs PyTorch fp32, {len(tasks)} task(s) x {len(args.seeds)} seed(s) (mean over seeds), "
          f"profile {args.profile}:")
    for student, int8 in pairs:
        fp, q = safe_name(str(student)), safe_name(str(int8))
        if fp not in table.index or q not in table.index:
            print(f"{fp}: missing rows (failed runs: {failed})")
            continue
        print(f"\n{'column':32s} {fp:>24s} {q:>24s} {'int8 - fp32':>12s}")
        columns = [c for c in table.columns if any(c.startswith(f"{t} ") for t in tasks)]
        for c in columns + ["SUPERB_local"]:
            a, b = table.at[fp, c], table.at[q, c]
            try:
                print(f"{c:32s} {float(a):24.4f} {float(b):24.4f} {float(b) - float(a):12.4f}")
            except (TypeError, ValueError):
                print(f"{c:32s} {str(a):>24s} {str(b):>24s}")
        a, b = float(table.at[fp, "SUPERB_local"]), float(table.at[q, "SUPERB_local"])
        kept = f"{100 * b / a:.1f}%" if a > 0 else "undefined (fp32 SUPERB_local <= 0)"
        print(f"int8 keeps {kept} of the fp32 student's SUPERB_local (goal >= 97%)")
    if failed:
        print(f"\nfailed runs: {' '.join(failed)}", file=sys.stderr)
    print(f"\nreport: {args.results_dir / 'REPORT.md'}")
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
