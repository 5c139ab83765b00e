"""Metrics and decoding on hand-computed cases: PER/WER, accuracy, CTC greedy decoding, weighted sum."""
from __future__ import annotations

import math

import pytest
import torch

from downstream.ctc_heads import ctc_greedy_decode
from downstream.masking import mean_pool
from downstream.weighted_sum import WeightedSum
from tasks.asr import chars_to_words, text_to_chars
from tasks.base import accuracy_percent, error_rate_percent
from tasks.registry import build_task


def test_error_rate_hand_computed():
    # "A B C D" vs "A X C": one substitution + one deletion = 2 errors / 4 words; second pair: 1 insertion / 2.
    assert error_rate_percent([["A", "B", "C", "D"], ["E", "F"]], [["A", "X", "C"], ["E", "F", "G"]]) == 50.0
    assert error_rate_percent([["AH", "B"]], [["AH", "B"]]) == 0.0
    with pytest.raises(ValueError):
        error_rate_percent([[]], [["A"]])


def test_accuracy_hand_computed():
    assert accuracy_percent(["a", "b", "c", "d"], ["a", "x", "c", "d"]) == 75.0
    with pytest.raises(ValueError):
        accuracy_percent(["a"], [])


def test_ctc_greedy_merges_repeats_and_drops_blanks():
    # frames: 1 1 0 1 2 2 0 | padding
    ids = torch.tensor([[1, 1, 0, 1, 2, 2, 0, 3]])
    log_probs = torch.nn.functional.one_hot(ids, 4).float().log()
    assert ctc_greedy_decode(log_probs, torch.tensor([7])) == [[1, 1, 2]]


def test_asr_wer_through_the_task(tmp_path):
    asr = build_task("asr", tmp_path)
    assert chars_to_words(text_to_chars("HELLO  WORLD'S")) == ["HELLO", "WORLD'S"]
    from tasks.base import Utterance

    utts = [Utterance(id="u", path=tmp_path / "u.flac", duration=1.0, transcript="THE CAT SAT")]
    hyp = " ".join(text_to_chars("THE BAT SAT ON"))
    scores = asr.score("test", utts, [hyp])
    assert scores["wer"] == pytest.approx(200 / 3)  # 1 substitution + 1 insertion over 3 words
    # CER over "THE|CAT|SAT" (11 characters): C->B, then "|ON" inserted: 4 edits
    assert scores["cer"] == pytest.approx(400 / 11)


def test_weighted_sum_starts_uniform_and_selects_layers():
    hidden = torch.arange(3.0).view(3, 1, 1, 1).expand(3, 2, 4, 5)
    ws = WeightedSum(3)
    assert torch.allclose(ws(hidden), torch.full((2, 4, 5), 1.0))  # mean of 0, 1, 2
    assert ws.layer_weights() == pytest.approx([1 / 3] * 3)
    assert torch.equal(WeightedSum(3, layer=-1)(hidden), hidden[2])
    with pytest.raises(ValueError, match="out of range"):
        WeightedSum(3, layer=3)


def test_mean_pool_ignores_padding():
    x = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert mean_pool(x, torch.tensor([2])).item() == 2.0
    assert not math.isnan(mean_pool(x, torch.tensor([0])).item())
