"""Test factories shipped with the engine: a tiny deterministic upstream and writers of tiny datasets in each
task's real on-disk layout (docs/DATA_LAYOUTS.md). Audio: 0.3 s tones whose pitch depends on the label, plus noise,
so heads can learn something in a few steps.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.audio import write_audio
from upstream.base import Upstream, UpstreamOutput, pad_waveforms
from upstream.registry import register_upstream

TINY_UPSTREAM = "tiny_frames"


class TinyFrameUpstream(Upstream):
    """Frames of 160 samples -> Linear(160, dim) -> ``layers`` residual tanh layers; ``layers + 1`` hidden states."""

    downsample_rate = 160

    def __init__(self, dim: int = 8, layers: int = 2, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.proj = nn.Linear(self.downsample_rate, dim)
        self.layers = nn.ModuleList(nn.Linear(dim, dim) for _ in range(layers))
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def extract(self, wavs: list[torch.Tensor]) -> UpstreamOutput:
        padded, lengths = pad_waveforms(wavs)
        frames = lengths // self.downsample_rate
        x = padded[:, : int(frames.max()) * self.downsample_rate].reshape(len(wavs), int(frames.max()), -1)
        h = self.proj(x * 10)
        states = [h]
        for layer in self.layers:
            h = h + torch.tanh(layer(h))
            states.append(h)
        mask = (torch.arange(h.shape[1])[None, :] < frames[:, None]).unsqueeze(-1)
        return UpstreamOutput([s * mask for s in states], frames)


@register_upstream(TINY_UPSTREAM)
def build_tiny(**kwargs) -> TinyFrameUpstream:
    return TinyFrameUpstream(**kwargs)


TINY_PRETRAINED = "tiny_pretrained_hubert"


@register_upstream(TINY_PRETRAINED, pretrained=True)
def build_tiny_pretrained(checkpoint=None, seed: int = 0, random_init: bool = False, **kwargs) -> Upstream:
    """A pretrained-model name (the rule of upstream/builtin.py: weights or an explicit random init) whose
    architecture is a 2-layer, 64-dim HuBERT: fast enough for engine tests."""
    from upstream.builtin import _build
    from upstream.testing import tiny_config

    return _build(TINY_PRETRAINED, tiny_config(), checkpoint, seed, random_init, **kwargs)


def tone(path: Path, index: int, seconds: float = 0.3, seed: int = 0) -> Path:
    """Write a 16 kHz tone (pitch from ``index``) with a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    wav = 0.5 * np.sin(2 * np.pi * (150 + 120 * index) * t) + 0.05 * rng.standard_normal(t.size)
    write_audio(path, wav.astype(np.float32))
    return path


def write_librispeech(root: Path, per_split: int = 4) -> None:
    """``LibriSpeech/{train-clean-100,dev-clean,test-clean}`` with trans.txt; words YES/NO (in CMUdict)."""
    words = ["YES", "NO", "GO"]
    for s, subset in enumerate(["train-clean-100", "dev-clean", "test-clean"]):
        chapter = root / "LibriSpeech" / subset / "19" / f"{100 + s}"
        lines = []
        for n in range(per_split):
            utt = f"19-{100 + s}-{n:04d}"
            tone(chapter / f"{utt}.flac", n % 3, seed=n + 10 * s)
            lines.append(f"{utt} {words[n % 3]} {words[(n + 1) % 3]}")
        (chapter / f"19-{100 + s}.trans.txt").write_text("\n".join(lines) + "\n")


def write_speech_commands(root: Path, per_word: int = 2) -> None:
    train = root / "speech_commands_v0.01"
    words = ["yes", "no", "marvin"]
    val, test = [], []
    for w, word in enumerate(words):
        for n in range(per_word + 2):
            rel = f"{word}/spk{n}_nohash_0.wav"
            tone(train / rel, w, seed=n)
            (val if n == per_word else test if n == per_word + 1 else []).append(rel)
    (train / "validation_list.txt").write_text("\n".join(val) + "\n")
    (train / "testing_list.txt").write_text("\n".join(test) + "\n")
    noise = np.random.default_rng(0).standard_normal(16000 * 3).astype(np.float32) * 0.01
    write_audio(train / "_background_noise_" / "white.wav", noise)
    for c, label in enumerate(["yes", "no", "_unknown_", "_silence_"]):
        tone(root / "speech_commands_test_set_v0.01" / label / f"t{c}.wav", c, seed=100 + c)


def write_fsc(root: Path, per_split: int = 3) -> None:
    ds = root / "fluent_speech_commands_dataset"
    intents = [("activate", "lights", "kitchen"), ("deactivate", "music", "none"), ("increase", "heat", "bedroom")]
    for split in ["train", "valid", "test"]:
        rows = [",path,speakerId,transcription,action,object,location"]
        for n in range(per_split):
            rel = f"wavs/speakers/S{n}/{split}{n}.wav"
            tone(ds / rel, n % 3, seed=n)
            a, o, loc = intents[n % 3]
            rows.append(f"{n},{rel},S{n},turn it on,{a},{o},{loc}")
        (ds / "data").mkdir(parents=True, exist_ok=True)
        (ds / "data" / f"{split}_data.csv").write_text("\n".join(rows) + "\n")


def write_voxceleb1(root: Path) -> None:
    vox = root / "VoxCeleb1"
    lines = []
    for s, spk in enumerate(["id10001", "id10002"]):
        part = "dev" if s == 0 else "test"
        for n, code in enumerate([1, 1, 2, 3]):
            rel = f"{spk}/vid{s}/{n:05d}.wav"
            tone(vox / part / "wav" / rel, s, seconds=0.3 + 0.1 * n, seed=n)
            lines.append(f"{code} {rel}")
    (vox / "iden_split.txt").write_text("\n".join(lines) + "\n")


def write_iemocap(root: Path) -> None:
    base = root / "IEMOCAP_full_release"
    emotions = ["neu", "hap", "exc", "ang", "sad", "fru"]
    for session in range(1, 6):
        dialog = f"Ses0{session}F_impro01"
        lines = ["% header line that is ignored"]
        for n, emo in enumerate(emotions):
            utt = f"{dialog}_F{n:03d}"
            tone(base / f"Session{session}" / "sentences" / "wav" / dialog / f"{utt}.wav", n % 4, seed=n)
            lines.append(f"[{n}.0000 - {n + 1}.0000]\t{utt}\t{emo}\t[2.5000, 2.5000, 2.5000]")
        path = base / f"Session{session}" / "dialog" / "EmoEvaluation" / f"{dialog}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")


def write_all(root: Path) -> Path:
    write_librispeech(root)
    write_speech_commands(root)
    write_fsc(root)
    write_voxceleb1(root)
    write_iemocap(root)
    return root
