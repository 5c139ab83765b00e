"""Registered HuBERT-family upstreams: ``hubert_base``, ``hubert_large``, ``distilhubert`` and the CPU demo pair
``hubert_mini`` / ``distilhubert_mini``.

``checkpoint=PATH`` loads any format ``upstream/checkpoints.py`` reads. ``hubert_mini`` without it loads the weights
shipped in ``upstream/pretrained/hubert_mini/`` (fp16 safetensors, loaded as fp32; see its PROVENANCE.md) after
checking their sha256 against ``SHIPPED_SHA256`` below, and its untrained architecture needs the explicit
``random_init=True``. The others are still randomly initialised without weights (with a fixed seed, so two builds
hash alike in the feature cache).
"""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import torch

from common.config import load_config, load_yaml

from common.io import sha256_file

from .checkpoints import CONFIG_FILE, WEIGHTS_FILE, load_upstream_from_path
from .hubert import HubertConfig, HubertModel, HubertUpstream, student_config_from_teacher
from .registry import register_upstream

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]

HUBERT_BASE = HubertConfig()
HUBERT_LARGE = HubertConfig(extractor_mode="layer_norm", conv_bias=True, embed_dim=1024, ffn_dim=4096, heads=16,
                            layers=24, layer_norm_first=True)
# ntu-spml/distilhubert: no LayerNorm before the projection; heads predict teacher layers 4, 8, 12.
DISTILHUBERT = dataclasses.replace(student_config_from_teacher(HUBERT_BASE, 2, (4, 8, 12)),
                                   feat_proj_layer_norm=False)

# CPU demo teacher: the architecture that run_pretrain.py trains for the demo, read from its recipe so the two never
# disagree (12 layers x 192 dims, a 64-channel CNN with HuBERT's kernels and strides, a light positional conv;
# about 5.6 M parameters). The student keeps the front end, projection, positional conv and 2 layers (~20% of the
# teacher) + 3 heads predicting teacher layers 4/8/12 as DistilHuBERT does. The CNN is slim because it dominates a
# 2-layer student's compute (see the recipe's comment and bench/student_speed.py).
HUBERT_MINI_RECIPE = REPO_ROOT / "configs" / "pretrain" / "hubert_mini.yaml"
HUBERT_MINI = load_config(HubertConfig, base=load_yaml(HUBERT_MINI_RECIPE)["model"])
DISTILHUBERT_MINI = student_config_from_teacher(HUBERT_MINI, 2, (4, 8, 12))


# Weights shipped inside the project: upstream/pretrained/<name>/{model.safetensors, upstream.yaml, PROVENANCE.md},
# written by scripts/ship_teacher.py, which prints the sha256 to record here. None: nothing shipped yet.
SHIPPED_DIR = REPO_ROOT / "upstream" / "pretrained"
SHIPPED_SHA256: dict[str, str | None] = {"hubert_mini": None}


class ShippedWeightsError(ValueError):
    """Shipped weights that are missing, unrecorded, or differ from the recorded sha256."""


def shipped_weights(name: str) -> Path:
    """The folder of ``name``'s shipped weights, after checking ``model.safetensors`` against ``SHIPPED_SHA256``.

    Raises ShippedWeightsError (one line: the file, what is wrong, what to do) when the weights are absent, no
    sha256 is recorded for them, or theirs differs from the recorded one (a corrupted or replaced file).
    """
    folder = SHIPPED_DIR / name
    weights = folder / WEIGHTS_FILE
    if not weights.is_file() or not (folder / CONFIG_FILE).is_file():
        raise ShippedWeightsError(
            f"{name}: no shipped weights in {folder} ({WEIGHTS_FILE} + {CONFIG_FILE}); pass checkpoint=PATH "
            f"(e.g. the demo's results/demo/{name}), or random_init=True for the untrained architecture")
    expected = SHIPPED_SHA256.get(name)
    if expected is None:
        raise ShippedWeightsError(f"{weights}: no sha256 recorded for {name!r} in upstream/builtin.py SHIPPED_SHA256 "
                                  "(record the value scripts/ship_teacher.py printed)")
    actual = sha256_file(weights)
    if actual != expected:
        raise ShippedWeightsError(f"{weights}: sha256 {actual} differs from the recorded {expected} "
                                  "(a corrupted or replaced file: restore it with `git checkout`, or re-ship it with "
                                  "scripts/ship_teacher.py and record the new value)")
    return folder


def has_shipped_weights(name: str) -> bool:
    """Whether ``name`` has shipped weights that pass the sha256 check."""
    try:
        shipped_weights(name)
    except ShippedWeightsError:
        return False
    return True


def random_upstream(cfg: HubertConfig, seed: int = 0, **kwargs) -> HubertUpstream:
    """A randomly initialised upstream, the same weights for the same ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return HubertUpstream(HubertModel(cfg), **kwargs)


def _build(cfg: HubertConfig, checkpoint: str | Path | None, seed: int, **kwargs) -> HubertUpstream:
    if checkpoint is not None:
        upstream = load_upstream_from_path(checkpoint, **kwargs)
        if not isinstance(upstream, HubertUpstream):
            raise ValueError(f"{checkpoint}: not a HuBERT-family checkpoint")
        return upstream
    return random_upstream(cfg, seed, **kwargs)


def _demo_checkpoint(name: str, checkpoint: str | Path | None, *demo_dirs: str) -> Path | None:
    """The demo's weights: ``checkpoint``, else ``$DISTILSUPERB_<NAME>``, else the first of ``results/demo/<dir>``
    (``demo_dirs``, default ``name``) holding a saved upstream; None (random init, logged) when there is none."""
    if checkpoint is not None:
        return Path(checkpoint)
    env = os.environ.get(f"DISTILSUPERB_{name.upper()}")
    candidates = [Path(env)] if env else [REPO_ROOT / "results" / "demo" / d for d in (demo_dirs or (name,))]
    for path in candidates:
        if (path / CONFIG_FILE).is_file():
            return path
    log.warning("%s: no pretrained weights at %s (run the demo to create them); using random init", name,
                " or ".join(str(c) for c in candidates))
    return None


@register_upstream("hubert_base")
def hubert_base(checkpoint: str | Path | None = None, seed: int = 0, **kwargs) -> HubertUpstream:
    """HuBERT Base: CNN (7 x 512) + 12 post-LN layers x 768 (FFN 3072, 12 heads); 94.4 M parameters."""
    return _build(HUBERT_BASE, checkpoint, seed, **kwargs)


@register_upstream("hubert_large")
def hubert_large(checkpoint: str | Path | None = None, seed: int = 0, **kwargs) -> HubertUpstream:
    """HuBERT Large: layer-norm CNN + 24 pre-LN ("stable layer norm") layers x 1024 (FFN 4096, 16 heads)."""
    return _build(HUBERT_LARGE, checkpoint, seed, **kwargs)


@register_upstream("distilhubert")
def distilhubert(checkpoint: str | Path | None = None, seed: int = 0, **kwargs) -> HubertUpstream:
    """DistilHuBERT: HuBERT's CNN + 2 layers x 768, heads predicting teacher layers 4/8/12 (not in hidden_states
    unless ``include_pred_heads=True``)."""
    return _build(DISTILHUBERT, checkpoint, seed, **kwargs)


@register_upstream("hubert_mini")
def hubert_mini(checkpoint: str | Path | None = None, seed: int = 0, random_init: bool = False,
                **kwargs) -> HubertUpstream:
    """The CPU demo's teacher (sizes above): the shipped weights (``upstream/pretrained/hubert_mini``, sha256
    checked, fp16 on disk, fp32 in memory), ``checkpoint=PATH`` for others, or ``random_init=True`` for the
    architecture of ``configs/pretrain/hubert_mini.yaml`` with random weights (``seed``).

    Raises ShippedWeightsError when neither is given and the shipped weights are absent or fail their check, and
    ValueError when both ``checkpoint`` and ``random_init`` are given.
    """
    if random_init:
        if checkpoint is not None:
            raise ValueError("hubert_mini: checkpoint= and random_init=True exclude each other")
        return random_upstream(HUBERT_MINI, seed, **kwargs)
    return _build(HUBERT_MINI, checkpoint if checkpoint is not None else shipped_weights("hubert_mini"), seed,
                  **kwargs)


@register_upstream("distilhubert_mini")
def distilhubert_mini(checkpoint: str | Path | None = None, seed: int = 0, **kwargs) -> HubertUpstream:
    """The CPU demo's student of ``hubert_mini``; loads ``results/demo/distilhubert_mini`` (or the demo's
    ``distilhubert_mini_cnn``) when saved."""
    path = _demo_checkpoint("distilhubert_mini", checkpoint, "distilhubert_mini", "distilhubert_mini_cnn")
    return _build(DISTILHUBERT_MINI, path, seed, **kwargs)
