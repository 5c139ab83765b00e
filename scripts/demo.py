"""The offline end-to-end demo (``make demo``; ``make demo QUICK=1`` for the smoke-test version).

Outputs: data/mini_superb and results/demo (quick: data/mini_superb_tiny and results/demo_quick).
Stages, each skipped when its output exists from a run with the same settings (a ``.demo_stage.json`` marker beside
the output records them; other settings rebuild the stage):
  1. corpus     python -m synth --out data/mini_superb --size small (quick: tiny)
  2. teacher    the shipped teacher upstream/pretrained/hubert_mini (what ``build_upstream("hubert_mini")`` loads,
                sha256 checked); with ``--pretrain`` (``make demo PRETRAIN=1``), or while no weights are shipped
                (said in one line), run_pretrain.py → results/demo/hubert_mini from scratch within its time cap
  3. distil     run_distill.py → results/demo/distilhubert_mini_cnn and results/demo/distilhubert_mini_fbank
                (both at once; logs in results/demo/logs); with the shipped teacher they get the minutes
                pretraining no longer takes (``Budget.shipped_distil_minutes``)
  4. int8       run_distill.py export --format onnx --quantize dynamic of the CNN student
                → results/demo/onnx/distilhubert_mini_cnn.int8.onnx (the on-device row, run with onnxruntime)
  5. benchmark  run_benchmark.py for fbank, fbank_no_cmvn, the teacher, both students and the int8 CNN student on
                every task of tasks.list_tasks() (features cached in results/demo/benchmark/feature_cache)
  6. report     run_benchmark.py report (params, RTF, each task's metric, SUPERB score) + bench/student_speed.py
Every stage is a command line (the demo knows nothing else): a subprocess, except the benchmark's runs, which go to
two long-lived workers that import torch once (benchmark/workers.py). A failing task is reported loudly, the
demo goes on, and it exits non-zero at the end.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import BrokenExecutor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
SHIPPED_TEACHER = ROOT / "upstream" / "pretrained" / "hubert_mini"
# recipes relative to ROOT (the commands run there)
PRETRAIN_RECIPE = Path("configs/pretrain/hubert_mini.yaml")
DISTIL_RECIPES = {"cnn": Path("configs/distill/distilhubert_mini.yaml"),
                  "fbank": Path("configs/distill/fbank_student_mini.yaml")}
sys.path.insert(0, str(ROOT))
from benchmark.workers import run_in_worker, setup_worker  # noqa: E402  (light: torch loads in the workers only)
from common.machine import machine_summary  # noqa: E402


@dataclass(frozen=True)
class Budget:
    """Step counts sized for the 2-core machine: full ≤ 25 minutes, quick ≤ 4 minutes."""

    corpus_size: str
    pretrain_steps: int
    distil_steps: int
    benchmark_steps: int | None  # None: the task's demo profile decides
    batch_seconds: float
    item_seconds: float          # longer files are cropped to this
    # wall-clock caps (run.max_minutes): a busy machine stops training early instead of blowing the budget
    pretrain_minutes: float
    distil_minutes: float           # per student, after pretraining the teacher here
    shipped_distil_minutes: float   # per student, with the shipped teacher (no pretraining stage)


# The caps, not the step counts, end training on a 2-core CPU (AVX2-only: ~1 s per pretraining update), and the
# LR schedule is fitted to them (run.fit_schedule_to_time), so a capped run still anneals. 7 + 2.5 minutes left the
# benchmark of 4 upstreams x 10 tasks room in the 25 minutes. The shipped teacher frees the 7 minutes: the students
# get 2.5 more each (they distil side by side, so that is 2.5 minutes of wall time), and the rest pays for the
# fbank_no_cmvn row and the longer ASR/SF demo heads (docs/DEMO_HEADS.md).
FULL = Budget(corpus_size="small", pretrain_steps=1000, distil_steps=1000, benchmark_steps=None, batch_seconds=32.0,
              item_seconds=6.0, pretrain_minutes=7.0, distil_minutes=2.5, shipped_distil_minutes=5.0)
QUICK = Budget(corpus_size="tiny", pretrain_steps=20, distil_steps=10, benchmark_steps=5, batch_seconds=8.0,
               item_seconds=3.0, pretrain_minutes=0.75, distil_minutes=0.3, shipped_distil_minutes=0.3)


def run(cmd: list[str], log: Path | None = None) -> int:
    """Run ``cmd`` from the repository root; output to the terminal, or to ``log`` when given."""
    print("  $ " + " ".join(cmd), flush=True)
    if log is None:
        return subprocess.run(cmd, cwd=ROOT).returncode
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        return subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT).returncode


def run_benchmark(cmd: list[str], log: Path, workers: ProcessPoolExecutor) -> int:
    """Run a ``[PY, "run_benchmark.py", ...]`` command line in one of ``workers`` (see benchmark/workers.py for
    why); its output goes to ``log``."""
    print("  $ " + " ".join(cmd), flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        return workers.submit(run_in_worker, cmd[2:], str(log)).result()
    except BrokenExecutor as e:  # a worker died (killed, or a crash in native code)
        with open(log, "a") as f:
            f.write(f"\nbenchmark worker died: {e!r}\n")
        return 1


class Stages:
    def __init__(self, args: argparse.Namespace):
        self.quick = args.quick
        caps = {"pretrain_minutes": args.pretrain_minutes, "distil_minutes": args.distil_minutes,
                "shipped_distil_minutes": args.distil_minutes}  # --distil-minutes sets the cap of either teacher
        caps = {k: v for k, v in caps.items() if v is not None}
        self.budget = dataclasses.replace(QUICK if args.quick else FULL, **caps)
        # the shipped teacher unless told to pretrain (or none is shipped; pretrain() says so)
        self.pretrain_requested = args.pretrain
        self.pretrain_teacher = args.pretrain or not shipped_teacher_ok()
        self.data = ROOT / args.data_root
        self.out = ROOT / args.results
        self.jobs = args.jobs
        self.seeds = args.seeds
        self.failures: list[str] = []
        self.timings: list[tuple[str, float]] = []

    # ------------------------------------------------------------ caching
    def _settings(self, stage: str) -> dict:
        """What a stage's output depends on: its own budget fields, and the outputs it is built from (by mtime), so
        another pretraining cap keeps the corpus, and a retrained teacher retrains the students."""
        b = self.budget.__dict__
        fields = {"corpus": ["corpus_size"],
                  "pretrain": ["pretrain_steps", "batch_seconds", "item_seconds", "pretrain_minutes"],
                  "distil": ["distil_steps", "batch_seconds", "item_seconds", self._distil_minutes_field],
                  "benchmark": ["benchmark_steps"], "int8": []}[stage.split("-")[0]]
        inputs = {"pretrain": [self.data / "MANIFEST.sha256"],
                  "distil": [self.data / "MANIFEST.sha256", self.teacher / "model.safetensors"],
                  "benchmark": [self.data / "MANIFEST.sha256"],
                  "int8": [self.students()["cnn"] / "model.safetensors"]}.get(stage.split("-")[0], [])
        recipes = {"pretrain": [PRETRAIN_RECIPE], "distil-cnn": [DISTIL_RECIPES["cnn"]],
                   "distil-fbank": [DISTIL_RECIPES["fbank"]]}.get(stage, [])
        from synth import CORPUS_FORMAT  # light: no torch

        return {"stage": stage, "budget": {k: b[k] for k in fields}, "corpus_format": CORPUS_FORMAT,
                "inputs": {str(p): p.stat().st_mtime if p.is_file() else None for p in inputs},
                # an edited recipe retrains (by content: a fresh checkout changes every mtime)
                "recipes": {str(p): hashlib.sha256((ROOT / p).read_bytes()).hexdigest() for p in recipes}}

    def cached(self, output: Path, stage: str) -> bool:
        marker = output / ".demo_stage.json"
        if marker.is_file() and json.loads(marker.read_text()) == self._settings(stage):
            print(f"  cached: {output}", flush=True)
            return True
        if output.exists():
            print(f"  {output} was built with other settings (or not finished): rebuilding",
                  flush=True)
            shutil.rmtree(output)
        return False

    def mark_done(self, output: Path, stage: str) -> None:
        (output / ".demo_stage.json").write_text(json.dumps(self._settings(stage)))

    def timed(self, name: str, fn) -> None:
        print(f"\n=== {name} ===", flush=True)
        start = time.time()
        try:
            fn()
        except StageFailed as e:
            self.failures.append(f"{name}: {e}")
            print(f"!!! {name} FAILED: {e}", flush=True)
            if e.fatal:
                raise
        finally:
            self.timings.append((name, time.time() - start))
        print(f"=== {name}: {time.time() - start:.0f} s ===", flush=True)

    # ------------------------------------------------------------ stages
    def corpus(self) -> None:
        if (self.data / "MANIFEST.sha256").is_file() and not (self.data / ".demo_stage.json").exists():
            print(f"  using the existing corpus in {self.data} (not built by the demo)", flush=True)
            return
        if self.cached(self.data, "corpus"):
            return
        if run([PY, "-m", "synth", "--out", str(self.data), "--size", self.budget.corpus_size]) != 0:
            raise StageFailed("corpus synthesis failed; later stages need it", fatal=True)
        self.mark_done(self.data, "corpus")

    @property
    def teacher(self) -> Path:
        return self.out / "hubert_mini" if self.pretrain_teacher else SHIPPED_TEACHER

    @property
    def _distil_minutes_field(self) -> str:
        return "distil_minutes" if self.pretrain_teacher else "shipped_distil_minutes"

    @property
    def distil_minutes(self) -> float:
        return getattr(self.budget, self._distil_minutes_field)

    def pretrain(self) -> None:
        if not self.pretrain_teacher:
            print(f"  the shipped teacher: {_shown(SHIPPED_TEACHER)} (sha256 checked; `make demo PRETRAIN=1` "
                  "pretrains one here instead)", flush=True)
            return
        if not self.pretrain_requested:
            print(f"  no shipped teacher weights in {_shown(SHIPPED_TEACHER)} (or they fail their sha256 "
                  f"check): pretraining one here ({self.budget.pretrain_minutes:g}-minute cap)", flush=True)
        if self.cached(self.teacher, "pretrain"):
            return
        b = self.budget
        cmd = [PY, "run_pretrain.py", "--config", str(PRETRAIN_RECIPE), "--data",
               str(self.data / "unlabeled"), "--output", str(self.teacher), "--max-steps", str(b.pretrain_steps),
               "-o", f"run.data.max_batch_seconds={b.batch_seconds}",
               "-o", f"run.data.max_item_seconds={b.item_seconds}", "-o", f"run.max_minutes={b.pretrain_minutes}",
               "-o", "run.fit_schedule_to_time=true"]
        if self.quick:  # a pipeline check: one k-means init, and a few warm-up updates instead of the recipe's 200
            cmd += ["-o", "labels.kmeans_init_runs=1", "-o", "front_end_warmup.steps=5"]
        if run(cmd) != 0:
            raise StageFailed("teacher pretraining failed; the students need it", fatal=True)
        self.mark_done(self.teacher, "pretrain")

    def students(self) -> dict[str, Path]:
        return {"cnn": self.out / "distilhubert_mini_cnn", "fbank": self.out / "distilhubert_mini_fbank"}

    def distil(self) -> None:
        """Both students at once, one process each: on 2 cores two 1-thread runs finish ~20% sooner than two
        2-thread runs one after the other (small ops do not scale across threads)."""
        b = self.budget
        todo = {kind: out for kind, out in self.students().items() if not self.cached(out, f"distil-{kind}")}
        threads = max(1, (os.cpu_count() or 1) // max(1, len(todo)))

        def one(kind: str, out: Path) -> None:
            cmd = [PY, "run_distill.py", "--config", str(DISTIL_RECIPES[kind]), "--teacher", str(self.teacher),
                   "--data", str(self.data / "unlabeled"), "--output", str(out), "--max-steps", str(b.distil_steps),
                   "-o", f"run.data.max_batch_seconds={b.batch_seconds}",
                   "-o", f"run.data.max_item_seconds={b.item_seconds}", "-o", f"run.max_minutes={self.distil_minutes}",
                   "-o", "run.fit_schedule_to_time=true", "-o", f"run.threads={threads}"]
            start = time.time()
            code = run(cmd, self.out / "logs" / f"distil_{kind}.log")
            if code != 0:
                self.failures.append(f"distil {kind}")
                print(f"!!! distilling the {kind} student FAILED (exit {code}; log {self.out}/logs/distil_{kind}.log)",
                      flush=True)
                return
            print(f"  {kind} student: {time.time() - start:.0f} s", flush=True)
            self.mark_done(out, f"distil-{kind}")

        with ThreadPoolExecutor(max_workers=max(1, len(todo))) as pool:
            list(pool.map(lambda item: one(*item), todo.items()))

    @property
    def int8_student(self) -> Path:
        """The CNN student exported to ONNX with int8 dynamic quantization (``run_distill.py export``)."""
        return self.out / "onnx" / "distilhubert_mini_cnn.int8.onnx"

    def export_int8(self) -> None:
        """The on-device row: ``run_distill.py export --format onnx --quantize dynamic`` of the CNN student; its
        fp32 ONNX file is written beside it and not benchmarked (it matches PyTorch within 1e-4, docs/ONNX.md)."""
        student = self.students()["cnn"]
        if not (student / "upstream.yaml").is_file():
            return  # its distillation failed, already reported
        folder = self.int8_student.parent
        if self.cached(folder, "int8"):
            return
        folder.mkdir(parents=True, exist_ok=True)
        cmd = [PY, "run_distill.py", "export", "--student", str(student), "--format", "onnx",
               "--out", str(folder / "distilhubert_mini_cnn.onnx"), "--quantize", "dynamic"]
        if run(cmd, self.out / "logs" / "export_int8.log") != 0:
            raise StageFailed(f"int8 export failed (log {self.out}/logs/export_int8.log)")
        self.mark_done(folder, "int8")

    def upstreams(self) -> list[str]:
        found = [str(p) for p in [self.teacher, *self.students().values()] if (p / "upstream.yaml").is_file()]
        if self.int8_student.is_file():
            found.append(str(self.int8_student))
        # both FBANK rows: the report's zero anchor is the better of the two per metric (benchmark/report.py)
        return ["fbank", "fbank_no_cmvn"] + found

    def list_tasks(self) -> list[str]:
        out = subprocess.run([PY, "-c", "from tasks import list_tasks; print(' '.join(list_tasks()))"], cwd=ROOT,
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise StageFailed(f"cannot list tasks: {out.stderr.strip()[-500:]}")
        return out.stdout.split()

    def benchmark(self, tasks: list[str] | None) -> None:
        tasks = tasks or self.list_tasks()
        bench_dir = self.out / "benchmark"
        done_dir = bench_dir / ".demo_done"
        done_dir.mkdir(parents=True, exist_ok=True)
        jobs = []
        for upstream in self.upstreams():
            weights = Path(upstream) if upstream.endswith(".onnx") else ROOT / upstream / "model.safetensors"
            # a retrained upstream invalidates its results
            settings = json.dumps({**self._settings("benchmark"),
                                   "weights_mtime": weights.stat().st_mtime if weights.is_file() else None})
            for task in tasks:
                for seed in range(self.seeds):
                    name = f"{Path(upstream).name}.{task}" + (f".s{seed}" if seed else "")
                    marker = done_dir / f"{name}.json"
                    if marker.is_file() and marker.read_text() == settings:
                        continue
                    jobs.append((upstream, task, seed, name, marker, settings))
        print(f"  {len(jobs)} runs ({len(self.upstreams())} upstreams x {len(tasks)} tasks x {self.seeds} seeds, "
              f"{self.jobs} in parallel; logs in {bench_dir}/logs)", flush=True)

        def one(job: tuple[str, str, int, str, Path, str]) -> None:
            upstream, task, seed, name, marker, settings = job
            cmd = [PY, "run_benchmark.py", "--upstream", upstream, "--task", task, "--data-root", str(self.data),
                   "--results-dir", str(bench_dir), "--profile", "demo", "--skip-bad-audio", "--seed", str(seed),
                   # features of every retrained upstream stay until deleted (~7 GB per from-scratch demo): keep
                   # them with the demo's results, so `make clean-demo` reclaims them
                   "--cache-dir", str(bench_dir / "feature_cache"),
                   # parallel runs share the cores: more threads than cores makes small ops crawl
                   "--threads", str(max(1, (os.cpu_count() or 1) // self.jobs))]
            if self.budget.benchmark_steps:
                cmd += ["--max-steps", str(self.budget.benchmark_steps)]
            start = time.time()
            code = run_benchmark(cmd, bench_dir / "logs" / f"{name}.log", workers)
            status = "ok" if code == 0 else f"FAILED (exit {code})"
            print(f"  {Path(upstream).name:28s} {task:5s} seed {seed} {status} in {time.time() - start:.0f} s",
                  flush=True)
            if code == 0:
                marker.write_text(settings)
            else:
                self.failures.append(f"benchmark {name}")

        if not jobs:
            return
        context = multiprocessing.get_context("spawn")  # fork after torch's threads have started is unsafe
        with ProcessPoolExecutor(self.jobs, mp_context=context, initializer=setup_worker) as workers, \
                ThreadPoolExecutor(max_workers=self.jobs) as pool:
            list(pool.map(one, jobs))

    def report(self) -> None:
        if run([PY, "run_benchmark.py", "report", "--results-dir", str(self.out / "benchmark")]) != 0:
            raise StageFailed("report failed")
        students = [str(p) for p in self.students().values() if p.is_dir()]
        if self.teacher.is_dir() and students:
            run([PY, "bench/student_speed.py", "--teacher", str(self.teacher), "--students", *students,
                 "--repeats", "3" if self.quick else "20"])


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def shipped_teacher_ok() -> bool:
    """Whether the shipped teacher's weights are there and pass their sha256 check (in a subprocess: the check
    lives with the registry, which imports torch, and the demo itself stays light)."""
    if not (SHIPPED_TEACHER / "model.safetensors").is_file():
        return False
    code = ("import sys; from upstream.builtin import has_shipped_weights; "
            "sys.exit(0 if has_shipped_weights('hubert_mini') else 1)")
    return subprocess.run([PY, "-c", code], cwd=ROOT, capture_output=True).returncode == 0


class StageFailed(RuntimeError):
    def __init__(self, message: str, fatal: bool = False):
        super().__init__(message)
        self.fatal = fatal


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--quick", action="store_true", help="tiny corpus and step counts (≤ 4 minutes)")
    p.add_argument("--pretrain", action="store_true", help="pretrain the teacher here from scratch (within "
                   "--pretrain-minutes) instead of using the shipped one")
    # quick runs keep their own folders, so a smoke test never replaces the full demo's corpus or teacher
    p.add_argument("--data-root", default=None, help="default data/mini_superb (quick: data/mini_superb_tiny)")
    p.add_argument("--results", default=None, help="default results/demo (quick: results/demo_quick)")
    p.add_argument("--tasks", nargs="*", default=None, help="benchmark only these tasks (default: all registered)")
    p.add_argument("--jobs", type=int, default=2, help="benchmark runs in parallel")
    p.add_argument("--seeds", type=int, default=1, help="benchmark every (upstream, task) with this many seeds; the "
                   "report averages them and gives SUPERB_local's spread (each seed adds about the benchmark's "
                   "head-training time; features are cached)")
    p.add_argument("--pretrain-minutes", type=float, default=None,
                   help=f"teacher pretraining cap (default {FULL.pretrain_minutes}; quick {QUICK.pretrain_minutes}). "
                   "More minutes, more updates: a better teacher on a slow CPU, a longer demo")
    p.add_argument("--distil-minutes", type=float, default=None,
                   help=f"distillation cap per student (default {FULL.shipped_distil_minutes} with the shipped "
                   f"teacher, {FULL.distil_minutes} after pretraining one; quick {QUICK.distil_minutes})")
    args = p.parse_args(argv)
    for name in ("pretrain_minutes", "distil_minutes"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.seeds < 1:
        p.error(f"--seeds must be at least 1, got {args.seeds}")
    args.data_root = args.data_root or ("data/mini_superb_tiny" if args.quick else "data/mini_superb")
    args.results = args.results or ("results/demo_quick" if args.quick else "results/demo")
    stages = Stages(args)
    started = time.time()
    print(f"DistilSUPERB demo ({'quick' if args.quick else 'full'}): {stages.budget}", flush=True)
    print(f"machine: {machine_summary()}", flush=True)
    try:
        stages.timed("1 corpus", stages.corpus)
        stages.timed("2 teacher", stages.pretrain)
    except StageFailed as e:  # only fatal failures escape timed()
        print(f"!!! {e}", flush=True)
        return 1
    stages.timed("3 distil students", stages.distil)
    stages.timed("4 int8 export", stages.export_int8)
    stages.timed("5 benchmark", lambda: stages.benchmark(args.tasks))
    stages.timed("6 report", stages.report)
    print("\nstage times: " + ", ".join(f"{n} {s:.0f} s" for n, s in stages.timings) +
          f"; total {time.time() - started:.0f} s")
    if stages.failures:
        print("\n!!! FAILED: " + "; ".join(stages.failures), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
