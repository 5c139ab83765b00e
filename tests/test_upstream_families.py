"""wav2vec2, WavLM and data2vec-audio Hugging Face dirs (tiny random configs saved with save_pretrained; nothing is
downloaded): parity with transformers' own forward on one utterance, batch invariance, our format round trip, and
the unsupported-family message."""
from __future__ import annotations

import json

import pytest
import torch
import transformers

from tests.fixtures.upstreams import random_wavs, tiny_family_model
from upstream import build_upstream
from upstream.checkpoints import ConversionError, load_upstream_from_path, save_upstream
from upstream.hf_families import TransformersUpstream
from upstream.hubert import HubertUpstream

LENGTHS = [400, 1234, 16000, 5000]
FAMILIES = ["wav2vec2", "wav2vec2_stable_ln", "wavlm", "wavlm_stable_ln", "data2vec-audio"]


def hf_states(model, wav: torch.Tensor) -> list[torch.Tensor]:
    """transformers' hidden states: the N inputs of the layers, then ``last_hidden_state`` (see
    test_upstream_parity_hf.py for the convention)."""
    with torch.no_grad():
        out = model(wav[None], output_hidden_states=True)
    return list(out.hidden_states[:-1]) + [out.last_hidden_state]


def max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    assert len(a) == len(b)
    assert all(x.shape == y.shape for x, y in zip(a, b)), [(x.shape, y.shape) for x, y in zip(a, b)]
    return max((x - y).abs().max().item() for x, y in zip(a, b))


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, tmp_path_factory):
    model = tiny_family_model(request.param)
    path = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(path)
    return request.param, model, path


def test_parity_with_transformers_and_batch_invariance(family):
    name, model, path = family
    up = build_upstream(path, bucket_fill=0.0)  # one padded batch: the hardest case for invariance
    expected = HubertUpstream if name.startswith("wav2vec2") else TransformersUpstream
    assert isinstance(up, expected)
    assert up.downsample_rate == 320
    wavs = random_wavs(LENGTHS)
    batch = up(wavs)
    assert len(batch.hidden_states) == model.config.num_hidden_layers + 1
    for i, wav in enumerate(wavs):
        alone = up([wav])
        assert max_diff(alone.hidden_states, hf_states(model, wav)) < 1e-4
        n = int(batch.lengths[i])
        assert n == alone.hidden_states[0].shape[1] == int(up.frames_for(torch.tensor([wav.numel()]))[0])
        assert max_diff([h[0] for h in alone.hidden_states], [h[i, :n] for h in batch.hidden_states]) < 1e-4
        assert all(not h[i, n:].any() for h in batch.hidden_states)


@pytest.mark.parametrize("name", ["wavlm", "data2vec-audio"])
def test_transformers_own_batched_forward_leaks_padding(name):
    """Why TransformersUpstream runs the modules itself: transformers' forward on a padded batch changes a short
    utterance's features (group norm over padding for WavLM Base; padded frames entering the stacked positional
    convs for data2vec-audio), while ours does not."""
    model = tiny_family_model(name)
    wavs = random_wavs([3000, 16000])
    padded = torch.zeros(2, 16000)
    padded[0, :3000], padded[1] = wavs[0], wavs[1]
    mask = (torch.arange(16000)[None] < torch.tensor([[3000], [16000]])).long()
    with torch.no_grad():
        theirs = model(padded, attention_mask=mask).last_hidden_state[0]
    alone = hf_states(model, wavs[0])[-1][0]
    ours = TransformersUpstream(model, bucket_fill=0.0)(wavs)
    n = alone.shape[0]
    assert (theirs[:n] - alone).abs().max().item() > 1e-3
    assert (ours.hidden_states[-1][0, :n] - alone).abs().max().item() < 1e-4


@pytest.mark.parametrize("name", ["wavlm", "data2vec-audio"])
def test_task_model_dir_and_our_format_round_trip(name, tmp_path):
    """A ForCTC dir loads its encoder (head dropped); save_upstream/load keeps transformers' layout exactly."""
    ctc_cls = {"wavlm": transformers.WavLMForCTC, "data2vec-audio": transformers.Data2VecAudioForCTC}[name]
    base = tiny_family_model(name)
    ctc = ctc_cls(base.config.__class__(**{**base.config.to_dict(), "vocab_size": 5}))
    ctc.base_model.load_state_dict(base.state_dict())
    ctc.save_pretrained(tmp_path / "ctc")
    up = build_upstream(tmp_path / "ctc")
    wav = random_wavs([7000])[0]
    assert max_diff(up([wav]).hidden_states, hf_states(base, wav)) < 1e-4
    save_upstream(up, tmp_path / "ours")
    again = load_upstream_from_path(tmp_path / "ours")
    assert isinstance(again, TransformersUpstream) and again.weights_hash() == up.weights_hash()
    assert max_diff(again([wav]).hidden_states, up([wav]).hidden_states) == 0


def test_incomplete_transformers_dir_is_refused(tmp_path):
    model = tiny_family_model("wavlm")
    model.save_pretrained(tmp_path)
    import safetensors.torch

    state = safetensors.torch.load_file(str(tmp_path / "model.safetensors"))
    del state["encoder.layers.1.feed_forward.output_dense.weight"]
    safetensors.torch.save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(ConversionError, match="weights missing.*output_dense"):
        build_upstream(tmp_path)


def test_unsupported_family_names_it_and_lists_the_supported(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "whisper"}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ConversionError) as err:
        build_upstream(tmp_path)
    assert "model_type 'whisper' is not a supported upstream family" in str(err.value)
    assert "supported: hubert, wav2vec2, wavlm, data2vec-audio" in str(err.value)


def test_unsupported_family_exits_2_in_the_benchmark_cli(tmp_path, capsys):
    from tests.fixtures.datasets import write_speech_commands

    import run_benchmark

    (tmp_path / "up").mkdir()
    (tmp_path / "up" / "config.json").write_text(json.dumps({"model_type": "unispeech-sat"}))
    write_speech_commands(tmp_path / "data")
    rc = run_benchmark.main(["--upstream", str(tmp_path / "up"), "--task", "ks", "--data-root",
                             str(tmp_path / "data"), "--results-dir", str(tmp_path / "results")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "'unispeech-sat' is not a supported upstream family" in err and "Traceback" not in err
