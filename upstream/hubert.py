"""One HuBERT-like model for teachers and students, its config, and its wrapper for the upstream contract.

Teachers (HuBERT Base/Large) and students (DistilHuBERT-style: the teacher's front end + a few layers + prediction
heads, optionally an Fbank front end) are all :class:`HubertModel` with a different :class:`HubertConfig`.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from common.audio import SAMPLE_RATE

from .base import BucketedUpstream, pad_waveforms
from .components import Encoder, FeatureProjection, PredictionHead
from .front_ends import ConvFrontEnd, FbankFrontEnd
from .kernels import pack, unpack

log = logging.getLogger(__name__)

HUBERT_CONV_LAYERS: tuple[tuple[int, int, int], ...] = ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2


@dataclass
class HubertConfig:
    """Architecture of a HuBERT-like model (defaults: HuBERT Base).

    conv_layers: (channels, kernel, stride) per CNN layer; the last channel count is the front-end width, which the
        Fbank front end also produces. extractor_mode: "group_norm" (Base) or "layer_norm" (Large).
    layer_norm_first: pre-LN transformer layers ("stable layer norm", HuBERT Large).
    feat_proj_layer_norm: LayerNorm before the feature projection (HuBERT: yes; s3prl's DistilHuBERT: no).
    pred_layer_ids: teacher layers the student's prediction heads regress (empty for teachers); heads map
        embed_dim → pred_inter_dim (0: embed_dim) → pred_dim (0: embed_dim; set it to the teacher's width).
    final_dim, num_codewords: HuBERT's pretraining head (final_proj + codeword embeddings); none when 0.
    logit_temp: cosine-similarity temperature of the codeword logits (fairseq: 0.1).
    """

    front_end: Literal["cnn", "fbank"] = "cnn"
    conv_layers: tuple[tuple[int, int, int], ...] = HUBERT_CONV_LAYERS
    extractor_mode: Literal["group_norm", "layer_norm"] = "group_norm"
    conv_bias: bool = False
    fbank_mels: int = 80
    embed_dim: int = 768
    ffn_dim: int = 3072
    heads: int = 12
    layers: int = 12
    layer_norm_first: bool = False
    feat_proj_layer_norm: bool = True
    conv_pos: int = 128
    conv_pos_groups: int = 16
    layer_norm_eps: float = 1e-5
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    feat_proj_dropout: float = 0.1
    pred_layer_ids: tuple[int, ...] = ()
    pred_inter_dim: int = 0
    pred_dim: int = 0
    final_dim: int = 0
    num_codewords: int = 0
    logit_temp: float = 0.1

    @property
    def front_end_dim(self) -> int:
        return self.conv_layers[-1][0]


# What hidden state 0 is: the encoder's input (after the positional conv; transformers' convention) or the feature
# projection's output before it (s3prl's distiller, whose DistilHuBERT SUPERB numbers use it).
FirstState = Literal["encoder_input", "projection"]


class HubertModel(nn.Module):
    """Front end → feature projection → (mask) → positional conv + transformer layers (+ heads).

    Attributes: ``front_end``, ``feature_projection``, ``encoder`` (``.pos_conv``, ``.layers``), ``mask_emb``
    ``[embed_dim]``, ``pred_heads`` (when ``pred_layer_ids``), ``final_proj`` and ``codeword_emb``
    ``[num_codewords, final_dim]`` (when ``num_codewords > 0``).
    """

    def __init__(self, cfg: HubertConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.front_end == "cnn":
            self.front_end: nn.Module = ConvFrontEnd(cfg.conv_layers, cfg.extractor_mode, cfg.conv_bias)
        else:
            self.front_end = FbankFrontEnd(cfg.front_end_dim, cfg.fbank_mels)
        self.feature_projection = FeatureProjection(cfg.front_end_dim, cfg.embed_dim, cfg.feat_proj_layer_norm,
                                                    cfg.feat_proj_dropout, cfg.layer_norm_eps)
        self.encoder = Encoder(cfg.embed_dim, cfg.ffn_dim, cfg.heads, cfg.layers, cfg.layer_norm_first, cfg.conv_pos,
                               cfg.conv_pos_groups, cfg.dropout, cfg.attention_dropout, cfg.activation_dropout,
                               cfg.layer_norm_eps)
        self.mask_emb = nn.Parameter(torch.empty(cfg.embed_dim).uniform_())
        self.pred_heads = None
        if cfg.pred_layer_ids:
            inter, out = cfg.pred_inter_dim or cfg.embed_dim, cfg.pred_dim or cfg.embed_dim
            self.pred_heads = nn.ModuleList([PredictionHead(cfg.embed_dim, inter, out) for _ in cfg.pred_layer_ids])
        self.final_proj = self.codeword_emb = None
        if cfg.num_codewords > 0:
            if cfg.final_dim <= 0:
                raise ValueError(f"num_codewords={cfg.num_codewords} needs final_dim > 0, got {cfg.final_dim}")
            self.final_proj = nn.Linear(cfg.embed_dim, cfg.final_dim)
            self.codeword_emb = nn.Parameter(torch.empty(cfg.num_codewords, cfg.final_dim).uniform_())
        self.apply(_init_weights)

    @property
    def downsample_rate(self) -> int:
        """Samples per output frame: the product of the CNN strides (320 for HuBERT; the Fbank front end too)."""
        return self.front_end.downsample_rate

    def frame_lengths(self, wav_lengths: torch.Tensor) -> torch.Tensor:
        """Output frames ``[batch]`` for waveforms of ``wav_lengths`` samples."""
        return self.front_end.output_lengths(wav_lengths)

    def front_end_features(self, wav: torch.Tensor, wav_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """wav ``[batch, sample]`` → front-end features ``[batch, frame, front_end_dim]`` and frame lengths."""
        return self.front_end(wav, wav_lengths)

    def encode(self, wav: torch.Tensor, wav_lengths: torch.Tensor, frame_mask: torch.Tensor | None = None
               ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """wav ``[batch, sample]``, wav_lengths ``[batch]`` → (``layers + 1`` hidden states ``[batch, frame, dim]``,
        zero past each length, frame lengths ``[batch]``). Differentiable.

        frame_mask ``[batch, frame]`` (bool, True = masked): those frames' projected features are replaced by
        ``mask_emb`` before the positional conv (HuBERT's masked prediction).
        """
        states, lengths = self.encode_packed(wav, wav_lengths, frame_mask)
        width = int(self.frame_lengths(torch.tensor([wav.shape[-1]]))[0])
        return [unpack(s, lengths, width) for s in states], lengths

    def encode_packed(self, wav: torch.Tensor, wav_lengths: torch.Tensor, frame_mask: torch.Tensor | None = None,
                      first_state: FirstState = "encoder_input") -> tuple[list[torch.Tensor], torch.Tensor]:
        """``encode`` without the padding: ``layers + 1`` hidden states ``[sum(frames), dim]`` holding each
        utterance's valid frames one after another (``kernels.pack``), and frame lengths ``[batch]``.
        ``first_state="projection"``: entry 0 is the feature projection's output *before* the positional conv,
        as s3prl's distiller reports it (``upstream/distiller/model.py:210``), instead of the encoder's input."""
        if wav.dim() != 2 or wav_lengths.shape != (wav.shape[0],):
            raise ValueError(f"expected wav [batch, sample] and wav_lengths [batch], got {tuple(wav.shape)} "
                             f"and {tuple(wav_lengths.shape)}")
        features, lengths = self.front_end.forward_packed(wav, wav_lengths)
        if frame_mask is not None:
            width = int(self.frame_lengths(torch.tensor([wav.shape[-1]]))[0])
            frame_mask = self._packed_mask(frame_mask, lengths, width)
        return self._encode_packed(features, lengths, frame_mask, first_state), lengths

    def encode_features(self, features: torch.Tensor, lengths: torch.Tensor, frame_mask: torch.Tensor | None = None
                        ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``encode`` from front-end features ``[batch, frame, front_end_dim]`` (what ``front_end_features``
        returns) and their frame lengths: lets two models with the same front end share one front-end pass."""
        width = features.shape[1]
        if frame_mask is not None:
            frame_mask = self._packed_mask(frame_mask, lengths, width)
        states = self._encode_packed(pack(features, lengths), lengths, frame_mask)
        return [unpack(s, lengths, width) for s in states], lengths

    @staticmethod
    def _packed_mask(frame_mask: torch.Tensor, lengths: torch.Tensor, width: int) -> torch.Tensor:
        if frame_mask.shape != (len(lengths), width):
            raise ValueError(f"frame_mask must be [batch, frame] = {(len(lengths), width)}, "
                             f"got {tuple(frame_mask.shape)}")
        return pack(frame_mask, lengths)

    def _encode_packed(self, features: torch.Tensor, lengths: torch.Tensor, frame_mask: torch.Tensor | None,
                       first_state: FirstState = "encoder_input") -> list[torch.Tensor]:
        x = self.feature_projection(features)
        if frame_mask is not None:
            x = torch.where(frame_mask[:, None], self.mask_emb.to(x.dtype), x)
        states = self.encoder.forward_packed(x, lengths)
        return [x, *states[1:]] if first_state == "projection" else states

    def predict(self, last_hidden: torch.Tensor) -> torch.Tensor:
        """Student heads: ``[batch, frame, dim]`` → ``[batch, n_heads, frame, pred_dim]``."""
        if self.pred_heads is None:
            raise ValueError("this model has no prediction heads (pred_layer_ids is empty)")
        return torch.stack([head(last_hidden) for head in self.pred_heads], dim=1)

    def codeword_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """HuBERT's pretraining logits: cosine(final_proj(hidden), codewords) / logit_temp,
        ``[batch, frame, dim]`` → ``[batch, frame, num_codewords]``."""
        if self.final_proj is None:
            raise ValueError("this model has no codeword head (num_codewords is 0)")
        projected = F.normalize(self.final_proj(hidden), dim=-1, eps=1e-8)
        codewords = F.normalize(self.codeword_emb, dim=-1, eps=1e-8)
        return projected @ codewords.t() / self.cfg.logit_temp


def _init_weights(module: nn.Module) -> None:
    """BERT-style init (fairseq's init_bert_params) for linears; Kaiming for the CNN; the pos conv keeps its own."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv1d) and not hasattr(module, "parametrizations"):
        nn.init.kaiming_normal_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class HubertUpstream(BucketedUpstream):
    """A frozen :class:`HubertModel` behind the upstream contract.

    hidden_states: ``layers + 1`` entries (transformers' convention; for pre-LN models the last entry includes the
    final LayerNorm, like transformers' ``last_hidden_state`` and s3prl), plus one per prediction head when
    ``include_pred_heads``. ``extract`` runs the utterances packed (no work on padding, see ``front_ends`` and
    ``components``) in groups of at most ``max_bucket_samples`` padded samples (a memory bound); ``bucket_fill > 0``
    also splits groups by length (longest first), which packing made unnecessary for speed, so the default is 0.
    Since nothing leaks between utterances, the result equals running each utterance alone.
    Runs under ``torch.no_grad`` rather than ``inference_mode`` so trainable heads can consume the outputs.
    With ``fine_tune = True`` (``--upstream-trainable``) gradients flow and ``train()`` puts the model in train mode
    (dropout active); otherwise the model always stays in eval mode. ``normalize_waveform``: layer-norm each
    waveform first (models pretrained on normalised audio; read from the checkpoint by ``upstream/checkpoints.py``).
    ``first_state="projection"`` with ``include_pred_heads=True`` gives DistilHuBERT's states as s3prl reports them
    (``upstream/distiller/expert.py:53,57``): projected CNN features before the positional conv, the layers, the
    prediction heads.
    """

    downsample_rate = 320

    def __init__(self, model: HubertModel, include_pred_heads: bool = False, bucket_fill: float = 0.0,
                 min_bucket_size: int = 4, max_bucket_samples: int = SAMPLE_RATE * 240,
                 normalize_waveform: bool = False, first_state: FirstState = "encoder_input"):
        super().__init__(model, bucket_fill, min_bucket_size, max_bucket_samples, normalize_waveform)
        if first_state not in ("encoder_input", "projection"):
            raise ValueError(f"first_state must be 'encoder_input' or 'projection', got {first_state!r}")
        self.include_pred_heads = include_pred_heads
        self.first_state = first_state
        self.downsample_rate = model.downsample_rate
        if include_pred_heads and model.pred_heads is None:
            raise ValueError("include_pred_heads=True but the model has no prediction heads")

    @property
    def cfg(self) -> HubertConfig:
        return self.model.cfg

    def freeze_front_end(self, frozen: bool = True) -> None:
        """Freeze (or unfreeze) the CNN / Fbank front end, as transformers' ``freeze_feature_encoder``."""
        self.model.front_end.requires_grad_(not frozen)

    def frames_for(self, num_samples: torch.Tensor) -> torch.Tensor:
        return self.model.frame_lengths(num_samples)

    # Config fields that do not change the features of a model in eval mode (dropout), and those of heads that are
    # not part of hidden_states (HuBERT's pretraining head; the prediction heads unless include_pred_heads).
    _UNHASHED = ("dropout", "attention_dropout", "activation_dropout", "feat_proj_dropout", "final_dim",
                 "num_codewords", "logit_temp")
    _PRED_FIELDS = ("pred_layer_ids", "pred_inter_dim", "pred_dim")

    def hash_config(self) -> dict:
        skip = self._UNHASHED + (() if self.include_pred_heads else self._PRED_FIELDS)
        cfg = {k: v for k, v in dataclasses.asdict(self.cfg).items() if k not in skip}
        out = {"type": "hubert", "config": cfg, "pred": self.include_pred_heads}
        if self.first_state != "encoder_input":  # only when set: every earlier key stays as it was
            out["first_state"] = self.first_state
        return out

    def hash_state(self) -> dict[str, torch.Tensor]:
        unused = ("model.final_proj.", "model.codeword_emb", "model.mask_emb")
        if not self.include_pred_heads:
            unused += ("model.pred_heads.",)
        return {k: v for k, v in self.state_dict().items() if not k.startswith(unused)}

    def _run(self, wavs: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        padded, lengths = pad_waveforms(wavs)
        states, frames = self.model.encode_packed(padded, lengths, first_state=self.first_state)
        if self.include_pred_heads:
            states = states + list(self.model.predict(states[-1]).unbind(1))
        width = int(frames.max())
        return [unpack(s, frames, width) for s in states], frames


def student_config_from_teacher(teacher_cfg: HubertConfig, layers: int = 2,
                                pred_layer_ids: tuple[int, ...] = (4, 8, 12), front_end: str = "cnn",
                                width: int | None = None) -> HubertConfig:
    """A DistilHuBERT-style student of ``teacher_cfg``: same front end width, ``layers`` transformer layers
    (``width`` dims, FFN 4x, 64-dim heads when the width changes), heads predicting ``pred_layer_ids`` in the
    teacher's width, no codeword head."""
    bad = [i for i in pred_layer_ids if not 0 <= i <= teacher_cfg.layers]
    if bad:
        raise ValueError(f"pred_layer_ids {bad} outside the teacher's hidden states 0..{teacher_cfg.layers}")
    changes: dict = dict(layers=layers, pred_layer_ids=tuple(pred_layer_ids), front_end=front_end,
                         pred_dim=teacher_cfg.embed_dim, pred_inter_dim=0, num_codewords=0, final_dim=0)
    if width is not None and width != teacher_cfg.embed_dim:
        changes.update(embed_dim=width, ffn_dim=4 * width, heads=max(1, width // 64))
    return dataclasses.replace(teacher_cfg, **changes)


def init_student_from_teacher(student: HubertModel, teacher: HubertModel) -> list[str]:
    """Copy what fits from the teacher, as DistilHuBERT does: front end, feature projection, positional conv and
    the first ``student.layers`` transformer layers. Parts whose shapes differ are skipped (logged).

    Returns the names of the copied parts.
    """
    parts = [("front_end", student.front_end, teacher.front_end),
             ("feature_projection", student.feature_projection, teacher.feature_projection),
             ("encoder.pos_conv", student.encoder.pos_conv, teacher.encoder.pos_conv),
             ("encoder.layer_norm", student.encoder.layer_norm, teacher.encoder.layer_norm)]
    parts += [(f"encoder.layers.{i}", s, t)
              for i, (s, t) in enumerate(zip(student.encoder.layers, teacher.encoder.layers))]
    copied = []
    for name, dst, src in parts:
        src_state, dst_state = src.state_dict(), dst.state_dict()
        if type(dst) is type(src) and src_state.keys() == dst_state.keys() and all(
                src_state[k].shape == dst_state[k].shape for k in src_state):
            dst.load_state_dict(src_state)
            copied.append(name)
        else:
            log.info("student init: %s differs from the teacher's; left at random init", name)
    if student.mask_emb.shape == teacher.mask_emb.shape:
        with torch.no_grad():
            student.mask_emb.copy_(teacher.mask_emb)
        copied.append("mask_emb")
    return copied

