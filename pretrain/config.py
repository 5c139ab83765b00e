"""Typed config of a HuBERT-style pretraining run (``configs/pretrain/*.yaml``)."""
from __future__ import annotations

from dataclasses import dataclass, field

from training.config import RunConfig
from upstream.hubert import HubertConfig

from .front_end_warmup import FrontEndWarmupConfig
from .labels import LabelConfig
from .objective import MaskingConfig


@dataclass
class Iteration2Config:
    """Optional second iteration: k-means on hidden state ``layer`` of the iteration-1 model (50 Hz labels), then
    a fresh model trained on those labels (fairseq: layer 6 of Base, 500 clusters)."""

    enabled: bool = False
    layer: int = 6
    clusters: int = 500
    max_steps: int = 0   # 0 = run.max_steps


@dataclass
class PretrainConfig:
    model: HubertConfig = field(default_factory=HubertConfig)  # num_codewords is set from labels.clusters
    labels: LabelConfig = field(default_factory=LabelConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    front_end_warmup: FrontEndWarmupConfig = field(default_factory=FrontEndWarmupConfig)
    iteration2: Iteration2Config = field(default_factory=Iteration2Config)
    run: RunConfig = field(default_factory=RunConfig)
