"""Waveform normalisation read from the checkpoint (fairseq ``task.normalize``, HF ``do_normalize``, our
``upstream.yaml``), against s3prl's own operation ``F.layer_norm(wav, wav.shape)`` (s3prl
``upstream/hubert/expert.py:57-58``) on a random tiny model saved both ways."""
from __future__ import annotations

import argparse
import json

import pytest
import torch
import torch.nn.functional as F

from common import tensors
from tests.fixtures.upstreams import TINY_CONV_SPEC, random_wavs
from tests.test_upstream_parity_hf import VARIANTS, assert_close_states, hf_model, hf_states, to_fairseq
from upstream import build_upstream
from upstream.checkpoints import ConversionError, export_hf, save_upstream

FAIRSEQ_MODEL = {"_name": "hubert", "conv_feature_layers": TINY_CONV_SPEC, "encoder_layers": 2,
                 "encoder_embed_dim": 64, "encoder_ffn_embed_dim": 128, "encoder_attention_heads": 4,
                 "conv_pos": 16, "conv_pos_groups": 4, "extractor_mode": "layer_norm", "layer_norm_first": True,
                 "conv_bias": True}


@pytest.fixture(scope="module")
def large_style():
    """A tiny HuBERT-Large-shaped model (layer-norm CNN, pre-LN layers), as transformers builds it."""
    return hf_model(**VARIANTS["stable_ln"])


def _save_fairseq(model, path, normalize: bool | None, hydra: bool = True) -> None:
    state = to_fairseq(model.state_dict(), conv_layer_norm=True)
    if hydra:
        task = {} if normalize is None else {"normalize": normalize}
        torch.save({"cfg": {"model": FAIRSEQ_MODEL, "task": {"_name": "hubert_pretraining", **task}},
                    "model": state}, path)
    else:
        args = argparse.Namespace(arch="hubert", normalize=normalize, **{k: v for k, v in FAIRSEQ_MODEL.items()
                                                                         if k != "_name"})
        torch.save({"args": args, "cfg": None, "model": state}, path)


def test_fairseq_normalize_matches_s3prl_layer_norm_and_differs_without(large_style, tmp_path):
    _save_fairseq(large_style, tmp_path / "norm.pt", True)
    _save_fairseq(large_style, tmp_path / "raw.pt", False)
    _save_fairseq(large_style, tmp_path / "args.pt", True, hydra=False)
    norm, raw, args = (build_upstream(tmp_path / f) for f in ("norm.pt", "raw.pt", "args.pt"))
    assert norm.normalize_waveform and args.normalize_waveform and not raw.normalize_waveform
    for wav in random_wavs([1234, 16000], seed=4):
        wav = 0.3 * wav + 0.05  # an offset and a scale the normalisation removes
        reference = hf_states(large_style, F.layer_norm(wav, wav.shape))  # what s3prl feeds a normalize=True model
        assert_close_states(norm([wav]).hidden_states, reference)
        assert_close_states(args([wav]).hidden_states, reference)
        assert_close_states(raw([wav]).hidden_states, hf_states(large_style, wav))
        last_norm, last_raw = norm([wav]).hidden_states[-1], raw([wav]).hidden_states[-1]
        assert (last_norm - last_raw).norm() / last_norm.norm() > 0.01  # today's code gave the raw features


def test_normalisation_is_per_utterance_so_batches_change_nothing(large_style, tmp_path):
    _save_fairseq(large_style, tmp_path / "norm.pt", True)
    up = build_upstream(tmp_path / "norm.pt")
    wavs = random_wavs([900, 16000, 5000], seed=5)
    batch = up(wavs)
    for i, wav in enumerate(wavs):
        alone = up([wav]).hidden_states
        n = int(batch.lengths[i])
        for a, b in zip(alone, batch.hidden_states):
            assert torch.allclose(a[0, :n], b[i, :n], atol=1e-5)


def test_cache_key_separates_the_two_behaviours_and_keeps_old_keys(large_style, tmp_path):
    _save_fairseq(large_style, tmp_path / "norm.pt", True)
    _save_fairseq(large_style, tmp_path / "old.pt", None)  # a checkpoint that does not say: not normalised
    norm, old = build_upstream(tmp_path / "norm.pt"), build_upstream(tmp_path / "old.pt")
    assert not old.normalize_waveform
    assert norm.weights_hash() != old.weights_hash()
    # a non-normalising upstream hashes exactly as before the flag existed
    assert old.weights_hash() == tensors.weights_hash(old.hash_state(), old.hash_config())


def test_hf_preprocessor_config_and_our_format_carry_the_flag(large_style, tmp_path):
    large_style.save_pretrained(tmp_path / "hf")
    assert not build_upstream(tmp_path / "hf").normalize_waveform  # no preprocessor_config.json
    (tmp_path / "hf" / "preprocessor_config.json").write_text(json.dumps({"do_normalize": True}))
    up = build_upstream(tmp_path / "hf")
    assert up.normalize_waveform
    wav = random_wavs([3000], seed=6)[0] * 0.2
    assert_close_states(up([wav]).hidden_states, hf_states(large_style, F.layer_norm(wav, wav.shape)))
    # ours: upstream.yaml says it; the reloaded copy has the same features and cache key
    save_upstream(up, tmp_path / "ours")
    again = build_upstream(tmp_path / "ours")
    assert again.normalize_waveform and again.weights_hash() == up.weights_hash()
    # transformers' layout: the exported dir says do_normalize, as the feature extractor reads it
    export_hf(up, tmp_path / "export")
    saved = json.loads((tmp_path / "export" / "preprocessor_config.json").read_text())
    assert saved["do_normalize"] is True and build_upstream(tmp_path / "export").normalize_waveform


def test_a_bad_do_normalize_value_is_named(large_style, tmp_path):
    large_style.save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"do_normalize": "yes"}))
    with pytest.raises(ConversionError, match=r"preprocessor_config\.json: do_normalize is 'yes', expected true"):
        build_upstream(tmp_path)

