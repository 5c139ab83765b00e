"""SD: DER on a hand-computed case, median filtering, frame labels, PIT loss and frame accuracy against s3prl's own
functions, 2000-frame chunks, Kaldi-dir loader and its errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from common.audio import write_audio
from downstream.diarization import DiarizationHead, pit_bce_loss, pit_frame_accuracy
from downstream.masking import utterance_cmvn
from tasks.listfile import ListFileError
from tasks.sd.data import load_kaldi_dir, read_rttm
from tasks.sd.der import activity_to_segments, decide, diarization_error_rate, rttm_lines, to_annotation
from tasks.sd.task import SDConfig, SpeakerDiarization
from tests.fixtures.scripts import load_script


def test_der_hand_computed():
    ref = {"r1": to_annotation([("A", 0.0, 4.0), ("B", 2.0, 6.0)], "r1")}
    # hypothesis labels differ from the reference's; the optimal mapping is 0→A, 1→B. B's [2, 3) is missed:
    # 1 s of error over 8 s of reference speech (overlap counted twice) → DER 1/8.
    hyp = {"r1": to_annotation([("0", 0.0, 4.0), ("1", 3.0, 6.0)], "r1")}
    assert diarization_error_rate(ref, hyp, {"r1": 8.0}) == pytest.approx(1 / 8)
    # a missing hypothesis counts as all missed
    assert diarization_error_rate(ref, {}, {"r1": 8.0}) == pytest.approx(1.0)


def test_decide_median_filter_and_segments():
    post = np.array([[0.9, 0.1], [0.2, 0.1], [0.9, 0.1], [0.9, 0.8], [0.1, 0.8], [0.1, 0.2], [0.1, 0.8]])
    raw = decide(post, 0.5, 1)
    assert raw[:, 0].tolist() == [True, False, True, True, False, False, False]
    smooth = decide(post, 0.5, 3)  # the one-frame gaps are filled / the one-frame blip removed
    assert smooth[:, 0].tolist() == [False, True, True, True, False, False, False]
    assert smooth[:, 1].tolist() == [False, False, False, True, True, True, False]
    segs = activity_to_segments(smooth, frame_shift=0.02)
    assert segs == [(0, pytest.approx(0.02), pytest.approx(0.08)), (1, pytest.approx(0.06), pytest.approx(0.12))]
    assert rttm_lines(segs, "mix1")[0] == "SPEAKER mix1 1 0.020 0.060 <NA> <NA> 0 <NA> <NA>"
    with pytest.raises(ValueError, match="odd"):
        decide(post, 0.5, 2)


def test_pit_loss_is_permutation_invariant_and_masks_padding():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 2)
    labels = (torch.rand(2, 6, 2) > 0.5).float()
    lengths = torch.tensor([6, 4])
    loss, permuted = pit_bce_loss(logits, labels, lengths)
    loss_swapped, _ = pit_bce_loss(logits, labels.flip(-1), lengths)
    assert loss.item() == pytest.approx(loss_swapped.item())
    junk = labels.clone()
    junk[1, 4:] = 1 - junk[1, 4:]  # padding frames must not matter
    assert pit_bce_loss(logits, junk, lengths)[0].item() == pytest.approx(loss.item())
    # perfect logits in swapped order → loss near 0 after the permutation
    perfect = (labels.flip(-1) * 2 - 1) * 20
    assert pit_bce_loss(perfect, labels, lengths)[0].item() < 1e-6
    head = DiarizationHead(5, hidden_size=8)
    assert head(torch.randn(2, 6, 5), lengths).shape == (2, 6, 2)


def test_pit_loss_and_frame_accuracy_equal_s3prls():
    s3prl_utils = pytest.importorskip("s3prl.downstream.diarization.utils")
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 9, 2, generator=g) * 2
    labels = (torch.rand(3, 9, 2, generator=g) > 0.5).float()
    lengths = torch.tensor([9, 5, 2])  # chunks of different lengths: s3prl weighs every frame alike
    ref_loss, ref_idx, perms = s3prl_utils.pit_loss(logits, labels, lengths)
    loss, permuted = pit_bce_loss(logits, labels, lengths)
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-6)
    assert torch.equal(permuted, s3prl_utils.get_label_perm(labels, ref_idx, perms))
    for b in range(3):  # s3prl's dev accuracy of a one-chunk batch (its ACC = correct / num_frames)
        n = int(lengths[b])
        lo, la, ln = logits[b:b + 1, :n], labels[b:b + 1, :n], lengths[b:b + 1]
        _, idx, perms = s3prl_utils.pit_loss(lo, la, ln)
        correct, frames, *_ = s3prl_utils.calc_diarization_error(lo, s3prl_utils.get_label_perm(la, idx, perms), ln)
        assert pit_frame_accuracy(torch.sigmoid(lo[0]), la[0]) == pytest.approx(correct / frames, abs=1e-9)


def test_input_cmvn_normalises_each_utterance_over_its_own_frames():
    g = torch.Generator().manual_seed(0)
    x, lengths = torch.randn(2, 7, 3, generator=g) * 5 + 3, torch.tensor([7, 4])
    out = utterance_cmvn(x, lengths)
    for b, n in enumerate(lengths.tolist()):
        assert torch.allclose(out[b, :n].mean(0), torch.zeros(3), atol=1e-5)
        assert torch.allclose(out[b, :n].var(0, unbiased=False), torch.ones(3), atol=1e-3)
        assert not out[b, n:].any()
    head = DiarizationHead(3, hidden_size=4, input_cmvn=True)
    # an utterance's own offset and scale no longer reach the LSTM: the gain/channel of each recording cancels
    scaled = x.clone()
    scaled[1] = x[1] * 4 - 2
    assert torch.allclose(head(x, lengths)[1, :4], head(scaled, lengths)[1, :4], atol=1e-4)
    head.input_cmvn = False
    assert not torch.allclose(head(x, lengths)[1, :4], head(scaled, lengths)[1, :4], atol=1e-4)


def make_libri2mix(root, split="dev", segments=None, rttm=None, speakers=("spkA", "spkB"), seed=0):
    kaldi = root / "Libri2Mix" / "kaldi" / split
    kaldi.mkdir(parents=True)
    a, b = speakers
    wav = root / "Libri2Mix" / "wav16k" / "max" / split / "mix_both" / "mix1.wav"
    write_audio(wav, (0.05 * np.random.default_rng(seed).standard_normal(16000 * 3)).astype(np.float32))
    (kaldi / "wav.scp").write_text(f"mix1 ../../wav16k/max/{split}/mix_both/mix1.wav\n")
    (kaldi / "reco2dur").write_text("mix1 3.0\n")
    (kaldi / "segments").write_text(segments or "u1 mix1 0.00 2.00\nu2 mix1 1.00 3.00\n")
    (kaldi / "utt2spk").write_text(f"u1 {a}\nu2 {b}\n")
    (kaldi / "rttm").write_text(rttm or f"SPEAKER mix1 1 0.00 2.00 <NA> <NA> {a} <NA> <NA>\n"
                                        f"SPEAKER mix1 1 1.00 2.00 <NA> <NA> {b} <NA> <NA>\n")
    return kaldi


def test_kaldi_loader_chunks_of_label_frames_and_rint_labels(tmp_path):
    make_libri2mix(tmp_path, "train")
    cfg = SDConfig()
    cfg.data.chunk_frames = 4
    task = SpeakerDiarization(cfg, tmp_path)
    (rec,) = task.recordings("train")
    assert rec.duration == 3.0 and rec.speakers == ["spkA", "spkB"]
    task.setup(downsample_rate=8000)  # 0.5-s frames: 6 frames = one chunk of 4 and the last partial one of 2
    chunks = task.load_split("train")
    assert [(u.id, u.start, u.duration) for u in chunks] == [("mix1-0000", 0.0, 2.0), ("mix1-0001", 2.0, 1.0)]
    assert chunks[1].label == ((1, 0.0, 1.0),)  # only speaker B is active after 2 s
    assert task.chunk_bounds(3.0) == [(0, 4), (4, 6)]
    task.setup(downsample_rate=320)  # 20 ms: s3prl's 2000-frame chunks are 40 s; a 3 s mixture is one chunk
    task.config.data.chunk_frames = 2000
    assert [(u.start, u.duration) for u in task.load_split("train")] == [(0.0, 3.0)]
    task.setup(downsample_rate=16000)  # 1-s frames keep the arithmetic visible
    assert task.frame_labels(chunks[:1], 2)[0].tolist() == [[1.0, 0.0], [1.0, 1.0]]
    # s3prl rounds turn edges to the nearest frame (np.rint); flooring would start B's turn one frame early
    late = [type(chunks[0])(id="x", path=rec.path, duration=3.0, label=((1, 1.6, 3.0),))]
    assert task.frame_labels(late, 3)[0, :, 1].tolist() == [0.0, 0.0, 1.0]


def test_scoring_writes_rttm_and_uses_dev_tuned_threshold(tmp_path):
    make_libri2mix(tmp_path, "dev")
    task = SpeakerDiarization(SDConfig(), tmp_path)
    task.setup(downsample_rate=16000)
    (utt,) = task.load_split("dev")
    perfect = [[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
    assert task.score("dev", [utt], [perfect])["der"] == pytest.approx(0.0)
    assert task.score("dev", [utt], [perfect])["accuracy"] == pytest.approx(100.0)
    # chunked inference: two chunks' posteriors are joined in time order; a chunk a frame short is padded with its
    # last frame (s3prl's _match_length), so the next chunk stays aligned
    task.config.data.chunk_frames = 2
    chunks = task.load_split("dev")
    assert [u.id for u in chunks] == ["mix1-0000", "mix1-0001"]
    assert task.score("dev", chunks, [perfect[:2], perfect[2:]])["der"] == pytest.approx(0.0)
    assert task.score("dev", chunks, [perfect[:1], perfect[2:]])["der"] == pytest.approx(25.0)  # B's 1-2 s missed
    task.config.data.chunk_frames = 2000
    shy = [[0.45, 0.0], [0.45, 0.45], [0.0, 0.45]]  # right shape, but below the default 0.5 threshold
    assert task.score("dev", [utt], [shy])["der"] == pytest.approx(100.0)
    # the engine hands the dev predictions to tune_on_dev and records what it returns as the run's choices
    assert task.tune_on_dev([utt], [shy]) == {"threshold": 0.3, "median_frames": 1}
    assert task.threshold == 0.3 and task.median == 1
    assert task.score("dev", [utt], [shy])["der"] == pytest.approx(0.0)
    # "speaker A = all speech" over A 0-2 s, B 1-3 s: B missed in the overlap (1 s) and confused after it (1 s), of
    # 4 s of reference speech
    assert task.score("dev", [utt], [shy])["der_one_speaker"] == pytest.approx(50.0)
    files = task.prediction_files("dev", [utt], [shy])
    assert list(files) == ["dev.rttm"] and "SPEAKER mix1 1 0.000 2.000" in files["dev.rttm"]


def test_malformed_kaldi_and_rttm_lines_name_file_and_line(tmp_path):
    kaldi = make_libri2mix(tmp_path, "dev")
    cases = [  # (file, its text, how it is read, the error naming file and line)
        ("segments", "u1 mix1 0.00 2.00\nu2 mix1 one 3.00\n", load_kaldi_dir,
         r"segments:2: start must be a number, got 'one'"),
        ("segments", "u1 mix1 0.00\n", load_kaldi_dir, r"segments:1: expected 4 fields"),
        ("segments", "u1 mix9 0.00 1.00\n", load_kaldi_dir, r"segments:1: recording 'mix9' is not in wav.scp"),
        ("rttm", "SPEAKER mix1 1 0.00 2.00 <NA> <NA> spkA <NA> <NA>\nSPEAKER mix1 1 0.5\n", read_rttm,
         r"rttm:2: expected 'SPEAKER"),
        ("rttm", "SPEAKER mix1 1 0.00 -2.00 <NA> <NA> spkA <NA> <NA>\n", read_rttm,
         r"rttm:1: tbeg and tdur must not be negative"),
    ]
    for name, text, read, message in cases:
        (kaldi / name).write_text(text)
        with pytest.raises(ListFileError, match=message):
            read(kaldi if read is load_kaldi_dir else kaldi / name)


def test_sd_run_writes_rttm_and_rows(tmp_path):
    from e2e_runs import run_and_read_rows

    for k, split in enumerate(("train", "dev", "test")):  # Libri2Mix's splits share no speaker and no audio
        make_libri2mix(tmp_path / "data", split, speakers=(f"{split}A", f"{split}B"), seed=k)
    summary, rows = run_and_read_rows(tmp_path / "data", "sd", tmp_path)
    assert {(r["split"], r["metric"]) for r in rows} == {(s, m) for s in ("dev", "test")
                                                         for m in ("der", "der_one_speaker", "accuracy")}
    # dev choices are the run's, recorded in summary.json, not metric rows
    assert summary["selected"]["threshold"] in (0.3, 0.4, 0.5, 0.6, 0.7)
    assert json.loads((Path(summary["run_dir"]) / "summary.json").read_text())["selected"] == summary["selected"]
    rttm = (Path(summary["run_dir"]) / "test.rttm").read_text()
    assert all(line.startswith("SPEAKER mix1 1 ") for line in rttm.splitlines())


def test_speaker_probe_reads_speakers_off_frames_that_carry_them():
    probe = load_script("bench/speaker_probe.py")
    from tasks.sd.data import Recording

    rec = Recording("r", Path("r.wav"), 4.0, [("a", 0.0, 1.0), ("b", 1.0, 2.0), ("a", 1.8, 3.0), ("b", 3.0, 4.0)])
    speaker = probe.speaker_of_frames(rec, 40, 0.1)  # 100 ms frames: overlap [1.8, 2.0) is neither speaker
    assert speaker[:10].tolist() == [0] * 10 and speaker[18:20].tolist() == [-1, -1] and speaker[35] == 1
    g = np.random.default_rng(0)
    labels = np.tile(np.repeat([0, 1], 20), 10)
    noise = g.standard_normal((len(labels), 4))
    assert probe.probe_accuracy(noise + 3 * labels[:, None], labels) > 0.95  # the speaker is in the frames
    assert abs(probe.probe_accuracy(noise, labels) - 0.5) < 0.15            # pure noise: chance
    assert probe.probe_accuracy(noise, np.zeros(len(labels), dtype=int)) is None
