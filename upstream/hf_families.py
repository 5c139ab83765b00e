"""Hugging Face upstreams beyond HuBERT: ``wav2vec2`` (on our HuBERT components), ``wavlm`` and ``data2vec-audio``
(on transformers' own modules), behind the same contract and guarantees as :class:`~upstream.hubert.HubertUpstream`.

Which model class and why:
  * wav2vec2: architecturally the same encoder as HuBERT (transformers' HuBERT code is "copied from" wav2vec2:
    same CNN, feature projection with LayerNorm, weight-normalised positional conv, post-/pre-LN layers, same
    state-dict names), so a wav2vec2 dir loads into our :class:`HubertModel`, which already keeps padding from
    leaking and buckets batches by length. Its quantizer and pretraining heads are not encoder weights and are
    dropped.
  * wavlm: gated relative position bias in every attention layer (``gru_rel_pos_*``, a bucketed relative bias
    table in layer 0) that our :class:`~upstream.components.SelfAttention` does not have, so transformers'
    ``WavLMModel`` modules are reused.
  * data2vec-audio: a layer-norm CNN and a positional embedding of ``num_conv_pos_embeddings`` stacked convs with
    affine-free LayerNorms (ours is one weight-normalised conv), so transformers' ``Data2VecAudioModel`` modules
    are reused.

Batch invariance with transformers' modules (how padding is kept out, and what it costs): calling transformers'
``forward`` on a padded batch leaks padding in three places, so :class:`TransformersUpstream` runs the modules
itself:
  1. group-norm CNNs (WavLM Base: ``feat_extract_norm="group"``) normalise the first conv layer's output over the
     whole padded time axis. Here the first conv layer and its group norm run once per utterance on its own samples
     (the rest of the CNN runs batched: a conv without padding only reads valid frames into valid frames, and
     per-frame layer norms do not mix frames). Cost: the first conv layer runs unbatched, one conv call per
     utterance; ``bench/hf_padding_cost.py`` (WavLM Base CNN + 2 layers, 8 utterances of 2-6 s, 1 thread on a
     busy 2-core CPU) measured 1.04x transformers' padded-batch time, whose features were off by up to 2.3 from
     each utterance's own (ours: 1.7e-6).
  2. data2vec-audio's positional embedding stacks 5 padded convs; after the first, padded frames are non-zero and
     the next conv reads them into the last valid frames. Here padded frames are zeroed after every conv of the
     stack (one multiply per conv; nothing else).
  3. attention over padded keys: a key mask is passed to every layer (as transformers does with an attention mask).
Frames past each utterance's length are zero in every hidden state.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from common.audio import SAMPLE_RATE

from .base import BucketedUpstream
from .kernels import conv_output_lengths, valid_mask

log = logging.getLogger(__name__)

# model_type → how it is built; the order is the one error messages list.
SUPPORTED_HF_FAMILIES = ("hubert", "wav2vec2", "wavlm", "data2vec-audio")
TRANSFORMERS_FAMILIES = ("wavlm", "data2vec-audio")


def unsupported_family_message(model_type: Any, where: str) -> str:
    return (f"{where}: model_type {model_type!r} is not a supported upstream family; supported: "
            f"{', '.join(SUPPORTED_HF_FAMILIES)}")


def transformers_classes(model_type: str) -> tuple[type, type]:
    """(config class, base model class) in transformers for a family of :data:`TRANSFORMERS_FAMILIES`."""
    import transformers

    classes = {"wavlm": (transformers.WavLMConfig, transformers.WavLMModel),
               "data2vec-audio": (transformers.Data2VecAudioConfig, transformers.Data2VecAudioModel)}
    if model_type not in classes:
        raise ValueError(unsupported_family_message(model_type, "transformers upstream"))
    return classes[model_type]


class TransformersUpstream(BucketedUpstream):
    """A transformers ``WavLMModel`` or ``Data2VecAudioModel`` behind the upstream contract.

    hidden_states: ``num_hidden_layers + 1`` tensors ``[batch, frame, hidden_size]``, transformers' convention
    (entry 0 after the positional embedding and, post-LN, the layer norm; the last entry is ``last_hidden_state``,
    with the final LayerNorm for stable-layer-norm models). lengths ``[batch]`` frames; 20 ms frames
    (``downsample_rate`` = product of the conv strides, 320). Utterances are grouped by length exactly as
    :class:`HubertUpstream` does (both are a :class:`~upstream.base.BucketedUpstream`), and padding is kept out as
    the module docstring explains, so an utterance's features do not depend on its batch mates.

    The model stays in eval mode (no dropout) unless ``fine_tune`` is set (:class:`~upstream.base.BucketedUpstream`).
    Raises ValueError for an unsupported family or an adapter model (``add_adapter``, which changes the frame rate).
    """

    def __init__(self, model: nn.Module, bucket_fill: float = 0.7, min_bucket_size: int = 4,
                 max_bucket_samples: int = SAMPLE_RATE * 240, normalize_waveform: bool = False):
        config = model.config
        if config.model_type not in TRANSFORMERS_FAMILIES:
            raise ValueError(unsupported_family_message(config.model_type, "TransformersUpstream"))
        if getattr(config, "add_adapter", False):
            raise ValueError(f"{config.model_type}: add_adapter=True models are not supported (the adapter changes "
                             "the frame rate and is a fine-tuning head, not part of the upstream)")
        super().__init__(model, bucket_fill, min_bucket_size, max_bucket_samples, normalize_waveform)
        self.model_type = config.model_type
        self.kernels = [int(k) for k in config.conv_kernel]
        self.strides = [int(s) for s in config.conv_stride]
        self.downsample_rate = math.prod(self.strides)
        self.group_norm_cnn = getattr(config, "feat_extract_norm", "layer") == "group"
        self.stable_layer_norm = bool(getattr(config, "do_stable_layer_norm", False))

    def frames_for(self, num_samples: torch.Tensor) -> torch.Tensor:
        for kernel, stride in zip(self.kernels, self.strides):
            num_samples = conv_output_lengths(num_samples, kernel, stride)
        return num_samples

    def hash_config(self) -> dict:
        config = self.model.config.to_dict()
        for key in ("transformers_version", "_name_or_path", "architectures", "dtype", "torch_dtype"):
            config.pop(key, None)
        return {"type": "transformers", "config": config}

    def front_end(self, wavs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Waveforms → CNN features ``[batch, frame, conv_dim[-1]]`` and frame lengths ``[batch]``."""
        conv_layers = self.model.feature_extractor.conv_layers
        samples = torch.tensor([w.numel() for w in wavs], device=wavs[0].device)
        if self.group_norm_cnn:  # the group norm sees one utterance's valid samples only (module docstring, 1.)
            first = [conv_layers[0](w[None, None])[0] for w in wavs]
            lengths = torch.tensor([f.shape[-1] for f in first], device=samples.device)
            x = first[0].new_zeros(len(wavs), first[0].shape[0], int(lengths.max()))
            for i, f in enumerate(first):
                x[i, :, : f.shape[-1]] = f
            rest = conv_layers[1:]
        else:
            lengths = samples
            x = first_input = torch.zeros(len(wavs), 1, int(samples.max()), device=samples.device,
                                          dtype=wavs[0].dtype)
            for i, w in enumerate(wavs):
                first_input[i, 0, : w.numel()] = w
            rest = conv_layers
        for layer in rest:
            x = layer(x)
        return x.transpose(1, 2), self.frames_for(samples)

    def encode_features(self, features: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        """CNN features ``[batch, frame, conv_dim[-1]]`` + frame lengths → ``layers + 1`` hidden states."""
        x, _ = self.model.feature_projection(features)
        encoder = self.model.encoder
        mask = valid_mask(lengths, x.shape[1])
        padded = not bool(mask.all())
        keep = mask[:, :, None].to(x.dtype)
        x = x * keep
        if self.model_type == "data2vec-audio":  # zero padding between the stacked convs (module docstring, 2.)
            pos = x.transpose(1, 2)
            for layer in encoder.pos_conv_embed.layers:
                pos = layer(pos) * keep.transpose(1, 2)
            pos = pos.transpose(1, 2)
        else:
            pos = encoder.pos_conv_embed(x)
        x = x + pos
        if not self.stable_layer_norm:
            x = encoder.layer_norm(x)
        x = encoder.dropout(x)
        states = [x]
        if self.model_type == "wavlm":
            key_mask = mask.long() if padded else None  # WavLM's attention takes the raw [batch, frame] 0/1 mask
            position_bias = None
            for i, layer in enumerate(encoder.layers):
                kwargs = {} if self.stable_layer_norm else {"index": i}
                x, position_bias = layer(x, attention_mask=key_mask, position_bias=position_bias, **kwargs)
                states.append(x)
        else:
            from transformers.masking_utils import create_bidirectional_mask

            attn_mask = create_bidirectional_mask(config=encoder.config, inputs_embeds=x,
                                                  attention_mask=mask if padded else None)
            for layer in encoder.layers:
                x = layer(x, attention_mask=attn_mask)
                states.append(x)
        if self.stable_layer_norm:
            states[-1] = encoder.layer_norm(states[-1])
        if padded:
            states = [s * keep for s in states]
        return states

    def _run(self, wavs: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        features, lengths = self.front_end(wavs)
        return self.encode_features(features, lengths), lengths

    def freeze_front_end(self, frozen: bool = True) -> None:
        """Freeze (or unfreeze) the CNN, as transformers' ``freeze_feature_encoder``."""
        for p in self.model.feature_extractor.parameters():
            p.requires_grad_(not frozen)


def load_transformers_upstream(path: Path, model_type: str, **kwargs) -> TransformersUpstream:
    """A wavlm / data2vec-audio HF dir (base model or a task model such as ``WavLMForCTC``; its head is dropped).

    Strict: every encoder weight must be in the file (``masked_spec_embed``, a pretraining-only vector, may be
    missing). Raises ConversionError naming the missing weights.
    """
    from .convert import ConversionError

    config_cls, model_cls = transformers_classes(model_type)
    config = config_cls.from_pretrained(path, local_files_only=True)
    if getattr(config, "add_adapter", False):
        raise ConversionError(f"{path}: add_adapter=True models are not supported (the adapter changes the frame "
                              "rate)")
    model, info = model_cls.from_pretrained(path, config=config, local_files_only=True, output_loading_info=True)
    missing = [k for k in info["missing_keys"] if not k.endswith("masked_spec_embed")]
    if missing:
        raise ConversionError(f"{path}: weights missing for {sorted(missing)[:8]}; not a complete {model_type} "
                              "checkpoint")
    return TransformersUpstream(model.float(), **kwargs)


def transformers_upstream_from_state(model_type: str, config: Mapping[str, Any],
                                     state: Mapping[str, torch.Tensor], where: str,
                                     normalize_waveform: bool = False) -> TransformersUpstream:
    """Rebuild a :class:`TransformersUpstream` from our format (``config`` = transformers' config dict)."""
    from .convert import ConversionError

    config_cls, model_cls = transformers_classes(model_type)
    model = model_cls(config_cls.from_dict(dict(config)))
    missing, unexpected = model.load_state_dict(dict(state), strict=False)
    if missing or unexpected:
        raise ConversionError(f"{where}: weights do not match the architecture; missing {sorted(missing)[:8]}, "
                              f"unexpected {sorted(unexpected)[:8]}")
    return TransformersUpstream(model, normalize_waveform=normalize_waveform)


# ---- as a distillation teacher: the HuBERT-shaped parts a student can be initialised from --------------------------

def hubert_equivalent(upstream: TransformersUpstream) -> tuple[Any, dict[str, torch.Tensor], list[str]]:
    """(a :class:`~upstream.hubert.HubertConfig` of the same sizes, the teacher's weights under our names, the parts
    whose architecture is HuBERT's and can initialise a student).

    WavLM: CNN, feature projection, positional conv and the encoder's LayerNorm match; its transformer layers do
    not (gated relative position bias). data2vec-audio: CNN (layer-norm mode), feature projection, the encoder's
    LayerNorm and every post-LN transformer layer match; its stacked positional convs do not.
    """
    from .convert import config_from_hf, state_from_hf

    hf = upstream.model.config.to_dict()
    if upstream.model_type == "data2vec-audio":
        hf.update(feat_extract_norm="layer", num_conv_pos_embeddings=hf["conv_pos_kernel_size"])
    cfg = config_from_hf({**hf, "model_type": "hubert"}, f"{upstream.model_type} teacher config")
    state = state_from_hf(upstream.model.state_dict())
    parts = ["front_end", "feature_projection", "encoder.layer_norm"]
    if upstream.model_type == "wavlm":
        parts.append("encoder.pos_conv")
    else:
        parts += [f"encoder.layers.{i}" for i in range(cfg.layers)]
    return cfg, state, parts
