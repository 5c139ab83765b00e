"""The same students as PyTorch fp32, ONNX fp32 and ONNX int8 (onnxruntime): speed, peak memory and file size,
side by side in one run.

    python bench/onnx_speed.py                                    # the demo recipes' students, random weights
    python bench/onnx_speed.py --students results/demo/distilhubert_mini_cnn results/demo/distilhubert_mini_fbank

Without ``--students`` the students are built by the repo's distillation recipes (``configs/distill/
distilhubert_mini.yaml``: CNN front end; ``fbank_student_mini.yaml``: log-mel front end) from the ``hubert_mini``
teacher architecture, exactly as ``run_distill.py`` builds them, with random weights (speed and size do not depend
on the values; the accuracy cost is measured by ``bench/onnx_accuracy.py``). Each student is exported with
``run_distill.py export``'s code (prediction heads dropped as in the demo) into a temporary folder.

Speed: real-time factor (compute seconds per second of audio) of one ``--seconds`` utterance (batch 1, the
on-device case), fastest of ``--repeats`` interleaved runs per thread count, so load from other processes hits
every variant alike. Peak memory: the largest resident set (``VmHWM``) of a fresh process that imports its runtime,
loads the model and runs it once, and that minus the same process's resident set right after the imports (what the
model and its activations add); the ONNX processes import onnxruntime and numpy only, not torch. Sizes:
``model.safetensors`` vs the ``.onnx`` files. Targets (issue 20): int8 ONNX >= 2x faster than PyTorch fp32 for the
CNN student, and >= 3x smaller on disk.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.timing import interleaved_times  # noqa: E402
from common.audio import SAMPLE_RATE  # noqa: E402

RECIPES = {"cnn_student": REPO / "configs" / "distill" / "distilhubert_mini.yaml",
           "fbank_student": REPO / "configs" / "distill" / "fbank_student_mini.yaml"}


def recipe_student(recipe: Path):
    """The student ``run_distill.py --config recipe --teacher hubert_mini`` trains, as it exports it (random)."""
    from common.config import load_config
    from distill.config import DistillConfig
    from distill.objectives import DistillObjective
    from run_distill import export_student
    from upstream.builtin import HUBERT_MINI, random_upstream

    torch.manual_seed(0)
    objective = DistillObjective(load_config(DistillConfig, recipe), random_upstream(HUBERT_MINI))
    return export_student(objective).eval().requires_grad_(False)


def export_all(name: str, upstream, folder: Path) -> dict[str, Path]:
    from upstream.checkpoints import save_upstream
    from upstream.onnx_export import convert_fp16, export_onnx, quantize_dynamic_int8, quantized_path

    torch_dir = save_upstream(upstream, folder / name)
    fp32 = export_onnx(upstream, folder / f"{name}.onnx", source=name)
    return {"pytorch": torch_dir, "onnx_fp32": fp32,
            "onnx_int8": quantize_dynamic_int8(fp32, quantized_path(fp32, "dynamic")),
            "onnx_fp16": convert_fp16(fp32, quantized_path(fp32, "fp16"))}


def size_mb(kind: str, path: Path) -> float:
    return ((path / "model.safetensors") if kind == "pytorch" else path).stat().st_size / 1e6


def runner(kind: str, path: Path, threads: int):
    """A callable running one ``[1, sample]`` float32 numpy waveform through the model."""
    if kind == "pytorch":
        from upstream import build_upstream

        torch.set_num_threads(threads)
        model = build_upstream(path).eval()

        def run(wav: np.ndarray) -> None:
            with torch.inference_mode():
                model([torch.from_numpy(wav[0])])
        return run
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(wav: np.ndarray) -> None:
        session.run(None, {"wav": wav, "wav_lengths": np.array([wav.shape[1]], dtype=np.int64)})
    return run


def peak_memory(kind: str, path: Path, threads: int, seconds: float) -> tuple[float, float]:
    """(peak RSS MB, peak RSS - RSS after imports MB) of a fresh process loading and running the model once
    (Linux: reads /proc/self/status)."""
    # The ONNX process imports onnxruntime and numpy only (what an on-device app needs), not torch.
    load = (f"import torch; torch.set_num_threads({threads}); from upstream import build_upstream\n"
            f"model = build_upstream({str(path)!r}).eval()\n"
            "def run(wav):\n    with torch.inference_mode(): model([torch.from_numpy(wav[0])])\n"
            if kind == "pytorch" else
            "so = onnxruntime.SessionOptions()\n"
            f"so.intra_op_num_threads, so.inter_op_num_threads = {threads}, 1\n"
            f"session = onnxruntime.InferenceSession({str(path)!r}, so, providers=['CPUExecutionProvider'])\n"
            "def run(wav): session.run(None, {'wav': wav, 'wav_lengths': np.array([wav.shape[1]], dtype=np.int64)})\n")
    code = (f"import json, sys\nimport numpy as np\nsys.path.insert(0, {str(REPO)!r})\n"
            + ("import torch, upstream\n" if kind == "pytorch" else "import onnxruntime\n")
            + "base = [int(l.split()[1]) / 1024 for l in open('/proc/self/status') if l.startswith('VmRSS:')][0]\n"
            + load
            + f"run(np.random.default_rng(0).standard_normal((1, {int(seconds * SAMPLE_RATE)}), dtype=np.float32) * 0.1)\n"
            + "peak = [int(l.split()[1]) / 1024 for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]\n"
            + "print(json.dumps([peak, peak - base]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    return tuple(json.loads(out.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--students", nargs="*", default=[], help="student dirs (default: the recipes' students)")
    p.add_argument("--seconds", type=float, default=8.0, help="utterance length")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    args = p.parse_args(argv)

    import logging

    logging.disable(logging.WARNING)
    from upstream import build_upstream

    if args.students:
        students = {Path(s).name: build_upstream(s).eval().requires_grad_(False) for s in args.students}
    else:
        students = {name: recipe_student(recipe) for name, recipe in RECIPES.items()}
    wav = np.random.default_rng(0).standard_normal((1, int(args.seconds * SAMPLE_RATE)), dtype=np.float32) * 0.1
    kinds = ["pytorch", "onnx_fp32", "onnx_int8", "onnx_fp16"]
    with tempfile.TemporaryDirectory() as tmp:
        for name, student in students.items():
            files = export_all(name, student, Path(tmp))
            print(f"\n{name}: {sum(p.numel() for p in student.parameters()) / 1e6:.2f} M params; "
                  f"batch 1 x {args.seconds:g} s, fastest of {args.repeats} interleaved runs")
            print(f"{'variant':11s} {'size MB':>8s}" + "".join(f" {'RTF ' + str(t) + 'thr':>11s}" for t in args.threads)
                  + "".join(f" {'x pt ' + str(t) + 'thr':>10s}" for t in args.threads)
                  + ("" if args.no_memory else f" {'peak MB':>8s} {'+model MB':>9s}"))
            rtf: dict[tuple[str, int], float] = {}
            for threads in args.threads:
                runs = {k: runner(k, files[k], threads) for k in kinds}
                times = interleaved_times({k: partial(run, wav) for k, run in runs.items()}, args.repeats,
                                          warm_up=True)
                for k in kinds:
                    rtf[k, threads] = min(times[k]) / args.seconds
            for k in kinds:
                line = f"{k:11s} {size_mb(k, files[k]):8.2f}"
                line += "".join(f" {rtf[k, t]:11.5f}" for t in args.threads)
                line += "".join(f" {rtf['pytorch', t] / rtf[k, t]:9.2f}x" for t in args.threads)
                if not args.no_memory:
                    peak, added = peak_memory(k, files[k], args.threads[0], args.seconds)
                    line += f" {peak:8.0f} {added:9.0f}"
                print(line)
            ratio = size_mb("pytorch", files["pytorch"]) / size_mb("onnx_int8", files["onnx_int8"])
            speed = {t: rtf["pytorch", t] / rtf["onnx_int8", t] for t in args.threads}
            print(f"int8 ONNX vs PyTorch fp32: {ratio:.2f}x smaller on disk (target >= 3x); "
                  + ", ".join(f"{s:.2f}x faster at {t} thread(s)" for t, s in speed.items()) + " (target >= 2x)")
    torch.set_num_threads(max(args.threads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
