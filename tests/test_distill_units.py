"""Distillation building blocks: losses, layer scaling, config mismatches, data discovery and batching."""
from __future__ import annotations

import math

import pytest
import torch

from common.audio import write_audio
from common.config import load_config
from distill.config import DistillConfig, ObjectiveConfig
from distill.losses import codeword_kl_frame_loss, regression_frame_loss
from distill.objectives import ConfigMismatch, DistillObjective, layer_to_layer_map, scaled_target_layers
from tests.fixtures.datasets import write_tone_corpus
from tests.fixtures.upstreams import tiny_teacher
from training.data import DataConfig, SecondsBatchSampler, SkipReport, UnlabelledAudio, collect_audio_files, scan_audio


def test_regression_loss_is_l1_plus_minus_log_sigmoid_cos():
    x = torch.randn(2, 5, 8)
    l1, cos = regression_frame_loss(x, x.clone())
    assert torch.allclose(l1, torch.zeros(2, 5))
    assert torch.allclose(cos, torch.full((2, 5), -math.log(torch.sigmoid(torch.tensor(1.0)).item())), atol=1e-6)
    l1, cos = regression_frame_loss(x, -x, cosine_weight=2.0)
    assert torch.allclose(l1, 2 * x.abs().mean(-1))
    assert torch.allclose(cos, torch.full((2, 5), -2 * math.log(torch.sigmoid(torch.tensor(-1.0)).item())), atol=1e-5)
    with pytest.raises(ValueError, match="differ in shape"):
        regression_frame_loss(x, x[:, :4])


def test_codeword_kl_is_zero_for_equal_and_positive_otherwise():
    logits = torch.randn(2, 3, 10)
    assert codeword_kl_frame_loss(logits, logits).abs().max() < 1e-6
    kl = codeword_kl_frame_loss(logits, torch.randn(2, 3, 10))
    assert kl.shape == (2, 3) and (kl > 0).all()


def test_target_layers_scale_with_teacher_depth():
    obj = ObjectiveConfig()
    assert scaled_target_layers(obj, 12) == [4, 8, 12]
    assert scaled_target_layers(obj, 6) == [2, 4, 6]
    with pytest.raises(ConfigMismatch, match="distinct layers"):
        scaled_target_layers(obj, 2)
    assert layer_to_layer_map(ObjectiveConfig(kind="layer_to_layer"), 3, 6) == [2, 4, 6]
    with pytest.raises(ConfigMismatch, match="layer_map"):
        layer_to_layer_map(ObjectiveConfig(kind="layer_to_layer", layer_map=[1, 9]), 2, 6)


def test_shape_mismatches_fail_before_training():
    teacher = tiny_teacher()
    bad_heads = load_config(DistillConfig, None, ["student.width=24", "student.heads=5"])
    with pytest.raises(ConfigMismatch, match="not divisible"):
        DistillObjective(bad_heads, teacher)
    bad_map = load_config(DistillConfig, None, ["objective.kind=layer_to_layer", "objective.layer_map=[1, 7]"])
    with pytest.raises(ConfigMismatch, match="layer_map"):
        DistillObjective(bad_map, teacher)
    no_codewords = load_config(DistillConfig, None, ["objective.discriminative_weight=1.0"])
    with pytest.raises(ConfigMismatch, match="codeword"):
        DistillObjective(no_codewords, tiny_teacher(codewords=0))


def test_bad_files_are_skipped_and_reported(tmp_path):
    good = write_tone_corpus(tmp_path / "audio", count=3)
    (tmp_path / "audio" / "broken.wav").write_bytes(b"RIFF not really")
    write_audio(tmp_path / "audio" / "short.wav", torch.zeros(100))
    listing = tmp_path / "list.txt"
    listing.write_text("audio/utt000.wav\n# a comment\naudio/utt001.wav\n")
    assert collect_audio_files([listing]) == sorted(good[:2])
    report = SkipReport()
    entries = scan_audio(collect_audio_files([tmp_path / "audio"]), DataConfig(), report)
    assert sorted(p for p, _ in entries) == sorted(good)
    text = report.write(tmp_path).read_text()
    assert "2 audio file(s) skipped" in text and "broken.wav\tunreadable" in text and "short.wav\tshorter" in text
    with pytest.raises(ValueError, match="expected a directory"):
        collect_audio_files([tmp_path / "missing"])


def test_batches_bounded_by_seconds_and_shared_between_ranks(tmp_path):
    cfg = DataConfig(max_batch_seconds=4.0, max_item_seconds=1.2, bucket_size=4, min_batch_items=1)
    entries = [(tmp_path / f"{i}.wav", 16000 * (1 + i % 3) // 2) for i in range(20)]
    data = UnlabelledAudio(entries, cfg, seed=1)
    one = SecondsBatchSampler(data, cfg, seed=1)
    batches = one.global_batches(epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(20))  # every item once
    for b in batches:
        assert max(data.cropped_length(i) for i in b) * len(b) <= 4.0 * 16000
    assert batches == one.global_batches(epoch=0) and batches != one.global_batches(epoch=1)
    # more ranks than a batch's items: the rank past them gets a stand-in share (one item, marked, weighted 0)
    for (_, share0), (_, share1), full in zip(*(SecondsBatchSampler(data, cfg, seed=1, rank=r, world=2).iterate(0)
                                                for r in range(2)), batches):
        if len(full) == 1:
            assert share0 == [(full[0], 0)] and share1 == [(full[0], 0, True)]
    assert any(len(b) == 1 for b in batches)
    cfg.min_batch_items = 2
    kept = SecondsBatchSampler(data, cfg, seed=1).global_batches(0)
    assert all(len(b) >= 2 for b in kept) and len(kept) >= len(batches) - 5  # only 1-item bucket tails dropped
    ranks = [SecondsBatchSampler(data, cfg, seed=1, rank=r, world=2) for r in range(2)]
    for (b, share0), (_, share1), full in zip(ranks[0].iterate(0), ranks[1].iterate(0), ranks[0].global_batches(0)):
        assert sorted(i for i, _ in share0 + share1) == sorted(full) and share0 and share1
    resumed = [b for b, _ in one.iterate(0, start_batch=2)]
    assert resumed[0] == 2


def test_frozen_front_end_is_shared_with_the_teacher_and_gives_the_same_loss():
    teacher = tiny_teacher()
    cfg = load_config(DistillConfig, None, ["student.freeze_front_end=true"])
    objective = DistillObjective(cfg, teacher).train()
    assert objective.share_front_end
    assert not any(p.requires_grad for p in objective.student.front_end.parameters())
    g = torch.Generator().manual_seed(1)
    wav = torch.randn(3, 16000, generator=g) * 0.1
    batch = {"wav": wav, "wav_lengths": torch.tensor([16000, 12000, 7000])}  # padding must not leak either way
    torch.manual_seed(0)
    shared = objective(batch)
    shared["loss_sum"].backward()
    assert all(p.grad is None for p in objective.student.front_end.parameters())
    assert all(p.grad is not None for p in objective.student.encoder.layers.parameters())
    objective.share_front_end = False  # the two-pass path: teacher via the upstream contract, student on its own
    torch.manual_seed(0)
    separate = objective(batch)
    torch.testing.assert_close(shared["loss_sum"], separate["loss_sum"], rtol=1e-5, atol=1e-5)
    assert shared["frames"] == separate["frames"]
    with pytest.raises(ConfigMismatch, match="contradict"):
        DistillObjective(load_config(DistillConfig, None, ["student.freeze_front_end=true",
                                                           "student.frontend_warmup_steps=5"]), teacher)
