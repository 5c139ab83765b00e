"""SpecAugment on the weighted-sum features (ASR, SF): on in the full SUPERB config, off in the demo profile, masks
in training only, per utterance, zeros as s3prl."""
from __future__ import annotations

import torch

from benchmark.model import DownstreamModel
from downstream.specaug import FeatureSpecAugment, SpecAugConfig
from tasks.registry import build_task


def test_masks_in_training_only_and_per_utterance():
    torch.manual_seed(0)
    aug = FeatureSpecAugment(SpecAugConfig(enabled=True, num_time_masks=2, time_mask_width=10, num_freq_masks=2,
                                           freq_mask_width=8))
    x = torch.randn(4, 60, 32) + 5.0  # no zeros of its own
    aug.train()
    y = aug(x)
    assert y.shape == x.shape
    zeros = y == 0
    assert zeros.any() and torch.equal(y[~zeros], x[~zeros])  # masked values are zero, the rest untouched
    time_masked = zeros.all(dim=2)  # [batch, frame] whole frames masked
    feat_masked = zeros.all(dim=1)  # [batch, feature] whole dims masked
    assert (time_masked.any(1) | feat_masked.any(1)).all()
    assert not all(torch.equal(zeros[0], zeros[i]) for i in range(1, 4))  # iid masks: each utterance its own
    aug.eval()
    assert torch.equal(aug(x), x)


def test_asr_and_sf_turn_it_on_in_the_full_config_and_off_in_the_demo(tmp_path):
    for name in ("asr", "sf"):
        full = build_task(name, tmp_path, [], None)
        assert full.config.specaug.enabled and full.config.specaug.freq_mask_width == 50
        assert isinstance(full.build_augment(), FeatureSpecAugment)
        assert build_task(name, tmp_path, [], "demo").build_augment() is None
        assert build_task(name, tmp_path, ["specaug.enabled=false"], None).build_augment() is None
    assert build_task("ks", tmp_path, [], None).build_augment() is None
    asr = build_task("asr", tmp_path, [], None)
    model = DownstreamModel(3, asr.build_head(16), None, asr.build_augment()).train()
    hidden = torch.randn(3, 2, 50, 16) + 5.0
    with torch.no_grad():
        model.head.eval()  # dropout off: only the masks make the two passes differ
        trained = model(hidden, torch.tensor([50, 50]))
        model.eval()
        evaluated = model(hidden, torch.tensor([50, 50]))
    assert not torch.allclose(trained, evaluated)
