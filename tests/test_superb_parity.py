"""Parity with s3prl 0.4.18's own code (the test-only reference installed with the dev requirements): the ASR/SF
BiLSTM head, the ASR vocabulary and CTC targets, and PER/WER on the same predictions. Each test fails if our side
drifts from what SUPERB ran (docs/PROTOCOL.md)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from downstream.ctc_heads import BiLSTMCTCHead
from tasks.base import Utterance

# s3prl downstream/asr/char.dict's 28 symbols (counts do not matter to the dictionary's indices)
CHAR_DICT = "| E T A O N I H S R D L U M C W F G Y P B V K ' X J Q Z".split()


def _s3prl(module: str):
    return pytest.importorskip(module)


def _copy_rnns_into_ours(rnns: nn.Module, projector: nn.Linear, ours: BiLSTMCTCHead) -> None:
    with torch.no_grad():
        ours.projector.load_state_dict(projector.state_dict())
        for i, layer in enumerate(rnns.rnns):
            fwd, bwd = ours.lstm.forward_layers[i], ours.lstm.backward_layers[i]
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(fwd, f"{name}_l0").copy_(getattr(layer.layer, f"{name}_l0"))
                getattr(bwd, f"{name}_l0").copy_(getattr(layer.layer, f"{name}_l0_reverse"))
        ours.output.load_state_dict(rnns.linear.state_dict())


def test_bilstm_head_matches_s3prl_rnns_in_size_and_in_training_mode():
    """s3prl's ASR/SF head (projector + ``RNNs``, dropout after every layer) and ours: same parameter count, same
    output shape, and with the same weights and random state the same training-mode outputs (dropout included)."""
    model = _s3prl("s3prl.downstream.asr.model")
    dim, proj, hidden, vocab = 12, 16, 8, 32
    torch.manual_seed(0)
    projector = nn.Linear(dim, proj)
    rnns = model.RNNs(proj, vocab, 320, module="LSTM", bidirection=True, dim=[hidden, hidden], dropout=[0.2, 0.2],
                      layer_norm=[False, False], proj=[False, False], sample_rate=[1, 1], sample_style="concat",
                      total_rate=-1)
    ours = BiLSTMCTCHead(dim, vocab, proj_dim=proj, hidden_size=hidden, num_layers=2, dropout=0.2)
    count = lambda *ms: sum(p.numel() for m in ms for p in m.parameters())  # noqa: E731
    assert count(ours) == count(projector, rnns)
    _copy_rnns_into_ours(rnns, projector, ours)

    x = torch.randn(3, 9, dim)
    lengths = torch.tensor([9, 5, 2])
    valid = torch.arange(9)[None] < lengths[:, None]
    rnns.train(), ours.train()
    torch.manual_seed(1)
    logits, out_len = rnns(projector(x), lengths)
    theirs = torch.log_softmax(logits, dim=-1)
    torch.manual_seed(1)
    mine = ours(x, lengths)
    assert mine.shape == theirs.shape == (3, 9, vocab) and out_len.tolist() == lengths.tolist()
    assert torch.allclose(mine[valid], theirs[valid], atol=1e-5)
    # today's code had dropout only between the layers: the outputs would differ in training mode
    ours.lstm.dropout_after_last = False
    torch.manual_seed(1)
    assert not torch.allclose(ours(x, lengths)[valid], theirs[valid], atol=1e-3)


def test_asr_vocabulary_and_ctc_targets_match_s3prl(tmp_path: Path):
    """s3prl's fairseq dictionary has 32 symbols (<s> = blank, <pad>, </s>, <unk>, 28 characters) and a target of
    ``"HI THERE"`` is ``H I | T H E R E | </s>``; ours has the same outputs and the same token sequence."""
    dictionary = _s3prl("s3prl.downstream.asr.dictionary")
    from tasks.asr import SpeechRecognition
    from tasks.registry import build_task

    path = tmp_path / "char.dict"
    path.write_text("".join(f"{c} {1000 - i}\n" for i, c in enumerate(CHAR_DICT)))
    ref = dictionary.Dictionary.load(str(path))
    task = build_task("asr", tmp_path)
    assert isinstance(task, SpeechRecognition)
    assert len(task.vocab) == len(ref.symbols) == 32
    assert sorted(task.vocab[1:]) == sorted(s for s in ref.symbols if s != "<s>")
    for text in ["HI THERE", "IT'S A DOG", "A"]:
        # s3prl downstream/asr/dataset.py:121 then encode_line (append_eos)
        line = " ".join(list(text.replace(" ", "|"))) + " |"
        theirs = [ref.symbols[i] for i in ref.encode_line(line, line_tokenizer=lambda x: x.split(),
                                                          add_if_not_exist=False)]
        utt = Utterance(id="u", path=tmp_path / "u.flac", duration=1.0, transcript=text)
        assert task.ctc_targets(utt) == theirs


def test_head_parameter_count_matches_s3prl_asr_expert_sizes(tmp_path: Path):
    """The full-profile ASR head (1024 projector, 2 x BiLSTM 1024, 32 outputs) has s3prl's parameter count for a
    768-dim upstream."""
    model = _s3prl("s3prl.downstream.asr.model")
    from tasks.registry import build_task

    head = build_task("asr", tmp_path).build_head(768)
    rnns = model.RNNs(1024, 32, 320, module="LSTM", bidirection=True, dim=[1024, 1024], dropout=[0.2, 0.2],
                      layer_norm=[False, False], proj=[False, False], sample_rate=[1, 1], sample_style="concat",
                      total_rate=-1)
    theirs = sum(p.numel() for p in rnns.parameters()) + 768 * 1024 + 1024
    assert sum(p.numel() for p in head.parameters()) == theirs


def test_per_and_wer_equal_s3prl_metrics_on_the_same_predictions():
    """Our error rate (tasks.base.error_rate_percent) on the same references and hypotheses as s3prl's
    ``downstream/ctc/metric.py`` ``per``/``wer`` (x100)."""
    metric = _s3prl("s3prl.downstream.ctc.metric")
    from tasks.base import error_rate_percent

    refs = ["DH AH0 K AE1 T", "SIL HH EH0 L OW1", "AH0 B"]
    hyps = ["DH AH0 K AE1", "HH EH1 L OW1 OW1", "AH0 B"]
    ours = error_rate_percent([r.split() for r in refs], [h.split() for h in hyps])
    assert ours == pytest.approx(100 * metric.per(hyps, refs))
    words_ref = ["THE CAT SAT", "ON THE MAT TODAY"]
    words_hyp = ["THE CAT SAT DOWN", "ON MAT TODAY"]
    assert error_rate_percent([r.split() for r in words_ref], [h.split() for h in words_hyp]) == \
        pytest.approx(100 * metric.wer(words_hyp, words_ref))


def test_pr_vocabulary_and_targets_match_s3prl_libriphone(tmp_path: Path):
    """s3prl's libriphone tokenizer (``WordTextEncoder`` over ``vocab/phoneme.txt``: SIL, SPN, 69 stress-marked
    phones) has 74 outputs (<pad> = blank, <eos>, <unk>) and ends every target with <eos>; ours the same."""
    text = _s3prl("s3prl.downstream.ctc.text")
    from common.datasets import SUPERB_PHONES
    from tasks.registry import build_task

    assert len(SUPERB_PHONES) == 71 and SUPERB_PHONES[:5] == ("SIL", "SPN", "AA0", "AA1", "AA2")
    assert sum(p[-1].isdigit() for p in SUPERB_PHONES) == 15 * 3 and SUPERB_PHONES[-1] == "ZH"
    ref = text.WordTextEncoder(list(SUPERB_PHONES))
    task = build_task("pr", tmp_path)
    assert len(task.vocab) == ref.vocab_size == 74
    phones = "DH AH0 K AE1 T SIL S AE1 T".split()
    utt = Utterance(id="u", path=tmp_path / "u.flac", duration=1.0, label=phones)
    theirs = ["<blank>" if t == "<pad>" else t for t in (ref._vocab_list[i] for i in ref.encode(" ".join(phones)))]
    assert task.ctc_targets(utt) == theirs
    head = task.build_head(768)
    assert head(torch.zeros(1, 5, 768), torch.tensor([5])).shape == (1, 5, 74)
    # s3prl's PR head: projector Linear(768, 256) (ctc/expert.py) + FrameLevel(256, 74) (downstream/model.py)
    model = _s3prl("s3prl.downstream.model")
    theirs = nn.Linear(768, 256), model.FrameLevel(256, ref.vocab_size)
    assert sum(p.numel() for p in head.parameters()) == sum(p.numel() for m in theirs for p in m.parameters())


def _oov_librispeech(root: Path) -> None:
    """The fixture corpus plus one test utterance with a word CMUdict lacks (as LibriSpeech has names)."""
    from tests.fixtures.datasets import tone, write_librispeech

    write_librispeech(root)
    folder = root / "LibriSpeech" / "test-clean" / "77" / "300"
    folder.mkdir(parents=True)
    tone(folder / "77-300-0000.flac", 1)
    (folder / "77-300.trans.txt").write_text("77-300-0000 YES QZXVBRAND\n")


def test_pr_lexicon_keeps_every_utterance_and_without_it_the_row_says_why(tmp_path: Path, caplog):
    from tasks.registry import build_task

    _oov_librispeech(tmp_path / "data")
    plain = build_task("pr", tmp_path / "data")
    with caplog.at_level("WARNING"):
        test = plain.load_split("test")
    assert "77-300-0000" not in [u.id for u in test]
    assert "not comparable with SUPERB" in caplog.text
    assert plain.superb_comparability({"test": {"utterances with words missing from CMUdict (no phone targets)": 1}})

    lexicons = tmp_path / "lexicon"
    lexicons.mkdir()
    (lexicons / "librispeech-lexicon-200k-g2p.txt").write_text("YES\tY EH1 S\nNO N OW1\nGO G OW1\n")
    (lexicons / "librispeech-lexicon-allothers-g2p.txt").write_text("YES Y AE1 S\nQZXVBRAND K W IH1 Z B R AE2 N D\n")
    with_lexicon = build_task("pr", tmp_path / "data", [f"data.lexicon={lexicons}"])
    test = {u.id: u for u in with_lexicon.load_split("test")}
    assert test["77-300-0000"].label == "Y EH1 S K W IH1 Z B R AE2 N D".split()  # the first file's YES wins
    assert with_lexicon.superb_comparability({}) == []
    # a word the lexicons lack, a phone outside the set, a missing file: one line each
    (lexicons / "librispeech-lexicon-allothers-g2p.txt").write_text("YES Y AE1 S\n")
    with pytest.raises(ValueError, match="word 'QZXVBRAND' is not in data.lexicon"):
        build_task("pr", tmp_path / "data", [f"data.lexicon={lexicons}"]).load_split("test")
    (lexicons / "librispeech-lexicon-allothers-g2p.txt").write_text("QZXVBRAND K W IH Z\n")
    with pytest.raises(ValueError, match=r"allothers-g2p\.txt:1: phone\(s\) \['IH'\] are not in SUPERB's"):
        build_task("pr", tmp_path / "data", [f"data.lexicon={lexicons}"]).load_split("test")
    (lexicons / "librispeech-lexicon-allothers-g2p.txt").unlink()
    with pytest.raises(FileNotFoundError, match="librispeech-lexicon-allothers-g2p.txt not found there"):
        build_task("pr", tmp_path / "data", [f"data.lexicon={lexicons}"]).load_split("test")


def test_results_rows_say_whether_they_are_superb_comparable(tmp_path: Path):
    """Every row records ``superb_comparable`` and why not: the demo profile; a full-profile run with a changed
    setting and PR phones from CMUdict (an utterance left out); the lr alone and SUPERB's lexicon keep it
    comparable. The report lists the reasons."""
    import csv

    from benchmark.comparability import config_differences
    from benchmark.engine import RunOptions, run_task
    from benchmark.table import comparability_notes, latest_test_values, load_results
    from tests.fixtures.upstreams import TINY_UPSTREAM

    _oov_librispeech(tmp_path / "data")
    small = ["batch.max_seconds=4.0", "batch.eval_max_seconds=4.0", "train.eval_every=2", "optimizer.lr=0.003"]

    def run(name: str, profile: str | None, overrides: list[str]) -> dict:
        run_task(RunOptions(upstream=TINY_UPSTREAM, task="pr", data_root=tmp_path / "data", max_steps=2,
                            results_dir=tmp_path / name, profile=profile, cache_dir=tmp_path / "cache",
                            overrides=overrides))
        with open(tmp_path / name / "results.csv", newline="") as f:
            return next(r for r in csv.DictReader(f) if r["split"] == "test")

    demo = run("demo", "demo", ["train.eval_every=2"])
    assert demo["superb_comparable"] == "0" and "profile 'demo'" in demo["not_comparable_because"]
    full = run("full", None, small)
    reasons = full["not_comparable_because"]
    assert full["superb_comparable"] == "0"
    assert "batch.max_seconds=4.0" in reasons and "train.max_steps=2" in reasons and "eval_every" in reasons
    assert "PR phones from CMUdict" in reasons and "optimizer.lr" not in reasons
    assert config_differences({"optimizer": {"lr": 1e-2}, "data": {"lexicon": ""}},
                              {"optimizer": {"lr": 1e-3}, "data": {"lexicon": "/x"}}) == []
    notes = comparability_notes(latest_test_values(load_results(tmp_path / "full")))
    assert len(notes) == 1 and notes[0].startswith("not SUPERB-comparable: ") and "CMUdict" in notes[0]
