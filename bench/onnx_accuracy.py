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
SUPERB_local). Only runs of the tasks and seeds asked for are in the table.
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--students", nargs="+", required=True, help="student dirs (PyTorch checkpoints)")
    p.add_argument("--tasks", nargs="+", default=["all"], help="tasks (default: all ten)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--data-root", default=None, help="default: run_benchmark.py's (data/mini_superb)")
    p.add_argument("--profile", default="demo", help="task config profile (default demo)")
    p.add_argument("--results-dir", type=Path, default=Path("results/onnx_accuracy"))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--fold", type=int, default=None, help="ER fold (default: the task config's)")
    args = p.parse_args(argv)

    import run_benchmark
    from benchmark.report import build_report
    from benchmark.results import safe_name
    from tasks.registry import list_tasks

    tasks = list_tasks() if args.tasks == ["all"] else args.tasks
    students = [Path(s) for s in args.students]
    pairs = [(s, export_pair(s, args.results_dir / "onnx")) for s in students]
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
