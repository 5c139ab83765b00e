"""Parity with transformers' HubertModel (random weights, nothing downloaded): HF dirs, fairseq .pt, export_hf.

Convention check: our hidden_states[i] == transformers' hidden_states[i] for i < N, and our last entry == its
``last_hidden_state`` (for stable-LN models transformers 5 records the last layer before the final LayerNorm;
we keep the final LayerNorm in the last entry, as s3prl and transformers 4 do).
"""
from __future__ import annotations

import argparse
import re
import sys

import pytest
import torch
import transformers

from upstream import build_upstream
from tests.fixtures.upstreams import TINY_CONV_SPEC, foreign_class, perturb_, random_wavs, tiny_config, tiny_hf_config
from upstream.builtin import random_upstream
from upstream.checkpoints import ForeignRecord, export_hf, load_upstream_from_path, safe_torch_load

LENGTHS = [400, 1234, 16000]
VARIANTS = {
    "post_ln": dict(),
    "stable_ln": dict(do_stable_layer_norm=True, feat_extract_norm="layer", conv_bias=True),
    "distilhubert_style": dict(feat_proj_layer_norm=False),
}


def hf_model(**changes) -> transformers.HubertModel:
    torch.manual_seed(0)
    return perturb_(transformers.HubertModel(tiny_hf_config(**changes)), seed=1).eval()


def hf_states(model: transformers.HubertModel, wav: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        out = model(wav[None], output_hidden_states=True)
    return list(out.hidden_states[:-1]) + [out.last_hidden_state]


def assert_close_states(ours: list[torch.Tensor], ref: list[torch.Tensor], tol: float = 1e-4) -> None:
    assert len(ours) == len(ref)
    for i, (a, b) in enumerate(zip(ours, ref)):
        assert a.shape == b.shape, (i, a.shape, b.shape)
        err = (a - b).abs().max().item()
        assert err < tol, f"hidden state {i}: max abs diff {err}"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_hf_dir_parity(variant, tmp_path):
    model = hf_model(**VARIANTS[variant])
    model.save_pretrained(tmp_path)
    up = build_upstream(tmp_path)
    assert up.cfg.feat_proj_layer_norm == (variant != "distilhubert_style")
    for wav in random_wavs(LENGTHS):
        out = up([wav])
        assert_close_states([h for h in out.hidden_states], hf_states(model, wav))
        assert int(out.lengths[0]) == out.hidden_states[0].shape[1]


def test_pytorch_model_bin_is_read_too(tmp_path):
    model = hf_model()
    model.save_pretrained(tmp_path)  # transformers 5 writes safetensors only: make the legacy .bin by hand
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    (tmp_path / "model.safetensors").unlink()
    wav = random_wavs([3000])[0]
    assert_close_states(build_upstream(tmp_path)([wav]).hidden_states, hf_states(model, wav))


# transformers' conversion-script map, read backwards: transformers key → fairseq key.
HF_TO_FAIRSEQ = [
    (r"feature_extractor\.conv_layers\.(\d+)\.conv\.", r"feature_extractor.conv_layers.\1.0."),
    (r"feature_extractor\.conv_layers\.0\.layer_norm\.", r"feature_extractor.conv_layers.0.2."),  # group mode
    (r"feature_projection\.projection\.", "post_extract_proj."),
    (r"feature_projection\.layer_norm\.", "layer_norm."),
    (r"encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original0", "encoder.pos_conv.0.weight_g"),
    (r"encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original1", "encoder.pos_conv.0.weight_v"),
    (r"encoder\.pos_conv_embed\.conv\.bias", "encoder.pos_conv.0.bias"),
    (r"\.attention\.", ".self_attn."), (r"(layers\.\d+)\.layer_norm\.", r"\1.self_attn_layer_norm."),
    (r"feed_forward\.intermediate_dense", "fc1"), (r"feed_forward\.output_dense", "fc2"),
    (r"masked_spec_embed", "mask_emb"),
]


def to_fairseq(state: dict, conv_layer_norm: bool = False) -> dict:
    """``conv_layer_norm``: fairseq's "layer_norm" extractor mode, whose conv norms are ``conv_layers.i.2.1``."""
    out = {}
    for key, value in state.items():
        if conv_layer_norm:
            key = re.sub(r"feature_extractor\.conv_layers\.(\d+)\.layer_norm\.",
                         r"feature_extractor.conv_layers.\1.2.1.", key)
        for pattern, repl in HF_TO_FAIRSEQ:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def test_fairseq_pt_parity_with_codeword_head(tmp_path):
    model = hf_model()
    state = to_fairseq(model.state_dict())
    state["final_proj.weight"], state["final_proj.bias"] = torch.randn(16, 64), torch.randn(16)
    state["label_embs_concat"] = torch.randn(10, 16)
    cfg = {"model": {"_name": "hubert", "conv_feature_layers": TINY_CONV_SPEC, "encoder_layers": 2,
                     "encoder_embed_dim": 64, "encoder_ffn_embed_dim": 128, "encoder_attention_heads": 4,
                     "conv_pos": 16, "conv_pos_groups": 4, "extractor_mode": "default", "logit_temp": 0.1}}
    torch.save({"cfg": cfg, "model": state, "optimizer_history": []}, tmp_path / "hubert.pt")
    up = build_upstream(tmp_path / "hubert.pt")
    for wav in random_wavs([400, 5000]):
        assert_close_states(up([wav]).hidden_states, hf_states(model, wav))
    # the codeword head is carried over: logits are cosine / 0.1 against the label embeddings
    hidden = torch.randn(1, 5, 64)
    proj = up.model.final_proj(hidden)
    expected = torch.nn.functional.cosine_similarity(proj[:, :, None], state["label_embs_concat"][None, None],
                                                     dim=-1) / 0.1
    assert torch.allclose(up.model.codeword_logits(hidden), expected, atol=1e-4)


def test_fairseq_pt_with_argparse_args_stable_ln(tmp_path):
    model = hf_model(**VARIANTS["stable_ln"])
    state = to_fairseq(model.state_dict(), conv_layer_norm=True)
    args = argparse.Namespace(arch="hubert", conv_feature_layers=TINY_CONV_SPEC, encoder_layers=2,
                              encoder_embed_dim=64, encoder_ffn_embed_dim=128, encoder_attention_heads=4,
                              conv_pos=16, conv_pos_groups=4, extractor_mode="layer_norm", layer_norm_first=True,
                              conv_bias=True)
    torch.save({"args": args, "cfg": None, "model": state}, tmp_path / "large.pt")
    wav = random_wavs([7000])[0]
    assert_close_states(build_upstream(tmp_path / "large.pt")([wav]).hidden_states, hf_states(model, wav))


@pytest.mark.parametrize("name", ["distilhubert_style", "stable_ln"])
def test_export_hf_round_trip(name, tmp_path):
    model = hf_model(**VARIANTS[name])
    model.save_pretrained(tmp_path / "src")
    ours = build_upstream(tmp_path / "src")
    export_hf(ours, tmp_path / "export")
    loaded, info = transformers.HubertModel.from_pretrained(tmp_path / "export", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    wav = random_wavs([9000])[0]
    assert_close_states(ours([wav]).hidden_states, hf_states(loaded.eval(), wav))
    # and back into ours, unchanged
    again = load_upstream_from_path(tmp_path / "export")
    assert_close_states(again([wav]).hidden_states, ours([wav]).hidden_states, tol=1e-6)


def test_released_fairseq_pt_with_label_dictionaries_loads_without_fairseq(tmp_path):
    """fairseq's released HuBERT .pt files pickle fairseq.data.dictionary.Dictionary objects in task_state: they
    load into inert stand-ins, without fairseq installed and without trust_pickle."""
    model = hf_model()
    cfg = {"model": {"_name": "hubert", "conv_feature_layers": TINY_CONV_SPEC, "encoder_layers": 2,
                     "encoder_embed_dim": 64, "encoder_ffn_embed_dim": 128, "encoder_attention_heads": 4,
                     "conv_pos": 16, "conv_pos_groups": 4, "extractor_mode": "default"},
           "task": {"_name": "hubert_pretraining", "labels": ["km"]}}
    with foreign_class("fairseq.data.dictionary.Dictionary") as dictionary_cls:
        labels = dictionary_cls()
        labels.__dict__.update(bos_word="<s>", symbols=["<s>", "<pad>", "</s>", "<unk>", "0", "1"],
                               count=[1, 1, 1, 1, 50, 40], indices={"<s>": 0, "0": 4, "1": 5}, nspecial=4)
        torch.save({"cfg": cfg, "model": to_fairseq(model.state_dict()), "task_state": {"dictionaries": [labels]},
                    "optimizer_history": [{"num_updates": 400000}]}, tmp_path / "hubert_base_ls960.pt")
    assert "fairseq" not in sys.modules
    ckpt = safe_torch_load(tmp_path / "hubert_base_ls960.pt")
    record = ckpt["task_state"]["dictionaries"][0]
    assert isinstance(record, ForeignRecord) and record.state["symbols"][4:] == ["0", "1"]
    up = build_upstream(tmp_path / "hubert_base_ls960.pt")
    wav = random_wavs([6000])[0]
    assert_close_states(up([wav]).hidden_states, hf_states(model, wav))
    # the same file as the weights of a pretrained name (--upstream hubert_base -k FILE)
    named = build_upstream("hubert_base", checkpoint=tmp_path / "hubert_base_ls960.pt")
    assert named.weights_hash() == up.weights_hash() and not named.random_init


def test_export_and_reload_keeps_the_weights_hash(tmp_path):
    """An HF export drops dropout fields and the pretraining/prediction heads; the features are the same, so the
    identity (feature cache key, report row) is too."""
    up = perturb_(random_upstream(tiny_config(pred_layer_ids=(1, 2), pred_dim=48, final_dim=16, num_codewords=10,
                                              dropout=0.05, attention_dropout=0.0)), seed=3)
    export_hf(up, tmp_path / "hf")
    again = load_upstream_from_path(tmp_path / "hf")
    assert again.cfg != up.cfg  # the config changed (dropout, heads) ...
    assert again.weights_hash() == up.weights_hash()  # ... the identity did not
    with torch.no_grad():
        next(up.model.encoder.layers[0].parameters()).view(-1)[0] += 1e-3  # a weight that changes the features
    assert again.weights_hash() != up.weights_hash()
    heads = random_upstream(tiny_config(pred_layer_ids=(1, 2), pred_dim=48), include_pred_heads=True)
    assert heads.weights_hash() != random_upstream(tiny_config(pred_layer_ids=(1, 2), pred_dim=48)).weights_hash()
