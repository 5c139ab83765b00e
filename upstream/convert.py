"""Foreign HuBERT-family formats ↔ our :class:`HubertModel`: config translation and state-dict key maps.

Key names follow transformers' conversion scripts (``convert_hubert_original_pytorch_checkpoint_to_pytorch.py``,
``convert_distilhubert_original_s3prl_checkpoint_to_pytorch.py``); our names are transformers' with three prefix
renames, so the transformers map is short and the fairseq/s3prl maps go through the same names.
"""
from __future__ import annotations

import ast
import re
from typing import Any, Mapping

import torch

from .hubert import HubertConfig

# transformers' prefix → ours (applied to the start of a key).
_HF_PREFIXES = (("feature_extractor.conv_layers.", "front_end.conv_layers."),
                ("encoder.pos_conv_embed.conv.", "encoder.pos_conv.conv."),
                ("masked_spec_embed", "mask_emb"))
# Old-style weight norm (weight_g / weight_v) → torch.nn.utils.parametrizations names.
_WEIGHT_NORM = ((".weight_g", ".parametrizations.weight.original0"),
                (".weight_v", ".parametrizations.weight.original1"))


class ConversionError(ValueError):
    """A foreign checkpoint's config or weights do not describe a model we can represent exactly."""


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ConversionError(message)


# ---- transformers -------------------------------------------------------------------------------------------------

def config_from_hf(hf: Mapping[str, Any], where: str) -> HubertConfig:
    """Our config from a transformers ``config.json`` dict (model_type "hubert" or "wav2vec2": the same encoder;
    wav2vec2's feature projection always has its LayerNorm). Other families: ``upstream/hf_families.py``."""
    model_type = hf.get("model_type")
    if model_type not in ("hubert", "wav2vec2"):
        from .hf_families import unsupported_family_message

        raise ConversionError(unsupported_family_message(model_type, where))
    _require(not hf.get("add_adapter", False), f"{where}: add_adapter=True is not supported (the adapter changes "
             "the frame rate)")
    _require(hf.get("adapter_attn_dim") is None, f"{where}: adapter_attn_dim (per-language attention adapters) "
             "is not supported")
    _require(hf.get("hidden_act", "gelu") == "gelu" and hf.get("feat_extract_activation", "gelu") == "gelu",
             f"{where}: only GELU activations are supported")
    _require(not hf.get("conv_pos_batch_norm", False), f"{where}: conv_pos_batch_norm is not supported")
    norm = hf.get("feat_extract_norm", "group")
    _require(norm in ("group", "layer"), f"{where}: feat_extract_norm {norm!r} is not 'group' or 'layer'")
    conv = tuple(zip(hf["conv_dim"], hf["conv_kernel"], hf["conv_stride"]))
    return HubertConfig(
        conv_layers=tuple(tuple(int(v) for v in c) for c in conv),
        extractor_mode="group_norm" if norm == "group" else "layer_norm",
        conv_bias=bool(hf.get("conv_bias", False)), embed_dim=hf["hidden_size"], ffn_dim=hf["intermediate_size"],
        heads=hf["num_attention_heads"], layers=hf["num_hidden_layers"],
        layer_norm_first=bool(hf.get("do_stable_layer_norm", False)),
        feat_proj_layer_norm=bool(hf.get("feat_proj_layer_norm", True)) or model_type == "wav2vec2",
        conv_pos=hf.get("num_conv_pos_embeddings", 128), conv_pos_groups=hf.get("num_conv_pos_embedding_groups", 16),
        layer_norm_eps=float(hf.get("layer_norm_eps", 1e-5)))


def state_from_hf(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers keys → ours. A task model's ``hubert.``/``wav2vec2.`` prefix is stripped; its task heads (and
    wav2vec2's quantizer and pretraining projections) are dropped."""
    for prefix in ("hubert.", "wav2vec2."):
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    out = {}
    for key, value in state.items():
        for old, new in _HF_PREFIXES:
            if key.startswith(old):
                key = new + key[len(old):]
        for old, new in _WEIGHT_NORM:
            if key.endswith(old):
                key = key[: -len(old)] + new
        out[key] = value
    return out


def config_to_hf(cfg: HubertConfig) -> dict[str, Any]:
    """transformers ``HubertConfig`` kwargs for our config (CNN front end only)."""
    if cfg.front_end != "cnn":
        raise ConversionError("transformers' HubertModel has no Fbank front end; only CNN models can be exported")
    return dict(
        conv_dim=[c for c, _, _ in cfg.conv_layers], conv_kernel=[k for _, k, _ in cfg.conv_layers],
        conv_stride=[s for _, _, s in cfg.conv_layers], num_feat_extract_layers=len(cfg.conv_layers),
        feat_extract_norm="group" if cfg.extractor_mode == "group_norm" else "layer", conv_bias=cfg.conv_bias,
        hidden_size=cfg.embed_dim, intermediate_size=cfg.ffn_dim, num_attention_heads=cfg.heads,
        num_hidden_layers=cfg.layers, do_stable_layer_norm=cfg.layer_norm_first,
        feat_proj_layer_norm=cfg.feat_proj_layer_norm, num_conv_pos_embeddings=cfg.conv_pos,
        num_conv_pos_embedding_groups=cfg.conv_pos_groups, layer_norm_eps=cfg.layer_norm_eps,
        hidden_act="gelu", feat_extract_activation="gelu", hidden_dropout=cfg.dropout,
        attention_dropout=cfg.attention_dropout, activation_dropout=cfg.activation_dropout,
        feat_proj_dropout=cfg.feat_proj_dropout)


def state_to_hf(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our keys → transformers' (encoder only: prediction and codeword heads have no place there)."""
    out = {}
    for key, value in state.items():
        if key.startswith(("pred_heads.", "final_proj.", "codeword_emb")):
            continue
        for hf, ours in _HF_PREFIXES:
            if key.startswith(ours):
                key = hf + key[len(ours):]
        out[key] = value
    return out


# ---- fairseq HuBERT and s3prl's distiller (fairseq module names) --------------------------------------------------

def parse_conv_layers(spec: str | list) -> tuple[tuple[int, int, int], ...]:
    """fairseq's ``"[(512,10,5)] + [(512,3,2)] * 4"`` without ``eval``: list literals, ``+`` and ``* n`` only."""
    if isinstance(spec, (list, tuple)):
        return tuple(tuple(int(v) for v in c) for c in spec)
    layers: list[tuple[int, int, int]] = []
    for term in spec.split("+"):
        match = re.fullmatch(r"\s*(\[[\d\s,()]*\])\s*(?:\*\s*(\d+))?\s*", term)
        if match is None:
            raise ConversionError(f"conv layer spec {spec!r}: cannot parse {term!r}")
        items = ast.literal_eval(match.group(1))
        layers += [tuple(int(v) for v in item) for item in items] * int(match.group(2) or 1)
    return tuple(layers)  # type: ignore[return-value]


def _fairseq_common(m: Mapping[str, Any], where: str) -> dict[str, Any]:
    mode = m.get("extractor_mode", "default")
    _require(mode in ("default", "layer_norm"), f"{where}: extractor_mode {mode!r} is not 'default'/'layer_norm'")
    _require(m.get("activation_fn", "gelu") == "gelu", f"{where}: activation_fn must be gelu")
    return dict(conv_layers=parse_conv_layers(m.get("conv_feature_layers", m.get("extractor_conv_feature_layers",
                                                    "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"))),
                extractor_mode="group_norm" if mode == "default" else "layer_norm",
                embed_dim=int(m.get("encoder_embed_dim", 768)), ffn_dim=int(m.get("encoder_ffn_embed_dim", 3072)),
                heads=int(m.get("encoder_attention_heads", 12)), layers=int(m.get("encoder_layers", 12)),
                layer_norm_first=bool(m.get("layer_norm_first", False)), conv_pos=int(m.get("conv_pos", 128)),
                conv_pos_groups=int(m.get("conv_pos_groups", 16)))


def config_from_fairseq(model_cfg: Mapping[str, Any], state: Mapping[str, torch.Tensor], where: str) -> HubertConfig:
    """A fairseq HuBERT's ``cfg["model"]`` (or old ``args``) dict + its state dict → our config."""
    codewords = state.get("label_embs_concat")
    return HubertConfig(**_fairseq_common(model_cfg, where), conv_bias=bool(model_cfg.get("conv_bias", False)),
                        feat_proj_layer_norm="layer_norm.weight" in state,
                        final_dim=int(codewords.shape[1]) if codewords is not None else 0,
                        num_codewords=int(codewords.shape[0]) if codewords is not None else 0,
                        logit_temp=float(model_cfg.get("logit_temp", 0.1)))


def config_from_s3prl(distiller: Mapping[str, Any], where: str) -> HubertConfig:
    """An s3prl distiller checkpoint's ``Config["distiller"]`` → our config (prediction heads included)."""
    emb_type = distiller.get("task_emb_type", "expand-last")
    _require(emb_type in ("expand-last", "none"), f"{where}: task_emb_type {emb_type!r} is not supported "
             "(only 'expand-last' heads, DistilHuBERT's, or 'none')")
    _require(distiller.get("attention_type", "original") == "original", f"{where}: only original attention")
    common = _fairseq_common(distiller, where)
    _require(common["layers"] > 0, f"{where}: encoder_layers must be > 0")
    pred = tuple(int(i) for i in distiller.get("pred_layer_id", ())) if emb_type == "expand-last" else ()
    inter = int(distiller.get("out_layer_inter_dim", -1))
    return HubertConfig(**common, conv_bias=False, feat_proj_layer_norm=False, pred_layer_ids=pred,
                        pred_inter_dim=inter if inter > 0 else 0, pred_dim=int(distiller.get("final_dim", 768)))


def _rename_fairseq_key(key: str) -> str | None:
    """One fairseq/s3prl key → ours; None for keys we do not keep."""
    conv = re.fullmatch(r"feature_extractor\.conv_layers\.(\d+)\.(0|2|2\.1)\.(weight|bias)", key)
    if conv:
        part = "conv" if conv.group(2) == "0" else "layer_norm"
        return f"front_end.conv_layers.{conv.group(1)}.{part}.{conv.group(3)}"
    simple = {"layer_norm.weight": "feature_projection.layer_norm.weight",
              "layer_norm.bias": "feature_projection.layer_norm.bias",
              "post_extract_proj.weight": "feature_projection.projection.weight",
              "post_extract_proj.bias": "feature_projection.projection.bias",
              "encoder.pos_conv.0.bias": "encoder.pos_conv.conv.bias",
              "encoder.pos_conv.0.weight_g": "encoder.pos_conv.conv.parametrizations.weight.original0",
              "encoder.pos_conv.0.weight_v": "encoder.pos_conv.conv.parametrizations.weight.original1",
              "mask_emb": "mask_emb", "label_embs_concat": "codeword_emb",
              "final_proj.weight": "final_proj.weight", "final_proj.bias": "final_proj.bias"}
    if key in simple:
        return simple[key]
    if key.startswith("encoder.layer_norm."):
        return key
    layer = re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)", key)
    if layer:
        rest = layer.group(2)
        for old, new in (("self_attn.", "attention."), ("self_attn_layer_norm.", "layer_norm."),
                         ("fc1.", "feed_forward.intermediate_dense."), ("fc2.", "feed_forward.output_dense."),
                         ("final_layer_norm.", "final_layer_norm.")):
            if rest.startswith(old):
                return f"encoder.layers.{layer.group(1)}.{new}{rest[len(old):]}"
    return None


rename_fairseq_key = _rename_fairseq_key  # public: the successors' checkpoints (successor_checkpoints.py) use it


def state_from_fairseq(state: Mapping[str, torch.Tensor], cfg: HubertConfig) -> tuple[dict[str, torch.Tensor],
                                                                                      list[str]]:
    """fairseq/s3prl keys → ours; returns (state, ignored foreign keys). s3prl's ``output_layer`` (one wide
    Linear, GELU, SplitLinear) is split into one Linear-GELU-Linear head per predicted layer."""
    out, ignored = {}, []
    for key, value in state.items():
        if key.startswith("output_layer."):
            continue
        new = _rename_fairseq_key(key)
        if new is None:
            ignored.append(key)
        else:
            out[new] = value
    if "feature_projection.projection.weight" not in out and cfg.front_end_dim == cfg.embed_dim:
        # s3prl drops post_extract_proj when widths match: an identity projection is the same model.
        out["feature_projection.projection.weight"] = torch.eye(cfg.embed_dim)
        out["feature_projection.projection.bias"] = torch.zeros(cfg.embed_dim)
    if cfg.pred_layer_ids:
        out.update(_split_s3prl_heads(state, len(cfg.pred_layer_ids)))
    return out, ignored


def _split_s3prl_heads(state: Mapping[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
    first_w, first_b = state["output_layer.0.weight"], state["output_layer.0.bias"]  # [n*inter, dim]
    inter = first_w.shape[0] // n
    out = {}
    for i in range(n):
        out[f"pred_heads.{i}.0.weight"] = first_w[i * inter:(i + 1) * inter]
        out[f"pred_heads.{i}.0.bias"] = first_b[i * inter:(i + 1) * inter]
        if n == 1:  # SplitLinear holds a plain Linear when it has one split
            out["pred_heads.0.2.weight"] = state["output_layer.2.layer.weight"]
            out["pred_heads.0.2.bias"] = state["output_layer.2.layer.bias"]
        else:  # SplitLinear weight [n, inter, out] (x @ W), bias [1, 1, n, out]
            out[f"pred_heads.{i}.2.weight"] = state["output_layer.2.weight"][i].t().contiguous()
            out[f"pred_heads.{i}.2.bias"] = state["output_layer.2.bias"][0, 0, i]
    return out
