"""HuBERT-style pretraining: MFCC k-means labels, label/frame alignment, span masking, the CLI end to end."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import run_pretrain
from tests.fixtures.datasets import write_tone_corpus
from tests.fixtures.upstreams import tiny_teacher_config
from pretrain.front_end_warmup import FrontEndRegression
from pretrain.labels import LabelConfig, fit_kmeans_labels, mfcc_features
from pretrain.objective import MaskedPrediction, MaskingConfig
from upstream import build_upstream
from upstream.fbank import FbankUpstream
from upstream.hubert import HubertModel


def test_mfcc_is_39_dims_at_100_hz():
    feats = mfcc_features(torch.randn(16000) * 0.1)
    assert feats.shape == (98, 39)  # 25 ms windows every 10 ms, no padding
    assert torch.allclose(feats[:, 13:26].mean(0), torch.zeros(13), atol=5.0)  # deltas hover around zero


def test_kmeans_labels_are_deterministic_and_bounded():
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(50, 4, generator=g) + 5 * (i % 2) for i in range(6)] + [None]
    a, inertia = fit_kmeans_labels(feats, LabelConfig(clusters=4, kmeans_init_runs=1))
    b, _ = fit_kmeans_labels(feats, LabelConfig(clusters=4, kmeans_init_runs=1))
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and inertia > 0
    assert a[-1].numel() == 0 and int(torch.cat(a).max()) < 4
    assert set(a[0].tolist()).isdisjoint(a[1].tolist())  # the two well separated blobs get different clusters


def test_labels_follow_the_crop_at_the_model_frame_rate():
    labels = [torch.arange(300)]  # 3 s of 100 Hz labels: label i at 10 ms × i
    obj = MaskedPrediction(HubertModel(tiny_teacher_config(codewords=300)), labels, 100, MaskingConfig())
    targets, exists = obj.frame_targets(torch.tensor([0]), torch.tensor([16000]), num_frames=120)
    assert targets[0, :3].tolist() == [100, 102, 104]  # crop starts at 1 s; frames are 20 ms
    assert exists[0, :100].all() and not exists[0, 100:].any()  # labels run out 2 s after the crop start


def test_masks_cover_about_half_the_frames_and_only_masked_frames_count():
    torch.manual_seed(0)
    model = HubertModel(tiny_teacher_config(codewords=8))
    labels = [torch.randint(0, 8, (400,)) for _ in range(2)]
    obj = MaskedPrediction(model, labels, 100, MaskingConfig(mask_prob=0.8, mask_length=10))
    wav = torch.randn(2, 48000) * 0.1
    batch = {"wav": wav, "wav_lengths": torch.tensor([48000, 24000]), "indices": torch.tensor([0, 1]),
             "starts": torch.tensor([0, 0])}
    out = obj(batch)
    frames = int(model.frame_lengths(torch.tensor([48000]))[0]) + int(model.frame_lengths(torch.tensor([24000]))[0])
    # 8% of frames start a 10-frame span; overlaps leave roughly 40-65% masked
    assert 0.3 * frames < int(out["frames"]) < 0.75 * frames
    assert 0 < float(out["loss_sum"].detach() / out["frames"]) < 25  # CE of cosine/0.1 logits over 8 codewords
    out["loss_sum"].backward()
    assert model.mask_emb.grad is not None and model.mask_emb.grad.abs().sum() > 0


def test_unmasked_frames_add_their_weighted_loss_over_the_masked_count():
    model = HubertModel(tiny_teacher_config(codewords=8)).eval()  # eval: no dropout, same forward every call
    labels = [torch.randint(0, 8, (400,), generator=torch.Generator().manual_seed(1))]
    batch = {"wav": torch.randn(1, 32000, generator=torch.Generator().manual_seed(2)) * 0.1,
             "wav_lengths": torch.tensor([32000]), "indices": torch.tensor([0]), "starts": torch.tensor([0])}
    outs = []
    for weight in (0.0, 1.0, 2.5):
        torch.manual_seed(0)  # the same span masks each time
        obj = MaskedPrediction(model, labels, 100, MaskingConfig(mask_prob=0.4, nomask_weight=weight))
        with torch.no_grad():
            outs.append(obj(batch))
    (masked, one, heavy) = (float(o["loss_sum"]) for o in outs)
    assert all(int(o["frames"]) == int(outs[0]["frames"]) for o in outs)  # still divided by the masked count
    unmasked = one - masked
    assert unmasked > 0 and abs(heavy - (masked + 2.5 * unmasked)) < 1e-3 * heavy
    assert float(outs[0]["parts"]["masked_accuracy"]) == float(outs[1]["parts"]["masked_accuracy"])


def test_mask_embedding_init_is_checked_and_applied():
    model = HubertModel(tiny_teacher_config(codewords=8))
    assert model.mask_emb.abs().sum() > 0
    MaskedPrediction(model, [torch.zeros(10, dtype=torch.long)], 100, MaskingConfig(mask_emb_init="zeros"))
    assert model.mask_emb.abs().sum() == 0
    with pytest.raises(ValueError, match="mask_emb_init"):
        MaskedPrediction(model, [torch.zeros(10, dtype=torch.long)], 100, MaskingConfig(mask_emb_init="normal"))


def test_front_end_warmup_regresses_the_fbank_frame_under_each_cnn_frame():
    torch.manual_seed(0)
    model = HubertModel(tiny_teacher_config(codewords=8))
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    objective = FrontEndRegression(model, mel_bins=40)
    g = torch.Generator().manual_seed(3)
    wav = torch.randn(2, 24000, generator=g) * torch.linspace(0.01, 0.3, 24000)
    lengths = torch.tensor([24000, 17000])
    targets, exists = objective.targets(wav, lengths, num_frames=80)
    fbank = FbankUpstream(num_mel_bins=40, delta_order=0).features(wav[1, :17000])
    frames = model.frame_lengths(lengths).tolist()
    assert exists.sum(1).tolist() == frames  # one target per CNN frame, none on padding
    assert torch.equal(targets[1, :frames[1]], fbank[0::2])  # frame t reads samples [320t, 320t+400): fbank 2t
    optimizer = torch.optim.Adam(objective.parameters(), lr=3e-3)
    batch = {"wav": wav, "wav_lengths": lengths}
    losses = []
    for _ in range(30):
        out = objective(batch)
        loss = out["loss_sum"] / out["frames"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0]
    assert all(torch.equal(v, before[k]) for k, v in model.encoder.state_dict().items())  # front end only
    with pytest.raises(ValueError, match="waveform CNN"):
        FrontEndRegression(HubertModel(dataclasses.replace(tiny_teacher_config(), front_end="fbank")))


def test_run_pretrain_end_to_end_with_iteration_2(tmp_path):
    write_tone_corpus(tmp_path / "audio", count=6)
    cfg = tiny_teacher_config(codewords=0)
    model_args = [f"model.conv_layers={[list(c) for c in cfg.conv_layers]}", f"model.embed_dim={cfg.embed_dim}",
                  f"model.ffn_dim={cfg.ffn_dim}", f"model.heads={cfg.heads}", "model.layers=3", "model.conv_pos=8",
                  "model.conv_pos_groups=4", "model.final_dim=8"]
    args = ["--config", "configs/pretrain/hubert_mini.yaml", "--data", str(tmp_path / "audio"),
            "--output", str(tmp_path / "teacher"), "--max-steps", "25"]
    for o in model_args + ["labels.clusters=6", "labels.kmeans_init_runs=1", "iteration2.enabled=true",
                           "iteration2.layer=2", "iteration2.clusters=4", "iteration2.max_steps=2",
                           "run.data.max_batch_seconds=4.0", "run.data.max_item_seconds=1.5", "run.threads=1",
                           "run.optim.lr=3e-3", "run.optim.warmup_ratio=0.1", "front_end_warmup.steps=3"]:
        args += ["-o", o]
    assert run_pretrain.main(args) == 0
    it1 = [json.loads(l) for l in (tmp_path / "teacher" / "iter1" / "loss_history.jsonl").read_text().splitlines()]
    assert len(it1) == 25 and sum(r["loss"] for r in it1[-5:]) < sum(r["loss"] for r in it1[:5])
    assert (tmp_path / "teacher" / "iter2" / "labels.pt").is_file()
    # each fresh model's CNN first learned log-mel; iteration 2's 2 steps cap its warm-up's 3
    for name, steps in (("iter1_front_end", 3), ("iter2_front_end", 2)):
        warm = (tmp_path / "teacher" / name / "loss_history.jsonl").read_text().splitlines()
        assert len(warm) == steps and "l1" in json.loads(warm[0])
    teacher = build_upstream(tmp_path / "teacher")
    assert teacher.cfg.num_codewords == 4 and teacher.cfg.layers == 3  # the iteration-2 model, with codewords
    out = teacher([torch.randn(16000) * 0.1])
    assert len(out.hidden_states) == 4 and out.hidden_states[-1].shape[-1] == cfg.embed_dim


def test_the_front_end_warmup_is_paid_from_the_iterations_time_cap(tmp_path, monkeypatch):
    """With run.max_minutes, warm-up + masked prediction fit in the cap: the warm-up's minutes come off the second;
    --max-steps caps both phases; each phase is named."""
    from types import SimpleNamespace

    from common.config import load_config
    from pretrain.config import PretrainConfig

    clock, runs, labels = SimpleNamespace(now=1000.0), [], []

    class FakeTrainer:  # records what each phase was asked to do; a fit takes 90 s of the fake clock
        def __init__(self, objective, run, *args, label="train"):
            runs.append((type(objective).__name__, run))
            labels.append(label)

        def fit(self, resume=False):
            clock.now += 90.0

    monkeypatch.setattr("training.loop.Trainer", FakeTrainer)  # imported by train_iteration when called
    monkeypatch.setattr(run_pretrain.time, "time", lambda: clock.now)
    cfg = load_config(PretrainConfig, None, ["front_end_warmup.steps=5", "run.max_minutes=7.0"])
    run_pretrain.train_iteration("iter1", cfg, tiny_teacher_config(codewords=6), [torch.arange(6)], 100, [],
                                 tmp_path, None, SimpleNamespace(is_main=False), False, 40)
    assert [(name, run.max_minutes) for name, run in runs] == [("FrontEndRegression", 7.0),
                                                                ("MaskedPrediction", 5.5)]
    assert runs[0][1].max_steps == 5 and runs[1][1].max_steps == 40
    assert labels == ["iter1 front-end warm-up", "iter1 masked prediction"]  # each phase named in the progress bar

    # a short check (--max-steps 3) caps the warm-up too: it once ran its 200 steps before a 10-step run
    runs.clear()
    run_pretrain.train_iteration("iter1", cfg, tiny_teacher_config(codewords=6), [torch.arange(6)], 100, [],
                                 tmp_path, None, SimpleNamespace(is_main=False), False, 3)
    assert [(name, run.max_steps) for name, run in runs] == [("FrontEndRegression", 3), ("MaskedPrediction", 3)]


def _tiny_init_args(tmp_path, init, *extra):
    args = ["--config", "configs/pretrain/hubert_mini.yaml", "--data", str(tmp_path / "audio"), "--output",
            str(tmp_path / "continued"), "--max-steps", "2", "--init", str(init)]
    for o in ["labels.clusters=6", "labels.kmeans_init_runs=1", "run.data.max_batch_seconds=4.0",
              "run.data.max_item_seconds=1.5", "run.threads=1", *extra]:
        args += ["-o", o]
    return args


@pytest.mark.parametrize("clusters", [6, 5])
def test_continued_pretraining_starts_from_the_checkpoint(tmp_path, clusters):
    """--init: the architecture and weights come from the checkpoint (codewords too when labels.clusters fits);
    with lr 0 the saved model is exactly the checkpoint."""
    from upstream.checkpoints import save_upstream
    from upstream.hubert import HubertUpstream

    write_tone_corpus(tmp_path / "audio", count=4)
    torch.manual_seed(3)
    init = HubertModel(dataclasses.replace(tiny_teacher_config(layers=3, codewords=clusters), dropout=0.0))
    save_upstream(HubertUpstream(init), tmp_path / "init")
    assert run_pretrain.main(_tiny_init_args(tmp_path, tmp_path / "init", "run.optim.lr=0.0")) == 0
    assert not (tmp_path / "continued" / "iter1_front_end").exists()  # no warm-up of a trained CNN
    out = build_upstream(tmp_path / "continued").model
    assert out.cfg.layers == 3 and out.cfg.num_codewords == 6  # the checkpoint's size, labels.clusters codewords
    before, after = init.state_dict(), out.state_dict()
    same = {k for k in after if k in before and before[k].shape == after[k].shape and torch.equal(before[k], after[k])}
    encoder = {k for k in after if not k.startswith(("codeword_emb", "final_proj"))}
    assert encoder <= same  # every encoder weight (mask_emb included) is the checkpoint's
    assert ("codeword_emb" in same) == (clusters == 6)


def test_continued_pretraining_refuses_a_non_hubert_checkpoint(tmp_path, capsys):
    from tests.fixtures.upstreams import tiny_family_model

    write_tone_corpus(tmp_path / "audio", count=2)
    tiny_family_model("wavlm").save_pretrained(tmp_path / "wavlm")
    assert run_pretrain.main(_tiny_init_args(tmp_path, tmp_path / "wavlm")) == 2
    assert "not a HuBERT-family checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "continued").exists()
