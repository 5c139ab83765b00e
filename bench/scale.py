#!/usr/bin/env python
"""Does the feature cache and data path hold at hundreds of hours? Time and memory against corpus hours.

    python bench/scale.py --quick                      # small sizes, under three minutes (tests/test_scale_bench.py)
    nice -n 10 python bench/scale.py --hours 1 4 16 --base-hours 0.25 --out docs/results/scale

For each size it builds a LibriSpeech-layout corpus (``train-clean-100`` of that many hours of 12-s clips of
shaped noise, each file distinct, so each is its own cache entry; dev/test a few clips; build time printed), then,
in a fresh process per (upstream, size), measures with the ASR task:

* index time on a first and a second run: the records (``task.audit``) + the cache keys (content digests: read on
  the first run, taken from ``audio_digests.json`` by file stat on the second);
* the cache estimate (before extraction) against the bytes actually written, and extraction throughput;
* time from the start of a warm re-run (after imports) to its first training step, through the engine
  (``open_run``: estimate, keys, extraction check; then one step);
* head step time from cache and from live features (the same batches, the same head), and peak RSS.

Prints a table, writes ``scale.json`` and ``scale.png`` (time and memory against hours) under ``--out``. Targets
(issue 30): peak RSS grows < 10% from the smallest to the largest size; a warm re-run reaches its first step in
< 10 s at the largest; the estimate within 5% of the bytes written; extraction and index time within 1.2x of
proportional. Timings on a shared machine are noisy: run it under ``nice`` on an idle one when you can.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CLIP_S = 12.0
EVAL_CLIPS = 2  # dev and test each: small, so evaluation does not hide the train split's scaling
OVERRIDES = ["batch.max_seconds=48.0", "batch.eval_max_seconds=48.0", "head.proj_dim=64", "head.hidden_size=64"]


def build_corpus(root: Path, hours: float, seed: int = 0) -> tuple[int, float]:
    """``root/LibriSpeech/{train-clean-100,dev-clean,test-clean}`` with ``hours`` of 12-s FLAC clips in train.
    Each clip is shaped noise (a random low-pass over white noise, 16-bit), distinct per file. Returns (files,
    seconds to build); an existing complete corpus is kept."""
    import numpy as np
    import soundfile as sf

    done = root / "BUILT"
    if done.is_file():
        return int(done.read_text()), 0.0
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    n = max(1, math.ceil(hours * 3600 / CLIP_S))
    samples = int(CLIP_S * 16000)
    kernel = np.hanning(9) / np.hanning(9).sum()
    files = 0
    for subset, count in (("train-clean-100", n), ("dev-clean", EVAL_CLIPS), ("test-clean", EVAL_CLIPS)):
        chapters: dict[Path, list[str]] = {}
        for i in range(count):
            spk, chap = 100 + i // 400, 1000 + i // 40
            folder = root / "LibriSpeech" / subset / str(spk) / str(chap)
            folder.mkdir(parents=True, exist_ok=True)
            utt = f"{spk}-{chap}-{i:04d}"
            noise = np.convolve(rng.standard_normal(samples), kernel, mode="same")
            env = 0.5 + 0.5 * np.sin(np.linspace(0, rng.uniform(2, 20), samples)) ** 2  # syllable-like envelope
            sf.write(folder / f"{utt}.flac", (noise * env * 2000).astype(np.int16), 16000, subtype="PCM_16")
            chapters.setdefault(folder, []).append(f"{utt} NOISE NUMBER {i % 7}")
            files += 1
        for folder, lines in chapters.items():
            (folder / f"{folder.parent.name}-{folder.name}.trans.txt").write_text("\n".join(lines) + "\n")
    done.write_text(str(files))
    return files, time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------------- one size
def measure(data: Path, cache_dir: Path, upstream_name: str, random_init: bool, steps: int, threads: int) -> dict:
    """Every measurement of one (upstream, size), in this process (see the module docstring)."""
    import torch

    import upstream as _registered  # noqa: F401
    from benchmark import cache_plan
    from benchmark.batching import epoch_batches
    from benchmark.cache import FeatureCache, weights_hash
    from benchmark.engine import RunOptions, audit_dataset, open_run
    from benchmark.features import LiveFeatures
    from benchmark.model import build_downstream
    from tasks.registry import build_task
    from upstream import build_upstream

    torch.set_num_threads(threads)
    out: dict = {}
    up = build_upstream(upstream_name, random_init=random_init).eval()
    up_hash = weights_hash(up)
    max_seconds = 48.0

    def index(fresh_cache: bool) -> tuple[dict, FeatureCache, list, float]:
        t0 = time.perf_counter()
        task = build_task("asr", data, OVERRIDES)
        loaded = audit_dataset(task).splits
        t_rec = time.perf_counter() - t0
        utts = [u for us in loaded.values() for u in us]
        cache = FeatureCache(cache_dir, up_hash)
        t1 = time.perf_counter()
        todo = cache.todo(utts)
        return loaded, cache, todo, (t_rec, time.perf_counter() - t1)

    # first run: records, keys (every audio file read for its digest), estimate, extraction
    loaded, cache, todo, (rec1, keys1) = index(True)
    utts = [u for us in loaded.values() for u in us]
    out["audio_hours"] = sum(u.duration for u in utts) / 3600
    out["utterances"] = len(utts)
    shape = cache_plan.probe_entry_shape(up, None)
    est = cache_plan.estimate(cache_dir, shape, todo, None)
    t0 = time.perf_counter()
    extracted = cache.ensure(utts, up, max_seconds)
    out["extract_s"] = time.perf_counter() - t0
    out["extracted"] = extracted
    written = sum(p.stat().st_size for p in cache.dir.rglob("*.npy"))
    out.update(index1_records_s=rec1, index1_keys_s=keys1, estimate_bytes=est.bytes, written_bytes=written,
               estimate_error=(est.bytes - written) / max(1, written),
               extract_audio_s_per_s=sum(u.duration for u in todo) / max(1e-9, out["extract_s"]),
               bytes_per_audio_s=shape.bytes_per_second)

    # warm re-run through the engine, from its start to its first training step
    t_start = time.perf_counter()
    task = build_task("asr", data, OVERRIDES)
    loaded = audit_dataset(task).splits
    run_dir = Path(tempfile.mkdtemp(prefix="scale_run_"))
    options = RunOptions(upstream=upstream_name, task="asr", data_root=data, cache_dir=cache_dir, device="cpu",
                         overrides=OVERRIDES, random_init=random_init, cache="on")
    parts = open_run(task, up, options, run_dir, up_hash, loaded)
    task.setup(up.downsample_rate)
    parts.splits.prepare()
    train = parts.splits.load("train")
    batches = epoch_batches([u.duration for u in train], task.config.batch.max_seconds, 0, 0)
    model = build_downstream(task, parts.shape, 0, "cpu")
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step(source, idx) -> None:
        fb = source.batch([train[i] for i in idx])
        loss = task.loss(model(fb.hidden, fb.lengths), fb.lengths, fb.utts)
        opt.zero_grad()
        loss.backward()
        opt.step()

    cached = parts.sources.for_run()
    step(cached, batches[0])
    out["warm_to_first_step_s"] = time.perf_counter() - t_start
    _, _, _, (rec2, keys2) = index(False)
    out.update(index2_records_s=rec2, index2_keys_s=keys2)

    def per_step(source) -> float:
        chosen = batches[1:1 + steps] or batches[:1]
        t0 = time.perf_counter()
        for idx in chosen:
            step(source, idx)
        return (time.perf_counter() - t0) / len(chosen)

    out["step_cached_s"] = per_step(cached)
    out["step_live_s"] = per_step(LiveFeatures(up))
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


# ---------------------------------------------------------------------------------------------------- report
COLUMNS = [("upstream", "{}"), ("hours", "{:.3g}"), ("build_s", "{:.1f}"), ("index1_s", "{:.2f}"),
           ("index2_s", "{:.2f}"), ("estimate_error", "{:+.2%}"), ("written_gb", "{:.3f}"),
           ("extract_x_rt", "{:.1f}"), ("warm_to_first_step_s", "{:.2f}"), ("step_cached_s", "{:.3f}"),
           ("step_live_s", "{:.3f}"), ("peak_rss_mb", "{:.0f}")]


def row(upstream_name: str, hours: float, build_s: float, m: dict) -> dict:
    return {"upstream": upstream_name, "hours": m["audio_hours"], "nominal_hours": hours, "build_s": build_s,
            "index1_s": m["index1_records_s"] + m["index1_keys_s"], "index2_s": m["index2_records_s"] +
            m["index2_keys_s"], "written_gb": m["written_bytes"] / 1e9, "extract_x_rt": m["extract_audio_s_per_s"],
            **m}


def table(rows: list[dict]) -> str:
    head = "| " + " | ".join(c for c, _ in COLUMNS) + " |"
    lines = [head, "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(fmt.format(r[c]) for c, fmt in COLUMNS) + " |")
    return "\n".join(lines)


def targets(rows: list[dict]) -> list[str]:
    """The issue's targets, one line each, for the upstream with the most sizes."""
    name = max({r["upstream"] for r in rows}, key=lambda n: sum(r["upstream"] == n for r in rows))
    rs = sorted((r for r in rows if r["upstream"] == name), key=lambda r: r["hours"])
    lo, hi = rs[0], rs[-1]
    ratio = hi["hours"] / lo["hours"]
    lines = [f"targets ({name}, {lo['hours']:.3g} h -> {hi['hours']:.3g} h, {ratio:.1f}x the audio):"]
    rss = hi["peak_rss_mb"] / lo["peak_rss_mb"] - 1
    lines.append(f"  peak RSS grows {rss:+.1%} (target < +10%): {'met' if rss < 0.10 else 'MISSED'}")
    lines.append(f"  warm re-run to first step {hi['warm_to_first_step_s']:.2f} s (target < 10 s): "
                 f"{'met' if hi['warm_to_first_step_s'] < 10 else 'MISSED'}")
    worst = max(abs(r["estimate_error"]) for r in rows)
    lines.append(f"  estimate vs written: worst {worst:.2%} (target < 5%): {'met' if worst < 0.05 else 'MISSED'}")
    for col in ("extract_s", "index1_s", "index2_s"):
        growth = (hi[col] / max(lo[col], 1e-9)) / ratio
        lines.append(f"  {col} grows {growth:.2f}x proportional (target <= 1.2x): "
                     f"{'met' if growth <= 1.2 else 'MISSED'}")
    return lines


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for name in sorted({r["upstream"] for r in rows}):
        rs = sorted((r for r in rows if r["upstream"] == name), key=lambda r: r["hours"])
        h = [r["hours"] for r in rs]
        axes[0].plot(h, [r["extract_s"] for r in rs], "o-", label=f"{name}: extraction")
        axes[0].plot(h, [r["index1_s"] for r in rs], "s--", label=f"{name}: index, 1st run")
        axes[0].plot(h, [r["index2_s"] for r in rs], "^:", label=f"{name}: index, 2nd run")
        axes[1].plot(h, [r["warm_to_first_step_s"] for r in rs], "o-", label=f"{name}: warm start to 1st step")
        axes[1].plot(h, [r["step_cached_s"] for r in rs], "s--", label=f"{name}: head step, cached")
        axes[1].plot(h, [r["step_live_s"] for r in rs], "^:", label=f"{name}: head step, live")
        axes[2].plot(h, [r["peak_rss_mb"] for r in rs], "o-", label=name)
    axes[0].set(xlabel="corpus hours", ylabel="seconds", title="grows with the corpus", xscale="log", yscale="log")
    axes[1].set(xlabel="corpus hours", ylabel="seconds", title="should stay flat", xscale="log")
    axes[2].set(xlabel="corpus hours", ylabel="MB", title="peak RSS", xscale="log", ylim=(0, None))
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--quick", action="store_true", help="small sizes (hubert_mini only): under three minutes")
    p.add_argument("--hours", type=float, nargs="+", default=None, help="hubert_mini sizes (default 1 4 16)")
    p.add_argument("--base-hours", type=float, nargs="*", default=None,
                   help="sizes for the HuBERT-Base architecture with random weights (default 0.25 1; none with "
                   "--quick)")
    p.add_argument("--steps", type=int, default=3, help="head steps timed per source")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    p.add_argument("--work", type=Path, default=None, help="where corpora and caches go (default: a temp folder)")
    p.add_argument("--out", type=Path, default=None, help="folder for scale.json and scale.png")
    p.add_argument("--child", nargs=4, metavar=("DATA", "CACHE", "UPSTREAM", "RANDOM_INIT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        data, cache, name, rand = args.child
        print("RESULT " + json.dumps(measure(Path(data), Path(cache), name, rand == "1", args.steps, args.threads)))
        return 0
    hours = args.hours or ([0.01, 0.02, 0.04] if args.quick else [1.0, 4.0, 16.0])
    base = args.base_hours if args.base_hours is not None else ([] if args.quick else [0.25, 1.0])
    work = args.work or Path(tempfile.mkdtemp(prefix="scale_"))
    plan = [("hubert_mini", False, h) for h in hours] + [("hubert_base", True, h) for h in base]
    rows = []
    for name, rand, h in plan:
        data = work / f"corpus_{h:g}h"
        files, build_s = build_corpus(data, h)
        print(f"corpus {h:g} h: {files} files, built in {build_s:.1f} s", flush=True)
        cache = work / f"cache_{name}_{h:g}h"
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--steps", str(args.steps), "--threads", str(args.threads),
                               "--child", str(data),
                               str(cache), name, "1" if rand else "0"], cwd=ROOT, env=env, capture_output=True,
                              text=True)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        m = json.loads(next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))[7:])
        rows.append(row(name, h, build_s, m))
        print(f"  {name} {h:g} h measured in {time.perf_counter() - t0:.0f} s", flush=True)
    print(table(rows))
    for line in targets(rows):
        print(line)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "scale.json").write_text(json.dumps(rows, indent=1) + "\n")
        plot(rows, args.out / "scale.png")
        print(f"written: {args.out / 'scale.json'}, {args.out / 'scale.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
