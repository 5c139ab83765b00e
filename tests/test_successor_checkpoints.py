"""The successors' released checkpoint layouts load as upstreams by path, detected from content: random weights
written as FitHuBERT / MaskHuBERT / ARMHuBERT / STaRHuBERT Lightning ``.ckpt`` files (fairseq module names under
``student_model.``) and as DPHuBERT's torchaudio-style ``{"state_dict", "config"}``; parity with torchaudio's
``wav2vec2_model`` (which DPHuBERT's model is built on), including a pruned layout."""
from __future__ import annotations

import re

import pytest
import torch
import torchaudio

from tests.fixtures.upstreams import random_wavs
from upstream import build_upstream
from upstream.base import count_parameters
from upstream.compact import CompactConfig, CompactModel, CompactUpstream
from upstream.convert import ConversionError

CONV = ((8, 10, 5), (16, 1, 1), (16, 3, 2), (16, 3, 2), (16, 3, 2), (16, 3, 2), (24, 1, 1), (24, 2, 2), (24, 2, 2))
CONV_SPEC = "[(8, 10, 5)] + [(16, 1, 1)] + [(16, 3, 2)] * 4 + [(24, 1, 1)] + [(24, 2, 2)] * 2"


def source_model(**changes) -> CompactModel:
    cfg = CompactConfig(conv_layers=CONV, embed_dim=24, heads=(4, 4, 4), head_dim=6, ffn_dims=(40, 40, 40),
                        reuse_attention=(False, True, False), conv_pos=8, conv_pos_groups=4, dropout=0.0,
                        attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0, hidden_states="layers")
    torch.manual_seed(0)
    model = CompactModel(CompactConfig(**{**cfg.__dict__, **changes})).eval()
    with torch.no_grad():  # non-trivial norms and biases
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return model


def to_fairseq(state: dict[str, torch.Tensor], tr: bool) -> dict[str, torch.Tensor]:
    """Our names → the FitHuBERT/ARMHuBERT repositories' (fairseq) names."""
    out = {}
    for key, value in state.items():
        if key.startswith("time_reduction."):
            out["encoder.layers.0." + key.split(".", 1)[1]] = value
            continue
        key = re.sub(r"front_end\.conv_layers\.(\d+)\.conv\.", r"feature_extractor.conv_layers.\1.0.", key)
        key = re.sub(r"front_end\.conv_layers\.(\d+)\.layer_norm\.", r"feature_extractor.conv_layers.\1.2.", key)
        key = key.replace("feature_projection.layer_norm.", "layer_norm.")
        key = key.replace("feature_projection.projection.", "post_extract_proj.")
        key = key.replace("encoder.pos_conv.conv.parametrizations.weight.original0", "encoder.pos_conv.0.weight_g")
        key = key.replace("encoder.pos_conv.conv.parametrizations.weight.original1", "encoder.pos_conv.0.weight_v")
        key = key.replace("encoder.pos_conv.conv.bias", "encoder.pos_conv.0.bias")
        m = re.match(r"encoder\.layers\.(\d+)\.(.*)", key)
        if m:
            rest = m.group(2)
            for ours, theirs in (("attention.", "self_attn."), ("layer_norm.", "self_attn_layer_norm."),
                                 ("feed_forward.intermediate_dense.", "fc1."),
                                 ("feed_forward.output_dense.", "fc2.")):
                if rest.startswith(ours):
                    rest = theirs + rest[len(ours):]
            key = f"encoder.layers.{int(m.group(1)) + (1 if tr else 0)}.{rest}"
        out[key] = value
    return out


def write_lightning(path, model: CompactModel, distiller: dict | None, tr: bool = False) -> None:
    state = {f"student_model.{k}": v for k, v in to_fairseq(model.state_dict(), tr).items()}
    state["student_model.proj_head.0.lin_proj.weight"] = torch.randn(32, 24)  # training-only heads
    state["teacher_model.model.encoder.layer_norm.weight"] = torch.ones(32)   # the frozen teacher rides along
    ckpt = {"state_dict": state, "epoch": 3, "global_step": 100, "pytorch-lightning_version": "1.8.6"}
    if distiller is not None:
        ckpt["hyper_parameters"] = {"cfg": {"distiller": distiller, "train": {"rec_loss_type": "mse"}}}
    torch.save(ckpt, path)


def assert_same_outputs(loaded, model: CompactModel) -> None:
    wavs = random_wavs([5000, 3300])
    expected = CompactUpstream(model)(wavs)
    got = loaded(wavs)
    assert len(got.hidden_states) == len(expected.hidden_states)
    torch.testing.assert_close(got.lengths, expected.lengths)
    for a, b in zip(got.hidden_states, expected.hidden_states):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_armhubert_lightning_checkpoint_loads_by_content(tmp_path):
    model = source_model()
    distiller = {"conv_feature_layers": CONV_SPEC, "encoder_attention_heads": 4, "encoder_embed_dim": 24,
                 "extractor_mode": "default", "layer_norm_first": False, "reuse_pattern": "[True, False, True]"}
    path = tmp_path / "ARMHuBERT-960h.ckpt"
    write_lightning(path, model, distiller)
    loaded = build_upstream(str(path))
    assert isinstance(loaded, CompactUpstream) and loaded.cfg.reuse_attention == (False, True, False)
    assert len(loaded([torch.zeros(4000)]).hidden_states) == 3  # the layer outputs only (the s3prl expert's)
    assert_same_outputs(loaded, model)


def test_shapes_alone_recover_a_12_head_student(tmp_path):
    """Without a config (no hyper_parameters, no yaml beside it) the architecture comes from the weights."""
    model = source_model(heads=(12, 12, 12), head_dim=2, reuse_attention=())
    path = tmp_path / "MaskHuBERT-960h.ckpt"
    write_lightning(path, model, None)
    loaded = build_upstream(str(path))
    assert loaded.cfg.conv_layers == CONV and loaded.cfg.heads == (12,) * 3
    assert_same_outputs(loaded, model)


def test_a_yaml_beside_the_checkpoint_gives_the_config(tmp_path):
    import yaml

    model = source_model()
    write_lightning(tmp_path / "STaRHuBERT.ckpt", model, None)
    (tmp_path / "STaRHuBERT.yaml").write_text(yaml.safe_dump({"distiller": {
        "conv_feature_layers": CONV_SPEC, "encoder_attention_heads": 4}}))
    assert_same_outputs(build_upstream(str(tmp_path / "STaRHuBERT.ckpt")), model)


def test_fithubert_time_reduction_layer_is_read(tmp_path):
    model = source_model(reuse_attention=(), time_reduction=2)
    path = tmp_path / "FitHuBERT-960h.ckpt"
    write_lightning(path, model, {"conv_feature_layers": CONV_SPEC, "encoder_attention_heads": 4}, tr=True)
    loaded = build_upstream(str(path))
    assert loaded.cfg.time_reduction == 2 and loaded.downsample_rate == 640
    assert_same_outputs(loaded, model)


def test_a_student_checkpoint_without_an_encoder_is_one_clear_error(tmp_path):
    path = tmp_path / "broken.ckpt"
    torch.save({"state_dict": {"student_model.feature_extractor.conv_layers.0.0.weight": torch.zeros(8, 1, 10)}},
               path)
    with pytest.raises(ConversionError, match="broken.ckpt: student_model weights without a CNN and encoder"):
        build_upstream(str(path))


# ---- DPHuBERT: torchaudio's wav2vec2_model, full and pruned ------------------------------------------------------

TA_ARGS = dict(extractor_mode="group_norm", extractor_conv_layer_config=[(16, 10, 5)] + [(16, 3, 2)] * 4 +
               [(16, 2, 2)] * 2, extractor_conv_bias=False, encoder_embed_dim=32, encoder_projection_dropout=0.0,
               encoder_pos_conv_kernel=8, encoder_pos_conv_groups=4, encoder_num_layers=3, encoder_num_heads=4,
               encoder_attention_dropout=0.0, encoder_ff_interm_features=48, encoder_ff_interm_dropout=0.0,
               encoder_dropout=0.0, encoder_layer_norm_first=False, encoder_layer_drop=0.0, aux_num_out=None)


def torchaudio_model() -> torch.nn.Module:
    torch.manual_seed(1)
    model = torchaudio.models.wav2vec2_model(**TA_ARGS).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return model


def torchaudio_states(model, wav: torch.Tensor) -> list[torch.Tensor]:
    """Encoder input (after pos conv + LayerNorm) and each layer's output, for one utterance."""
    with torch.no_grad():
        feats, _ = model.feature_extractor(wav[None], None)
        x = model.encoder.feature_projection(feats)
        x = model.encoder.transformer._preprocess(x)
        states = [x]
        for layer in model.encoder.transformer.layers:
            x, _ = layer(x)
            states.append(x)
    return [s[0] for s in states]


def dphubert_file(path, state: dict, **config) -> None:
    cfg = {**TA_ARGS, "extractor_conv_layer_config": [list(c) for c in TA_ARGS["extractor_conv_layer_config"]],
           "encoder_num_heads": [4, 4, 4], "encoder_ff_interm_features": [48, 48, 48],
           "encoder_use_attention": [True] * 3, "encoder_use_feed_forward": [True] * 3,
           "extractor_prune_conv_channels": False, "encoder_prune_attention_heads": False, **config}
    torch.save({"state_dict": state, "config": cfg}, path)


def test_dphubert_file_matches_torchaudio_wav2vec2(tmp_path):
    model = torchaudio_model()
    dphubert_file(tmp_path / "DPHuBERT-sp0.75.pth", model.state_dict())
    loaded = build_upstream(str(tmp_path / "DPHuBERT-sp0.75.pth"))
    assert isinstance(loaded, CompactUpstream) and loaded.cfg.hidden_states == "with_input"
    wav = random_wavs([6000])[0]
    ours = loaded([wav]).hidden_states
    for a, b in zip(ours, torchaudio_states(model, wav)):
        torch.testing.assert_close(a[0], b, atol=1e-5, rtol=1e-4)


def test_pruned_dphubert_layout_matches_torchaudio_with_those_units_zeroed(tmp_path):
    """Layer 0 keeps heads 0 and 2 and 30 FFN units, layer 1 has no attention (DPHuBERT sets it to None), CNN
    layer 1 keeps 10 channels. torchaudio's full model with the removed units' outputs zeroed computes the same."""
    model = torchaudio_model()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    heads = torch.tensor([0, 2])
    rows = torch.cat([torch.arange(h * 8, (h + 1) * 8) for h in heads.tolist()])
    units, chans = torch.arange(30), torch.arange(10)
    pre = "encoder.transformer.layers."
    with torch.no_grad():
        t = model.encoder.transformer.layers
        keep = torch.zeros(32, dtype=torch.bool)
        keep[rows] = True
        t[0].attention.out_proj.weight[:, ~keep] = 0
        t[0].feed_forward.output_dense.weight[:, 30:] = 0
        t[1].attention.out_proj.weight.zero_()
        t[1].attention.out_proj.bias.zero_()
        model.feature_extractor.conv_layers[2].conv.weight[:, 10:] = 0
    for proj in ("q_proj", "k_proj", "v_proj"):
        state[f"{pre}0.attention.{proj}.weight"] = state[f"{pre}0.attention.{proj}.weight"][rows]
        state[f"{pre}0.attention.{proj}.bias"] = state[f"{pre}0.attention.{proj}.bias"][rows]
    state[f"{pre}0.attention.out_proj.weight"] = state[f"{pre}0.attention.out_proj.weight"][:, rows]
    state[f"{pre}0.feed_forward.intermediate_dense.weight"] = state[f"{pre}0.feed_forward.intermediate_dense.weight"][units]
    state[f"{pre}0.feed_forward.intermediate_dense.bias"] = state[f"{pre}0.feed_forward.intermediate_dense.bias"][units]
    state[f"{pre}0.feed_forward.output_dense.weight"] = state[f"{pre}0.feed_forward.output_dense.weight"][:, units]
    state = {k: v for k, v in state.items() if not k.startswith(f"{pre}1.attention.")}
    state["feature_extractor.conv_layers.1.conv.weight"] = state["feature_extractor.conv_layers.1.conv.weight"][chans]
    state["feature_extractor.conv_layers.2.conv.weight"] = state["feature_extractor.conv_layers.2.conv.weight"][:, chans]
    conv = [list(c) for c in TA_ARGS["extractor_conv_layer_config"]]
    conv[1][0] = 10
    dphubert_file(tmp_path / "pruned.pth", state, extractor_conv_layer_config=conv, encoder_num_heads=[2, 4, 4],
                  encoder_ff_interm_features=[30, 48, 48], encoder_use_attention=[True, False, True])
    loaded = build_upstream(str(tmp_path / "pruned.pth"))
    assert loaded.cfg.heads == (2, 0, 4) and loaded.cfg.ffn_dims == (30, 48, 48)
    assert count_parameters(loaded.model) < count_parameters(model) + 32  # + mask_emb, less the pruned units
    wav = random_wavs([6000])[0]
    for a, b in zip(loaded([wav]).hidden_states, torchaudio_states(model, wav)):
        torch.testing.assert_close(a[0], b, atol=1e-5, rtol=1e-4)
