"""Tiny fixtures shared by the distillation/pretraining tests and smoke runs (lhotse-style test factories)."""
from __future__ import annotations

from pathlib import Path

import torch

from common.audio import write_audio
from upstream.hubert import HubertConfig, HubertModel, HubertUpstream

# HuBERT's kernels and strides (320 samples per frame) at toy widths: a forward pass takes milliseconds.
TINY_CONV = ((16, 10, 5),) + ((16, 3, 2),) * 4 + ((16, 2, 2),) * 2


def tiny_teacher_config(layers: int = 6, codewords: int = 10) -> HubertConfig:
    return HubertConfig(conv_layers=TINY_CONV, embed_dim=32, ffn_dim=64, heads=2, layers=layers, conv_pos=8,
                        conv_pos_groups=4, dropout=0.0, attention_dropout=0.0, feat_proj_dropout=0.0,
                        final_dim=16 if codewords else 0, num_codewords=codewords)


def tiny_teacher(layers: int = 6, codewords: int = 10, seed: int = 0) -> HubertUpstream:
    torch.manual_seed(seed)
    return HubertUpstream(HubertModel(tiny_teacher_config(layers, codewords)))


def write_tone_corpus(folder: Path, count: int = 6, seconds: float = 1.0, seed: int = 0) -> list[Path]:
    """``count`` short 16 kHz files of chirps + noise (different lengths when ``seconds`` varies by file)."""
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    paths = []
    for i in range(count):
        n = int(16000 * seconds * (1 + 0.25 * (i % 3)))
        t = torch.arange(n) / 16000
        freq = 200 + 150 * i + 300 * t
        wav = 0.3 * torch.sin(2 * torch.pi * freq * t) + 0.05 * torch.randn(n, generator=g)
        path = folder / f"utt{i:03d}.wav"
        write_audio(path, wav)
        paths.append(path)
    return paths


def free_port() -> int:
    """A TCP port free on this machine now, for a torchrun rendezvous in tests (a fixed port collides when several
    test runs share the machine)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
