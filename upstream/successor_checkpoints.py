"""Released checkpoints of DistilHuBERT's successors, read into :class:`upstream.compact.CompactModel`.

Recognised from the file's content (``load_upstream_from_path`` asks :func:`detect` before the fairseq formats):

* **FitHuBERT / MaskHuBERT / ARMHuBERT / STaRHuBERT** (glory20h/FitHuBERT, sungnyun/ARMHuBERT): a PyTorch Lightning
  ``.ckpt`` whose ``state_dict`` holds the student under ``student_model.`` in fairseq module names. The
  architecture comes from the run's ``distiller`` config (Lightning's ``hyper_parameters['cfg']``, or a ``.yaml``
  beside the checkpoint with the same stem or the only one there), else from the weights' shapes (CNN strides then
  follow HuBERT's kernel → stride rule: 10 → 5, 1 → 1, else 2; 12 heads, as every released student has). Layers
  without query/key projections reuse the attention map (ARMHuBERT); a Conv1d among the layers is FitHuBERT's time
  reduction. Projection heads (training only) are dropped, as the repositories' s3prl experts drop them. Hidden
  states: the layer outputs only (what those experts return to SUPERB).
* **DPHuBERT** (pyf98/DPHuBERT ``prune.py`` / ``save_final_ckpt.py``): ``{"state_dict", "config"}`` of its
  torchaudio-style ``wav2vec2_model`` with per-layer head counts and FFN widths (``encoder_num_heads``,
  ``encoder_ff_interm_features``), ``encoder_use_attention`` / ``encoder_use_feed_forward`` for removed blocks and
  the pruned CNN (``extractor_conv_layer_config``). Hidden states: encoder input + each layer (HuBERT's convention
  in s3prl; DPHuBERT's own SUPERB wrapper is not published).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import torch
import yaml

from .compact import CompactConfig, CompactModel, CompactUpstream
from .convert import ConversionError, parse_conv_layers, rename_fairseq_key

STUDENT_PREFIX = "student_model."


def detect(ckpt: Any) -> str | None:
    """"lightning_student" / "dphubert" for a checkpoint dict in those layouts, else None."""
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), Mapping):
        return None
    keys = ckpt["state_dict"].keys()
    if any(str(k).startswith(STUDENT_PREFIX) for k in keys):
        return "lightning_student"
    if isinstance(ckpt.get("config"), Mapping) and "extractor_conv_layer_config" in ckpt["config"]:
        return "dphubert"
    return None


def _stride_of(kernel: int) -> int:
    return {10: 5, 1: 1}.get(kernel, 2)


def _distiller_config(path: Path, ckpt: Mapping) -> Mapping | None:
    hp = ckpt.get("hyper_parameters")
    if isinstance(hp, Mapping):
        cfg = hp.get("cfg", hp)
        if isinstance(cfg, Mapping) and isinstance(cfg.get("distiller"), Mapping):
            return cfg["distiller"]
    sibling = path.with_suffix(".yaml")
    yamls = [sibling] if sibling.is_file() else sorted(path.parent.glob("*.yaml"))
    if len(yamls) == 1:  # the run's own yaml, or the only one beside it; several: ambiguous, shapes decide
        data = yaml.safe_load(yamls[0].read_text(encoding="utf-8"))
        if isinstance(data, Mapping) and isinstance(data.get("distiller"), Mapping):
            return data["distiller"]
    return None


def _student_state(path: Path, ckpt: Mapping) -> dict[str, torch.Tensor]:
    return {k[len(STUDENT_PREFIX):]: v for k, v in ckpt["state_dict"].items() if str(k).startswith(STUDENT_PREFIX)}


def load_lightning_student(path: Path, ckpt: Mapping) -> CompactUpstream:
    """FitHuBERT / MaskHuBERT / ARMHuBERT / STaRHuBERT (see the module docstring). Raises ConversionError."""
    raw = _student_state(path, ckpt)
    distiller = _distiller_config(path, ckpt) or {}
    where = f"{path}"
    conv_keys = sorted({int(m.group(1)) for k in raw
                        if (m := re.fullmatch(r"feature_extractor\.conv_layers\.(\d+)\.0\.weight", k))})
    if not conv_keys or "encoder.layer_norm.weight" not in raw:
        raise ConversionError(f"{where}: student_model weights without a CNN and encoder; not a FitHuBERT/"
                              "ARMHuBERT-family checkpoint")
    if "conv_feature_layers" in distiller:
        conv_layers = parse_conv_layers(distiller["conv_feature_layers"])
    else:
        shapes = [raw[f"feature_extractor.conv_layers.{i}.0.weight"].shape for i in conv_keys]
        conv_layers = tuple((int(s[0]), int(s[2]), _stride_of(int(s[2]))) for s in shapes)
    embed = int(raw["encoder.layer_norm.weight"].shape[0])
    # transformer layers and FitHuBERT's time-reduction conv share the encoder.layers.{i} index space
    indices = sorted({int(m.group(1)) for k in raw if (m := re.match(r"encoder\.layers\.(\d+)\.", k))})
    tr = [i for i in indices if f"encoder.layers.{i}.weight" in raw and raw[f"encoder.layers.{i}.weight"].dim() == 3]
    if len(tr) > 1 or (tr and tr[0] != 0):
        raise ConversionError(f"{where}: time-reduction layer at {tr}; only one, before the first layer, is read")
    layers = [i for i in indices if i not in tr]
    heads = int(distiller.get("encoder_attention_heads", 12))
    if embed % heads:
        raise ConversionError(f"{where}: width {embed} is not divisible by {heads} heads")
    ffn = tuple(int(raw[f"encoder.layers.{i}.fc1.weight"].shape[0]) for i in layers)
    reuse = tuple(f"encoder.layers.{i}.self_attn.q_proj.weight" not in raw for i in layers)
    pos = raw.get("encoder.pos_conv.0.weight_v")
    if pos is None:
        raise ConversionError(f"{where}: encoder.pos_conv.0.weight_v missing (a positional conv of depth 1 is read)")
    mode = distiller.get("extractor_mode", "default")
    cfg = CompactConfig(
        conv_layers=conv_layers, extractor_mode="layer_norm" if mode == "layer_norm" else "group_norm",
        conv_bias=bool(distiller.get("conv_bias", False)), feat_proj_layer_norm="layer_norm.weight" in raw,
        embed_dim=embed, heads=(heads,) * len(layers), head_dim=embed // heads, ffn_dims=ffn,
        reuse_attention=reuse if any(reuse) else (), time_reduction=int(raw[f"encoder.layers.{tr[0]}.weight"].shape[2])
        if tr else 1, layer_norm_first=bool(distiller.get("layer_norm_first", False)), conv_pos=int(pos.shape[2]),
        conv_pos_groups=embed // int(pos.shape[1]), dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        feat_proj_dropout=0.0, hidden_states="layers")
    state: dict[str, torch.Tensor] = {}
    ignored = []
    shift = {old: new for new, old in enumerate(layers)}
    for key, value in raw.items():
        m = re.match(r"encoder\.layers\.(\d+)\.(.*)", key)
        if m and int(m.group(1)) in tr:
            state[f"time_reduction.{m.group(2)}"] = value
            continue
        if m:
            key = f"encoder.layers.{shift[int(m.group(1))]}.{m.group(2)}"
        new = rename_fairseq_key(key)
        if new is None or new.startswith(("final_proj", "codeword_emb")):
            ignored.append(key)
        else:
            state[new] = value
    if "feature_projection.projection.weight" not in state:  # widths match: the repositories skip the projection
        state["feature_projection.projection.weight"] = torch.eye(embed)
        state["feature_projection.projection.bias"] = torch.zeros(embed)
    bad = [k for k in ignored if not k.startswith(("proj_head", "final_proj", "upsampler", "cnn_proj"))]
    if bad:
        raise ConversionError(f"{where}: unrecognised student weights {bad[:6]}")
    return _build(cfg, state, where)


def _as_list(value: Any, n: int, name: str, where: str) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ConversionError(f"{where}: config {name} has {len(value)} entries for {n} layers")
        return list(value)
    return [value] * n


def load_dphubert(path: Path, ckpt: Mapping) -> CompactUpstream:
    """DPHuBERT's pruned torchaudio-style model (see the module docstring). Raises ConversionError."""
    c, raw, where = ckpt["config"], ckpt["state_dict"], str(path)
    try:
        n = int(c["encoder_num_layers"])
        embed = int(c["encoder_embed_dim"])
        conv_layers = tuple(tuple(int(v) for v in layer) for layer in c["extractor_conv_layer_config"])
    except (KeyError, TypeError, ValueError) as e:
        raise ConversionError(f"{where}: config lacks or mangles {e}; expected DPHuBERT's wav2vec2_model "
                              "arguments") from None
    use_att = _as_list(c.get("encoder_use_attention", True), n, "encoder_use_attention", where)
    use_ffn = _as_list(c.get("encoder_use_feed_forward", True), n, "encoder_use_feed_forward", where)
    heads = [h if u else 0 for h, u in zip(_as_list(c.get("encoder_num_heads", 12), n, "encoder_num_heads", where),
                                          use_att)]
    ffn = [f if u else 0 for f, u in zip(_as_list(c.get("encoder_ff_interm_features", 3072), n,
                                                   "encoder_ff_interm_features", where), use_ffn)]
    head_dim = int(c.get("encoder_head_dim", 0))
    if not head_dim:
        q = next((raw[f"encoder.transformer.layers.{i}.attention.q_proj.weight"] for i in range(n)
                  if heads[i]), None)
        head_dim = int(q.shape[0]) // heads[next(i for i in range(n) if heads[i])] if q is not None else 64
    cfg = CompactConfig(
        conv_layers=conv_layers, extractor_mode=c.get("extractor_mode", "group_norm"),
        conv_bias=bool(c.get("extractor_conv_bias", False)), feat_proj_layer_norm=True, embed_dim=embed,
        heads=tuple(int(h) for h in heads), head_dim=head_dim, ffn_dims=tuple(int(f) for f in ffn),
        reuse_attention=(), layer_norm_first=bool(c.get("encoder_layer_norm_first", False)),
        conv_pos=int(c.get("encoder_pos_conv_kernel", 128)), conv_pos_groups=int(c.get("encoder_pos_conv_groups", 16)),
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0, hidden_states="with_input")
    state: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in raw.items():
        new = _rename_torchaudio_key(key)
        if new is None:
            unknown.append(key)
        elif new:
            state[new] = value
    if unknown:
        raise ConversionError(f"{where}: unrecognised weights {unknown[:6]}")
    d = embed
    for i in range(n):  # removed blocks (DPHuBERT sets them to None): no weights, no bias
        pre = f"encoder.layers.{i}."
        if not heads[i]:
            for proj in ("q_proj", "k_proj", "v_proj"):
                state[f"{pre}attention.{proj}.weight"] = torch.zeros(0, d)
                state[f"{pre}attention.{proj}.bias"] = torch.zeros(0)
            state[f"{pre}attention.out_proj.weight"] = torch.zeros(d, 0)
            state[f"{pre}attention.out_proj.bias"] = torch.zeros(d)
        if not ffn[i]:
            state[f"{pre}feed_forward.intermediate_dense.weight"] = torch.zeros(0, d)
            state[f"{pre}feed_forward.intermediate_dense.bias"] = torch.zeros(0)
            state[f"{pre}feed_forward.output_dense.weight"] = torch.zeros(d, 0)
            state[f"{pre}feed_forward.output_dense.bias"] = torch.zeros(d)
    return _build(cfg, state, where)


def _rename_torchaudio_key(key: str) -> str | None:
    """torchaudio ``Wav2Vec2Model`` key → ours; "" for keys dropped on purpose (a CTC head), None if unknown."""
    if key.startswith("aux."):
        return ""
    if key.startswith("feature_extractor.conv_layers."):
        return "front_end." + key[len("feature_extractor."):]
    if key.startswith("encoder.feature_projection."):
        return key[len("encoder."):]
    pos = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1",
           "parametrizations.weight.original0": "parametrizations.weight.original0",
           "parametrizations.weight.original1": "parametrizations.weight.original1", "bias": "bias"}
    m = re.fullmatch(r"encoder\.transformer\.pos_conv_embed\.conv\.(.+)", key)
    if m:
        return f"encoder.pos_conv.conv.{pos[m.group(1)]}" if m.group(1) in pos else None
    if key.startswith("encoder.transformer.layer_norm."):
        return "encoder." + key[len("encoder.transformer."):]
    if key.startswith("encoder.transformer.layers."):
        return "encoder." + key[len("encoder.transformer."):]
    if key == "mask_emb" or key.startswith("encoder.mask_emb"):
        return "mask_emb"
    return None


def _build(cfg: CompactConfig, state: dict[str, torch.Tensor], where: str) -> CompactUpstream:
    from .checkpoints import load_model_state

    try:
        model = CompactModel(cfg)
    except ValueError as e:
        raise ConversionError(f"{where}: {e}") from None
    load_model_state(model, state, where)
    return CompactUpstream(model)
