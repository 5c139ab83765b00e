"""HuBERT's masked prediction as a trainer objective (see ``training/loop.py`` for the contract).

Built from torchaudio's HuBERT pretraining pieces where they fit: span masks come from torchaudio's
``_compute_mask_indices`` (fairseq's algorithm: ``mask_prob`` 0.8 / span 10 → 8% of frames start a span).
torchaudio's ``HuBERTPretrainModel``/``LogitGenerator`` themselves are not used: they wrap torchaudio's own
``Wav2Vec2Model`` (no Fbank front end, no padding-safe group norm, other parameter names), while our teacher must be
the project's :class:`upstream.hubert.HubertModel` so that students can be derived from it and it can be saved in
our checkpoint format. The logits are that model's ``codeword_logits`` (cosine / 0.1, as fairseq).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchaudio.models.wav2vec2.components import _compute_mask_indices

from common.audio import SAMPLE_RATE
from common.tensors import frame_mask
from upstream.hubert import HubertModel


@dataclass
class MaskingConfig:
    mask_prob: float = 0.8   # × frames / mask_length span starts (fairseq's convention)
    mask_length: int = 10
    min_masks: int = 2
    # weight of the loss on unmasked frames (fairseq's pred_nomask_weight). fairseq's Base uses 0; a tiny budget
    # needs it: the unmasked term teaches the CNN front end quickly (see docs/results/pretrain_hubert_mini.md).
    nomask_weight: float = 0.0
    # "uniform" (fairseq: U[0, 1) per dimension) or "zeros". Measured on the mini teacher (12 × 192, post-LN,
    # 300 updates): zeros reached 9.4% masked accuracy where uniform reached 5.4% (the label prior is ~3%).
    mask_emb_init: str = "uniform"


class MaskedPrediction(nn.Module):
    """Cross-entropy of the codeword logits against k-means labels on masked frames, plus ``nomask_weight`` ×
    the cross-entropy on unmasked frames; both summed and divided by the masked frame count (fairseq)."""

    def __init__(self, model: HubertModel, labels: list[torch.Tensor], label_rate: int, masking: MaskingConfig):
        super().__init__()
        if model.final_proj is None:
            raise ValueError("the model to pretrain needs a codeword head: set model.num_codewords and final_dim")
        n_labels = max(int(l.max()) + 1 for l in labels if l.numel())
        if n_labels > model.cfg.num_codewords:
            raise ValueError(f"labels use {n_labels} clusters but the model has {model.cfg.num_codewords} codewords")
        if masking.mask_emb_init not in ("uniform", "zeros"):
            raise ValueError(f"masking.mask_emb_init must be 'uniform' or 'zeros', got {masking.mask_emb_init!r}")
        if masking.mask_emb_init == "zeros":
            with torch.no_grad():
                model.mask_emb.zero_()
        self.model, self.labels, self.masking = model, labels, masking
        # labels per model frame: 2 for 100 Hz MFCC labels and 50 Hz frames, 1 for iteration-2 labels
        self.labels_per_frame = label_rate * model.downsample_rate / SAMPLE_RATE
        self.label_rate = label_rate

    def frame_targets(self, indices: torch.Tensor, starts: torch.Tensor, num_frames: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Labels ``[batch, frame]`` for crops starting at ``starts`` (samples), and where they exist."""
        targets = torch.zeros(len(indices), num_frames, dtype=torch.long)
        exists = torch.zeros(len(indices), num_frames, dtype=torch.bool)
        offsets = (torch.arange(num_frames) * self.labels_per_frame).long()
        for row, (i, start) in enumerate(zip(indices.tolist(), starts.tolist())):
            file_labels = self.labels[i]
            pos = round(start * self.label_rate / SAMPLE_RATE) + offsets
            ok = pos < file_labels.numel()
            targets[row, ok] = file_labels[pos[ok]].long()  # stored int16 (pretrain/label_shards.py)
            exists[row] = ok
        return targets, exists

    def forward(self, batch: dict) -> dict:
        wav, lengths = batch["wav"], batch["wav_lengths"]
        frame_lengths = self.model.frame_lengths(lengths)
        num_frames = int(frame_lengths.max())
        valid = frame_mask(frame_lengths, num_frames)
        mask = _compute_mask_indices((wav.shape[0], num_frames), (~valid).cpu(), self.masking.mask_prob,
                                     self.masking.mask_length, min_masks=self.masking.min_masks)
        mask = mask.to(wav.device) & valid
        states, _ = self.model.encode(wav, lengths, mask)
        targets, exists = self.frame_targets(batch["indices"].cpu(), batch["starts"].cpu(), num_frames)
        targets, exists = targets.to(wav.device), exists.to(wav.device)
        masked, unmasked = mask & exists, ~mask & valid & exists
        weight = self.masking.nomask_weight
        scored = masked | unmasked if weight > 0 else masked
        logits = self.model.codeword_logits(states[-1][scored])  # [scored frames, codeword]
        ce = F.cross_entropy(logits.float(), targets[scored], reduction="none")
        is_masked = masked[scored]
        correct = (logits[is_masked].argmax(-1) == targets[masked]).sum().float()
        # as fairseq's hubert criterion: (Σ masked CE + weight · Σ unmasked CE) / masked frames
        loss = ce[is_masked].sum() + weight * ce[~is_masked].sum()
        return {"loss_sum": loss, "frames": is_masked.sum(), "parts": {"masked_accuracy": correct.detach()}}
