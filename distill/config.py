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


@dataclass
class ObjectiveConfig:
    """What the student learns to predict.

    ``prediction_heads`` (DistilHuBERT): heads on the last student layer predict teacher layers ``target_layers``,
    given for a ``reference_depth``-layer teacher and scaled to the real teacher's depth (4/8/12 of 12 → 2/4/6 of 6).
    ``layer_to_layer`` (deep-and-thin, FitHuBERT-style): student layer i (through a linear projection) regresses
    teacher layer ``layer_map[i-1]``; an empty map spreads the student layers evenly over the teacher's.
    """

    kind: Literal["prediction_heads", "layer_to_layer"] = "prediction_heads"
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
