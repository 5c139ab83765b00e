"""One students table: distil every recipe from the same teacher with the same budget, benchmark each on the SUPERB
tasks, and write ``docs/results/students.md`` (+ a PNG) beside the published numbers of each method.

    nice -n 10 python scripts/students.py [--minutes 5] [--seeds 3] [--tasks ks ic ...] [--recipes ...]

Stages (each skipped when its output exists from the same settings, so an interrupted run continues):
  1. distil     run_distill.py for every recipe (default: ``distilhubert_mini`` and the successors' ``_mini``
                recipes) from ``--teacher`` on ``--data``, one after another, each capped at ``--minutes`` of wall
                clock (``run.max_minutes``, the LR schedule fitted to it) with the same batch settings: the same data
                and the same CPU minutes each, whatever a recipe's own step count says
  2. benchmark  run_benchmark.py --profile demo for fbank, fbank_no_cmvn (the SUPERB_local anchor), the teacher and
                every student, on ``--tasks`` x ``--seeds``
  3. measure    parameters, MACs per second of audio and the real-time factor of the teacher and every student, in
                this process, one after another (the same machine, the same run)
  4. write      the report of the benchmark rows (benchmark/report.py) and ``--doc``: the table, each task as a share
                of the teacher's gain over FBANK, the published rows (``configs/superb_reference.yaml``, labelled as
                published) and the picture ``students.png`` next to it
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
sys.path.insert(0, str(ROOT))

# recipe → (the paper, its arXiv id)
RECIPES = {
    "distilhubert_mini": ("DistilHuBERT", "2110.01900"),
    "fithubert_mini": ("FitHuBERT", "2207.00555"),
    "maskhubert_mini": ("MaskHuBERT", "2305.11685"),
    "armhubert_mini": ("ARMHuBERT", "2305.11685"),
    "starhubert_mini": ("STaRHuBERT", "2312.09040"),
    "dphubert_mini": ("DPHuBERT", "2305.17651"),
}
# the published row of each method in configs/superb_reference.yaml
PUBLISHED = {"DistilHuBERT": "distilhubert", "FitHuBERT": "fithubert", "ARMHuBERT": "armhubert",
             "STaRHuBERT": "starhubert", "DPHuBERT": "dphubert"}
ANCHORS = ["fbank", "fbank_no_cmvn"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--teacher", default="hubert_mini", help="upstream name or path (default: the shipped teacher)")
    p.add_argument("--data", default="data/mini_superb/unlabeled", help="distillation audio (default: the corpus')")
    p.add_argument("--data-root", default="data/mini_superb", help="the ten tasks' datasets")
    p.add_argument("--out", default="results/students", help="students, benchmark rows and logs")
    p.add_argument("--doc", default="docs/results/students.md", help="the page written at the end")
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    p.add_argument("--minutes", type=float, default=5.0, help="wall-clock minutes of distillation per recipe")
    p.add_argument("--batch-seconds", type=float, default=48.0, help="audio seconds per batch, every recipe")
    p.add_argument("--item-seconds", type=float, default=6.0, help="longer files are cropped to this")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--tasks", nargs="+", default=None, help="default: all ten")
    p.add_argument("--benchmark-steps", type=int, default=None, help="head updates (default: the demo profile's)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--anchors", nargs="+", default=ANCHORS, help="FBANK rows (the SUPERB_local anchor)")
    p.add_argument("--distill-override", action="append", default=[], metavar="KEY=VALUE",
                   help="-o for every recipe (e.g. for a tiny teacher)")
    return p.parse_args(argv)


def run(cmd: list[str], log: Path) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as f:
        return subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT).returncode


def settings_marker(path: Path, settings: dict) -> bool:
    """Whether ``path`` records exactly ``settings`` (a stage done with them)."""
    return path.is_file() and json.loads(path.read_text()) == settings


def distil(args: argparse.Namespace, out: Path) -> dict[str, Path]:
    students = {}
    for recipe in args.recipes:
        target = out / recipe
        settings = {"teacher": args.teacher, "data": args.data, "minutes": args.minutes, "batch": args.batch_seconds,
                    "item": args.item_seconds, "overrides": args.distill_override,
                    "config": (ROOT / "configs" / "distill" / f"{recipe}.yaml").read_text()}
        marker = out / "markers" / f"distil.{recipe}.json"
        students[recipe] = target
        if settings_marker(marker, settings) and (target / "model.safetensors").is_file():
            continue
        shutil.rmtree(target, ignore_errors=True)
        overrides = [f"run.max_minutes={args.minutes}", "run.fit_schedule_to_time=true", "run.max_steps=5000",
                     f"run.data.max_batch_seconds={args.batch_seconds}", f"run.data.max_item_seconds={args.item_seconds}",
                     f"run.threads={args.threads}", "run.checkpoint_every=100000"] + args.distill_override
        cmd = [PY, "run_distill.py", "--config", f"configs/distill/{recipe}.yaml", "--teacher", args.teacher,
               "--data", args.data, "--output", str(target)] + [x for o in overrides for x in ("-o", o)]
        start = time.time()
        code = run(cmd, out / "logs" / f"distil.{recipe}.log")
        print(f"  distil {recipe:20s} {'ok' if code == 0 else f'FAILED (exit {code})'} in {time.time() - start:.0f} s",
              flush=True)
        if code != 0:
            raise SystemExit(f"error: distilling {recipe} failed; see {out / 'logs' / f'distil.{recipe}.log'}")
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps(settings))
    return students


def list_tasks() -> list[str]:
    from tasks import list_tasks as names

    return names()


def benchmark(args: argparse.Namespace, out: Path, upstreams: list[str], tasks: list[str]) -> None:
    bench = out / "benchmark"
    for upstream in upstreams:
        weights = Path(upstream) / "model.safetensors"
        stamp = weights.stat().st_mtime if weights.is_file() else None
        for task in tasks:
            for seed in range(args.seeds):
                name = f"{Path(upstream).name}.{task}.s{seed}"
                settings = {"weights": stamp, "steps": args.benchmark_steps, "data_root": args.data_root}
                marker = out / "markers" / f"bench.{name}.json"
                if settings_marker(marker, settings):
                    continue
                cmd = [PY, "run_benchmark.py", "--upstream", upstream, "--task", task, "--data-root", args.data_root,
                       "--results-dir", str(bench), "--profile", "demo", "--skip-bad-audio", "--seed", str(seed),
                       "--cache-dir", str(bench / "feature_cache"), "--threads", str(args.threads)]
                if args.benchmark_steps:
                    cmd += ["--max-steps", str(args.benchmark_steps)]
                start = time.time()
                code = run(cmd, out / "logs" / f"bench.{name}.log")
                print(f"  {Path(upstream).name:22s} {task:4s} seed {seed} "
                      f"{'ok' if code == 0 else f'FAILED (exit {code})'} in {time.time() - start:.0f} s", flush=True)
                if code == 0:
                    marker.write_text(json.dumps(settings))


def measure(upstreams: dict[str, str]) -> dict[str, dict]:
    """label → params, MACs per second of audio, RTF (batch of one 4 s utterance, best of 5), one after another."""
    import torch

    from benchmark.upstream_stats import count_macs_per_second, real_time_factor
    from upstream import build_upstream
    from upstream.base import count_parameters

    torch.set_num_threads(2)
    stats = {}
    for label, source in upstreams.items():
        up = build_upstream(source).eval()
        stats[label] = {"params": count_parameters(up), "macs": count_macs_per_second(up),
                        "rtf": real_time_factor(up, seconds=4.0, repeats=5)}
    return stats


def _fmt(value: float, digits: int = 2) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def write_doc(args: argparse.Namespace, out: Path, students: dict[str, Path], teacher_label: str,
              stats: dict[str, dict], tasks: list[str], wall: float) -> Path:
    import pandas as pd
    import yaml

    from benchmark.report import build_report
    from benchmark.superb_score import load_reference, superb_score
    from benchmark.table import retained_percent

    ref = load_reference(None)
    labels = [teacher_label] + [p.name for p in students.values()]
    report = build_report(out / "benchmark", out / "report", teacher=teacher_label, students=labels[1:])
    table = report.table.set_index("upstream")
    kept = retained_percent(report.table, ref, teacher_label, labels[1:])
    summaries = {r: json.loads((p / "distill_summary.json").read_text()) for r, p in students.items()
                 if (p / "distill_summary.json").is_file()}
    t_stats = stats[teacher_label]
    lines = ["# Students of DistilHuBERT and its successors, side by side (offline demo scale)", "",
             "Written by `scripts/students.py`; every number below is from one run of it on this machine (2 shared "
             "CPU cores), except the last table, which is **published** (real SUPERB, HuBERT Base teachers).", "",
             "## What was run", "",
             f"- command: `nice -n 10 python scripts/students.py {' '.join(sys.argv[1:])}`".rstrip() + f" ({wall / 60:.0f} min wall)",
             f"- teacher: `{args.teacher}` ({t_stats['params'] / 1e6:.2f} M parameters)",
             f"- distillation budget, the same for every recipe: audio `{args.data}`, batches of "
             f"{args.batch_seconds:g} s (files cropped to {args.item_seconds:g} s), **{args.minutes:g} minutes of wall "
             f"clock each** on {args.threads} threads, the LR schedule fitted to the cap (run.fit_schedule_to_time); "
             "recipes ran one after another",
             f"- benchmark: tasks {', '.join(tasks)}; demo profiles (`--profile demo`"
             + (f", `--max-steps {args.benchmark_steps}`" if args.benchmark_steps else "") + f"); seeds 0-{args.seeds - 1}",
             "- params / MACs / RTF: measured here, one upstream after another, batch of one 4 s utterance, best of 5, "
             "2 threads", ""]
    lines += ["## Ours: the students of the shipped teacher", "",
              "SUPERB_local: the SUPERB formula with the better FBANK row as 0 and the published SOTA as 1000 (see "
              "`docs/BENCHMARK.md`); % teacher: the student's SUPERB_local as a share of the teacher's.", "",
              "| upstream | method (paper) | params (M) | % of teacher params | GMACs/s | RTF | speed-up | distil steps |"
              " SUPERB_local | ± sd | % teacher |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    local_t = float(table.loc[teacher_label, "SUPERB_local"]) if teacher_label in table.index else math.nan
    for label in labels:
        s = stats[label]
        recipe = next((r for r, p in students.items() if p.name == label), None)
        method = f"{RECIPES[recipe][0]} (arXiv {RECIPES[recipe][1]})" if recipe else "teacher"
        local = float(table.loc[label, "SUPERB_local"]) if label in table.index else math.nan
        sd = float(table.loc[label, "SUPERB_local_sd"]) if label in table.index else math.nan
        share = 100 * local / local_t if local_t and local_t > 0 and not math.isnan(local) else math.nan
        steps = summaries.get(recipe, {}).get("steps") if recipe else None
        lines.append(f"| {label} | {method} | {s['params'] / 1e6:.2f} | {100 * s['params'] / t_stats['params']:.0f} | "
                     f"{s['macs'] / 1e9:.2f} | {s['rtf']:.4f} | {t_stats['rtf'] / s['rtf']:.2f}x | "
                     f"{steps if steps is not None else '–'} | {_fmt(local, 1)} | {_fmt(sd, 1)} | {_fmt(share, 0)} |")
    lines += ["", "Each task as a share of the teacher's gain over FBANK (FBANK = 0%, teacher = 100%; – where the "
              "teacher does not beat FBANK, so there is no scale):", ""]
    cols = [c for c in kept.index if c != "SUPERB_local"]
    lines += ["| upstream | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for label in labels[1:]:
        lines.append(f"| {label} | " + " | ".join(_fmt(float(kept.loc[c, label]), 0) for c in cols) + " |")
    metric_cols = [c for c in report.table.columns if any(c.startswith(f"{t} ") for t in tasks)
                   and c.split(" ")[1] in {m.metric for m in ref.metrics}]
    lines += ["", "The metrics themselves (test split, mean over seeds):", "",
              "| upstream | " + " | ".join(metric_cols) + " |", "|---|" + "---:|" * len(metric_cols)]
    for label in list(args.anchors) + labels:
        if label in table.index:
            lines.append(f"| {label} | " + " | ".join(_fmt(float(table.loc[label, c]), 4 if "mtwv" in c else 2)
                                                      for c in metric_cols) + " |")
    distil = float(table.loc["distilhubert_mini", "SUPERB_local"]) if "distilhubert_mini" in table.index else math.nan
    verdict = []
    for recipe, path in students.items():
        if recipe == "distilhubert_mini" or path.name not in table.index or math.isnan(distil):
            continue
        v = float(table.loc[path.name, "SUPERB_local"])
        verdict.append(f"- {RECIPES[recipe][0]}: SUPERB_local {v:.1f} vs DistilHuBERT's {distil:.1f}: "
                       + ("beats it" if v > distil else "does **not** beat it") + " at this scale")
    if verdict:
        lines += ["", "Against DistilHuBERT at demo scale (same teacher, data and minutes):", ""] + verdict
    png = Path(args.doc).with_suffix(".png")
    pic = out / "report" / "distillation.png"
    if pic.is_file():
        shutil.copyfile(pic, ROOT / png if not png.is_absolute() else png)
        lines += ["", f"![each student's share of the teacher per task]({png.name})"]
    published = yaml.safe_load((ROOT / "configs" / "superb_reference.yaml").read_text())
    params = published.get("published_params_m", {})
    lines += ["", "## Published (real SUPERB, HuBERT Base teacher; not measured here)", "",
              "From `configs/superb_reference.yaml` (the papers and the SUPERB leaderboard); empty cells: not "
              "reported. SUPERB_s with the leaderboard's anchors where every task is reported.", "",
              "| model (published) | params (M) | " + " | ".join(m.column for m in ref.metrics) + " | SUPERB_s |",
              "|---|---:|" + "---:|" * (len(ref.metrics) + 1)]
    for name in ["hubert_base", "distilhubert", "fithubert", "armhubert", "starhubert", "dphubert",
                 "lighthubert_small"]:
        row = ref.published.get(name, {})
        full = all(m.column in row for m in ref.metrics)
        score = superb_score(row, ref.fbank, ref.sota, ref) if full else math.nan
        lines.append(f"| {name} (published) | {_fmt(params.get(name, math.nan), 2)} | "
                     + " | ".join(_fmt(row.get(m.column, math.nan), 4 if m.column == "QbE" else 2) for m in ref.metrics)
                     + f" | {_fmt(score, 0)} |")
    doc = ROOT / args.doc if not Path(args.doc).is_absolute() else Path(args.doc)
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(lines) + "\n")
    return doc


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = ROOT / args.out if not Path(args.out).is_absolute() else Path(args.out)
    tasks = args.tasks or list_tasks()
    started = time.time()
    print(f"distil {len(args.recipes)} recipes, {args.minutes:g} min each", flush=True)
    students = distil(args, out)
    teacher_label = Path(args.teacher).name
    upstreams = list(args.anchors) + [args.teacher] + [str(p) for p in students.values()]
    print(f"benchmark {len(upstreams)} upstreams x {len(tasks)} tasks x {args.seeds} seeds", flush=True)
    benchmark(args, out, upstreams, tasks)
    print("measure params, MACs, RTF", flush=True)
    stats = measure({teacher_label: args.teacher, **{p.name: str(p) for p in students.values()}})
    doc = write_doc(args, out, students, teacher_label, stats, tasks, time.time() - started)
    print(f"written: {doc}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
