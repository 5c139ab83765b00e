"""Building blocks of HuBERT-like models after the front end (``front_ends.py``), each a small module with one job
(torchaudio-style).

Utterances of different lengths run *packed*: the positional conv sees each utterance unpadded (equal lengths
together), the linear layers and norms run on the frames of all utterances stacked as ``[sum(frames),
feature]`` (:func:`upstream.kernels.pack`), and attention runs per utterance. No work is spent on padding and
nothing of one utterance reaches another, so an utterance's features do not depend on what else is in its batch;
padded ``[batch, frame, feature]`` tensors appear only at the model's edges (:func:`upstream.kernels.unpack`).
Linears and conv + GELU take oneDNN's CPU kernels (``kernels.py``). See ``docs/SPEED.md``.

State-dict names follow transformers' ``HubertModel`` (``conv_layers.{i}.conv``, ``attention.q_proj``,
``feed_forward.intermediate_dense``, ``final_layer_norm``, ...) so checkpoint conversion is a few prefix renames.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from .kernels import linear, pack, per_utterance, unpack


class FeatureProjection(nn.Module):
    """Optional LayerNorm → Linear → dropout: features ``[batch, frame, in_dim]`` → ``[batch, frame, embed_dim]``.

    The LayerNorm is optional because ntu-spml/distilhubert (s3prl's distiller) has none, while HuBERT has one;
    torchaudio's stock FeatureProjection always applies it and so cannot represent DistilHuBERT exactly.
    """

    def __init__(self, in_dim: int, embed_dim: int, layer_norm: bool, dropout: float, eps: float = 1e-5):
        super().__init__()
        self.layer_norm = nn.LayerNorm(in_dim, eps=eps) if layer_norm else None
        self.projection = nn.Linear(in_dim, embed_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return self.dropout(linear(x, self.projection.weight, self.projection.bias))


class ConvPositionalEmbedding(nn.Module):
    """Weight-normalised grouped conv over time → GELU: ``[batch, frame, dim]`` → ``[batch, frame, dim]``.

    Give it unpadded utterances (the encoder does): the conv's own zero padding is what an utterance sees past its
    ends. An even kernel yields one extra frame, trimmed at the end.
    """

    def __init__(self, dim: int, kernel: int, groups: int):
        super().__init__()
        conv = nn.Conv1d(dim, dim, kernel_size=kernel, padding=kernel // 2, groups=groups)
        nn.init.normal_(conv.weight, mean=0.0, std=math.sqrt(4.0 / (kernel * dim)))
        nn.init.zeros_(conv.bias)
        self.conv = nn.utils.parametrizations.weight_norm(conv, name="weight", dim=2)
        self.trim = 1 if kernel % 2 == 0 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x.transpose(1, 2))  # conv wants [batch, dim, frame]
        if self.trim:
            y = y[:, :, : -self.trim]
        return F.gelu(y).transpose(1, 2)


class SelfAttention(nn.Module):
    """Multi-head self-attention (torch SDPA) with one fused q/k/v projection.

    Packed input (``x [sum(lengths), dim]`` and ``lengths``, what the encoder uses): attention runs per utterance
    (once for equal lengths), so no query or key is padding and no mask is needed. Padded input (``x [batch, frame,
    dim]`` and an optional ``key_mask [batch, frame]``, True = valid; for traced graphs such as an ONNX export):
    padded keys are masked.
    """

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"embed_dim {dim} is not divisible by {heads} attention heads")
        self.heads, self.dropout = heads, dropout
        self.q_proj, self.k_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.v_proj, self.out_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None, lengths: list[int] | None = None
                ) -> torch.Tensor:
        """Packed ``[sum(lengths), dim]`` or padded ``[batch, frame, dim]`` → the same shape."""
        dim = x.shape[-1]
        qkv = linear(x, torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight]),
                     torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]))
        dropout = self.dropout if self.training else 0.0

        def attend(t: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
            b, frames = t.shape[:2]  # [b, frame, 3 * dim] → [b, frame, dim]
            q, k, v = t.view(b, frames, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)  # [b, head, frame, d]
            return y.transpose(1, 2).reshape(b, frames, dim)

        if x.dim() == 3:
            y = attend(qkv, None if key_mask is None else key_mask[:, None, None, :])
        else:
            if lengths is None:
                raise ValueError("packed attention input [frames, dim] needs the utterance lengths")
            y = per_utterance(attend, qkv, lengths, dim)
        return linear(y, self.out_proj.weight, self.out_proj.bias)


class FeedForward(nn.Module):
    """Linear → GELU → dropout → Linear: ``[..., dim]`` → ``[..., dim]``."""

    def __init__(self, dim: int, ffn_dim: int, activation_dropout: float):
        super().__init__()
        self.intermediate_dense = nn.Linear(dim, ffn_dim)
        self.output_dense = nn.Linear(ffn_dim, dim)
        self.dropout = nn.Dropout(activation_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = linear(x, self.intermediate_dense.weight, self.intermediate_dense.bias, gelu=True)
        return linear(self.dropout(hidden), self.output_dense.weight, self.output_dense.bias)


class EncoderLayer(nn.Module):
    """One transformer layer, post-LN (HuBERT Base) or pre-LN (``layer_norm_first``, "stable layer norm", Large)."""

    def __init__(self, dim: int, ffn_dim: int, heads: int, layer_norm_first: bool, dropout: float,
                 attention_dropout: float, activation_dropout: float, eps: float = 1e-5):
        super().__init__()
        self.layer_norm_first = layer_norm_first
        self.attention = SelfAttention(dim, heads, attention_dropout)
        self.layer_norm = nn.LayerNorm(dim, eps=eps)
        self.feed_forward = FeedForward(dim, ffn_dim, activation_dropout)
        self.final_layer_norm = nn.LayerNorm(dim, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None, lengths: list[int] | None = None
                ) -> torch.Tensor:
        """x packed ``[sum(lengths), dim]`` with ``lengths``, or padded ``[batch, frame, dim]`` with an optional
        ``key_mask`` (see :class:`SelfAttention`) → the same shape."""
        if self.layer_norm_first:
            x = x + self.dropout(self.attention(self.layer_norm(x), key_mask, lengths))
            return x + self.dropout(self.feed_forward(self.final_layer_norm(x)))
        x = self.layer_norm(x + self.dropout(self.attention(x, key_mask, lengths)))
        return self.final_layer_norm(x + self.dropout(self.feed_forward(x)))


class Encoder(nn.Module):
    """Positional conv + transformer layers; returns every hidden state in transformers' convention.

    Post-LN: entry 0 = LayerNorm(x + pos_conv(x)); pre-LN: entry 0 = x + pos_conv(x) and the final LayerNorm is
    applied to the last entry only (as fairseq/s3prl and transformers 4 do; transformers 5 records the last layer
    before it in ``hidden_states`` and after it in ``last_hidden_state``). Utterances run packed (see
    :func:`pack`): the positional conv sees each utterance alone (zeros past its ends, as when it is unpadded) and
    attention runs per utterance, so no work is spent on padding and nothing leaks between utterances.
    """

    def __init__(self, dim: int, ffn_dim: int, heads: int, layers: int, layer_norm_first: bool, conv_pos: int,
                 conv_pos_groups: int, dropout: float, attention_dropout: float, activation_dropout: float,
                 eps: float = 1e-5):
        super().__init__()
        self.layer_norm_first = layer_norm_first
        self.pos_conv = ConvPositionalEmbedding(dim, conv_pos, conv_pos_groups)
        self.layer_norm = nn.LayerNorm(dim, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList([
            EncoderLayer(dim, ffn_dim, heads, layer_norm_first, dropout, attention_dropout, activation_dropout, eps)
            for _ in range(layers)])

    def forward_packed(self, x: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        """x ``[sum(lengths), dim]`` (packed projected features), lengths ``[batch]`` → ``layers + 1`` packed
        hidden states ``[sum(lengths), dim]``."""
        n = lengths.tolist()
        with parametrize.cached():  # the weight-normed pos-conv weight once, not once per utterance
            x = x + per_utterance(self.pos_conv, x, n, x.shape[-1])
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        x = self.dropout(x)
        states = [x]
        for layer in self.layers:
            x = layer(x, lengths=n)
            states.append(x)
        if self.layer_norm_first:
            states[-1] = self.layer_norm(states[-1])
        return states

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        """x ``[batch, frame, dim]`` (projected features), lengths ``[batch]`` → ``layers + 1`` hidden states
        ``[batch, frame, dim]``, zero past each length."""
        return [unpack(s, lengths, x.shape[1]) for s in self.forward_packed(pack(x, lengths), lengths)]


class PredictionHead(nn.Sequential):
    """DistilHuBERT's head: Linear → GELU → Linear, ``[..., dim]`` → ``[..., out_dim]`` (a teacher layer)."""

    def __init__(self, dim: int, inter_dim: int, out_dim: int):
        super().__init__(nn.Linear(dim, inter_dim), nn.GELU(), nn.Linear(inter_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, _, last = self
        return linear(linear(x, first.weight, first.bias, gelu=True), last.weight, last.bias)
