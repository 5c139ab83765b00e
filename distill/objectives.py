"""The distillation objective: a frozen teacher, a student ``HubertModel`` and the losses between them.

``DistillObjective.forward(batch)`` follows the trainer's contract (``loss_sum``, ``frames``, ``parts``; see
``training/loop.py``). Teacher targets come through the upstream contract (any registered upstream works as a
teacher for the regression losses). The student's shape is derived from a HuBERT-family teacher (HuBERT, wav2vec2,
DistilHuBERT: ``HubertUpstream``) or a transformers one (WavLM, data2vec-audio: ``TransformersUpstream``, through
its HuBERT-sized equivalent); the student is initialised from the teacher's parts whose architecture matches and
the rest from scratch (logged). The discriminative loss needs HuBERT codewords.
"""
from __future__ import annotations

import dataclasses
import logging

import torch
from torch import nn

from common.audio import SAMPLE_RATE
from common.tensors import frame_mask
from upstream.base import Upstream
from upstream.hubert import (HubertConfig, HubertModel, HubertUpstream, init_student_from_teacher,
                             student_config_from_teacher)

from .config import DistillConfig, ObjectiveConfig
from .losses import codeword_kl_frame_loss, masked_sum, regression_frame_loss

log = logging.getLogger(__name__)
MAX_FRAME_MISMATCH = 2  # teacher and student frame counts may differ by rounding at the edges, never more


class ConfigMismatch(ValueError):
    """The student/objective config does not fit the teacher (raised before any training step)."""


def hubert_model_of(teacher: Upstream) -> HubertModel:
    if isinstance(teacher, HubertUpstream):
        return teacher.model
    raise ConfigMismatch(f"teacher {type(teacher).__name__} is not a HuBERT model (this needs its HubertModel)")


def teacher_architecture(teacher: Upstream) -> tuple[HubertConfig, HubertModel | None]:
    """The teacher's sizes as a :class:`HubertConfig` (what the student is derived from) and its HubertModel when
    it is one. Raises ConfigMismatch for an upstream without a HuBERT-like encoder (e.g. fbank)."""
    from upstream.hf_families import TransformersUpstream, hubert_equivalent

    if isinstance(teacher, HubertUpstream):
        return teacher.model.cfg, teacher.model
    if isinstance(teacher, TransformersUpstream):
        return hubert_equivalent(teacher)[0], None
    raise ConfigMismatch(f"teacher {type(teacher).__name__} has no transformer encoder to derive a student from; "
                         "teachers: HuBERT, wav2vec2, WavLM, data2vec-audio upstreams")


def init_student_from_parts(student: HubertModel, state: dict[str, torch.Tensor], parts: list[str]) -> list[str]:
    """Copy the teacher weights ``state`` (our names) into the student's modules named in ``parts`` when every key
    and shape fits; returns the copied part names."""
    modules = dict(student.named_modules())
    copied = []
    for part in parts:
        module = modules.get(part)
        if module is None:
            continue
        own = module.state_dict()
        theirs = {k: state.get(f"{part}.{k}") for k in own}
        if all(v is not None and v.shape == own[k].shape for k, v in theirs.items()):
            module.load_state_dict(theirs)
            copied.append(part)
    return copied


def student_parts(student: HubertModel) -> list[str]:
    """The parts DistilHuBERT initialises from the teacher, in order."""
    return (["front_end", "feature_projection", "encoder.pos_conv", "encoder.layer_norm"]
            + [f"encoder.layers.{i}" for i in range(len(student.encoder.layers))])


def scaled_target_layers(obj: ObjectiveConfig, teacher_layers: int) -> list[int]:
    """``target_layers`` of a ``reference_depth`` teacher mapped to this teacher (4/8/12 of 12 → 2/4/6 of 6)."""
    layers = [max(1, round(l * teacher_layers / obj.reference_depth)) for l in obj.target_layers]
    bad = [l for l in obj.target_layers if not 1 <= l <= obj.reference_depth]
    if bad or len(set(layers)) != len(layers):
        raise ConfigMismatch(f"objective.target_layers={obj.target_layers} (of reference_depth="
                             f"{obj.reference_depth}) do not map to distinct layers of a {teacher_layers}-layer "
                             f"teacher (got {layers})")
    return layers


def layer_to_layer_map(obj: ObjectiveConfig, student_layers: int, teacher_layers: int) -> list[int]:
    """Teacher layer regressed by each student layer (1-based)."""
    mapping = list(obj.layer_map) or [round((i + 1) * teacher_layers / student_layers) for i in range(student_layers)]
    if len(mapping) != student_layers or not all(1 <= l <= teacher_layers for l in mapping):
        raise ConfigMismatch(f"objective.layer_map={mapping} must give one teacher layer in 1..{teacher_layers} for "
                             f"each of the {student_layers} student layers")
    return mapping


def build_student(cfg: DistillConfig, teacher: Upstream) -> tuple[HubertModel, list[int], bool]:
    """The student model, the teacher layers it learns (heads' targets or the layer-to-layer map) and whether its
    front end was copied from the teacher's."""
    t_cfg, t_model = teacher_architecture(teacher)
    s, obj = cfg.student, cfg.objective
    if obj.kind == "prediction_heads":
        targets = scaled_target_layers(obj, t_cfg.layers)
        pred_ids = tuple(targets)
    else:
        targets = layer_to_layer_map(obj, s.layers, t_cfg.layers)
        pred_ids = ()
    s_cfg = student_config_from_teacher(t_cfg, layers=s.layers, pred_layer_ids=pred_ids, front_end=s.front_end,
                                        width=s.width)
    overrides = {"ffn_dim": s.ffn_dim, "heads": s.heads}
    if s.dropout is not None:
        overrides.update(dropout=s.dropout, attention_dropout=s.dropout, activation_dropout=s.dropout)
    s_cfg = dataclasses.replace(s_cfg, **{k: v for k, v in overrides.items() if v is not None})
    if s_cfg.embed_dim % s_cfg.heads:
        raise ConfigMismatch(f"student width {s_cfg.embed_dim} is not divisible by its {s_cfg.heads} heads "
                             "(set student.heads)")
    student = HubertModel(s_cfg)
    copied: list[str] = []
    if s.init_from_teacher and t_model is not None:
        copied = init_student_from_teacher(student, t_model)
    elif s.init_from_teacher:  # a transformers teacher: only the parts with HuBERT's architecture
        from upstream.hf_families import hubert_equivalent

        _, state, parts = hubert_equivalent(teacher)
        copied = init_student_from_parts(student, state, parts)
    scratch = [p for p in student_parts(student) if p not in copied]
    log.info("student (%s teacher): initialised from the teacher: %s; from scratch: %s",
             type(teacher).__name__ if t_model is None else "HuBERT-family",
             ", ".join(copied) or "nothing" + ("" if s.init_from_teacher else " (student.init_from_teacher=false)"),
             ", ".join(scratch) or "nothing")
    if s.freeze_front_end:
        if s.frontend_warmup_steps > 0:
            raise ConfigMismatch("student.freeze_front_end and student.frontend_warmup_steps > 0 contradict each "
                                 "other: the warm-up trains only the front end")
        student.front_end.requires_grad_(False)
    return student, targets, "front_end" in copied


class DistillObjective(nn.Module):
    """Teacher (frozen, eval) + student + optional per-layer projections (layer-to-layer)."""

    def __init__(self, cfg: DistillConfig, teacher: Upstream):
        super().__init__()
        self.cfg = cfg
        self.teacher = teacher.eval().requires_grad_(False)
        self.teacher_cfg, teacher_model = teacher_architecture(teacher)
        self.student, self.targets, same_front_end = build_student(cfg, teacher)
        self.student.mask_emb.requires_grad_(False)  # only masked pretraining uses it (DDP needs every param used)
        # a frozen copy of the teacher's front end computes the same features: run it once for both (not when the
        # teacher layer-norms its waveforms: the student reads raw audio, so their front ends see different input)
        self.share_front_end = (cfg.student.freeze_front_end and same_front_end and teacher_model is not None
                                and not teacher.normalize_waveform)
        obj = cfg.objective
        self.teacher_dim = self._teacher_dim()
        self.projections = nn.ModuleList()
        if obj.kind == "layer_to_layer":
            width = self.student.cfg.embed_dim
            self.projections = nn.ModuleList([nn.Linear(width, self.teacher_dim) for _ in self.targets])
        self.use_codewords = obj.discriminative_weight > 0
        if self.use_codewords:
            if getattr(teacher_model, "codeword_emb", None) is None:
                raise ConfigMismatch("objective.discriminative_weight > 0 needs a teacher with HuBERT codeword "
                                     "embeddings (a HuBERT pretraining checkpoint, or the demo's hubert_mini); "
                                     f"teacher {type(teacher).__name__} has none")
            last = self.teacher_cfg.layers
            if self.targets[-1] != last:
                raise ConfigMismatch(f"the discriminative loss compares distributions of the teacher's last layer "
                                     f"({last}); the last target layer is {self.targets[-1]}")
        self.preflight()

    def _teacher_dim(self) -> int:
        return self.teacher_cfg.embed_dim

    def train(self, mode: bool = True) -> "DistillObjective":
        super().train(mode)
        self.teacher.eval()  # the teacher never trains (no dropout in its targets)
        if self.cfg.student.freeze_front_end:
            self.student.front_end.eval()
        return self

    @torch.no_grad()
    def preflight(self) -> None:
        """One forward on 1 s of noise: shapes and frame rates must line up before training starts."""
        wav = torch.randn(1, SAMPLE_RATE, generator=torch.Generator().manual_seed(0)) * 0.1
        lengths = torch.tensor([SAMPLE_RATE])
        was_training = self.training
        self.eval()
        try:
            t_states, t_len = self._teacher_states(wav, lengths)
            preds, s_len = self._student_predictions(wav, lengths)
        finally:
            self.train(was_training)
        if abs(int(t_len[0]) - int(s_len[0])) > MAX_FRAME_MISMATCH:
            raise ConfigMismatch(f"frame rates differ: the teacher gives {int(t_len[0])} frames for 1 s of audio, "
                                 f"the student ({self.cfg.student.front_end} front end) {int(s_len[0])}")
        for layer, pred in zip(self.targets, preds):
            if pred.shape[-1] != t_states[layer].shape[-1]:
                raise ConfigMismatch(f"the student predicts {pred.shape[-1]}-dim features for teacher layer {layer}, "
                                     f"which has {t_states[layer].shape[-1]}")

    def _teacher_states(self, wav: torch.Tensor, lengths: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        with torch.no_grad():
            out = self.teacher([w[: int(n)] for w, n in zip(wav, lengths)])
        return out.hidden_states, out.lengths.to(wav.device)

    def _student_predictions(self, wav: torch.Tensor, lengths: torch.Tensor
                             ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """One ``[batch, frame, teacher_dim]`` prediction per target layer, and the student's frame lengths."""
        states, s_len = self.student.encode(wav, lengths, None)
        return self._predictions_from(states), s_len

    def _predictions_from(self, states: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.cfg.objective.kind == "prediction_heads":
            return list(self.student.predict(states[-1]).unbind(1))  # heads: [batch, head, frame, dim]
        return [proj(states[i + 1]) for i, proj in enumerate(self.projections)]

    def _shared_front_end_states(self, wav: torch.Tensor, lengths: torch.Tensor
                                 ) -> tuple[list[torch.Tensor], torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """Teacher states and student predictions from one pass of the (identical, frozen) front end."""
        t_model = hubert_model_of(self.teacher)
        with torch.no_grad():
            features, frames = t_model.front_end_features(wav, lengths)
            t_states, t_len = t_model.encode_features(features, frames)
        states, s_len = self.student.encode_features(features, frames)
        return t_states, t_len, self._predictions_from(states), s_len

    def forward(self, batch: dict) -> dict:
        """batch: ``wav [batch, sample]``, ``wav_lengths [batch]`` → summed losses over valid frames."""
        wav, lengths = batch["wav"], batch["wav_lengths"]
        if self.share_front_end:
            t_states, t_len, preds, s_len = self._shared_front_end_states(wav, lengths)
            return self._losses(wav, t_states, t_len, preds, s_len)
        t_states, t_len = self._teacher_states(wav, lengths)
        return self.forward_with_targets(batch, t_states, t_len)

    def forward_with_targets(self, batch: dict, t_states: list[torch.Tensor], t_len: torch.Tensor) -> dict:
        """``forward`` with the teacher's hidden states given (``t_states``: its ``[batch, frame, dim]`` hidden
        states, at least up to the last target layer, ``t_len [batch]`` frames), e.g. computed ahead or cached:
        the student's step alone (``bench/distill_speed.py`` times it)."""
        wav, lengths = batch["wav"], batch["wav_lengths"]
        preds, s_len = self._student_predictions(wav, lengths)
        return self._losses(wav, t_states, t_len, preds, s_len)

    def _losses(self, wav: torch.Tensor, t_states: list[torch.Tensor], t_len: torch.Tensor,
                preds: list[torch.Tensor], s_len: torch.Tensor) -> dict:
        frames = min(t_states[0].shape[1], preds[0].shape[1])
        valid = frame_mask(torch.minimum(t_len, s_len), frames)
        obj = self.cfg.objective
        parts: dict[str, torch.Tensor] = {}
        total = wav.new_zeros(())
        for layer, pred in zip(self.targets, preds):
            l1, cos = regression_frame_loss(pred[:, :frames], t_states[layer][:, :frames], obj.cosine_weight)
            parts[f"l1_layer{layer}"], parts[f"cos_layer{layer}"] = masked_sum(l1, valid), masked_sum(cos, valid)
            total = total + (parts[f"l1_layer{layer}"] + parts[f"cos_layer{layer}"]) / len(preds)
        if self.use_codewords:
            codebook = hubert_model_of(self.teacher)  # frozen; gradients flow through it into the student only
            with torch.no_grad():
                teacher_logits = codebook.codeword_logits(t_states[-1][:, :frames])
            student_logits = codebook.codeword_logits(preds[-1][:, :frames])
            parts["kl_codewords"] = masked_sum(codeword_kl_frame_loss(teacher_logits, student_logits), valid)
            total = total + obj.discriminative_weight * parts["kl_codewords"]
        return {"loss_sum": total, "frames": valid.sum(), "parts": parts}

    def frontend_only_hook(self):
        """For Fbank front-end adaptation: drop gradients outside front end + projection for the first steps."""
        warm = self.cfg.student.frontend_warmup_steps
        keep = {id(p) for m in (self.student.front_end, self.student.feature_projection) for p in m.parameters()}

        def hook(step: int) -> None:
            if step < warm:
                for p in self.parameters():
                    if p.requires_grad and id(p) not in keep:
                        p.grad = None
        return hook
