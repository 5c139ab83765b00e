"""ASV: EER/minDCF on hand-computed cases, the x-vector head and AM-Softmax, the VoxCeleb1 loader and its errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from s3prl.downstream.sv_voxceleb1.utils import EER as s3prl_eer  # test-time reference (requirements-dev)

from common.audio import write_audio
from downstream.xvector import RECEPTIVE_FIELD, AMSoftmaxLoss, XVectorHead
from tasks.asv.data import make_trials, read_trial_list, scan_speakers, split_dev_speakers
from tasks.asv.metrics import equal_error_rate, min_dcf
from tasks.asv.task import ASVConfig, SpeakerVerification
from tasks.listfile import ListFileError

LABELS = [1, 1, 1, 0, 0, 0]
SCORES = [0.9, 0.8, 0.3, 0.7, 0.2, 0.1]  # one target scores below one non-target


def test_eer_hand_computed():
    eer, thr = equal_error_rate(LABELS, SCORES)
    assert eer == pytest.approx(1 / 3)
    assert equal_error_rate([1, 1, 0, 0], [0.9, 0.8, 0.2, 0.1])[0] == pytest.approx(0.0)
    assert equal_error_rate([1, 0], [0.1, 0.9])[0] == pytest.approx(1.0)


@pytest.mark.parametrize("trials", [6, 10, 40, 100, 500])
def test_eer_matches_the_interpolated_roc_root_at_small_trial_counts(trials):
    """The reference implementation is s3prl's own ``EER`` (s3prl/downstream/sv_voxceleb1/utils.py: brentq on the
    interpolated ROC), imported from the installed s3prl; 50 random trial lists per size, every other one tied."""
    for seed in range(50):
        rng = np.random.default_rng(seed)
        labels = rng.integers(0, 2, trials)
        labels[:2] = [0, 1]
        scores = rng.normal(size=trials) + 1.2 * labels
        if seed % 2:
            scores = np.round(scores, 1)
        reference = s3prl_eer(labels, scores)[0]
        assert equal_error_rate(labels, scores)[0] == pytest.approx(reference, abs=1e-9), (trials, seed)


def test_eer_is_zero_for_a_perfect_system_unlike_pyannotes_det_curve():
    """Why pyannote.metrics' det_curve EER is not the definition used (see equal_error_rate's docstring)."""
    from pyannote.metrics.binary_classification import det_curve

    labels, scores = np.array([1] * 20 + [0] * 20), np.linspace(1.0, 0.0, 40)  # every target above every impostor
    assert equal_error_rate(labels, scores)[0] == 0.0
    assert det_curve(labels.astype(bool), scores)[3] == pytest.approx(0.25)


def test_min_dcf_hand_computed():
    # (P_miss, P_fa) points: (1,0) (2/3,0) (1/3,0) (1/3,1/3) (0,1/3) ... With P_target 0.5 the cost is
    # (P_miss + P_fa)/2 normalised by 0.5 → min 1/3. With P_target 0.01 the best point is (1/3, 0) → 1/3.
    assert min_dcf(LABELS, SCORES, p_target=0.5) == pytest.approx(1 / 3)
    assert min_dcf(LABELS, SCORES) == pytest.approx(1 / 3)


def test_metrics_reject_bad_trials():
    with pytest.raises(ValueError, match="both target"):
        equal_error_rate([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        equal_error_rate([1, 0], [float("nan"), 0.2])


def test_xvector_shapes_and_padding_invariance():
    torch.manual_seed(0)
    head = XVectorHead(input_dim=12, hidden_dim=16, pooled_dim=20, embed_dim=8).eval()
    a = torch.randn(1, 30, 12)
    padded = torch.cat([a, torch.randn(1, 10, 12)], dim=1)  # 10 frames of junk padding
    batch = torch.cat([padded, torch.randn(1, 40, 12)])
    out = head(batch, torch.tensor([30, 40]))
    assert out.shape == (2, 8)
    assert torch.allclose(out[0], head(a, torch.tensor([30]))[0], atol=1e-5)
    # shorter than the TDNN context still embeds (padded inside the head)
    assert head.embed(torch.randn(1, RECEPTIVE_FIELD - 5, 12), torch.tensor([RECEPTIVE_FIELD - 5])).shape == (1, 8)


def test_am_softmax_margin_raises_the_loss():
    torch.manual_seed(0)
    emb, labels = torch.randn(4, 8), torch.tensor([0, 1, 2, 0])
    plain = AMSoftmaxLoss(8, 3, scale=30.0, margin=0.0)
    margin = AMSoftmaxLoss(8, 3, scale=30.0, margin=0.4)
    margin.weight.data.copy_(plain.weight.data)
    assert margin(emb, labels) > plain(emb, labels)
    with pytest.raises(ValueError, match="speaker labels"):
        plain(emb, torch.tensor([0, 1, 2, 3]))


def make_voxceleb(root, trial_lines=None):
    """dev: 4 speakers × 3 utterances (one 0.5 s, two 2.5 s); test: 2 speakers × 2 utterances; a 3-line trial list."""
    base = root / "VoxCeleb1"
    rng = np.random.default_rng(0)
    for s in range(4):
        for n, sec in enumerate((0.5, 2.5, 2.5)):
            write_audio(base / "dev" / "wav" / f"id1000{s}" / "vid" / f"{n:05d}.wav",
                        (0.1 * rng.standard_normal(int(16000 * sec))).astype(np.float32))
    for s in range(2):
        for n in range(2):
            write_audio(base / "test" / "wav" / f"id1027{s}" / "vid" / f"{n:05d}.wav",
                        (0.1 * rng.standard_normal(8000)).astype(np.float32))
    lines = trial_lines or ["1 id10270/vid/00000.wav id10270/vid/00001.wav",
                            "0 id10270/vid/00000.wav id10271/vid/00000.wav",
                            "1 id10271/vid/00000.wav id10271/vid/00001.wav"]
    (base / "veri_test.txt").write_text("\n".join(lines) + "\n")
    return root


def test_loader_holds_out_dev_speakers_and_drops_short_training_utterances(tmp_path):
    make_voxceleb(tmp_path)
    cfg = ASVConfig()
    cfg.data.dev_speakers, cfg.data.dev_trials = 2, 6
    task = SpeakerVerification(cfg, tmp_path)
    train, dev, test = (task.load_split(s) for s in ("train", "dev", "test"))
    assert len(task.speakers) == 2 and all(u.duration >= 2.0 for u in train) and len(train) == 4
    assert {u.label for u in train} == {0, 1}
    dev_speakers = {u.speaker for u in dev}
    assert dev_speakers.isdisjoint(task.speakers)  # dev trials never use training speakers
    trials = task.trials("dev")
    assert len(trials) == 6 and {t.label for t in trials} == {0, 1}
    assert len(test) == 4 and [t.label for t in task.trials("test")] == [1, 0, 1]
    # perfect embeddings (one axis per speaker) → EER 0
    emb = {u.id: [1.0, 0.0] if u.speaker == "id10270" else [0.0, 1.0] for u in test}
    result = task.score("test", test, [emb[u.id] for u in test])
    assert result["eer"] == pytest.approx(0.0)


def test_trial_list_errors_name_file_and_line(tmp_path):
    make_voxceleb(tmp_path, ["1 id10270/vid/00000.wav id10270/vid/00001.wav", "1 id10270/vid/00000.wav"])
    wav_root = tmp_path / "VoxCeleb1" / "test" / "wav"
    path = tmp_path / "VoxCeleb1" / "veri_test.txt"
    with pytest.raises(ListFileError, match=r"veri_test\.txt:2: expected 3 fields"):
        read_trial_list(path, wav_root)
    path.write_text("yes id10270/vid/00000.wav id10270/vid/00001.wav\n")
    with pytest.raises(ListFileError, match=r"veri_test\.txt:1: trial label must be 1"):
        read_trial_list(path, wav_root)
    path.write_text("1 id10270/vid/00000.wav id10270/vid/00009.wav\n")
    with pytest.raises(ListFileError, match=r"veri_test\.txt:1: audio .*00009\.wav not found"):
        read_trial_list(path, wav_root)


def test_dev_trials_are_deterministic_and_balanced(tmp_path):
    make_voxceleb(tmp_path)
    by_speaker = scan_speakers(tmp_path / "VoxCeleb1" / "dev" / "wav")
    train, dev = split_dev_speakers(list(by_speaker), 2, seed=0)
    assert split_dev_speakers(list(by_speaker), 2, seed=0) == (train, dev)
    trials = make_trials({s: by_speaker[s] for s in dev}, 6, seed=1)
    assert trials == make_trials({s: by_speaker[s] for s in dev}, 6, seed=1)
    assert sum(t.label for t in trials) == 3


def test_asv_run_selects_on_dev_trials_and_writes_rows(tmp_path):
    from e2e_runs import run_and_read_rows

    summary, rows = run_and_read_rows(make_voxceleb(tmp_path / "data"), "asv", tmp_path,
                                      ["data.min_seconds=0.4"])
    metrics = {(r["split"], r["metric"]): float(r["value"]) for r in rows}
    assert set(metrics) == {(s, m) for s in ("dev", "test") for m in ("eer", "min_dcf")}
    assert 0.0 <= metrics[("test", "eer")] <= 100.0
    assert (Path(summary["run_dir"]) / "checkpoints" / "best.pt").is_file()
