"""What pretraining compute buys: teacher checkpoints benchmarked on the demo profiles, as a table and a PNG.

    python scripts/teacher_curve.py --out results/teacher_curve --data-root data/mini_superb \
        --point iter1_u0250=OUTPUT/snapshots/a.pt:9.6 --point iter1_u3000=OUTPUT/iter1/checkpoints/last.pt:82 \
        --point iter2=OUTPUT:170 [--seeds 0] [--tasks all] [--anchors results/demo/benchmark] [--only export|bench|plot]

Each ``--point NAME=SOURCE:CPU_MINUTES`` is one teacher: SOURCE is a ``run_pretrain.py`` checkpoint
(``iter*/checkpoints/last.pt`` or a copy of one) or an upstream dir (a finished run's ``--output``); CPU_MINUTES
is the pretraining process's CPU time when it was saved (``ps -o cputime``), the x axis. Three stages, each
skipping what is done, so an interrupted run resumes:

1. export — each checkpoint becomes an upstream dir ``OUT/upstreams/NAME`` (pretrain/export.py);
2. bench — ``run_benchmark.py`` on every task with the demo profiles, one run at a time on ``--threads`` threads,
   results in ``OUT/benchmark`` (a marker per finished run in ``OUT/benchmark/.done``);
3. plot — the report table of the points plus the FBANK anchor rows (``fbank``, ``fbank_no_cmvn``; from
   ``OUT/benchmark`` or, with ``--anchors DIR``, from another results dir such as the demo's, so they are not
   benchmarked twice), written as ``OUT/teacher_curve.md`` (metric per task, SUPERB_local) and
   ``OUT/teacher_curve.png`` (SUPERB_local and each task's metric against CPU minutes).

Bad input (a malformed --point, a missing source, a checkpoint that is not a pretraining one): one line naming it,
exit code 2.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.cli import run_main  # noqa: E402
from common.io import atomic_write_text  # noqa: E402

ANCHORS = ("fbank", "fbank_no_cmvn")


class UsageError(ValueError):
    """A bad flag: the message names it (common/cli.py prints it as one line, exit code 2)."""


def parse_point(text: str) -> tuple[str, Path, float]:
    """``NAME=SOURCE:CPU_MINUTES`` -> (name, source, minutes); UsageError naming the flag when malformed."""
    try:
        name, rest = text.split("=", 1)
        source, minutes = rest.rsplit(":", 1)
        value = float(minutes)
    except ValueError:
        raise UsageError(f"--point {text!r}: expected NAME=SOURCE:CPU_MINUTES, e.g. "
                         "iter1_u1000=out/iter1/checkpoints/last.pt:30.6") from None
    if not name or "/" in name or value < 0:
        raise UsageError(f"--point {text!r}: NAME must be a plain non-empty name and CPU_MINUTES >= 0")
    if not Path(source).exists():
        raise UsageError(f"--point {text!r}: {source}: no such checkpoint or upstream dir")
    return name, Path(source), value


def export(points: list[tuple[str, Path, float]], out: Path) -> dict[str, Path]:
    """name -> upstream dir; each point is saved once into ``out/upstreams/NAME``, upstream dirs too: the benchmark
    labels its rows by the folder's name, so a point must live in a folder called NAME to be found by the plot."""
    from pretrain.export import model_from_checkpoint
    from upstream.checkpoints import save_upstream
    from upstream.hubert import HubertUpstream
    from upstream.registry import build_upstream

    dirs = {}
    for name, source, _ in points:
        target = out / "upstreams" / name
        if not (target / "upstream.yaml").is_file():
            if source.is_dir():
                upstream, step = build_upstream(str(source)), None
            else:
                model, step = model_from_checkpoint(source)
                upstream = HubertUpstream(model)
            save_upstream(upstream, target)
            atomic_write_text(target / "SOURCE.json", json.dumps({"source": str(source), "step": step}) + "\n")
            print(f"  exported {source}" + ("" if step is None else f" (update {step})") + f" -> {target}",
                  flush=True)
        dirs[name] = target
    return dirs


def bench(upstreams: dict[str, str], tasks: list[str], seeds: list[int], data_root: Path, out: Path,
          threads: int) -> list[str]:
    """Run every (upstream, task, seed) not yet done; returns the failed runs' names."""
    bench_dir = out / "benchmark"
    done = bench_dir / ".done"
    done.mkdir(parents=True, exist_ok=True)
    failed = []
    for name, upstream in upstreams.items():
        for task in tasks:
            for seed in seeds:
                run_name = f"{name}.{task}.s{seed}"
                if (done / run_name).is_file():
                    continue
                log = bench_dir / "logs" / f"{run_name}.log"
                log.parent.mkdir(parents=True, exist_ok=True)
                cmd = [sys.executable, str(ROOT / "run_benchmark.py"), "--upstream", upstream, "--task", task,
                       "--data-root", str(data_root), "--results-dir", str(bench_dir), "--profile", "demo",
                       "--skip-bad-audio", "--seed", str(seed), "--cache-dir", str(bench_dir / "feature_cache"),
                       "--threads", str(threads)]
                start = time.time()
                with open(log, "w") as fh:
                    code = subprocess.call(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
                print(f"  {run_name:32s} {'ok' if code == 0 else f'FAILED (exit {code})'} in "
                      f"{time.time() - start:.0f} s", flush=True)
                if code == 0:
                    (done / run_name).write_text(" ".join(cmd) + "\n")
                else:
                    failed.append(run_name)
    return failed


def curve_table(out: Path, minutes: dict[str, float], anchors: Path | None, seeds: list[int]):
    """The report table (benchmark/report.py) of the points and the FBANK anchor rows, with ``cpu_minutes``; anchor
    rows from ``anchors`` count only the curve's ``seeds`` (a demo run with more seeds is not averaged in)."""
    import pandas as pd

    from benchmark.table import build_table, load_results
    from benchmark.superb_score import load_reference

    df = load_results(out / "benchmark")
    if anchors is not None:
        extra = load_results(anchors)
        seed = pd.to_numeric(extra["seed"], errors="coerce").fillna(0).astype(int)
        extra = extra[extra["label"].isin(ANCHORS) & seed.isin(seeds)]
        df = pd.concat([df[~df["label"].isin(ANCHORS)], extra], ignore_index=True)
    table = build_table(df, load_reference(None), out / "benchmark")
    table = table[table["upstream"].isin(list(minutes) + list(ANCHORS))].copy()
    table.insert(1, "cpu_minutes", [minutes.get(u) for u in table["upstream"]])
    return table.sort_values("cpu_minutes", na_position="first").reset_index(drop=True)


def plot(table, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmark.charts import column_label
    from benchmark.superb_score import load_reference
    from benchmark.table import metric_directions

    directions = metric_directions(load_reference(None))
    points = table[table["cpu_minutes"].notna()]
    anchors = table[table["cpu_minutes"].isna()]
    metrics = [c for c in table.columns if c in directions]
    panels = ["SUPERB_local", *metrics]
    cols = 4
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, column in zip(axes.flat, panels):
        ax.plot(points["cpu_minutes"], points[column], "o-", color="tab:blue", label="teacher")
        for (_, a), style in zip(anchors.iterrows(), ("--", ":")):
            if column in a and a[column] == a[column]:
                ax.axhline(a[column], color="grey", linestyle=style, label=a["upstream"])
        arrow = "" if column == "SUPERB_local" else (" (higher is better)" if directions[column]
                                                     else " (lower is better)")
        ax.set_title(("SUPERB_local" if column == "SUPERB_local" else column_label(column)) + arrow, fontsize=9)
        ax.set_xlabel("pretraining CPU minutes", fontsize=8)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle("hubert_mini teacher: demo benchmark against pretraining compute", fontsize=11)
    fig.tight_layout()
    path = out / "teacher_curve.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--data-root", type=Path, default=ROOT / "data" / "mini_superb")
    p.add_argument("--point", action="append", default=[], help="NAME=SOURCE:CPU_MINUTES (repeat)")
    p.add_argument("--tasks", nargs="+", default=["all"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--anchors", type=Path, default=None,
                   help="results dir holding the fbank and fbank_no_cmvn rows (default: benchmark them here)")
    p.add_argument("--only", choices=["export", "bench", "plot"], default=None)
    args = p.parse_args(argv)
    return run_main(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    points = [parse_point(t) for t in args.point]
    if not points:
        raise UsageError("--point: give at least one NAME=SOURCE:CPU_MINUTES")
    if args.anchors is not None and args.only in (None, "plot") and not (args.anchors / "results.csv").is_file():
        raise UsageError(f"--anchors {args.anchors}: no results.csv there")
    minutes = {name: m for name, _, m in points}
    dirs = export(points, args.out)
    if args.only == "export":
        return 0
    if args.only in (None, "bench"):
        from tasks import list_tasks

        tasks = list_tasks() if args.tasks == ["all"] else args.tasks
        upstreams = {name: str(d) for name, d in dirs.items()}
        if args.anchors is None:
            upstreams = {a: a for a in ANCHORS} | upstreams
        os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
        failed = bench(upstreams, tasks, args.seeds, args.data_root, args.out, args.threads)
        if failed:
            print(f"error: {len(failed)} benchmark runs failed ({', '.join(failed)}); logs in "
                  f"{args.out / 'benchmark' / 'logs'}", file=sys.stderr)
            return 1
        if args.only == "bench":
            return 0
    table = curve_table(args.out, minutes, args.anchors, args.seeds)
    shown = [c for c in table.columns if c in ("upstream", "cpu_minutes", "SUPERB_local", "asr cer")
             or (" " in c and c.split(" ")[0] in {"pr", "ks", "ic", "sid", "er", "asr", "qbe", "sf", "asv", "sd"})]
    from benchmark.table import to_markdown

    atomic_write_text(args.out / "teacher_curve.md", to_markdown(table[shown]) + "\n")
    print(to_markdown(table[shown]))
    print(f"wrote {args.out / 'teacher_curve.md'} and {plot(table, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
