"""Front-end warm-up: before masked prediction, the waveform CNN learns to reproduce log-mel filterbanks.

Not in HuBERT's recipe. HuBERT's CNN learns its filters from the masked-prediction loss alone, which takes far more
updates than a CPU demo has: on the mini teacher the CNN is what limits learning (with masking off, 2 and 12
transformer layers learn equally fast). Regressing the FBANK baseline's own log-mel features (per-utterance CMVN,
no deltas) from the projected CNN output is cheap (no transformer in the graph) and gives masked prediction a
front end that already hears. Measured on hubert_mini (see docs/results/pretrain_hubert_mini.md).

The CNN's frame ``t`` reads samples ``[320 t, 320 t + 400)``, exactly the 25 ms window of Kaldi fbank frame ``2 t``
(10 ms shift, snip_edges), so the targets are every second fbank frame, with no resampling.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from common.tensors import frame_mask
from upstream.fbank import FbankUpstream
from upstream.hubert import HubertModel


@dataclass
class FrontEndWarmupConfig:
    steps: int = 0            # 0 = off (HuBERT's recipe)
    lr: float = 2.0e-3        # peak lr; the schedule and other optimizer settings are run.optim's
    mel_bins: int = 80


class FrontEndRegression(nn.Module):
    """L1 between ``head(feature_projection(front_end(wav)))`` and the utterance-normalised log-mel at the same
    frames. Holds the model's front end and projection (shared, so training them trains the model) and its own
    linear head, which is thrown away afterwards."""

    def __init__(self, model: HubertModel, mel_bins: int = 80):
        super().__init__()
        if model.cfg.front_end != "cnn":
            raise ValueError(f"front_end_warmup needs a waveform CNN front end, the model has {model.cfg.front_end!r}")
        stride = model.downsample_rate
        self.fbank = FbankUpstream(num_mel_bins=mel_bins, delta_order=0, cmvn=True)
        if stride % self.fbank.shift:
            raise ValueError(f"front_end_warmup needs a frame stride that is a multiple of {self.fbank.shift} "
                             f"samples, the model has {stride}")
        self.every = stride // self.fbank.shift
        self.front_end, self.feature_projection = model.front_end, model.feature_projection
        self.head = nn.Linear(model.cfg.embed_dim, mel_bins)

    def targets(self, wav: torch.Tensor, wav_lengths: torch.Tensor, num_frames: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``[batch, num_frames, mel_bins]``: each utterance's log-mel (CMVN over its own length), every
        ``self.every``-th frame, and ``[batch, num_frames]`` where a target exists."""
        out = wav.new_zeros(wav.shape[0], num_frames, self.head.out_features)
        exists = torch.zeros(wav.shape[0], num_frames, dtype=torch.bool, device=wav.device)
        with torch.no_grad():
            for row, n in enumerate(wav_lengths.tolist()):
                if n < self.fbank.min_samples():
                    continue
                mel = self.fbank.features(wav[row, :n])[::self.every][:num_frames]
                out[row, :mel.shape[0]] = mel
                exists[row, :mel.shape[0]] = True
        return out, exists

    def forward(self, batch: dict) -> dict:
        wav, lengths = batch["wav"], batch["wav_lengths"]
        features, frame_lengths = self.front_end(wav, lengths)
        predicted = self.head(self.feature_projection(features))
        targets, exists = self.targets(wav, lengths, predicted.shape[1])
        valid = frame_mask(frame_lengths, predicted.shape[1]) & exists
        error = F.l1_loss(predicted, targets, reduction="none").mean(-1)
        loss = error[valid].sum()
        return {"loss_sum": loss, "frames": valid.sum(), "parts": {"l1": loss.detach()}}
