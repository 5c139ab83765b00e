"""SUPERB's FBANK baseline: 80 log-mel filterbanks + Δ + ΔΔ (240 dims), per-utterance CMVN, 10 ms frames.

Matches s3prl's ``baseline/fbank.yaml`` (Kaldi-compatible fbank from torchaudio, 25 ms window, 10 ms shift,
deltas over 5 frames, then mean/variance normalisation over the utterance). No parameters.

``fbank_no_cmvn`` is s3prl's ``baseline/fbank_no_cmvn.yaml``: the same features without the per-utterance CMVN.
Why both: after CMVN every utterance's mean feature is zero, so a linear projector followed by mean pooling (the
KS/IC/ER/SID heads) gives every utterance the same vector and FBANK sits at chance on those tasks (s3prl issue 316);
without CMVN the utterance mean survives and FBANK learns them. The report's FBANK anchor takes the better of the
two rows per metric (``benchmark/report.py``).
"""
from __future__ import annotations

import torch
import torchaudio

from .base import Upstream, UpstreamOutput
from .registry import register_upstream


class FbankUpstream(Upstream):
    """hidden_states: one entry ``[batch, frame, 240]``; ``downsample_rate`` 160 (10 ms)."""

    downsample_rate = 160

    def __init__(self, num_mel_bins: int = 80, frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0,
                 delta_order: int = 2, delta_win: int = 5, cmvn: bool = True):
        super().__init__()
        self.num_mel_bins, self.delta_order, self.delta_win, self.cmvn = num_mel_bins, delta_order, delta_win, cmvn
        self.frame_length_ms, self.frame_shift_ms = frame_length_ms, frame_shift_ms
        self.window = int(self.sample_rate * frame_length_ms / 1000)
        self.shift = int(self.sample_rate * frame_shift_ms / 1000)
        self.downsample_rate = self.shift

    def min_samples(self) -> int:
        return self.window

    def frames_for(self, num_samples: torch.Tensor) -> torch.Tensor:
        return torch.div(num_samples - self.window, self.shift, rounding_mode="floor") + 1  # Kaldi snip_edges

    def hash_config(self) -> dict:
        return {"type": "fbank", "mels": self.num_mel_bins, "win_ms": self.frame_length_ms,
                "shift_ms": self.frame_shift_ms, "delta": [self.delta_order, self.delta_win], "cmvn": self.cmvn}

    def features(self, wav: torch.Tensor) -> torch.Tensor:
        """One waveform ``[sample]`` → ``[frame, num_mel_bins * (delta_order + 1)]``."""
        fbank = torchaudio.compliance.kaldi.fbank(
            wav[None], sample_frequency=self.sample_rate, num_mel_bins=self.num_mel_bins,
            frame_length=self.frame_length_ms, frame_shift=self.frame_shift_ms, use_log_fbank=True)
        feats = [fbank]
        for _ in range(self.delta_order):  # compute_deltas works along the last axis: time last
            feats.append(torchaudio.functional.compute_deltas(feats[-1].t(), win_length=self.delta_win).t())
        x = torch.cat(feats, dim=-1)
        if self.cmvn:
            # unbiased std as s3prl; a one-frame utterance would give NaN there, so use the biased one then
            std = x.std(dim=0, keepdim=True, correction=1 if x.shape[0] > 1 else 0)
            x = (x - x.mean(dim=0, keepdim=True)) / (std + 1e-10)
        return x

    def extract(self, wavs: list[torch.Tensor]) -> UpstreamOutput:
        with torch.no_grad():
            feats = [self.features(w) for w in wavs]
        lengths = torch.tensor([f.shape[0] for f in feats], device=wavs[0].device)
        padded = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
        return UpstreamOutput([padded], lengths)


@register_upstream("fbank")
def build_fbank(**kwargs) -> FbankUpstream:
    """SUPERB's FBANK baseline (240 dims, 10 ms frames, no parameters)."""
    return FbankUpstream(**kwargs)


@register_upstream("fbank_no_cmvn")
def build_fbank_no_cmvn(**kwargs) -> FbankUpstream:
    """s3prl's ``fbank_no_cmvn``: SUPERB's FBANK features without per-utterance CMVN (240 dims, 10 ms frames)."""
    if "cmvn" in kwargs:
        raise ValueError("fbank_no_cmvn: 'cmvn' is fixed to False by the name; use 'fbank' with cmvn=... instead")
    return FbankUpstream(cmvn=False, **kwargs)
