"""Small factories shared by the upstream tests and benchmarks: tiny configs, perturbed random weights, waveforms.

Tiny models keep HuBERT's kernels and strides (so frame counts are real) with few channels and dims.
"""
from __future__ import annotations

import contextlib
import dataclasses
import sys
import types
from typing import Iterator

import torch
from torch import nn

from .hubert import HubertConfig

TINY_CONV: tuple[tuple[int, int, int], ...] = ((32, 10, 5),) + ((32, 3, 2),) * 4 + ((32, 2, 2),) * 2
TINY_CONV_SPEC = "[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2"  # the same, in fairseq/s3prl's string form


def tiny_config(**changes) -> HubertConfig:
    """A 2-layer, 64-dim HuBERT-like config with HuBERT's CNN geometry (32 channels)."""
    base = HubertConfig(conv_layers=TINY_CONV, embed_dim=64, ffn_dim=128, heads=4, layers=2, conv_pos=16,
                        conv_pos_groups=4)
    return dataclasses.replace(base, **changes)


def tiny_hf_config(**changes):
    """The transformers ``HubertConfig`` matching :func:`tiny_config`."""
    import transformers

    kwargs = dict(conv_dim=[32] * 7, conv_kernel=[10, 3, 3, 3, 3, 2, 2], conv_stride=[5, 2, 2, 2, 2, 2, 2],
                  hidden_size=64, intermediate_size=128, num_attention_heads=4, num_hidden_layers=2,
                  num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    kwargs.update(changes)
    return transformers.HubertConfig(**kwargs)


def perturb_(module: nn.Module, seed: int = 0, scale: float = 0.05) -> nn.Module:
    """Add noise to every parameter, so LayerNorm gains, biases and zero-initialised tensors are not trivial
    (a parity test with all-ones norms would miss a swapped weight/bias)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    return module


def random_wavs(lengths: list[int], seed: int = 0) -> list[torch.Tensor]:
    """Random float waveforms (1-D, amplitude ~0.1) of the given sample counts."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=gen) * 0.1 for n in lengths]


@contextlib.contextmanager
def foreign_class(qualified_name: str, namespace: dict | None = None) -> Iterator[type]:
    """A class importable as ``qualified_name`` (e.g. ``fairseq.data.dictionary.Dictionary``) while the block runs,
    so a test can pickle objects of a library that is not installed; the fake modules are removed afterwards."""
    module_name, cls_name = qualified_name.rsplit(".", 1)
    parts = module_name.split(".")
    added = [".".join(parts[: i + 1]) for i in range(len(parts)) if ".".join(parts[: i + 1]) not in sys.modules]
    for name in added:
        sys.modules[name] = types.ModuleType(name)
    cls = type(cls_name, (), dict(namespace or {}, __module__=module_name, __qualname__=cls_name))
    setattr(sys.modules[module_name], cls_name, cls)
    try:
        yield cls
    finally:
        for name in added:
            sys.modules.pop(name, None)


def tiny_family_model(family: str, seed: int = 0) -> nn.Module:
    """A tiny random transformers base model of a supported family (HuBERT's CNN geometry, 32 channels, 2 layers x
    64), perturbed and in eval mode. ``family``: "hubert", "wav2vec2", "wavlm", "data2vec-audio", or one of the
    first three with "_stable_ln" (pre-LN layers, layer-norm CNN with conv bias)."""
    import transformers

    classes = {"hubert": (transformers.HubertConfig, transformers.HubertModel),
               "wav2vec2": (transformers.Wav2Vec2Config, transformers.Wav2Vec2Model),
               "wavlm": (transformers.WavLMConfig, transformers.WavLMModel),
               "data2vec-audio": (transformers.Data2VecAudioConfig, transformers.Data2VecAudioModel)}
    base, stable = (family[: -len("_stable_ln")], True) if family.endswith("_stable_ln") else (family, False)
    if base not in classes:
        raise ValueError(f"unknown family {family!r}; expected one of {sorted(classes)} (+ '_stable_ln')")
    kwargs: dict = dict(conv_dim=[32] * 7, conv_kernel=[10, 3, 3, 3, 3, 2, 2], conv_stride=[5, 2, 2, 2, 2, 2, 2],
                        hidden_size=64, intermediate_size=128, num_attention_heads=4, num_hidden_layers=2,
                        num_conv_pos_embedding_groups=4, num_conv_pos_embeddings=16)
    if base == "wavlm":
        kwargs.update(num_buckets=32, max_bucket_distance=64)  # a small relative-position table
    if base == "data2vec-audio":
        kwargs.update(num_conv_pos_embeddings=3, conv_pos_kernel_size=5)  # 3 stacked positional convs
    if stable:
        kwargs.update(do_stable_layer_norm=True, feat_extract_norm="layer", conv_bias=True)
    config_cls, model_cls = classes[base]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return perturb_(model_cls(config_cls(**kwargs)), seed=seed + 1).eval()
