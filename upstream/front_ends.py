"""HuBERT's front ends: waveform or log-mel → frames ``[sum(frames), channel]`` at 20 ms, each utterance unpadded.

:class:`ConvFrontEnd` is HuBERT's waveform CNN; :class:`FbankFrontEnd` the log-mel front end of Fbank students.
Utterances run unpadded (equal lengths together; different lengths chained along time after the first CNN layer),
so no work is spent on padding and nothing of one utterance reaches another. The group norm of the first CNN layer
is folded into its weights, and on CPU the CNN runs as oneDNN GEMMs (``kernels.py``; ``docs/SPEED.md``).

State-dict names follow transformers' ``HubertModel`` (``conv_layers.{i}.conv``, ``conv_layers.0.layer_norm``).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from common.audio import SAMPLE_RATE

from .kernels import (conv1d_gelu, conv1d_gelu_channels_last, conv_gemm_applies, conv_output_lengths, linear,
                      needs_grad, onednn_applies, pack, unpack, valid_mask)


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
