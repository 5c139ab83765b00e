"""Parity with s3prl's own DistillerModel (DistilHuBERT) saved in s3prl's .ckpt layout, random weights.

Hidden states: s3prl's distiller expert returns [projection output BEFORE the positional conv] + layer outputs +
head outputs (``upstream/distiller/expert.py:53,57``), and SUPERB's DistilHuBERT numbers were computed on those 6.
An s3prl .ckpt loads with the same layout here (``first_state="projection"``, ``include_pred_heads=True``);
``first_state="encoder_input"`` gives transformers' entry 0 (after the pos conv + LayerNorm) instead.
"""
from __future__ import annotations

import argparse

import pytest
import torch

from upstream import build_upstream
from upstream.checkpoints import UnsafeCheckpointError
from tests.fixtures.upstreams import TINY_CONV_SPEC, perturb_, random_wavs

distiller = pytest.importorskip("s3prl.upstream.distiller.model")

DISTILLER_CFG = {  # DistilHuBERT's recipe at tiny size: 2 layers, heads for teacher layers 2/4/6 (teacher dim 48)
    "extractor_mode": "default", "extractor_conv_feature_layers": TINY_CONV_SPEC, "feature_grad_mult": 0.1,
    "conv_pos": 16, "conv_pos_groups": 4, "encoder_layers": 2, "encoder_embed_dim": 64,
    "encoder_ffn_embed_dim": 128, "encoder_attention_heads": 4, "activation_fn": "gelu", "layer_norm_first": False,
    "final_dim": 48, "out_layer_type": "expand-last", "n_tasks": 3, "task_emb_type": "expand-last",
    "pred_layer_id": [2, 4, 6], "loss_type": "l1", "cosine_loss": 1.0,
    "init_teacher_conv_layers": True, "init_teacher_encoder_layers": True,
}


def save_s3prl_ckpt(path, model) -> None:
    """s3prl's distiller checkpoint layout: Distiller / Config / Optimizer / Step / Args (argparse.Namespace)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4)
    config = {"distiller": DISTILLER_CFG, "teacher": {"model": "hubert_base", "n_layers": 6},
              "task": {"sequence_length": 250000}, "audio": {"target_level": None}}
    torch.save({"Distiller": model.state_dict(), "Config": config, "Optimizer": optimizer.state_dict(),
                "Step": 100, "Args": argparse.Namespace(upstream="distiller", config="pretrain/distiller.yaml")},
               path)


@pytest.fixture(scope="module")
def s3prl_model():
    torch.manual_seed(0)
    model = distiller.DistillerModel(distiller.DistillerConfig(DISTILLER_CFG))
    return perturb_(model, seed=2).eval()


def test_s3prl_ckpt_parity_layer_by_layer(s3prl_model, tmp_path):
    save_s3prl_ckpt(tmp_path / "distiller.ckpt", s3prl_model)
    up = build_upstream(tmp_path / "distiller.ckpt", include_pred_heads=True)
    assert up.cfg.pred_layer_ids == (2, 4, 6) and not up.cfg.feat_proj_layer_norm
    for wav in random_wavs([400, 3333, 16000], seed=3):
        with torch.no_grad():
            _, feat_final, pred, _, layers = s3prl_model(wav[None], torch.ones(1, wav.numel()), get_hidden=True)
        ours = up([wav]).hidden_states
        assert len(ours) == 1 + 2 + 3
        for k, s3prl_layer in enumerate(layers, start=1):
            assert (ours[k] - s3prl_layer).abs().max() < 1e-4, f"layer {k}"
        for i in range(3):
            assert (ours[3 + i] - pred[:, i]).abs().max() < 1e-4, f"head {i}"
        with torch.no_grad():
            features, _ = up.model.front_end_features(wav[None], torch.tensor([wav.numel()]))
            projected = up.model.feature_projection(features)
        assert (projected - feat_final).abs().max() < 1e-4


def test_s3prl_ckpt_with_pickled_object_is_refused(s3prl_model, tmp_path):
    """A checkpoint holding an arbitrary pickled object (e.g. a scheduler) needs the explicit opt-in."""
    path = tmp_path / "with_scheduler.ckpt"
    save_s3prl_ckpt(path, s3prl_model)
    ckpt = torch.load(path, weights_only=False)
    ckpt["Scheduler"] = torch.optim.lr_scheduler.StepLR(torch.optim.SGD([torch.zeros(1, requires_grad=True)]), 1)
    torch.save(ckpt, path)
    with pytest.raises(UnsafeCheckpointError, match="trust_pickle=True"):
        build_upstream(path)
    up = build_upstream(path, trust_pickle=True)  # the explicit opt-in works
    assert len(up([torch.zeros(800)]).hidden_states) == 6  # s3prl's layout: projection, 2 layers, 3 heads


def test_default_states_equal_s3prl_expert_states(s3prl_model, tmp_path):
    """What s3prl's own UpstreamExpert returns for the checkpoint (its 6 hidden states, one utterance at a time:
    s3prl's padded batches let padding into the shorter utterances) is what we return, and a saved copy keeps it."""
    expert_module = pytest.importorskip("s3prl.upstream.distiller.expert")
    from upstream.checkpoints import save_upstream

    save_s3prl_ckpt(tmp_path / "distiller.ckpt", s3prl_model)
    expert = expert_module.UpstreamExpert(str(tmp_path / "distiller.ckpt")).eval()
    up = build_upstream(tmp_path / "distiller.ckpt")
    save_upstream(up, tmp_path / "ours")
    again = build_upstream(tmp_path / "ours")
    assert again.weights_hash() == up.weights_hash()
    assert up.weights_hash() != build_upstream(tmp_path / "distiller.ckpt", first_state="encoder_input").weights_hash()
    for wav in random_wavs([400, 3333, 16000], seed=3):
        with torch.no_grad():
            theirs = expert([wav])["hidden_states"]
        for ours in (up([wav]).hidden_states, again([wav]).hidden_states):
            assert len(ours) == len(theirs) == 6
            for k, (a, b) in enumerate(zip(ours, theirs)):
                assert a.shape == b.shape and (a - b).abs().max() < 1e-4, f"state {k}"
