"""The students of DistilHuBERT's successors as one configurable model: :class:`CompactModel`.

One architecture covers what FitHuBERT, MaskHuBERT, ARMHuBERT, STaRHuBERT and DPHuBERT ship, each a point of
:class:`CompactConfig`:

* a waveform CNN with any (channels, kernel, stride) per layer (FitHuBERT/ARMHuBERT's thin CNN with 1×1 layers;
  DPHuBERT's pruned channel counts);
* per-layer attention heads of ``head_dim`` dims (0 heads: no attention, as a DPHuBERT layer whose heads were all
  pruned) and per-layer FFN widths (0: no FFN);
* attention-map reuse (ARMHuBERT, arXiv 2305.11685): a reusing layer has no query/key projections and applies the
  attention probabilities of the last layer that computed its own;
* an optional time-reduction conv before the first layer (FitHuBERT, arXiv 2207.00555: kernel = stride = 2, the
  transformer runs at 40 ms frames, ``downsample_rate`` 640).

Parameter names follow :class:`upstream.hubert.HubertModel` (``front_end.conv_layers.{i}.conv``,
``feature_projection``, ``encoder.pos_conv``, ``encoder.layers.{i}.attention.q_proj``, ...) so a teacher's weights
copy in where shapes fit. ``encode`` takes optional gates (``[units]`` multipliers per head, FFN unit and CNN
channel) for structured pruning; :func:`prune` folds gates into a dense smaller model with equal outputs.

Hidden states follow the convention the model's paper used for SUPERB (``CompactConfig.hidden_states``):
``"with_input"`` (transformers/s3prl HuBERT: encoder input, then each layer) or ``"layers"`` (FitHuBERT's and the
ARMHuBERT repository's s3prl experts return the layer outputs only).
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from common.audio import SAMPLE_RATE
from common.tensors import frame_mask

from .base import BucketedUpstream, pad_waveforms
from .components import ConvPositionalEmbedding, FeatureProjection
from .front_ends import ConvLayerBlock
from .kernels import conv_output_lengths, pack, per_utterance, unpack


@dataclass
class CompactConfig:
    """Architecture of a compact student (defaults: ARMHuBERT, arXiv 2305.11685, its repository's
    ``armhubert-960.yaml``).

    conv_layers: (channels, kernel, stride) per CNN layer. heads / ffn_dims / reuse_attention: one entry per
    transformer layer (an empty ``reuse_attention`` means no reuse). head_dim: dims per attention head.
    time_reduction: 1 (none) or the kernel = stride of a conv before the first layer.
    """

    conv_layers: tuple[tuple[int, int, int], ...] = ((128, 10, 5), (256, 1, 1)) + ((256, 3, 2),) * 4 + (
        (480, 1, 1),) + ((480, 2, 2),) * 2
    extractor_mode: Literal["group_norm", "layer_norm"] = "group_norm"
    conv_bias: bool = False
    feat_proj_layer_norm: bool = True
    embed_dim: int = 480
    heads: tuple[int, ...] = (12,) * 12
    head_dim: int = 40
    ffn_dims: tuple[int, ...] = (864,) * 12
    reuse_attention: tuple[bool, ...] = (False, True) * 6
    time_reduction: int = 1
    layer_norm_first: bool = False
    conv_pos: int = 128
    conv_pos_groups: int = 16
    layer_norm_eps: float = 1e-5
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.1
    feat_proj_dropout: float = 0.05
    hidden_states: Literal["with_input", "layers"] = "layers"

    def __post_init__(self):
        self.conv_layers = tuple(tuple(int(v) for v in layer) for layer in self.conv_layers)
        self.heads, self.ffn_dims = tuple(int(h) for h in self.heads), tuple(int(f) for f in self.ffn_dims)
        self.reuse_attention = tuple(bool(r) for r in self.reuse_attention)

    @property
    def layers(self) -> int:
        return len(self.heads)

    def check(self) -> None:
        """Raises ValueError naming the field that does not fit the others."""
        if len(self.ffn_dims) != self.layers:
            raise ValueError(f"ffn_dims has {len(self.ffn_dims)} entries for {self.layers} layers (heads)")
        if self.reuse_attention and len(self.reuse_attention) != self.layers:
            raise ValueError(f"reuse_attention has {len(self.reuse_attention)} entries for {self.layers} layers")
        if self.reuse_attention and self.reuse_attention[0]:
            raise ValueError("reuse_attention[0] must be false: the first layer has no earlier map to reuse")
        if self.time_reduction < 1:
            raise ValueError(f"time_reduction must be >= 1, got {self.time_reduction}")
        if self.embed_dim % self.conv_pos_groups:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by conv_pos_groups {self.conv_pos_groups}")


def reuses(cfg: CompactConfig, layer: int) -> bool:
    return bool(cfg.reuse_attention) and cfg.reuse_attention[layer]


class GatedAttention(nn.Module):
    """Multi-head self-attention on a padded batch that can return its probabilities, take another layer's
    probabilities instead of its own (``reuse``: no q/k projections), and scale each head's output by a gate.

    x ``[batch, frame, dim]``, key_valid ``[batch, frame]`` (True = real frame) → ``[batch, frame, dim]`` and the
    probabilities ``[batch, head, frame, frame]`` used.
    """

    def __init__(self, dim: int, heads: int, head_dim: int, dropout: float, reuse: bool):
        super().__init__()
        self.heads, self.head_dim, self.dropout, self.reuse = heads, head_dim, dropout, reuse
        inner = heads * head_dim
        with warnings.catch_warnings():  # a pruned layer may have 0 heads: empty weights are meant
            warnings.filterwarnings("ignore", "Initializing zero-element tensors")
            if not reuse:
                self.q_proj, self.k_proj = nn.Linear(dim, inner), nn.Linear(dim, inner)
            self.v_proj, self.out_proj = nn.Linear(dim, inner), nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor, key_valid: torch.Tensor, probs: torch.Tensor | None = None,
                gate: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, t, _ = x.shape
        if self.heads == 0:  # every head pruned: the block adds its output bias only
            return self.out_proj.bias.expand(b, t, -1), probs
        split = lambda y: y.view(b, t, self.heads, self.head_dim).transpose(1, 2)  # → [b, head, frame, d]
        if not self.reuse:
            scores = split(self.q_proj(x)) @ split(self.k_proj(x)).transpose(-1, -2) / math.sqrt(self.head_dim)
            probs = scores.masked_fill(~key_valid[:, None, None, :], float("-inf")).softmax(-1)
        elif probs is None or probs.shape[1] != self.heads:
            raise ValueError("a reusing attention layer needs the probabilities of an earlier layer with as many "
                             "heads")
        weights = F.dropout(probs, self.dropout, self.training)
        y = weights @ split(self.v_proj(x))  # [b, head, frame, d]
        if gate is not None:
            y = y * gate.to(y.dtype)[None, :, None, None]
        return self.out_proj(y.transpose(1, 2).reshape(b, t, -1)), probs


class GatedFeedForward(nn.Module):
    """Linear → GELU → (× gate per unit) → dropout → Linear, ``[..., dim]`` → ``[..., dim]``; 0 units: bias only."""

    def __init__(self, dim: int, ffn_dim: int, activation_dropout: float):
        super().__init__()
        with warnings.catch_warnings():  # 0 units (pruned away): empty weights are meant
            warnings.filterwarnings("ignore", "Initializing zero-element tensors")
            self.intermediate_dense, self.output_dense = nn.Linear(dim, ffn_dim), nn.Linear(ffn_dim, dim)
        self.dropout = nn.Dropout(activation_dropout)

    def forward(self, x: torch.Tensor, gate: torch.Tensor | None = None) -> torch.Tensor:
        if self.intermediate_dense.out_features == 0:
            return self.output_dense.bias.expand(*x.shape[:-1], -1)
        h = F.gelu(self.intermediate_dense(x))
        if gate is not None:
            h = h * gate.to(h.dtype)
        return self.output_dense(self.dropout(h))


class CompactLayer(nn.Module):
    """One post-LN (or pre-LN) transformer layer of :class:`CompactModel`."""

    def __init__(self, cfg: CompactConfig, index: int):
        super().__init__()
        dim = cfg.embed_dim
        self.layer_norm_first = cfg.layer_norm_first
        self.attention = GatedAttention(dim, cfg.heads[index], cfg.head_dim, cfg.attention_dropout,
                                        reuses(cfg, index))
        self.layer_norm = nn.LayerNorm(dim, eps=cfg.layer_norm_eps)
        self.feed_forward = GatedFeedForward(dim, cfg.ffn_dims[index], cfg.activation_dropout)
        self.final_layer_norm = nn.LayerNorm(dim, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, key_valid, probs=None, head_gate=None, ffn_gate=None):
        """x ``[batch, frame, dim]`` → (``[batch, frame, dim]``, attention probabilities)."""
        if self.layer_norm_first:
            a, probs = self.attention(self.layer_norm(x), key_valid, probs, head_gate)
            x = x + self.dropout(a)
            return x + self.dropout(self.feed_forward(self.final_layer_norm(x), ffn_gate)), probs
        a, probs = self.attention(x, key_valid, probs, head_gate)
        x = self.layer_norm(x + self.dropout(a))
        return self.final_layer_norm(x + self.dropout(self.feed_forward(x, ffn_gate))), probs


@dataclass
class Gates:
    """Multipliers for structured pruning (DPHuBERT): ``conv[i]`` ``[channels of CNN layer i]`` (None: ungated),
    ``heads[l]`` ``[heads of layer l]``, ``ffn[l]`` ``[FFN units of layer l]``."""

    conv: list[torch.Tensor | None] = field(default_factory=list)
    heads: list[torch.Tensor | None] = field(default_factory=list)
    ffn: list[torch.Tensor | None] = field(default_factory=list)


class CompactModel(nn.Module):
    """CNN → LayerNorm + projection → (mask) → positional conv → (time reduction) → transformer layers."""

    def __init__(self, cfg: CompactConfig):
        super().__init__()
        cfg.check()
        self.cfg = cfg
        blocks, in_ch = [], 1
        for i, (ch, k, s) in enumerate(cfg.conv_layers):
            norm = cfg.extractor_mode if (cfg.extractor_mode == "layer_norm" or i == 0) else None
            blocks.append(ConvLayerBlock(in_ch, ch, k, s, cfg.conv_bias, norm))
            in_ch = ch
        self.front_end = nn.Module()
        self.front_end.conv_layers = nn.ModuleList(blocks)
        self.feature_projection = FeatureProjection(in_ch, cfg.embed_dim, cfg.feat_proj_layer_norm,
                                                    cfg.feat_proj_dropout, cfg.layer_norm_eps)
        self.mask_emb = nn.Parameter(torch.empty(cfg.embed_dim).uniform_())
        self.encoder = nn.Module()
        self.encoder.pos_conv = ConvPositionalEmbedding(cfg.embed_dim, cfg.conv_pos, cfg.conv_pos_groups)
        self.encoder.layer_norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)
        self.encoder.layers = nn.ModuleList([CompactLayer(cfg, i) for i in range(cfg.layers)])
        self.time_reduction = None
        if cfg.time_reduction > 1:
            r = cfg.time_reduction
            self.time_reduction = nn.Conv1d(cfg.embed_dim, cfg.embed_dim, kernel_size=r, stride=r)
        self.dropout = nn.Dropout(cfg.dropout)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    @property
    def cnn_downsample(self) -> int:
        return math.prod(s for _, _, s in self.cfg.conv_layers)

    @property
    def downsample_rate(self) -> int:
        return self.cnn_downsample * self.cfg.time_reduction

    def cnn_lengths(self, wav_lengths: torch.Tensor) -> torch.Tensor:
        for _, k, s in self.cfg.conv_layers:
            wav_lengths = conv_output_lengths(wav_lengths, k, s)
        return wav_lengths

    def frame_lengths(self, wav_lengths: torch.Tensor) -> torch.Tensor:
        """Output frames ``[batch]`` of waveforms of ``wav_lengths`` samples."""
        return torch.div(self.cnn_lengths(wav_lengths), self.cfg.time_reduction, rounding_mode="floor")

    def _cnn(self, wav: torch.Tensor, conv_gates: list[torch.Tensor | None]) -> torch.Tensor:
        """``[b, sample]`` (unpadded rows) → ``[b, frame, channel]``."""
        x = wav[:, None, :]
        for i, block in enumerate(self.front_end.conv_layers):
            x = block(x)
            gate = conv_gates[i] if i < len(conv_gates) else None
            if gate is not None:
                x = x * gate.to(x.dtype)[None, :, None]
        return x.transpose(1, 2)

    def cnn_features(self, wav: torch.Tensor, wav_lengths: torch.Tensor, gates: Gates | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """wav ``[batch, sample]`` → projected CNN features ``[batch, frame, embed_dim]`` (zero past each length,
        before masking and positional conv) and frame lengths ``[batch]`` at the CNN's rate."""
        lengths = self.cnn_lengths(wav_lengths)
        conv_gates = gates.conv if gates is not None else []
        n = wav_lengths.tolist()
        if n and min(n) == max(n):  # equal lengths: one batched pass; else one utterance at a time (no padding)
            packed = self._cnn(wav[:, : n[0]], conv_gates).flatten(0, 1)
        else:
            packed = torch.cat([self._cnn(w[None, :l], conv_gates)[0] for w, l in zip(wav, n)])
        projected = self.feature_projection(packed)
        return unpack(projected, lengths, int(lengths.max()) if len(lengths) else 0), lengths

    def encode_features(self, x: torch.Tensor, lengths: torch.Tensor, frame_mask_: torch.Tensor | None = None,
                        gates: Gates | None = None, return_probs: bool = False):
        """Projected features ``[batch, frame, dim]`` and lengths → (hidden states ``[batch, frame', dim]`` per
        ``cfg.hidden_states``, zero past each length, frame lengths ``[batch]``; with ``return_probs`` also each
        layer's attention probabilities ``[batch, head, frame', frame']`` (None for a layer without attention)).

        frame_mask_ ``[batch, frame]`` (True = masked): those frames are replaced by ``mask_emb`` first.
        """
        if frame_mask_ is not None:
            x = torch.where(frame_mask_[..., None], self.mask_emb.to(x.dtype), x)
        packed = pack(x, lengths)
        packed = packed + per_utterance(self.encoder.pos_conv, packed, lengths.tolist(), x.shape[-1])
        if not self.cfg.layer_norm_first:
            packed = self.encoder.layer_norm(packed)
        x = unpack(self.dropout(packed), lengths, x.shape[1])
        if self.time_reduction is not None:
            r = self.cfg.time_reduction
            lengths = torch.div(lengths, r, rounding_mode="floor")
            x = self.time_reduction(x.transpose(1, 2)).transpose(1, 2)  # kernel = stride: no frame sees padding
        valid = frame_mask(lengths, x.shape[1])
        x = x * valid[..., None]
        states, all_probs, probs = [x], [], None
        for i, layer in enumerate(self.encoder.layers):
            head_gate = gates.heads[i] if gates is not None and i < len(gates.heads) else None
            ffn_gate = gates.ffn[i] if gates is not None and i < len(gates.ffn) else None
            x, probs = layer(x, valid, probs, head_gate, ffn_gate)
            x = x * valid[..., None]
            states.append(x)
            all_probs.append(probs if layer.attention.heads else None)
        if self.cfg.layer_norm_first:
            states[-1] = self.encoder.layer_norm(states[-1]) * valid[..., None]
        if self.cfg.hidden_states == "layers":
            states = states[1:]
        return (states, lengths, all_probs) if return_probs else (states, lengths)

    def encode(self, wav: torch.Tensor, wav_lengths: torch.Tensor, frame_mask_: torch.Tensor | None = None,
               gates: Gates | None = None, return_probs: bool = False):
        """wav ``[batch, sample]``, wav_lengths ``[batch]`` → see :meth:`encode_features`."""
        x, lengths = self.cnn_features(wav, wav_lengths, gates)
        return self.encode_features(x, lengths, frame_mask_, gates, return_probs)


class CompactUpstream(BucketedUpstream):
    """A frozen :class:`CompactModel` behind the upstream contract (hidden states per ``cfg.hidden_states``)."""

    def __init__(self, model: CompactModel, bucket_fill: float = 0.0, min_bucket_size: int = 4,
                 max_bucket_samples: int = SAMPLE_RATE * 240):
        super().__init__(model, bucket_fill, min_bucket_size, max_bucket_samples)
        self.downsample_rate = model.downsample_rate

    @property
    def cfg(self) -> CompactConfig:
        return self.model.cfg

    def frames_for(self, num_samples: torch.Tensor) -> torch.Tensor:
        return self.model.frame_lengths(num_samples)

    def hash_config(self) -> dict:
        skip = ("dropout", "attention_dropout", "activation_dropout", "feat_proj_dropout")
        return {"type": "compact", "config": {k: v for k, v in dataclasses.asdict(self.cfg).items()
                                              if k not in skip}}

    def hash_state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if not k.startswith("model.mask_emb")}

    def _run(self, wavs: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        padded, lengths = pad_waveforms(wavs)
        states, frames = self.model.encode(padded, lengths)
        return states, frames


# ---- structured pruning: gates folded into a dense model ------------------------------------------------------------

def parameter_count(cfg: CompactConfig) -> int:
    """Parameters of a :class:`CompactModel` of ``cfg`` (``mask_emb`` included), from the config alone."""
    total, in_ch = 0, 1
    for i, (ch, k, _) in enumerate(cfg.conv_layers):
        total += ch * in_ch * k + (ch if cfg.conv_bias else 0)
        if cfg.extractor_mode == "layer_norm" or i == 0:
            total += 2 * ch
        in_ch = ch
    d = cfg.embed_dim
    total += (2 * in_ch if cfg.feat_proj_layer_norm else 0) + in_ch * d + d + d  # LN, projection, mask_emb
    total += d * (d // cfg.conv_pos_groups) * cfg.conv_pos + d + cfg.conv_pos  # pos conv (+ weight-norm g)
    total += 2 * d  # encoder layer norm
    if cfg.time_reduction > 1:
        total += d * d * cfg.time_reduction + d
    for layer in range(cfg.layers):
        inner = cfg.heads[layer] * cfg.head_dim
        projections = 2 if reuses(cfg, layer) else 4
        total += (projections - 1) * (d * inner + inner) + inner * d + d
        total += 2 * d * cfg.ffn_dims[layer] + cfg.ffn_dims[layer] + d + 4 * d
    return total


def _kept(gate: torch.Tensor | None, size: int) -> torch.Tensor:
    return torch.arange(size) if gate is None else torch.nonzero(gate > 0).flatten()


@torch.no_grad()
def prune(model: CompactModel, gates: Gates) -> CompactModel:
    """A dense :class:`CompactModel` that computes what ``model`` computes under the deterministic ``gates``: units
    whose gate is 0 are removed, the others' gate values are folded into the weights that read them (the next CNN
    layer's input channels, ``out_proj``'s columns, ``output_dense``'s columns).

    The last CNN layer must be ungated (its channels feed a LayerNorm, which removal would change). Raises
    ValueError otherwise, or for a reusing attention layer (ARMHuBERT-style models are not pruned here).
    """
    cfg = model.cfg
    n_conv = len(cfg.conv_layers)
    conv_g = list(gates.conv) + [None] * (n_conv - len(gates.conv))
    if conv_g[-1] is not None:
        raise ValueError("the last CNN layer's channels feed the projection's LayerNorm: they cannot be pruned")
    if any(reuses(cfg, i) for i in range(cfg.layers)):
        raise ValueError("pruning a model with attention-map reuse is not supported")
    head_g = list(gates.heads) + [None] * (cfg.layers - len(gates.heads))
    ffn_g = list(gates.ffn) + [None] * (cfg.layers - len(gates.ffn))
    keep_conv = [_kept(g, ch) for g, (ch, _, _) in zip(conv_g, cfg.conv_layers)]
    keep_heads = [_kept(g, h) for g, h in zip(head_g, cfg.heads)]
    keep_ffn = [_kept(g, f) for g, f in zip(ffn_g, cfg.ffn_dims)]
    new_cfg = dataclasses.replace(
        cfg, conv_layers=tuple((len(kc), k, s) for kc, (_, k, s) in zip(keep_conv, cfg.conv_layers)),
        heads=tuple(len(kh) for kh in keep_heads), ffn_dims=tuple(len(kf) for kf in keep_ffn))
    dense = CompactModel(new_cfg)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for i in range(n_conv):
        pre = f"front_end.conv_layers.{i}."
        out_idx = keep_conv[i]
        w = state[pre + "conv.weight"][out_idx]
        if i > 0:
            in_idx, g = keep_conv[i - 1], conv_g[i - 1]
            w = w[:, in_idx]
            if g is not None:
                w = w * g[in_idx][None, :, None]
        state[pre + "conv.weight"] = w
        for name in ("conv.bias", "layer_norm.weight", "layer_norm.bias"):
            if pre + name in state:
                state[pre + name] = state[pre + name][out_idx]
    d = cfg.head_dim
    for layer in range(cfg.layers):
        pre = f"encoder.layers.{layer}."
        rows = torch.cat([torch.arange(h * d, (h + 1) * d) for h in keep_heads[layer].tolist()]) \
            if len(keep_heads[layer]) else torch.zeros(0, dtype=torch.long)
        for proj in ("q_proj", "k_proj", "v_proj"):
            state[f"{pre}attention.{proj}.weight"] = state[f"{pre}attention.{proj}.weight"][rows]
            state[f"{pre}attention.{proj}.bias"] = state[f"{pre}attention.{proj}.bias"][rows]
        out_w = state[f"{pre}attention.out_proj.weight"]
        if head_g[layer] is not None:
            out_w = out_w * head_g[layer].repeat_interleave(d)[None, :]
        state[f"{pre}attention.out_proj.weight"] = out_w[:, rows]
        units = keep_ffn[layer]
        state[f"{pre}feed_forward.intermediate_dense.weight"] = \
            state[f"{pre}feed_forward.intermediate_dense.weight"][units]
        state[f"{pre}feed_forward.intermediate_dense.bias"] = state[f"{pre}feed_forward.intermediate_dense.bias"][units]
        out_w = state[f"{pre}feed_forward.output_dense.weight"]
        if ffn_g[layer] is not None:
            out_w = out_w * ffn_g[layer][None, :]
        state[f"{pre}feed_forward.output_dense.weight"] = out_w[:, units]
    dense.load_state_dict(state)
    return dense
