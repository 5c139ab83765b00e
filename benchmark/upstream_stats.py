"""Cost of an upstream: parameters, multiply-accumulates per second of audio, real-time factor on this machine."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from common.audio import SAMPLE_RATE
from common.io import atomic_write_text
from common.tensors import module_device


MACS_METHOD = "aten-shapes"  # stats measured before it (FlopCounterMode blind to oneDNN) are measured again


def count_macs_per_second(upstream: torch.nn.Module) -> float:
    """MACs for one second of 16 kHz audio: FLOPs / 2 of the aten ops of one forward pass, each op's count computed
    from its input shapes by torch's FlopCounterMode (``mm``: m·n·k, convolutions, SDPA, ...).

    The CPU-only oneDNN kernels (upstream/kernels.py) are switched off while counting: FlopCounterMode does not
    see ``torch.ops.mkldnn.*`` (HuBERT Base counted 0.24 instead of 6.9 GMAC/s), and without them the CPU runs the
    aten ops a GPU runs, so an upstream gets the same count on every device. Operations the counter does not know
    (e.g. FFTs in a filterbank) count as zero.
    """
    from upstream.kernels import set_onednn

    device = module_device(upstream)
    wav = torch.randn(SAMPLE_RATE, device=device) * 0.1
    # parameters that require grad (a fine-tuned upstream) break weight-normalised convs under FlopCounterMode even
    # in inference mode: count with them frozen, then restore
    flags = [(p, p.requires_grad) for p in upstream.parameters()]
    upstream.requires_grad_(False)
    onednn = set_onednn(False)
    try:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            upstream([wav])
    finally:
        set_onednn(onednn)
        for p, flag in flags:
            p.requires_grad_(flag)
    return counter.get_total_flops() / 2.0


def synchronize(device: torch.device) -> None:
    """Wait for ``device``'s queued kernels (CUDA runs them asynchronously: a timer must stop after them)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def real_time_factor(upstream: torch.nn.Module, seconds: float = 4.0, repeats: int = 3) -> float:
    """Best-of-``repeats`` forward time divided by audio duration (batch of one ``seconds`` utterance), the device
    synchronised before the clock starts and before it stops."""
    device = module_device(upstream)
    wav = torch.randn(int(SAMPLE_RATE * seconds), device=device) * 0.1
    best = float("inf")
    with torch.inference_mode():
        upstream([wav])  # warm-up
        for _ in range(repeats):
            synchronize(device)
            t0 = time.perf_counter()
            upstream([wav])
            synchronize(device)
            best = min(best, time.perf_counter() - t0)
    return best / seconds


def stats_path(results_dir: Path, label: str, weights_hash: str) -> Path:
    """``<results>/<label>/upstream_stats/<hash[:16]>.json``: one file per weights hash, so two checkpoints that
    share a label (``expA/checkpoint-1000``, ``expB/checkpoint-1000``) never overwrite each other's costs."""
    return Path(results_dir) / label / "upstream_stats" / f"{weights_hash[:16]}.json"


def read_upstream_stats(results_dir: Path, label: str, weights_hash: str) -> dict:
    """The stats of this (label, weights hash) (a hash prefix is enough), or {} when none were measured. A table
    from before per-hash stats kept one ``<label>/upstream_stats.json``: used only when its hash matches."""
    path = stats_path(results_dir, label, weights_hash)
    legacy = Path(results_dir) / label / "upstream_stats.json"
    for candidate in (path, legacy):
        if candidate.is_file():
            stats = json.loads(candidate.read_text())
            if str(stats.get("checkpoint_hash", "")).startswith(str(weights_hash)):
                return stats
    return {}


def write_upstream_stats(path: Path, upstream: torch.nn.Module, weights_hash: str) -> dict:
    """Measure once per weights hash and store as JSON at ``path`` (:func:`stats_path`); returns the stats."""
    if path.is_file():
        stats = json.loads(path.read_text())
        if stats.get("checkpoint_hash") == weights_hash and stats.get("macs_method") == MACS_METHOD:
            return stats
    # An ONNX upstream has no torch parameters or ops to count: it carries the counts of the model it was
    # exported from (its RTF is measured for real below).
    params = getattr(upstream, "num_params", None)
    macs = getattr(upstream, "macs_per_second", None)
    stats = {"checkpoint_hash": weights_hash,
             "params": params if params is not None else sum(p.numel() for p in upstream.parameters()),
             "macs_per_second": macs if macs is not None else count_macs_per_second(upstream),
             "macs_method": MACS_METHOD, "rtf": real_time_factor(upstream),
             "threads": torch.get_num_threads()}
    atomic_write_text(path, json.dumps(stats, indent=2))
    return stats
