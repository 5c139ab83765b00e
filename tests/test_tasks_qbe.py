"""QbE: TWV against hand-computed cases, subsequence DTW against a plain loop, the QUESST loader and its errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from common.audio import write_audio
from downstream.dtw import frame_distances, match_scores, subsequence_dtw_cost, znorm_per_query
from tasks.listfile import ListFileError
from tasks.qbe.data import load_quesst
from tasks.qbe.twv import maximum_twv, twv_at, twv_beta

# 3 queries × 4 documents; query 2 has no target and must not count.
SCORES = np.array([[0.9, 0.8, 0.1, 0.0],
                   [0.7, 0.6, 0.5, 0.2],
                   [1.0, 0.95, 0.3, 0.3]])
TARGETS = np.array([[1, 0, 0, 0],
                    [0, 1, 1, 0],
                    [0, 0, 0, 0]], dtype=bool)


def test_twv_beta_quesst_default():
    assert twv_beta() == pytest.approx((1 / 100) * (1 / 0.0008 - 1))
    assert twv_beta() == pytest.approx(12.49)


def test_twv_at_matches_hand_computation():
    # β = 2. θ = 0.5: q0 P_miss 0, P_fa 1/3 → 2/3; q1 P_miss 0, P_fa 1/2 → 1. TWV = 1 − (2/3 + 1)/2 = 1/6.
    assert twv_at(SCORES, TARGETS, 0.5, beta=2.0) == pytest.approx(1 / 6)
    # θ = 0.9: q0 perfect; q1 misses both → P_miss 1. TWV = 1 − (0 + 1)/2 = 0.5.
    assert twv_at(SCORES, TARGETS, 0.9, beta=2.0) == pytest.approx(0.5)
    # Everything YES: P_miss 0, P_fa 1 → TWV = 1 − β.
    assert twv_at(SCORES, TARGETS, -1.0, beta=2.0) == pytest.approx(-1.0)
    # Nothing YES: P_miss 1 → TWV 0.
    assert twv_at(SCORES, TARGETS, 5.0, beta=2.0) == pytest.approx(0.0)


def test_maximum_twv_is_the_best_threshold():
    res = maximum_twv(SCORES, TARGETS, beta=2.0)
    assert res.mtwv == pytest.approx(0.5)
    assert res.threshold == pytest.approx(0.9)
    assert res.num_queries == 2
    # brute force over every observed score
    brute = max(twv_at(SCORES, TARGETS, t, beta=2.0) for t in np.r_[SCORES.ravel(), np.inf])
    assert res.mtwv == pytest.approx(brute)


def test_maximum_twv_ties_enter_together():
    # A hit and a false alarm share score 0.5: no threshold can take the hit alone.
    scores = np.array([[0.5, 0.5, 0.1]])
    targets = np.array([[True, False, False]])
    # Both YES: P_miss 0, P_fa 1/2 → TWV = 1 − 0.5·β = 0 with β = 2 (the hit alone would give 1).
    assert maximum_twv(scores, targets, beta=2.0).mtwv == pytest.approx(0.0)
    assert maximum_twv(scores, targets, beta=1.0).mtwv == pytest.approx(0.5)


def test_maximum_twv_random_matches_brute_force():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(6, 30)).round(1)  # rounding creates ties
    targets = rng.random((6, 30)) < 0.15
    targets[0, 0] = True
    res = maximum_twv(scores, targets, beta=3.0)
    brute = max(twv_at(scores, targets, t, beta=3.0) for t in np.r_[np.unique(scores), np.inf])
    assert res.mtwv == pytest.approx(brute)


def test_twv_rejects_bad_input():
    with pytest.raises(ValueError, match="no query has any target"):
        maximum_twv(SCORES, np.zeros_like(TARGETS))
    with pytest.raises(ValueError, match="same shape"):
        maximum_twv(SCORES, TARGETS[:2])


def _reference_sdtw(dist: np.ndarray) -> float:
    """Plain double loop of the asymmetric, open-begin/open-end recursion."""
    q, t = dist.shape
    g = np.full((q, t), np.inf)
    g[0] = dist[0]
    for i in range(1, q):
        for j in range(t):
            prev = min(g[i - 1, j], g[i - 1, j - 1] if j >= 1 else np.inf, g[i - 1, j - 2] if j >= 2 else np.inf)
            g[i, j] = dist[i, j] + prev
    return g[-1].min() / q


def test_subsequence_dtw_matches_loop_and_finds_embedded_query():
    torch.manual_seed(0)
    docs = [torch.randn(n, 8) for n in (30, 17, 25)]
    query = docs[0][10:16].clone() + 0.01 * torch.randn(6, 8)  # the query occurs inside document 0
    padded = torch.nn.utils.rnn.pad_sequence(docs, batch_first=True)
    lengths = torch.tensor([len(d) for d in docs])
    for distance in ("cosine", "cosine_exp"):
        dist = frame_distances(query, padded, distance, True, lengths)
        costs = subsequence_dtw_cost(dist)
        for k, doc in enumerate(docs):
            ref = _reference_sdtw(dist[:, k, : len(doc)].numpy())
            assert costs[k].item() == pytest.approx(ref, rel=1e-5)
    scores = match_scores([query], docs, doc_batch=2)
    assert scores.shape == (1, 3)
    assert int(scores[0].argmax()) == 0
    z = znorm_per_query(scores)
    assert z.mean().item() == pytest.approx(0.0, abs=1e-6)
    # queries shorter than min_query_frames score 0 everywhere (s3prl)
    assert match_scores([query[:3]], docs).abs().max().item() == 0.0


def _wav(path, seconds=0.3, seed=0):
    rng = np.random.default_rng(seed)
    write_audio(path, (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32))


def make_quesst(root, rttm_lines=None):
    """A tiny QUESST 2014 tree: 3 documents (2 English); per split (dev, eval) 2 queries (1 English)."""
    base = root / "quesst14Database"
    for i in range(1, 4):
        _wav(base / "Audio" / f"quesst14_{i:05d}.wav", seed=i)
    sc = base / "scoring"
    sc.mkdir(parents=True)
    # the official lists name files by path with the database folder first; bare ids work too
    (sc / "language_key_utterances.lst").write_text(
        "quesst14Database/Audio/quesst14_00001.wav nnenglish\nquesst14_00002 czech\nquesst14_00003 nnenglish\n")
    for split in ("dev", "eval"):
        for i in range(1, 3):
            _wav(base / f"{split}_queries" / f"quesst14_{split}_{i:04d}.wav", seed=10 + i)
        (sc / f"language_key_{split}.lst").write_text(f"quesst14_{split}_0001 nnenglish\n"
                                                      f"quesst14_{split}_0002 basque\n")
        gt = sc / f"groundtruth_quesst14_{split}"
        gt.mkdir()
        lines = rttm_lines or [f"LEXEME quesst14_00003 1 0.10 0.20 quesst14_{split}_0001 <NA> <NA> <NA>",
                               f"LEXEME quesst14_00002 1 0.10 0.20 quesst14_{split}_0002 <NA> <NA> <NA>"]
        (gt / f"quesst14_{split}.rttm").write_text("\n".join(lines) + "\n")
    return root


def test_load_quesst_keeps_english_and_builds_targets(tmp_path):
    s = load_quesst(make_quesst(tmp_path), "dev", {"nnenglish"})
    assert [u.id for u in s.queries] == ["quesst14_dev_0001"]
    assert [u.id for u in s.documents] == ["quesst14_00001", "quesst14_00003"]
    assert s.targets.tolist() == [[False, True]]
    assert s.documents[0].duration == pytest.approx(0.3)


def test_load_quesst_errors_name_file_and_line(tmp_path):
    make_quesst(tmp_path, rttm_lines=["LEXEME quesst14_00003 1 0.1"])
    with pytest.raises(ListFileError, match=r"quesst14_dev\.rttm:1: expected 'LEXEME"):
        load_quesst(tmp_path, "dev", {"nnenglish"})
    key = tmp_path / "quesst14Database" / "scoring" / "language_key_dev.lst"
    key.write_text("quesst14_dev_0001 nnenglish\nquesst14_dev_0009 nnenglish\n")
    with pytest.raises(ListFileError, match=r"language_key_dev\.lst:2: audio for 'quesst14_dev_0009' not found"):
        load_quesst(tmp_path, "dev", {"nnenglish"})
    key.write_text("quesst14_dev_0001\n")
    with pytest.raises(ListFileError, match=r"language_key_dev\.lst:1: expected 2 fields"):
        load_quesst(tmp_path, "dev", {"nnenglish"})


def test_qbe_run_sweeps_layers_on_dev_and_writes_rows(tmp_path):
    from e2e_runs import run_and_read_rows

    summary, rows = run_and_read_rows(make_quesst(tmp_path / "data"), "qbe", tmp_path)
    run_dir = Path(summary["run_dir"])
    layers = (run_dir / "qbe_dev_layers.tsv").read_text().splitlines()
    assert layers[0] == "layer\tdev_mtwv" and len(layers) == 1 + 3  # tiny upstream: 3 hidden states
    chosen = summary["selected"]["layer"]
    dev_mtwv = {int(line.split()[0]): float(line.split()[1]) for line in layers[1:]}
    assert dev_mtwv[int(chosen)] == max(dev_mtwv.values())
    assert {(r["split"], r["metric"]) for r in rows} == {("dev", "mtwv"), ("dev", "atwv"), ("test", "mtwv"),
                                                         ("test", "atwv")}
    assert (run_dir / "qbe_test_scores.tsv").read_text().count("\n") == 1 + 1 * 2  # 1 English query × 2 docs


def test_qbe_fixed_layer_skips_the_sweep(tmp_path):
    from e2e_runs import run_and_read_rows

    summary, rows = run_and_read_rows(make_quesst(tmp_path / "data"), "qbe", tmp_path, layer=-1)
    assert summary["selected"]["layer"] == 2  # -1 = the last of the tiny upstream's 3 hidden states
    assert (Path(summary["run_dir"]) / "qbe_dev_layers.tsv").read_text().splitlines()[1:] == [
        f"2\t{summary['metrics']['dev']['mtwv']:.6f}"]
