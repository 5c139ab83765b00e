"""Distillation losses, as per-frame values so that callers can sum them over valid frames and normalise by the
global frame count (which makes single-process and DDP training agree exactly).

* DistilHuBERT (arXiv 2110.01900): per target layer, L1 averaged over features plus λ·(−log σ(cos)), λ = 1.
* Layer-to-layer: the same per-frame loss between each (projected) student layer and its teacher layer.
* Discriminative (Wang et al. 2022, arXiv 2210.15631, as read in FACTS.md): KL(teacher ‖ student) between the
  distributions over HuBERT codewords, softmax(cos(proj(h), codewords) / τ).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def regression_frame_loss(pred: torch.Tensor, target: torch.Tensor, cosine_weight: float = 1.0
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame L1 and cosine terms.

    pred, target: ``[batch, frame, feature]``. Returns ``(l1 [batch, frame], cos_term [batch, frame])`` where
    ``l1`` is the mean absolute error over features and ``cos_term = -cosine_weight * log σ(cos(pred, target))``.
    Computed in fp32 whatever the inputs' dtype (under bf16/fp16 autocast the sums over features would round).
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    pred, target = pred.float(), target.float()
    l1 = (pred - target).abs().mean(dim=-1)
    cos = F.cosine_similarity(pred, target, dim=-1)
    return l1, -cosine_weight * F.logsigmoid(cos)


def codeword_kl_frame_loss(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """Per-frame KL(teacher ‖ student) over codewords.

    Both ``[batch, frame, codeword]`` logits (already divided by the temperature). Returns ``[batch, frame]``.
    """
    log_p_teacher = F.log_softmax(teacher_logits.float(), dim=-1)
    log_p_student = F.log_softmax(student_logits.float(), dim=-1)
    return (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=-1)


def masked_sum(frame_values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Sum of ``frame_values [batch, frame]`` over frames where ``valid [batch, frame]`` is true."""
    return (frame_values * valid.to(frame_values.dtype)).sum()

