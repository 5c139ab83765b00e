"""Params and speed of a teacher and its students, measured side by side (interleaved runs, fastest run).

    python bench/student_speed.py                       # hubert_mini's architecture, random weights
    python bench/student_speed.py --teacher results/demo/hubert_mini \
        --students results/demo/distilhubert_mini_cnn results/demo/distilhubert_mini_fbank

Without ``--students``, a 2-layer CNN student and a 2-layer Fbank student of the teacher are built (no heads, as
exported). Prints params, real-time factor (seconds of compute per second of audio) and the ratios the project
targets: student ≤ 25% of the teacher's params and ≥ 2x faster; Fbank student ≥ 1.5x faster than the CNN one.
"""
from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.timing import add_timing_options, interleaved_times, set_threads  # noqa: E402
from common.audio import SAMPLE_RATE  # noqa: E402
from common.config import load_config  # noqa: E402
from pretrain.config import PretrainConfig  # noqa: E402
from upstream import build_upstream  # noqa: E402
from upstream.base import Upstream, count_parameters  # noqa: E402
from upstream.hubert import HubertModel, HubertUpstream, student_config_from_teacher  # noqa: E402


def default_models(config: str) -> dict[str, Upstream]:
    cfg = load_config(PretrainConfig, config).model
    torch.manual_seed(0)
    models = {"teacher": HubertUpstream(HubertModel(cfg))}
    for front_end in ("cnn", "fbank"):
        s_cfg = student_config_from_teacher(cfg, layers=2, pred_layer_ids=(), front_end=front_end)
        models[f"student_{front_end}"] = HubertUpstream(HubertModel(s_cfg))
    return models


def time_models(models: dict[str, Upstream], batch: int, seconds: float, repeats: int) -> dict[str, float]:
    """Fastest wall time per model of one forward over ``batch`` × ``seconds`` of audio. Runs are interleaved so
    that load from other processes hits every model alike; the minimum (as ``timeit`` advises) because a forward
    of a small model lasts tens of milliseconds and thread scheduling adds noise only upwards: fastest of 5 runs
    gave Fbank-vs-CNN ratios from 1.3x to 1.9x on the same idle machine."""
    g = torch.Generator().manual_seed(0)
    wavs = [torch.randn(int(seconds * SAMPLE_RATE), generator=g) * 0.1 for _ in range(batch)]
    with torch.inference_mode():
        times = interleaved_times({name: partial(model, wavs) for name, model in models.items()}, repeats,
                                  warm_up=True)
    return {name: min(t) for name, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--teacher", help="upstream name or path (default: hubert_mini's architecture, random weights)")
    p.add_argument("--students", nargs="*", default=[], help="student upstream names or paths")
    p.add_argument("--config", default="configs/pretrain/hubert_mini.yaml", help="teacher architecture (default)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seconds", type=float, default=8.0)
    add_timing_options(p, repeats=20, threads=2)
    args = p.parse_args(argv)
    set_threads(args.threads)
    if args.teacher:
        models = {"teacher": build_upstream(args.teacher)}
        models.update({Path(s).name: build_upstream(s) for s in args.students})
    else:
        models = default_models(args.config)
    for m in models.values():
        m.eval()
    fastest = time_models(models, args.batch, args.seconds, args.repeats)
    audio = args.batch * args.seconds
    t_params, t_time = count_parameters(models["teacher"]), fastest["teacher"]
    print(f"{args.batch} x {args.seconds:g} s of audio, {args.threads} threads, fastest of {args.repeats} "
          "interleaved runs")
    print(f"{'model':32s} {'params':>10s} {'% teacher':>10s} {'RTF':>8s} {'speed-up':>9s}")
    for name, model in models.items():
        n = count_parameters(model)
        print(f"{name:32s} {n / 1e6:9.2f}M {100 * n / t_params:9.1f}% {fastest[name] / audio:8.4f} "
              f"{t_time / fastest[name]:8.2f}x")
    names = list(models)
    cnn = next((n for n in names if "cnn" in n), None)
    fbank = next((n for n in names if "fbank" in n), None)
    if cnn and fbank:
        cut = 1 - count_parameters(models[fbank]) / count_parameters(models[cnn])
        print(f"Fbank vs CNN student: {fastest[cnn] / fastest[fbank]:.2f}x faster, {100 * cut:.1f}% fewer params")
    return 0


if __name__ == "__main__":
    sys.exit(main())
