"""Registered HuBERT-family upstreams: ``hubert_base``, ``hubert_large``, ``distilhubert`` and the CPU demo pair
``hubert_mini`` / ``distilhubert_mini``.

They are pretrained models, so they need weights: ``checkpoint=PATH`` (CLI ``--upstream-ckpt``; any format
``upstream/checkpoints.py`` reads), or, for ``hubert_mini``, the weights shipped in ``upstream/pretrained/hubert_mini/``
(fp16 safetensors, loaded as fp32; see its PROVENANCE.md), checked against ``SHIPPED_SHA256`` below, and for
``distilhubert_mini`` the demo's saved student. Random initialisation (a fixed seed, so two builds hash alike in the
feature cache) is only on request (``random_init=True``, CLI ``--random-init``): an s3prl user asking for
``hubert_base`` expects the pretrained model, not 94 M random parameters. A random upstream has
``random_init = True``, which every results row records.
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
SHIPPED_SHA256: dict[str, str | None] = {"hubert_mini": "602b5564400924b669caf0c380373c6aa90a7606dab17e03acb7762bf412b43b"}


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
            f"(--upstream-ckpt; e.g. the demo's results/demo/{name}), or random_init=True (--random-init) for the "
            "untrained architecture")
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


class WeightsRequiredError(ValueError):
    """A pretrained upstream was asked for without its weights and without ``random_init=True``."""


def random_upstream(cfg: HubertConfig, seed: int = 0, **kwargs) -> HubertUpstream:
    """A randomly initialised upstream, the same weights for the same ``seed``; marked ``random_init = True``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        upstream = HubertUpstream(HubertModel(cfg), **kwargs)
    upstream.random_init = True
    return upstream


def _build(name: str, cfg: HubertConfig, checkpoint: str | Path | None, seed: int, random_init: bool,
           trust_pickle: bool = False, **kwargs) -> HubertUpstream:
    """Weights from ``checkpoint``; without one, random weights only when ``random_init`` (else
    :class:`WeightsRequiredError`). The one rule for every pretrained name."""
    if checkpoint is not None:
        if random_init:
            raise ValueError(f"upstream {name!r}: both a checkpoint ({checkpoint}) and random_init were given "
                             "(--upstream-ckpt and --random-init exclude each other)")
        if not Path(checkpoint).exists():
            raise FileNotFoundError(f"{checkpoint}: no such checkpoint file or directory (upstream {name!r})")
        upstream = load_upstream_from_path(checkpoint, trust_pickle=trust_pickle, **kwargs)
        if not isinstance(upstream, HubertUpstream):
            raise ValueError(f"{checkpoint}: not a HuBERT-family checkpoint")
        if upstream.cfg.layers != cfg.layers or upstream.cfg.embed_dim != cfg.embed_dim:
            log.warning("%s: %d layers x %d dims, not %s's %d x %d; using the checkpoint's architecture",
                        checkpoint, upstream.cfg.layers, upstream.cfg.embed_dim, name, cfg.layers, cfg.embed_dim)
        return upstream
    if not random_init:
        raise WeightsRequiredError(
            f"upstream {name!r} is a pretrained model and needs its weights: pass --upstream-ckpt PATH (s3prl's "
            "-k: a fairseq .pt, s3prl .ckpt, Hugging Face dir or our format; run_distill.py: --teacher-ckpt) or "
            "a checkpoint path as the upstream, or --random-init for the randomly initialised architecture")
    log.warning("%s: random initialisation (seed %d), not pretrained weights", name, seed)
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
    log.warning("%s: no pretrained weights at %s (run the demo to create them)", name,
                " or ".join(str(c) for c in candidates))
    return None


@register_upstream("hubert_base", pretrained=True)
def hubert_base(checkpoint: str | Path | None = None, seed: int = 0, random_init: bool = False,
                **kwargs) -> HubertUpstream:
    """HuBERT Base: CNN (7 x 512) + 12 post-LN layers x 768 (FFN 3072, 12 heads); 94.4 M parameters.
    Raises :class:`WeightsRequiredError` without ``checkpoint`` or ``random_init``."""
    return _build("hubert_base", HUBERT_BASE, checkpoint, seed, random_init, **kwargs)


@register_upstream("hubert_large", pretrained=True)
def hubert_large(checkpoint: str | Path | None = None, seed: int = 0, random_init: bool = False,
                 **kwargs) -> HubertUpstream:
    """HuBERT Large: layer-norm CNN + 24 pre-LN ("stable layer norm") layers x 1024 (FFN 4096, 16 heads).
    A checkpoint says whether it normalises its waveforms (fairseq ``task.normalize``, HF ``do_normalize``); the
    random-init architecture does, as HuBERT Large was pretrained (fairseq ``hubert_large_lv60k`` config).
    Raises :class:`WeightsRequiredError` without ``checkpoint`` or ``random_init``."""
    if checkpoint is None:
        kwargs.setdefault("normalize_waveform", True)
    return _build("hubert_large", HUBERT_LARGE, checkpoint, seed, random_init, **kwargs)


@register_upstream("distilhubert", pretrained=True)
def distilhubert(checkpoint: str | Path | None = None, seed: int = 0, random_init: bool = False,
                 **kwargs) -> HubertUpstream:
    """DistilHuBERT: HuBERT's CNN + 2 layers x 768, heads predicting teacher layers 4/8/12.

    Hidden states as s3prl reports them for SUPERB (6: the projected CNN features before the positional conv, the
    2 layers, the 3 heads; s3prl ``upstream/distiller/expert.py:53,57``) for s3prl's ``.ckpt`` and the random-init
    architecture; an HF dir (``ntu-spml/distilhubert``) has no heads, so it gives transformers' 3 states.
    ``include_pred_heads`` / ``first_state`` override. Raises :class:`WeightsRequiredError` without
    ``checkpoint`` or ``random_init``."""
    if checkpoint is None:
        kwargs.setdefault("include_pred_heads", True)
        kwargs.setdefault("first_state", "projection")
    return _build("distilhubert", DISTILHUBERT, checkpoint, seed, random_init, **kwargs)


@register_upstream("hubert_mini", pretrained=True)
def hubert_mini(checkpoint: str | Path | None = None, seed: int = 0, random_init: bool = False,
                **kwargs) -> HubertUpstream:
    """The CPU demo's teacher (sizes above): the shipped weights (``upstream/pretrained/hubert_mini``, sha256
    checked, fp16 on disk, fp32 in memory), ``checkpoint=PATH`` for others, or ``random_init=True`` for the
    architecture of ``configs/pretrain/hubert_mini.yaml`` with random weights (``seed``).

    Raises ShippedWeightsError when neither is given and the shipped weights are absent or fail their check, and
    ValueError when both ``checkpoint`` and ``random_init`` are given.
    """
    if checkpoint is None and not random_init:
        checkpoint = shipped_weights("hubert_mini")
    return _build("hubert_mini", HUBERT_MINI, checkpoint, seed, random_init, **kwargs)


@register_upstream("distilhubert_mini", pretrained=True)
def distilhubert_mini(checkpoint: str | Path | None = None, seed: int = 0, random_init: bool = False,
                      **kwargs) -> HubertUpstream:
    """The CPU demo's student of ``hubert_mini``; loads ``results/demo/distilhubert_mini`` (or the demo's
    ``distilhubert_mini_cnn``) when saved, and falls back to a (marked) random init until then."""
    path = checkpoint if random_init else _demo_checkpoint("distilhubert_mini", checkpoint, "distilhubert_mini",
                                                           "distilhubert_mini_cnn")
    return _build("distilhubert_mini", DISTILHUBERT_MINI, path, seed, random_init or path is None, **kwargs)
