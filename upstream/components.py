"""Building blocks of HuBERT-like models, each a small module with one job (torchaudio-style).

Valid lengths travel beside the tensors through every module, and padding never leaks: the CNN's group norm uses
valid samples only, padded frames are zeroed after every conv layer and before the positional convolution, and
attention masks padded keys. So an utterance's features do not depend on what else is in its batch.

State-dict names follow transformers' ``HubertModel`` (``conv_layers.{i}.conv``, ``attention.q_proj``,
``feed_forward.intermediate_dense``, ``final_layer_norm``, ...) so checkpoint conversion is a few prefix renames.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from common.audio import SAMPLE_RATE
from common.tensors import frame_mask as valid_mask  # the one valid-frame mask (name kept for this module)



def conv_output_lengths(lengths: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Frames a stride-``stride`` conv without padding yields from ``lengths`` inputs (0 when too short)."""
    return torch.clamp(torch.div(lengths - kernel, stride, rounding_mode="floor") + 1, min=0)


class MaskedGroupNorm(nn.Module):
    """GroupNorm with one group per channel (HuBERT Base's first conv layer), statistics over valid frames only.

    Input ``[batch, channel, time]`` and valid lengths ``[batch]``. With no padding it is ``nn.GroupNorm(C, C)``;
    with padding, each utterance is normalised over its own valid frames (fairseq/transformers include the padded
    zeros in the statistics, which is why their features change with the batch) and padded frames are zero.
    """

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        if bool((lengths == x.shape[-1]).all()):
            return F.group_norm(x, channels, self.weight, self.bias, self.eps)
        out = torch.zeros_like(x)
        for b, n in enumerate(lengths.tolist()):  # one fused kernel per utterance over its valid frames
            if n > 0:
                out[b, :, :n] = F.group_norm(x[b:b + 1, :, :n], channels, self.weight, self.bias, self.eps)[0]
        return out


class ConvLayerBlock(nn.Module):
    """Conv1d (no padding) → optional norm → GELU, then padded frames set to zero.

    ``norm``: None, "group_norm" (:class:`MaskedGroupNorm`) or "layer_norm" (over channels, per frame).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, bias: bool,
                 norm: str | None):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.conv = nn.Conv1d(in_channels, out_channels, kernel, stride=stride, bias=bias)
        self.norm_kind = norm
        if norm == "group_norm":
            self.layer_norm = MaskedGroupNorm(out_channels)
        elif norm == "layer_norm":
            self.layer_norm = nn.LayerNorm(out_channels)
        elif norm is not None:
            raise ValueError(f"unknown conv norm {norm!r}; expected None, 'group_norm' or 'layer_norm'")

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: ``[batch, in_channel, time]`` → ``[batch, out_channel, frame]``, and the new valid lengths."""
        x = self.conv(x)
        lengths = conv_output_lengths(lengths, self.kernel, self.stride)
        padded = not bool((lengths == x.shape[-1]).all())
        if self.norm_kind == "group_norm":
            x = self.layer_norm(x, lengths)  # zero past each length already, and GELU(0) = 0
            padded = False
        elif self.norm_kind == "layer_norm":
            x = self.layer_norm(x.transpose(1, 2)).transpose(1, 2)  # LayerNorm wants channels last
        x = F.gelu(x)
        if padded:
            x = x * valid_mask(lengths, x.shape[-1])[:, None, :].to(x.dtype)
        return x, lengths


class ConvFrontEnd(nn.Module):
    """HuBERT's waveform CNN. ``layers``: (channels, kernel, stride) per conv layer.

    mode "group_norm" (Base): a per-channel group norm after the first conv only; "layer_norm" (Large): a layer
    norm after every conv.
    """

    def __init__(self, layers: Sequence[tuple[int, int, int]], mode: str = "group_norm", bias: bool = False):
        super().__init__()
        if mode not in ("group_norm", "layer_norm"):
            raise ValueError(f"unknown extractor_mode {mode!r}; expected 'group_norm' or 'layer_norm'")
        blocks, in_channels = [], 1
        for i, (channels, kernel, stride) in enumerate(layers):
            norm = mode if (mode == "layer_norm" or i == 0) else None
            blocks.append(ConvLayerBlock(in_channels, channels, kernel, stride, bias, norm))
            in_channels = channels
        self.conv_layers = nn.ModuleList(blocks)
        self.output_dim = in_channels
        self.downsample_rate = math.prod(stride for _, _, stride in layers)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        for block in self.conv_layers:
            lengths = conv_output_lengths(lengths, block.kernel, block.stride)
        return lengths

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """wav ``[batch, sample]`` → features ``[batch, frame, channel]`` and frame lengths ``[batch]``."""
        x = wav[:, None, :]
        if not bool((lengths == wav.shape[-1]).all()):
            x = x * valid_mask(lengths, wav.shape[-1])[:, None, :].to(wav.dtype)
        for block in self.conv_layers:
            x, lengths = block(x, lengths)
        return x.transpose(1, 2), lengths  # channels last for the projection


class FbankFrontEnd(nn.Module):
    """Log-mel filterbank front end with 20 ms frames (for Fbank students, Wang et al. 2022).

    80 log-mel bins every 10 ms (25 ms window, torchaudio), then a stride-2 conv (kernel 2: two 10 ms frames
    stacked and projected) and GELU → ``output_dim`` channels every 20 ms, the CNN's frame rate and width, so the
    rest of a student stays shape-compatible with its teacher.
    """

    def __init__(self, output_dim: int, n_mels: int = 80, sample_rate: int = SAMPLE_RATE):
        super().__init__()
        self.win, self.hop = sample_rate * 25 // 1000, sample_rate * 10 // 1000
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=self.win, win_length=self.win, hop_length=self.hop, n_mels=n_mels,
            center=False, power=2.0)
        self.stack = nn.Conv1d(n_mels, output_dim, kernel_size=2, stride=2)
        self.output_dim = output_dim
        self.downsample_rate = 2 * self.hop

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return conv_output_lengths(conv_output_lengths(lengths, self.win, self.hop), 2, 2)

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """wav ``[batch, sample]`` → features ``[batch, frame, output_dim]`` and frame lengths ``[batch]``."""
        log_mel = torch.log(self.mel(wav) + 1e-6)  # [batch, mel, frame10]; center=False: no padding read
        mel_lengths = conv_output_lengths(lengths, self.win, self.hop)
        log_mel = log_mel * valid_mask(mel_lengths, log_mel.shape[-1])[:, None, :]
        x = F.gelu(self.stack(log_mel))
        lengths = conv_output_lengths(mel_lengths, 2, 2)
        x = x * valid_mask(lengths, x.shape[-1])[:, None, :]
        return x.transpose(1, 2), lengths


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
        return self.dropout(self.projection(x))


class ConvPositionalEmbedding(nn.Module):
    """Weight-normalised grouped conv over time → GELU: ``[batch, frame, dim]`` → ``[batch, frame, dim]``.

    Padded frames must be zero on input (the caller zeroes them), so an utterance sees the same zeros past its
    end whether it is alone or padded in a batch. An even kernel yields one extra frame, trimmed at the end.
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
    """Multi-head self-attention with torch SDPA; ``key_mask`` ``[batch, frame]`` (True = valid) hides padding."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"embed_dim {dim} is not divisible by {heads} attention heads")
        self.heads, self.dropout = heads, dropout
        self.q_proj, self.k_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.v_proj, self.out_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        batch, frames, dim = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:  # [batch, frame, dim] → [batch, head, frame, head_dim]
            return t.view(batch, frames, self.heads, dim // self.heads).transpose(1, 2)

        attn_mask = None if key_mask is None else key_mask[:, None, None, :]
        y = F.scaled_dot_product_attention(split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x)),
                                           attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(y.transpose(1, 2).reshape(batch, frames, dim))


class FeedForward(nn.Module):
    """Linear → GELU → dropout → Linear: ``[..., dim]`` → ``[..., dim]``."""

    def __init__(self, dim: int, ffn_dim: int, activation_dropout: float):
        super().__init__()
        self.intermediate_dense = nn.Linear(dim, ffn_dim)
        self.output_dense = nn.Linear(ffn_dim, dim)
        self.dropout = nn.Dropout(activation_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_dense(self.dropout(F.gelu(self.intermediate_dense(x))))


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

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        """x ``[batch, frame, dim]`` → ``[batch, frame, dim]``."""
        if self.layer_norm_first:
            x = x + self.dropout(self.attention(self.layer_norm(x), key_mask))
            return x + self.dropout(self.feed_forward(self.final_layer_norm(x)))
        x = self.layer_norm(x + self.dropout(self.attention(x, key_mask)))
        return self.final_layer_norm(x + self.dropout(self.feed_forward(x)))


class Encoder(nn.Module):
    """Positional conv + transformer layers; returns every hidden state in transformers' convention.

    Post-LN: entry 0 = LayerNorm(x + pos_conv(x)); pre-LN: entry 0 = x + pos_conv(x) and the final LayerNorm is
    applied to the last entry only (as fairseq/s3prl and transformers 4 do; transformers 5 records the last layer
    before it in ``hidden_states`` and after it in ``last_hidden_state``). Frames past the valid lengths are zero
    in every entry.
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

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        """x ``[batch, frame, dim]`` (projected features), lengths ``[batch]`` → ``layers + 1`` hidden states."""
        mask = valid_mask(lengths, x.shape[1])
        padded = not bool(mask.all())
        keep = mask[:, :, None].to(x.dtype)
        if padded:
            x = x * keep  # the positional conv must see zeros past each utterance's end
        x = x + self.pos_conv(x)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        x = self.dropout(x)
        key_mask = mask if padded else None  # no mask lets SDPA pick its fastest kernel
        states = [x]
        for layer in self.layers:
            x = layer(x, key_mask)
            states.append(x)
        if self.layer_norm_first:
            states[-1] = self.layer_norm(states[-1])
        if padded:
            states = [s * keep for s in states]
        return states


class PredictionHead(nn.Sequential):
    """DistilHuBERT's head: Linear → GELU → Linear, ``[..., dim]`` → ``[..., out_dim]`` (a teacher layer)."""

    def __init__(self, dim: int, inter_dim: int, out_dim: int):
        super().__init__(nn.Linear(dim, inter_dim), nn.GELU(), nn.Linear(inter_dim, out_dim))
