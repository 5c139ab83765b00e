"""The upstream contract: batch invariance (padding never leaks), input validation, registry, FBANK baseline."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from upstream import build_upstream, list_upstreams
from upstream.builtin import random_upstream
from upstream.hubert import HubertUpstream
from tests.fixtures.upstreams import perturb_, random_wavs, tiny_config

INVARIANCE_CONFIGS = {
    "group_norm_post_ln": tiny_config(),
    "layer_norm_stable_ln": tiny_config(extractor_mode="layer_norm", conv_bias=True, layer_norm_first=True),
    "fbank_student": tiny_config(front_end="fbank", pred_layer_ids=(1, 2)),
}


@pytest.mark.parametrize("name", sorted(INVARIANCE_CONFIGS))
def test_batch_invariance(name):
    """Each utterance's features alone == batched with longer and shorter ones (one padded batch, no buckets)."""
    up = random_upstream(INVARIANCE_CONFIGS[name], include_pred_heads=name == "fbank_student", bucket_fill=0.0)
    perturb_(up, seed=5)
    wavs = random_wavs([4000, 12000, 1500, 7777], seed=1)
    batched = up(wavs)
    for b, wav in enumerate(wavs):
        alone = up([wav])
        n = int(alone.lengths[0])
        assert int(batched.lengths[b]) == n
        for k, (h_alone, h_batch) in enumerate(zip(alone.hidden_states, batched.hidden_states)):
            err = (h_alone[0] - h_batch[b, :n]).abs().max().item()
            assert err < 1e-4, f"utterance {b}, hidden state {k}: {err}"
            if n < h_batch.shape[1]:
                assert h_batch[b, n:].abs().max().item() == 0.0, "padded frames must be zero"


def test_bucketed_extraction_equals_single_batch():
    up = random_upstream(tiny_config(), bucket_fill=0.7)
    perturb_(up, seed=6)
    wavs = random_wavs([16000, 2000, 15000, 3000, 800, 9000], seed=2)
    assert len(up.buckets([w.numel() for w in wavs])) > 1
    bucketed = up(wavs)
    up.bucket_fill = 0.0
    single = up(wavs)
    assert torch.equal(bucketed.lengths, single.lengths)
    for a, b in zip(bucketed.hidden_states, single.hidden_states):
        assert a.shape == b.shape and (a - b).abs().max() < 1e-4


def test_frames_and_downsample_rate():
    up = random_upstream(tiny_config())
    out = up(random_wavs([400, 16000, 32000]))
    assert out.lengths.tolist() == [1, 49, 99]  # HuBERT's CNN: 400-sample receptive field, 320 hop
    assert up.downsample_rate == 320 and up.sample_rate == 16000 and up.min_samples() == 400
    assert torch.equal(up.frames_for(torch.tensor([400, 16000, 32000])), out.lengths)


@pytest.mark.parametrize("name", ["tiny", "fbank"])
@pytest.mark.parametrize("bad, expected", [
    ("empty", "utterance 1: 0 samples is shorter than one frame"),
    ("short", "utterance 1: .* shorter than one frame"),
    ("nan", "utterance 1: waveform contains NaN or inf"),
    ("inf", "utterance 1: waveform contains NaN or inf"),
    ("stereo", r"utterance 1: expected a 1-D mono waveform, got shape \(2, 4000\)"),
    ("int", "utterance 1: expected a float waveform"),
])
def test_bad_input_names_the_utterance(name, bad, expected):
    up = random_upstream(tiny_config()) if name == "tiny" else build_upstream("fbank")
    good = torch.zeros(4000)
    wav = {"empty": torch.zeros(0), "short": torch.zeros(up.min_samples() - 1),
           "nan": torch.full((4000,), float("nan")), "inf": torch.full((4000,), float("inf")),
           "stereo": torch.zeros(2, 4000), "int": torch.zeros(4000, dtype=torch.int16)}[bad]
    with pytest.raises(ValueError, match=expected):
        up([good, wav])


def test_empty_batch_and_bare_tensor_are_rejected():
    up = build_upstream("fbank")
    with pytest.raises(ValueError, match="non-empty list"):
        up([])
    with pytest.raises(ValueError, match="wrap it in a list"):
        up(torch.zeros(4000))


def test_registry_names_and_unknown_name():
    assert {"fbank", "fbank_no_cmvn", "hubert_base", "hubert_large", "distilhubert", "hubert_mini",
            "distilhubert_mini"} <= set(list_upstreams())
    with pytest.raises(ValueError, match="Registered: .*hubert_base"):
        build_upstream("no_such_upstream")


def test_builtin_sizes():
    base_heads = build_upstream("distilhubert", random_init=True)
    assert isinstance(base_heads, HubertUpstream)
    n_student = sum(p.numel() for n, p in base_heads.model.named_parameters() if not n.startswith("pred_heads"))
    assert abs(n_student / 1e6 - 23.49) < 0.01  # DistilHuBERT paper: 23.49 M without heads
    assert base_heads.cfg.pred_layer_ids == (4, 8, 12) and not base_heads.cfg.feat_proj_layer_norm
    # the recipe's teacher architecture (the shipped weights may come from another recipe: their own test checks them)
    teacher, student = build_upstream("hubert_mini", random_init=True), build_upstream("distilhubert_mini")
    n_teacher = sum(p.numel() for p in teacher.parameters())
    assert sum(p.numel() for p in student.model.parameters()) <= 0.25 * n_teacher  # prediction heads included
    assert len(teacher(random_wavs([4000])).hidden_states) == 13
    # the registry's architecture, or the demo's student (its heads' outputs appended) once the demo has run
    assert len(student(random_wavs([4000])).hidden_states) == 3 + 3 * student.include_pred_heads


def test_weights_hash_tracks_weights_and_config():
    a, b = random_upstream(tiny_config(), seed=0), random_upstream(tiny_config(), seed=0)
    assert a.weights_hash() == b.weights_hash()
    assert random_upstream(tiny_config(), seed=1).weights_hash() != a.weights_hash()
    fb = build_upstream("fbank")
    assert fb.weights_hash() == build_upstream("fbank").weights_hash()
    assert fb.weights_hash() != build_upstream("fbank", cmvn=False).weights_hash()


@pytest.mark.parametrize("name, s3prl_config", [("fbank", "fbank.yaml"), ("fbank_no_cmvn", "fbank_no_cmvn.yaml")])
def test_fbank_matches_s3prl_baseline(name, s3prl_config):
    extracter = pytest.importorskip("s3prl.upstream.baseline.extracter")
    import yaml

    config = yaml.safe_load((Path(extracter.__file__).parent / s3prl_config).read_text())  # s3prl's own recipe
    ref, dim, shift = extracter.get_extracter(config)
    assert dim == 240 and shift == 10.0
    up = build_upstream(name)
    assert up.cmvn == (name == "fbank")
    wavs = random_wavs([16000, 5000], seed=4)
    out = up(wavs)
    assert len(out.hidden_states) == 1 and out.hidden_states[0].shape[-1] == 240 and up.downsample_rate == 160
    for b, wav in enumerate(wavs):
        expected = ref(wav)
        n = int(out.lengths[b])
        assert n == expected.shape[0] == int(up.frames_for(torch.tensor(wav.numel())))
        assert (out.hidden_states[0][b, :n] - expected).abs().max() < 1e-5
        assert out.hidden_states[0][b, n:].abs().sum() == 0


def test_cmvn_makes_every_utterances_mean_feature_zero_and_no_cmvn_keeps_it():
    """s3prl issue 316: after per-utterance CMVN, mean pooling (what a linear projector + mean-pool head sees, since
    both are linear) gives every utterance the same vector; without CMVN utterances stay apart."""
    wavs = random_wavs([16000, 9000], seed=5)
    wavs[1] = wavs[1] * 0.1  # another loudness: the per-utterance mean log-mel differs
    pooled = {}
    for name in ("fbank", "fbank_no_cmvn"):
        out = build_upstream(name)(wavs)
        pooled[name] = [out.hidden_states[0][b, :int(out.lengths[b])].mean(0) for b in range(2)]
    assert all(v.abs().max() < 1e-4 for v in pooled["fbank"])
    assert (pooled["fbank_no_cmvn"][0] - pooled["fbank_no_cmvn"][1]).abs().max() > 1.0
    with pytest.raises(ValueError, match="fbank_no_cmvn: 'cmvn' is fixed"):
        build_upstream("fbank_no_cmvn", cmvn=True)
