"""Typed config of one distillation run (``configs/distill/*.yaml``); every number of a recipe lives in its YAML."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from training.config import RunConfig


@dataclass
class StudentConfig:
    """The student, derived from the teacher's config (``upstream.hubert.student_config_from_teacher``)."""

    layers: int = 2
    width: int | None = None            # encoder width; None = the teacher's (DistilHuBERT)
    ffn_dim: int | None = None          # None = as derived from the teacher (4 × width)
    heads: int | None = None            # attention heads; None = as derived from the teacher
    front_end: Literal["cnn", "fbank"] = "cnn"
    init_from_teacher: bool = True      # copy front end, projection, positional conv, first layers where shapes fit
    dropout: float | None = None        # None = the teacher's dropout settings
    frontend_warmup_steps: int = 0      # train only front end + projection first (Fbank front-end adaptation)
    # keep the front end at its initial weights (fairseq's feature_grad_mult = 0). With the teacher's CNN copied in,
    # teacher and student then share one front-end pass per batch and the CNN needs no backward.
    freeze_front_end: bool = False
    # "compact" (upstream/compact.py): the students of DistilHuBERT's successors (FitHuBERT, MaskHuBERT,
    # ARMHuBERT, STaRHuBERT, DPHuBERT); the fields below apply to it only. width/heads/ffn_dim/layers as above.
    arch: Literal["hubert", "compact"] = "hubert"
    conv_layers: list[list[int]] = field(default_factory=list)  # (channels, kernel, stride); empty: the teacher's
    ffn_dims: list[int] = field(default_factory=list)           # per layer; empty: ffn_dim for every layer
    head_dim: int = 0                                           # 0: width // heads
    reuse_attention: list[bool] = field(default_factory=list)   # ARMHuBERT: true = reuse the last computed map
    time_reduction: int = 1                                     # FitHuBERT: 2 (the transformer runs at 40 ms)
    hidden_states: Literal["with_input", "layers"] = "with_input"  # what the exported upstream returns


@dataclass
class MaskingConfig:
    """Masking distillation (MaskHuBERT/ARMHuBERT, arXiv 2305.11685): teacher and student see the same span mask;
    masked frames regress the unmasked teacher, unmasked frames the masked teacher."""

    enabled: bool = False
    mask_prob: float = 0.8
    mask_length: int = 10


@dataclass
class StarConfig:
    """STaR (arXiv 2312.09040): temporal Gram matrices (frame × frame cosine similarities) of each layer
    (layer-wise) and between each layer's input and output (intra-layer), matched by mean squared error."""

    layerwise_weight: float = 1.0
    intra_weight: float = 1.0
    last_layer_weight: float = 0.0  # > 0 adds the last layer's L1 + cos regression through a projection


@dataclass
class PruningConfig:
    """DPHuBERT (arXiv 2305.17651): hard-concrete gates on CNN channels, attention heads and FFN units, the expected
    sparsity pushed to ``target_sparsity`` by Lagrange multipliers (learning rate ``reg_lr``, by gradient ascent),
    the target ramped linearly from 0 over ``warmup_steps``."""

    target_sparsity: float = 0.75
    warmup_steps: int = 5000
    reg_lr: float = 0.02
    conv: bool = True
    heads: bool = True
    ffn: bool = True
    init_drop_rate: float = 0.01    # gates start almost all open (the student starts as the teacher)


@dataclass
class ObjectiveConfig:
    """What the student learns to predict.

    ``prediction_heads`` (DistilHuBERT): heads on the last student layer predict teacher layers ``target_layers``,
    given for a ``reference_depth``-layer teacher and scaled to the real teacher's depth (4/8/12 of 12 → 2/4/6 of 6).
    ``layer_to_layer`` (deep-and-thin, FitHuBERT-style): student layer i (through a linear projection) regresses
    teacher layer ``layer_map[i-1]``; an empty map spreads the student layers evenly over the teacher's.
    """

    # the successors (student.arch compact): "hints" (FitHuBERT, MaskHuBERT, ARMHuBERT: a projection per student
    # layer, the last layer weighted 1 and ``hint_layers`` random others ``hint_weight``), "star" (STaRHuBERT),
    # "pruning" (DPHuBERT: ``layer_map`` student layers regress the same teacher layers)
    kind: Literal["prediction_heads", "layer_to_layer", "hints", "star", "pruning"] = "prediction_heads"
    loss: Literal["l1_cos", "mse", "l1_rawcos"] = "l1_cos"  # per frame; l1_rawcos: L1 − cos (DPHuBERT)
    hint_layers: int = 0
    hint_weight: float = 0.1
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    star: StarConfig = field(default_factory=StarConfig)
    pruning: PruningConfig = field(default_factory=PruningConfig)
    target_layers: list[int] = field(default_factory=lambda: [4, 8, 12])
    reference_depth: int = 12
    layer_map: list[int] = field(default_factory=list)
    cosine_weight: float = 1.0          # λ of −log σ(cos)
    discriminative_weight: float = 0.0  # > 0 adds KL(teacher ‖ student) over the teacher's codewords
    # False: drop the prediction heads after training (the DistilHuBERT paper). True: keep them and append their
    # outputs to hidden_states, as s3prl's distiller upstream does when SUPERB benchmarks DistilHuBERT.
    export_heads: bool = False


@dataclass
class DistillConfig:
    student: StudentConfig = field(default_factory=StudentConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    run: RunConfig = field(default_factory=RunConfig)
