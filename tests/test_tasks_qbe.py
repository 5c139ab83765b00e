"""QbE: TWV against hand-computed cases and the official scorer's definition, subsequence DTW against a plain loop,
the QUESST loader and its errors, the official scorer run by path."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from common.audio import write_audio
from downstream.dtw import frame_distances, match_scores, subsequence_dtw_cost, znorm_per_query
from tasks.listfile import ListFileError
from tasks.qbe.data import load_quesst
from tasks.qbe.scorer import ScorerError, parse_scorer_output, stdlist_xml
from tasks.qbe.twv import maximum_twv, scorer_trials, twv_at, twv_beta

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


def make_quesst(root, rttm_lines=None, ecf_tlist=False):
    """A tiny QUESST 2014 tree: 3 documents (2 English); per split (dev, eval) 2 queries (1 English); with
    ``ecf_tlist`` the ground truth also has the ECF (the 3 documents) and the TLIST (the 2 queries + one more)."""
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
        if ecf_tlist:
            (gt / "quesst14.ecf.xml").write_text(
                '<ecf source_signal_duration="0.9" language="multiple" version="t">\n' + "".join(
                    f'  <excerpt audio_filename="Audio/quesst14_{i:05d}.wav" channel="1" tbeg="0.000" dur="0.3" '
                    f'source_type="splitcts"/>\n' for i in range(1, 4)) + "</ecf>\n")
            (gt / f"quesst14_{split}.tlist.xml").write_text(
                '<termlist ecf_filename="quesst14.ecf.xml" language="multiple" version="t">\n' + "".join(
                    f'  <term termid="quesst14_{split}_{i:04d}"><termtext>x</termtext></term>\n' for i in range(1, 4))
                + "</termlist>\n")
    return root


def test_load_quesst_keeps_english_and_builds_targets(tmp_path):
    s = load_quesst(make_quesst(tmp_path), "dev", {"nnenglish"})
    assert [u.id for u in s.queries] == ["quesst14_dev_0001"]
    assert [u.id for u in s.documents] == ["quesst14_00001", "quesst14_00003"]
    assert s.targets.tolist() == [[False, True]]
    assert s.documents[0].duration == pytest.approx(0.3)


def test_load_quesst_scored_trials_every_language(tmp_path):
    # without ECF/TLIST: the language keys' entries of every language
    s = load_quesst(make_quesst(tmp_path / "a"), "dev", {"nnenglish"})
    assert s.trials.query_ids == ["quesst14_dev_0001", "quesst14_dev_0002"]
    assert s.trials.document_ids == ["quesst14_00001", "quesst14_00002", "quesst14_00003"]
    assert ("quesst14_dev_0002", "quesst14_00002") in s.trials.occurrences
    # with them: the files the scorer reads (the TLIST has a third query)
    s = load_quesst(make_quesst(tmp_path / "b", ecf_tlist=True), "dev", {"nnenglish"})
    assert s.trials.query_ids == ["quesst14_dev_0001", "quesst14_dev_0002", "quesst14_dev_0003"]
    assert s.trials.document_ids == ["quesst14_00001", "quesst14_00002", "quesst14_00003"]
    assert "ecf.xml" in s.trials.source
    (tmp_path / "b/quesst14Database/scoring/groundtruth_quesst14_dev/quesst14.ecf.xml").write_text("<ecf>")
    with pytest.raises(ValueError, match=r"quesst14\.ecf\.xml: not a readable NIST STD XML"):
        load_quesst(tmp_path / "b", "dev", {"nnenglish"})


def _official_twv_by_definition(scores, q_ids, d_ids, all_q, all_d, occ, default, beta, theta):
    """TWV at ``theta`` written out from the scorer's definition, one trial at a time: every query of the TLIST
    with an occurrence × every ECF document, unsearched pairs at ``default``; P_fa over T − n_true documents."""
    given = {(q, d): scores[i, j] for i, q in enumerate(q_ids) for j, d in enumerate(d_ids)}
    terms = []
    for q in all_q:
        n_true = sum((q, d) in occ for d in all_d)
        if n_true == 0:
            continue  # "Removing unseen models"
        hits = sum(given.get((q, d), default) >= theta for d in all_d if (q, d) in occ)
        fas = sum(given.get((q, d), default) >= theta for d in all_d if (q, d) not in occ)
        terms.append((1 - hits / n_true) + beta * fas / (len(all_d) - n_true))
    return 1 - sum(terms) / len(terms)


def test_official_trials_hand_computed_scale():
    # TLIST: q1 (English, searched) and q2 (Basque, not searched); ECF: d1, d3 English (searched), d2 Czech.
    # q1 occurs in d3, q2 in d2. Searched: q1 scores d1 0.5, d3 1.0.
    full, targets = scorer_trials(np.array([[0.5, 1.0]]), ["q1"], ["d1", "d3"], ["q1", "q2"], ["d1", "d2", "d3"],
                                  {("q1", "d3"), ("q2", "d2")}, default_score=-10.0)
    assert full.tolist() == [[0.5, -10.0, 1.0], [-10.0, -10.0, -10.0]]
    assert targets.tolist() == [[False, False, True], [False, True, False]]
    # θ = 1.0: q1 perfect, q2 all-miss (it counts in the mean): TWV = 1 − (0 + 1)/2 = 0.5; searched alone: 1.0
    assert maximum_twv(full, targets, beta=2.0).mtwv == pytest.approx(0.5)
    assert maximum_twv(np.array([[0.5, 1.0]]), np.array([[False, True]]), beta=2.0).mtwv == pytest.approx(1.0)
    # θ = 0.5: q1's false alarm is normalised over the 2 non-target ECF documents, not the 1 searched one
    assert twv_at(full, targets, 0.5, beta=1.0) == pytest.approx(1 - (1.0 * 1 / 2 + 1) / 2)


def test_official_mtwv_matches_definition_on_random_trials():
    rng = np.random.default_rng(1)
    all_q = [f"q{i}" for i in range(8)]
    all_d = [f"d{j}" for j in range(40)]
    occ = {(q, d) for q in all_q for d in all_d if rng.random() < 0.08}
    occ |= {("q0", "d0"), ("q7", "d39")}  # q7 is never searched
    q_ids, d_ids = all_q[:5] + ["extra"], all_d[:25]  # "extra" is not in the TLIST: not a trial
    scores = rng.normal(size=(len(q_ids), len(d_ids))).round(1)
    beta = twv_beta()
    full, targets = scorer_trials(scores, q_ids, d_ids, all_q, all_d, occ, -10.0)
    res = maximum_twv(full, targets, beta)
    brute = max(_official_twv_by_definition(scores, q_ids, d_ids, all_q, all_d, occ, -10.0, beta, t)
                for t in np.r_[np.unique(scores), np.inf])
    assert res.mtwv == pytest.approx(max(brute, 0.0))
    assert res.num_queries == sum(any((q, d) in occ for d in all_d) for q in all_q)


def test_stdlist_and_scorer_output_formats():
    xml = stdlist_xml(np.array([[2.5, -0.12345]]), ["quesst14_dev_0001"], ["quesst14_00001", "quesst14_00002"], 2.0)
    assert '<detected_termlist termid="quesst14_dev_0001"' in xml
    assert 'file="quesst14_00001" channel="1" tbeg="0.000" dur="0.00" score="2.5000" decision="YES"' in xml
    assert 'score="-0.1235" decision="NO"' in xml
    out = ("Loading tlist file ...\nMain Results:\n\nactTWV: 0.40079603  maxTWV: 0.41911224  Threshold: 5.2125\n"
           "actCnxe: 0.97036207  minCnxe: 0.6852714\n\nUpper-bound TWV (model-dependent offset)  -  actTWV: 0.5  "
           "maxTWV: 0.5  Threshold: 0.0\n")
    res = parse_scorer_output(out)
    assert (res.atwv, res.mtwv, res.mtwv_threshold, res.act_cnxe, res.min_cnxe) == (
        0.40079603, 0.41911224, 5.2125, 0.97036207, 0.6852714)
    with pytest.raises(ScorerError, match="no 'actTWV"):
        parse_scorer_output("Exception in thread main\n")


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


FAKE_SCORER = """#!/bin/bash
# stands in for score-TWV-Cnxe.sh: checks what it is given as the real one needs it, prints its result lines
[ -f MediaEvalQUESST2014.jar ] || { echo "jar not in the working dir" >&2; exit 3; }
ls "$1"/*.stdlist.xml >/dev/null && ls "$2"/*.rttm >/dev/null && [ "$3" = "-10" ] || exit 4
n=$(grep -c '<term ' "$1"/*.stdlist.xml)
echo "Main Results:"
echo "actTWV: 0.0${n}  maxTWV: 0.1${n}  Threshold: 2.5"
echo "actCnxe: 0.9  minCnxe: 0.8"
"""


def test_qbe_official_scorer_by_path_fills_the_rows(tmp_path):
    from e2e_runs import run_and_read_rows

    scoring = tmp_path / "scorer"
    scoring.mkdir()
    (scoring / "MediaEvalQUESST2014.jar").write_bytes(b"")
    script = scoring / "score-TWV-Cnxe.sh"
    script.write_text(FAKE_SCORER)
    summary, rows = run_and_read_rows(make_quesst(tmp_path / "data"), "qbe", tmp_path, layer=-1,
                                      overrides=[f"twv.scorer={script}"])
    got = {(r["split"], r["metric"]): float(r["value"]) for r in rows}
    # 1 English query × 2 English documents were written to the stdlist: n = 2
    assert got[("test", "mtwv")] == pytest.approx(0.12) and got[("test", "atwv")] == pytest.approx(0.02)
    assert got[("dev", "min_cnxe")] == pytest.approx(0.8)
    run_dir = Path(summary["run_dir"])
    assert "maxTWV" in (run_dir / "qbe_scorer_test.out").read_text()
    import json
    details = json.loads((run_dir / "qbe_twv.json").read_text())
    assert details["test"]["official_scorer"]["mtwv"] == pytest.approx(0.12)
    assert "mtwv" in details["test"] and "mtwv_searched" in details["test"]


def test_qbe_scorer_path_errors_are_one_line(tmp_path):
    from e2e_runs import run_and_read_rows

    with pytest.raises(ScorerError, match=r"twv\.scorer: .*nowhere\.sh not found"):
        run_and_read_rows(make_quesst(tmp_path / "data"), "qbe", tmp_path, overrides=["twv.scorer=/nowhere.sh"])
    script = tmp_path / "score-TWV-Cnxe.sh"  # no jar next to it: the script fails, its last line is named
    script.write_text(FAKE_SCORER)
    with pytest.raises(ScorerError, match=r"failed \(exit 3\): jar not in the working dir"):
        run_and_read_rows(make_quesst(tmp_path / "data2"), "qbe", tmp_path / "o2", layer=-1,
                          overrides=[f"twv.scorer={script}"])
