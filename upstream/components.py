"""Building blocks of HuBERT-like models, each a small module with one job (torchaudio-style).

Utterances of different lengths run *packed*: the CNN and the positional conv see each utterance unpadded (equal
lengths together), the linear layers and norms run on the frames of all utterances stacked as ``[sum(frames),
feature]`` (:func:`upstream.kernels.pack`), and attention runs per utterance. No work is spent on padding and
nothing of one utterance reaches another, so an utterance's features do not depend on what else is in its batch;
padded ``[batch, frame, feature]`` tensors appear only at the model's edges (:func:`upstream.kernels.unpack`).
Linears and conv + GELU take oneDNN's CPU kernels (``kernels.py``). See ``docs/SPEED.md``.

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
from torch.nn.utils import parametrize

from common.audio import SAMPLE_RATE

from .kernels import (conv1d_gelu, conv1d_gelu_channels_last, conv_gemm_applies, conv_output_lengths, linear,
                      needs_grad, onednn_applies, pack, per_utterance, unpack, valid_mask)


class MaskedGroupNorm(nn.Module):
    """GroupNorm with one group per channel (HuBERT Base's first conv layer), statistics over valid frames only.

    Holds the affine parameters; :meth:`ConvLayerBlock.forward` applies it to one utterance (or equal-length
    utterances) at a time, so the statistics never include padding (fairseq/transformers include the padded
    zeros, which is why their features change with the batch). ``forward`` is the plain reference:
    ``[batch, channel, time]`` (no padding) → the same shape, ``nn.GroupNorm(C, C)``.
    """

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x, x.shape[1], self.weight, self.bias, self.eps)


class ConvLayerBlock(nn.Module):
    """Conv1d (no padding) → optional norm → GELU on unpadded utterances.

    ``norm``: None, "group_norm" (:class:`MaskedGroupNorm`) or "layer_norm" (over channels, per frame).
    The per-channel group norm is folded into the convolution (exact up to float rounding): each output channel
    ``y_c = w_c · a + b_c`` is linear in the input windows ``a``, so its mean and variance over the utterance are
    ``w_c · mean(a) + b_c`` and ``w_cᵀ cov(a) w_c``, computed (in float64) from the small window covariance; the
    normalisation then becomes the conv's weight scale and bias, and the ``[channel, time]`` output of the widest
    layer is written once instead of three times (conv, norm, GELU).
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

    def _first_layer_gemm(self, x: torch.Tensor) -> torch.Tensor | None:
        """The group-normed first layer (one input channel) as one fused oneDNN GEMM (+ bias, GELU) per utterance
        over its windows, ``[batch, 1, time]`` → ``[batch, frame, out]`` (channels last, as the GEMM writes it);
        None when that path does not apply (other layers, gradients needed, no oneDNN, too short)."""
        if self.norm_kind != "group_norm" or x.shape[1] != 1 or x.shape[-1] < self.kernel:
            return None
        if not onednn_applies(x, self.conv.weight) or needs_grad(x, self.conv.weight, self.conv.bias,
                                                                  self.layer_norm.weight, self.layer_norm.bias):
            return None
        scale, shift = self._folded_group_norm(x)
        weight = self.conv.weight[None, :, 0] * scale[:, :, None]  # [batch, out, kernel]
        windows = x[:, 0].unfold(-1, self.kernel, self.stride)  # [batch, frame, kernel]
        if x.shape[0] == 1:
            return linear(windows[0], weight[0], shift[0], gelu=True)[None]
        return torch.stack([linear(w, wt, b, gelu=True) for w, wt, b in zip(windows, weight, shift)])

    def _folded_group_norm(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Conv weight ``[out, in, kernel]`` and bias ``[batch, out]`` that compute conv → group norm for ``x``
        ``[batch, in, time]``; the batch dim of the weight is folded in by the caller."""
        windows = x.unfold(-1, self.kernel, self.stride).transpose(1, 2).flatten(2).double()  # [b, frame, in*k]
        mean = windows.mean(1)                                                                  # [b, in*k]
        centred = windows - mean[:, None]
        cov = centred.transpose(1, 2) @ centred / windows.shape[1]                              # [b, in*k, in*k]
        w = self.conv.weight.double().flatten(1)                                                # [out, in*k]
        y_mean = mean @ w.t() + (0.0 if self.conv.bias is None else self.conv.bias.double())
        y_var = ((w @ cov) * w).sum(-1)                                                         # [b, out]
        norm = self.layer_norm
        scale = norm.weight.double() * torch.rsqrt(y_var + norm.eps)                            # [b, out]
        shift = norm.bias.double() - y_mean * scale
        if self.conv.bias is not None:
            shift = shift + self.conv.bias.double() * scale
        return scale.to(x.dtype), shift.to(x.dtype)

    def forward(self, x: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
        """x: ``[batch, in_channel, time]``, no padding (each row one whole utterance) → ``[batch, out_channel,
        frame]`` with ``frame = (time - kernel) // stride + 1`` (no frame, ``[batch, out_channel, 0]``, when the
        input is shorter than the kernel); ``channels_last``: ``[batch, frame, out_channel]`` instead."""
        if channels_last:
            y = self._first_layer_gemm(x)
            return self(x).transpose(1, 2) if y is None else y
        if x.shape[-1] < self.kernel:
            return x.new_zeros(x.shape[0], self.conv.out_channels, 0)
        y = self._first_layer_gemm(x)
        if y is not None:
            return y.transpose(1, 2).contiguous()
        if self.norm_kind == "group_norm":
            scale, shift = self._folded_group_norm(x)
            weight = self.conv.weight[None] * scale[:, :, None, None]  # [batch, out, in, kernel]
            if x.shape[0] == 1:
                return conv1d_gelu(x, weight[0], shift[0], self.stride)
            # several (equal-length) utterances, each its own folded weight: one conv, a group per utterance
            y = F.conv1d(x.reshape(1, -1, x.shape[-1]), weight.flatten(0, 1), shift.flatten(), stride=self.stride,
                         groups=x.shape[0])
            return F.gelu(y.view(x.shape[0], self.conv.out_channels, -1))
        if self.norm_kind == "layer_norm":
            y = self.layer_norm(self.conv(x).transpose(1, 2)).transpose(1, 2)  # LayerNorm wants channels last
            return F.gelu(y)
        return conv1d_gelu(x, self.conv.weight, self.conv.bias, self.stride)


class ConvFrontEnd(nn.Module):
    """HuBERT's waveform CNN. ``layers``: (channels, kernel, stride) per conv layer.

    mode "group_norm" (Base): a per-channel group norm after the first conv only; "layer_norm" (Large): a layer
    norm after every conv. Utterances run unpadded (equal lengths together, else one at a time): no work on
    padding, and nothing of one utterance reaches another.
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

    def _run(self, wav: torch.Tensor) -> torch.Tensor:
        """``[b, sample]`` unpadded → ``[b, frame, channel]``."""
        x = wav[:, None, :]
        for block in self.conv_layers:
            x = block(x)
        return x.transpose(1, 2)

    def forward_packed(self, wav: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """wav ``[batch, sample]`` (padded), lengths ``[batch]`` → packed features ``[sum(frames), channel]``
        (see :func:`pack`) and frame lengths ``[batch]``."""
        frames = self.output_lengths(lengths)
        n_samples, n_frames = lengths.tolist(), frames.tolist()
        kept = [(w[None, :n], f) for w, n, f in zip(wav, n_samples, n_frames) if f > 0]
        if kept and self._channels_last_applies(wav):
            return self._run_chained(kept, channels_last=True), frames
        if min(n_samples) == max(n_samples) and n_frames[0] > 0:
            return self._run(wav[:, : n_samples[0]]).flatten(0, 1), frames
        if len(kept) < 2:
            outs = [self._run(w)[0] for w, _ in kept]
            return (torch.cat(outs) if outs else wav.new_zeros(0, self.output_dim)), frames
        return self._run_chained(kept), frames

    def _channels_last_applies(self, wav: torch.Tensor) -> bool:
        """Whether every layer after the first runs as channels-last GEMMs (:func:`conv1d_gelu_channels_last`):
        group-norm mode (no norm after the first layer) and the GEMM path applies to each layer's weights."""
        rest = self.conv_layers[1:]
        return bool(rest) and all(block.norm_kind is None and
                                  conv_gemm_applies(wav, block.conv.weight, block.conv.bias, block.stride)
                                  for block in rest)

    def _run_chained(self, utterances: list[tuple[torch.Tensor, int]], channels_last: bool = False
                     ) -> torch.Tensor:
        """The first layer (its norm is per utterance) runs per utterance, then its outputs are chained along time
        into one sequence, each starting at a multiple of the remaining layers' total stride (zeros between), and
        every later layer runs once over the chain: each output frame of an utterance then reads only that
        utterance's frames (the frames straddling two utterances are computed and dropped). One large conv per
        layer instead of one per utterance. ``channels_last``: the chain is ``[time, channel]`` and the later
        layers run as GEMMs (:func:`conv1d_gelu_channels_last`; then also for one utterance or equal lengths).
        Returns ``[sum(frames), channel]``."""
        first, rest = self.conv_layers[0], self.conv_layers[1:]
        hop = math.prod(block.stride for block in rest)
        time_dim = 0 if channels_last else 1
        pieces, starts, position = [], [], 0
        for wav, _ in utterances:
            y = first(wav[:, None, :], channels_last=channels_last)[0]  # [frame0, channel] or [channel, frame0]
            starts.append(position)
            end = position + y.shape[time_dim]
            position = -(-end // hop) * hop
            gap = (position - end, y.shape[1]) if channels_last else (y.shape[0], position - end)
            pieces += [y, y.new_zeros(gap)]
        x = torch.cat(pieces, dim=time_dim)
        if channels_last:  # [time, channel]
            for block in rest:
                x = conv1d_gelu_channels_last(x, block.conv.weight, block.conv.bias, block.stride)
        else:  # [1, channel, time]
            x = x[None]
            for block in rest:
                x = block(x)
            x = x[0].t()
        index = torch.cat([torch.arange(start // hop, start // hop + f, device=x.device)
                           for start, (_, f) in zip(starts, utterances)])
        return x.index_select(0, index)

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """wav ``[batch, sample]`` → features ``[batch, frame, channel]`` (zeros past each length; ``frame`` is
        what the padded width yields) and frame lengths ``[batch]``."""
        packed, frames = self.forward_packed(wav, lengths)
        width = int(self.output_lengths(torch.tensor([wav.shape[-1]]))[0])
        return unpack(packed, frames, width), frames


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

    def forward_packed(self, wav: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Like :meth:`ConvFrontEnd.forward_packed`: packed ``[sum(frames), output_dim]`` and frame lengths."""
        features, frames = self(wav, lengths)
        return pack(features, frames), frames


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
