"""A new upstream is one file: modules of upstream/ register themselves on first lookup (README's mfcc example)."""
import torch

from upstream import build_upstream, list_upstreams


def test_mfcc_example_is_discovered_and_follows_the_contract():
    assert {"mfcc", "fbank", "hubert_mini"} <= set(list_upstreams())
    up = build_upstream("mfcc")
    wavs = [torch.randn(16000) * 0.1, torch.randn(8000) * 0.1]
    out = up(wavs)
    assert len(out.hidden_states) == 1 and out.hidden_states[0].shape[-1] == 40
    assert out.lengths.tolist() == up.frames_for(torch.tensor([16000, 8000])).tolist() == [101, 51]
    alone = up([wavs[1]]).hidden_states[0][0]
    assert torch.allclose(out.hidden_states[0][1, :51], alone, atol=1e-4)
    assert torch.count_nonzero(out.hidden_states[0][1, 51:]) == 0  # padding frames hold zeros
