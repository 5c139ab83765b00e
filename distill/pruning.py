"""DPHuBERT's structured pruning (arXiv 2305.17651): hard-concrete gates and the expected parameter count.

The hard concrete distribution is Louizos et al. 2018 (arXiv 1712.01312) as the FLOP project (Wang et al. 2020)
uses it and DPHuBERT adopts it: stretch (l, r) = (−0.1, 1.1), temperature β = 2/3; in eval mode the gate keeps the
round(expected L0) units with the largest ``sigmoid(log_alpha / β · 0.8)`` at that value and zeroes the rest.
The sparsity constraint is CoFiPruning's Lagrangian, λ₁(ŝ − t) + λ₂(ŝ − t)², with ŝ the expected sparsity and t
the target; the multipliers are maximised (gradient ascent) while the model minimises.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from upstream.compact import CompactConfig, Gates, parameter_count, reuses

BETA, LEFT, RIGHT = 2.0 / 3.0, -0.1, 1.1


class HardConcrete(nn.Module):
    """``n`` gates; ``forward()`` → ``[n]`` samples in [0, 1] (train) or deterministic gates (eval)."""

    def __init__(self, n: int, init_drop_rate: float = 0.01):
        super().__init__()
        mean = math.log(1 - init_drop_rate) - math.log(init_drop_rate)
        self.log_alpha = nn.Parameter(torch.empty(n).normal_(mean, 0.01))

    def l0(self) -> torch.Tensor:
        """``[n]`` probability that each gate is non-zero (differentiable)."""
        return torch.sigmoid(self.log_alpha - BETA * math.log(-LEFT / RIGHT))

    def forward(self) -> torch.Tensor:
        if self.training:
            u = torch.rand_like(self.log_alpha).clamp(1e-6, 1 - 1e-6)
            s = torch.sigmoid((u.log() - (1 - u).log() + self.log_alpha) / BETA)
            return (s * (RIGHT - LEFT) + LEFT).clamp(0.0, 1.0)
        with torch.no_grad():
            n = self.log_alpha.numel()
            zeros = n - int(round(float(self.l0().sum())))
            gate = torch.sigmoid(self.log_alpha / BETA * 0.8)
            if zeros > 0:
                gate[torch.topk(gate, k=zeros, largest=False).indices] = 0.0
            return gate


class PruningGates(nn.Module):
    """The gates of one :class:`CompactModel`: CNN channels of every layer but the last (its channels feed the
    projection's LayerNorm), heads and FFN units of every layer, each group optional."""

    def __init__(self, cfg: CompactConfig, conv: bool, heads: bool, ffn: bool, init_drop_rate: float):
        super().__init__()
        if any(reuses(cfg, i) for i in range(cfg.layers)):
            raise ValueError("pruning needs a student without attention-map reuse")
        self.cfg = cfg
        make = lambda n, on: HardConcrete(n, init_drop_rate) if on and n > 0 else None
        self.conv = nn.ModuleList([make(ch, conv) if i < len(cfg.conv_layers) - 1 else None
                                   for i, (ch, _, _) in enumerate(cfg.conv_layers)])
        self.heads = nn.ModuleList([make(h, heads) for h in cfg.heads])
        self.ffn = nn.ModuleList([make(f, ffn) for f in cfg.ffn_dims])
        self.full_params = parameter_count(cfg)

    def forward(self) -> Gates:
        sample = lambda g: None if g is None else g()
        return Gates([sample(g) for g in self.conv], [sample(g) for g in self.heads], [sample(g) for g in self.ffn])

    def expected_params(self) -> torch.Tensor:
        """Expected parameter count of the pruned model (differentiable through the gates' L0 probabilities);
        equals ``parameter_count`` of the pruned config when the gates are deterministic 0/1."""
        cfg = self.cfg
        ref = self.heads[0].log_alpha if self.heads[0] is not None else next(self.parameters())
        count = lambda g, n: g.l0().sum() if g is not None else ref.new_tensor(float(n))
        total = ref.new_tensor(float(self.full_params))
        in_full, in_exp = 1.0, ref.new_tensor(1.0)
        for i, (ch, k, _) in enumerate(cfg.conv_layers):
            out_exp = count(self.conv[i], ch)
            norm = 2 if (cfg.extractor_mode == "layer_norm" or i == 0) else 0
            per_out = (1 if cfg.conv_bias else 0) + norm
            total = total - (ch * in_full * k + ch * per_out) + (out_exp * in_exp * k + out_exp * per_out)
            in_full, in_exp = float(ch), out_exp
        d = cfg.embed_dim
        for layer in range(cfg.layers):
            per_head = cfg.head_dim * (4 * d + 3)
            total = total - cfg.heads[layer] * per_head + count(self.heads[layer], cfg.heads[layer]) * per_head
            per_unit = 2 * d + 1
            total = total - cfg.ffn_dims[layer] * per_unit + count(self.ffn[layer], cfg.ffn_dims[layer]) * per_unit
        return total


def lagrangian(expected_sparsity: torch.Tensor, target: float, lambdas: torch.Tensor) -> torch.Tensor:
    """λ₁(ŝ − t) + λ₂(ŝ − t)² whose value is the penalty, whose gradient for ŝ is the penalty's and whose
    gradient for the multipliers ``lambdas`` ``[2]`` is the penalty's negated (so a minimiser ascends them)."""
    gap = expected_sparsity - target
    terms = torch.stack([gap, gap * gap])
    lam = lambdas.detach()
    return (lam * terms).sum() - (lambdas * terms.detach()).sum() + (lam * terms.detach()).sum()
