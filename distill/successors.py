"""The objectives of DistilHuBERT's successors, on the compact student of ``upstream/compact.py``.

Trainer contract as :class:`distill.objectives.DistillObjective` (``loss_sum``, ``frames``, ``parts``).

* ``hints`` — FitHuBERT (arXiv 2207.00555) and MaskHuBERT / ARMHuBERT (arXiv 2305.11685): a projection head per
  student layer (with a transposed conv back to 20 ms after FitHuBERT's time reduction) regresses the teacher layer
  it maps to; the last layer has weight 1, ``hint_layers`` other layers drawn at random each step ``hint_weight``
  (the authors' repositories: 2 of 11 for FitHuBERT, all 11 for MaskHuBERT/ARMHuBERT, weight 0.1, MSE). With
  ``masking.enabled`` (MaskHuBERT/ARMHuBERT) teacher and student see the same span mask; masked frames regress the
  unmasked teacher's states and unmasked frames the masked teacher's.
* ``star`` — STaRHuBERT (arXiv 2312.09040): temporal Gram matrices (cosine similarity of every frame pair) of each
  student layer and between each layer's input and output match the teacher's mapped layers (MSE); no projection.
* ``pruning`` — DPHuBERT (arXiv 2305.17651): the student starts as a copy of the teacher, hard-concrete gates prune
  CNN channels, heads and FFN units towards ``pruning.target_sparsity`` while ``layer_map`` layers regress the same
  teacher layers (L1 − cos through linear projections: one for layer 0, one shared by the others); exported dense.
"""
from __future__ import annotations

import dataclasses
import logging
import math

import torch
import torch.nn.functional as F
from torch import nn
from torchaudio.models.wav2vec2.components import _compute_mask_indices

from common.audio import SAMPLE_RATE
from common.tensors import frame_mask
from upstream.base import Upstream
from upstream.compact import CompactConfig, CompactModel, CompactUpstream, Gates, parameter_count, prune
from upstream.hubert import HubertModel, HubertUpstream

from .config import DistillConfig
from .losses import masked_sum
from .objectives import ConfigMismatch, DistillObjective, teacher_architecture
from .pruning import PruningGates, lagrangian

log = logging.getLogger(__name__)
SUCCESSOR_KINDS = ("hints", "star", "pruning")


def build_objective(cfg: DistillConfig, teacher: Upstream) -> nn.Module:
    """The objective of ``cfg.objective.kind``: DistilHuBERT's family or a successor's. Raises ConfigMismatch."""
    kind, arch = cfg.objective.kind, cfg.student.arch
    if (kind in SUCCESSOR_KINDS) != (arch == "compact"):
        raise ConfigMismatch(f"objective.kind={kind} needs student.arch="
                             f"{'compact' if kind in SUCCESSOR_KINDS else 'hubert'}, got {arch}")
    return SuccessorObjective(cfg, teacher) if kind in SUCCESSOR_KINDS else DistillObjective(cfg, teacher)


def compact_config(cfg: DistillConfig, teacher_cfg) -> CompactConfig:
    """The student's :class:`CompactConfig` from the recipe, defaults taken from the teacher's HuBERT config."""
    s = cfg.student
    # DPHuBERT prunes the teacher itself: its depth, whatever student.layers says
    layers = teacher_cfg.layers if cfg.objective.kind == "pruning" else s.layers
    width = s.width or teacher_cfg.embed_dim
    heads = s.heads or (teacher_cfg.heads if width == teacher_cfg.embed_dim else max(1, width // 64))
    head_dim = s.head_dim or width // heads
    ffn = s.ffn_dim or (teacher_cfg.ffn_dim if width == teacher_cfg.embed_dim else 4 * width)
    ffn_dims = tuple(s.ffn_dims) or (ffn,) * layers
    dropout = teacher_cfg.dropout if s.dropout is None else s.dropout
    return CompactConfig(
        conv_layers=tuple(tuple(c) for c in s.conv_layers) or teacher_cfg.conv_layers,
        extractor_mode=teacher_cfg.extractor_mode, conv_bias=teacher_cfg.conv_bias,
        feat_proj_layer_norm=teacher_cfg.feat_proj_layer_norm, embed_dim=width, heads=(heads,) * layers,
        head_dim=head_dim, ffn_dims=ffn_dims, reuse_attention=tuple(s.reuse_attention),
        time_reduction=s.time_reduction, layer_norm_first=teacher_cfg.layer_norm_first,
        conv_pos=teacher_cfg.conv_pos, conv_pos_groups=teacher_cfg.conv_pos_groups,
        layer_norm_eps=teacher_cfg.layer_norm_eps, dropout=dropout, attention_dropout=dropout,
        activation_dropout=dropout, feat_proj_dropout=dropout, hidden_states=s.hidden_states)


def copy_matching(student: nn.Module, teacher: nn.Module) -> list[str]:
    """Copy every teacher tensor whose name and shape the student shares; returns the copied names."""
    own, theirs = student.state_dict(), teacher.state_dict()
    take = {k: v for k, v in theirs.items() if k in own and own[k].shape == v.shape}
    student.load_state_dict(take, strict=False)
    return sorted(take)


class UpsampleProjection(nn.Module):
    """Student layer → teacher layer width: (transposed conv back to the teacher's frame rate →) Linear.
    ``[batch, frame, dim]`` → ``[batch, frame · factor, teacher_dim]`` (FitHuBERT's layer-wise projection head)."""

    def __init__(self, dim: int, teacher_dim: int, factor: int):
        super().__init__()
        self.upsample = nn.ConvTranspose1d(dim, dim, factor, stride=factor) if factor > 1 else None
        self.linear = nn.Linear(dim, teacher_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample is not None:
            x = self.upsample(x.transpose(1, 2)).transpose(1, 2)
        return self.linear(x)


def frame_loss(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-frame loss ``[batch, frame]`` of ``[batch, frame, dim]`` tensors (fp32): "mse" (mean squared error over
    features), "l1_cos" (L1 − log σ(cos), DistilHuBERT), "l1_rawcos" (L1 − cos, DPHuBERT's ``cos_type=raw``)."""
    pred, target = pred.float(), target.float()
    if kind == "mse":
        return (pred - target).pow(2).mean(-1)
    cos = F.cosine_similarity(pred, target, dim=-1)
    return (pred - target).abs().mean(-1) + (-F.logsigmoid(cos) if kind == "l1_cos" else -cos)


def gram_frame_loss(a_s: torch.Tensor, b_s: torch.Tensor, a_t: torch.Tensor, b_t: torch.Tensor,
                    valid: torch.Tensor) -> torch.Tensor:
    """STaR's temporal Gram matrix loss per frame ``[batch, frame]``: G = n(a) n(b)ᵀ (n: L2 normalisation of each
    frame), ``a == b`` for the layer-wise and (layer input, layer output) for the intra-layer matrix; the squared
    difference of student and teacher G averaged over valid columns, per valid row."""
    gram = lambda a, b: F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).transpose(1, 2)
    diff = (gram(a_s, b_s) - gram(a_t, b_t)).pow(2) * valid[:, None, :]
    return diff.sum(-1) / valid.sum(-1, keepdim=True).clamp(min=1)


class SuccessorObjective(nn.Module):
    """Teacher (frozen) + :class:`CompactModel` student + the recipe's heads, gates and multipliers."""

    def __init__(self, cfg: DistillConfig, teacher: Upstream):
        super().__init__()
        self.cfg = cfg
        self.teacher = teacher.eval().requires_grad_(False)
        t_cfg, self.teacher_model = teacher_architecture(teacher)
        obj = cfg.objective
        s_cfg = compact_config(cfg, t_cfg)
        try:
            self.student = CompactModel(s_cfg)
        except ValueError as e:
            raise ConfigMismatch(f"student: {e}") from None
        self.student.mask_emb.requires_grad_(obj.masking.enabled)
        if cfg.student.init_from_teacher and self.teacher_model is not None:
            copied = copy_matching(self.student, self.teacher_model)
            log.info("student: %d tensors copied from the teacher", len(copied))
        self.teacher_layers, self.teacher_dim = t_cfg.layers, t_cfg.embed_dim
        layers = s_cfg.layers
        if obj.kind == "pruning":  # layers of a reference_depth teacher (0/4/8/12 of 12 → 0/2/4/6 of 6)
            mapping = [round(l * t_cfg.layers / obj.reference_depth) for l in (obj.layer_map or [0, 4, 8, 12])]
        else:
            mapping = list(obj.layer_map)
        if obj.kind != "pruning":
            # evenly spread (a deeper student than the teacher shares its layers: 1,1,2,2,... of 12 over 6)
            mapping = mapping or [max(1, math.ceil((i + 1) * t_cfg.layers / layers)) for i in range(layers)]
            if len(mapping) != layers or not all(1 <= l <= t_cfg.layers for l in mapping):
                raise ConfigMismatch(f"objective.layer_map={mapping}: one teacher layer in 1..{t_cfg.layers} for "
                                     f"each of the {layers} student layers")
        elif len(set(mapping)) != len(mapping) or not all(0 <= l <= layers for l in mapping):
            raise ConfigMismatch(f"pruning: objective.layer_map={obj.layer_map} (of reference_depth="
                                 f"{obj.reference_depth}) does not map to distinct layers 0..{layers} (got {mapping})")
        self.mapping = mapping
        factor = s_cfg.time_reduction
        if obj.kind == "hints":
            self.heads = nn.ModuleList([UpsampleProjection(s_cfg.embed_dim, self.teacher_dim, factor)
                                        for _ in range(layers)])
        elif obj.kind == "star":
            if factor > 1:
                raise ConfigMismatch("star: temporal relations need the teacher's frame rate (time_reduction 1)")
            self.heads = nn.ModuleList([UpsampleProjection(s_cfg.embed_dim, self.teacher_dim, 1)]
                                       if obj.star.last_layer_weight > 0 else [])
        else:
            if s_cfg.hidden_states != "with_input" or factor > 1:
                raise ConfigMismatch("pruning: needs student.hidden_states=with_input and no time reduction")
            self.heads = nn.ModuleList([nn.Linear(s_cfg.embed_dim, self.teacher_dim) for _ in range(2)])
            p = obj.pruning
            self.gates = PruningGates(s_cfg, p.conv, p.heads, p.ffn, p.init_drop_rate)
            self.lambdas = nn.Parameter(torch.zeros(2))
            self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        if obj.masking.enabled:
            if not isinstance(teacher, HubertUpstream) or factor > 1:
                raise ConfigMismatch("masking: needs a HuBERT-family teacher (its mask embedding) and no time "
                                     "reduction")
        self.preflight()

    def optimizer_groups(self) -> list[dict]:
        """Parameters with their own learning rate: DPHuBERT's gates' multipliers (``pruning.reg_lr``, no decay)."""
        if self.cfg.objective.kind != "pruning":
            return []
        return [{"params": [self.lambdas], "lr": self.cfg.objective.pruning.reg_lr, "weight_decay": 0.0}]

    def train(self, mode: bool = True) -> "SuccessorObjective":
        super().train(mode)
        self.teacher.eval()
        return self

    @torch.no_grad()
    def preflight(self) -> None:
        """1 s of noise through teacher and student: frame rates must agree before any training step."""
        wav = torch.randn(1, SAMPLE_RATE, generator=torch.Generator().manual_seed(0)) * 0.1
        t_len = self.teacher([wav[0]]).lengths
        s_len = self.student.frame_lengths(torch.tensor([SAMPLE_RATE])) * self.student.cfg.time_reduction
        if abs(int(t_len[0]) - int(s_len[0])) > self.student.cfg.time_reduction + 1:
            raise ConfigMismatch(f"frame rates differ: the teacher gives {int(t_len[0])} frames for 1 s of audio, "
                                 f"the student {int(s_len[0])}")

    # ---- helpers -------------------------------------------------------------------------------------------------
    def _student_layer(self, states: list[torch.Tensor], layer: int) -> torch.Tensor:
        """Student hidden state ``layer`` (0 = encoder input) whatever the export convention."""
        return states[layer] if self.student.cfg.hidden_states == "with_input" else states[layer - 1]

    def _teacher(self, wav, lengths, mask=None):
        if mask is None:
            out = self.teacher([w[: int(n)] for w, n in zip(wav, lengths)])
            return out.hidden_states, out.lengths.to(wav.device)
        states, t_len = self.teacher.model.encode(wav, lengths, mask)
        return states, t_len

    def forward(self, batch: dict) -> dict:
        """batch: ``wav [batch, sample]``, ``wav_lengths [batch]`` → summed losses over valid frames."""
        wav, lengths = batch["wav"], batch["wav_lengths"]
        kind = self.cfg.objective.kind
        with torch.no_grad():
            t_states, t_len = self._teacher(wav, lengths)
        if kind == "hints":
            return self._hints(wav, lengths, t_states, t_len)
        if kind == "star":
            return self._star(wav, lengths, t_states, t_len)
        return self._pruning(wav, lengths, t_states, t_len)

    def _hints(self, wav, lengths, t_states, t_len) -> dict:
        obj, student = self.cfg.objective, self.student
        mask = m_states = None
        if obj.masking.enabled:
            frames = t_states[0].shape[1]
            valid = frame_mask(t_len, frames)
            mask = _compute_mask_indices((wav.shape[0], frames), (~valid).cpu(), obj.masking.mask_prob,
                                         obj.masking.mask_length, min_masks=2).to(wav.device) & valid
            with torch.no_grad():
                m_states, _ = self._teacher(wav, lengths, mask)
        feats, cnn_len = student.cnn_features(wav, lengths)
        if mask is not None:
            mask = mask[:, : feats.shape[1]]
            if mask.shape[1] < feats.shape[1]:
                mask = F.pad(mask, (0, feats.shape[1] - mask.shape[1]))
        states, s_len = student.encode_features(feats, cnn_len, mask)
        layers = student.cfg.layers
        hinted = torch.randperm(layers - 1)[: obj.hint_layers].sort().values.tolist() if obj.hint_layers else []
        parts: dict[str, torch.Tensor] = {}
        total = wav.new_zeros(())
        valid_all = None
        for i, weight in [(i, obj.hint_weight) for i in hinted] + [(layers - 1, 1.0)]:
            pred = self.heads[i](self._student_layer(states, i + 1))
            target = t_states[self.mapping[i]]
            frames = min(pred.shape[1], target.shape[1])
            valid = frame_mask(torch.minimum(t_len, s_len * student.cfg.time_reduction), frames)
            valid_all = valid
            per_frame = frame_loss(pred[:, :frames], target[:, :frames], obj.loss)
            if mask is not None:
                m_target = m_states[self.mapping[i]][:, :frames]
                per_frame = torch.where(mask[:, :frames], per_frame, frame_loss(pred[:, :frames], m_target,
                                                                                obj.loss))
            name = "last" if i == layers - 1 else "hint"
            parts[name] = parts.get(name, wav.new_zeros(())) + masked_sum(per_frame, valid)
            total = total + weight * masked_sum(per_frame, valid)
        return {"loss_sum": total, "frames": valid_all.sum(), "parts": parts}

    def _star(self, wav, lengths, t_states, t_len) -> dict:
        obj, student = self.cfg.objective, self.student
        states, s_len = student.encode(wav, lengths)
        frames = min(states[0].shape[1], t_states[0].shape[1])
        valid = frame_mask(torch.minimum(t_len, s_len), frames)
        cut = lambda x: x[:, :frames]
        layerwise = intra = wav.new_zeros(())
        for i in range(1, student.cfg.layers + 1):
            s_out, t_out = cut(self._student_layer(states, i)), cut(t_states[self.mapping[i - 1]])
            layerwise = layerwise + masked_sum(gram_frame_loss(s_out, s_out, t_out, t_out, valid), valid)
            if i > 1 or student.cfg.hidden_states == "with_input":
                s_in = cut(self._student_layer(states, i - 1))
                t_in = cut(t_states[self.mapping[i - 2] if i > 1 else 0])
                intra = intra + masked_sum(gram_frame_loss(s_in, s_out, t_in, t_out, valid), valid)
        n = student.cfg.layers
        parts = {"tgm_layerwise": layerwise / n, "tgm_intra": intra / n}
        total = obj.star.layerwise_weight * parts["tgm_layerwise"] + obj.star.intra_weight * parts["tgm_intra"]
        if self.heads:
            pred = cut(self.heads[0](self._student_layer(states, n)))
            parts["last"] = masked_sum(frame_loss(pred, cut(t_states[self.mapping[-1]]), obj.loss), valid)
            total = total + obj.star.last_layer_weight * parts["last"]
        return {"loss_sum": total, "frames": valid.sum(), "parts": parts}

    def _pruning(self, wav, lengths, t_states, t_len) -> dict:
        obj, student = self.cfg.objective, self.student
        gates = self.gates()
        states, s_len = student.encode(wav, lengths, gates=gates)
        frames = min(states[0].shape[1], t_states[0].shape[1])
        valid = frame_mask(torch.minimum(t_len, s_len), frames)
        parts: dict[str, torch.Tensor] = {}
        total = wav.new_zeros(())
        for layer in self.mapping:
            pred = self.heads[0 if layer == 0 else 1](states[layer][:, :frames])
            parts[f"layer{layer}"] = masked_sum(frame_loss(pred, t_states[layer][:, :frames], obj.loss), valid)
            total = total + parts[f"layer{layer}"]
        p = obj.pruning
        if self.training:
            self.updates += 1
        target = p.target_sparsity * min(1.0, float(self.updates) / max(1, p.warmup_steps))
        sparsity = 1.0 - self.gates.expected_params() / self.gates.full_params
        penalty = lagrangian(sparsity, target, self.lambdas)
        n = valid.sum()
        parts["expected_sparsity"] = sparsity.detach() * n
        parts["penalty"] = penalty * n
        return {"loss_sum": total + penalty * n, "frames": n, "parts": parts}

    # ---- export --------------------------------------------------------------------------------------------------
    def export(self) -> CompactUpstream:
        """The trained student as an upstream; DPHuBERT's gates folded into a dense model (eval-mode gates)."""
        student = self.student
        if self.cfg.objective.kind == "pruning":
            self.gates.eval()
            student = prune(student, self.gates())
        model = CompactModel(student.cfg)
        model.load_state_dict(student.state_dict())
        return CompactUpstream(model)

    def deterministic_gates(self) -> Gates:
        """The eval-mode gates (pruning only): what :meth:`export` folds into the dense model."""
        was = self.gates.training
        self.gates.eval()
        try:
            return self.gates()
        finally:
            self.gates.train(was)


__all__ = ["SUCCESSOR_KINDS", "SuccessorObjective", "build_objective", "compact_config", "parameter_count"]
