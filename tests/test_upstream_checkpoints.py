"""Our checkpoint format, format detection errors, and pickle safety."""
from __future__ import annotations

import pickle

import pytest
import torch

from upstream import build_upstream
from upstream.builtin import random_upstream
from upstream.checkpoints import ConversionError, UnsafeCheckpointError, save_upstream
from tests.fixtures.upstreams import perturb_, random_wavs, tiny_config, tiny_hf_config


class Payload:
    """Unpickling this would create the marker file: the test proves it never happens."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_own_format_round_trip(tmp_path):
    up = perturb_(random_upstream(tiny_config(pred_layer_ids=(1, 2), pred_dim=48), include_pred_heads=True), seed=7)
    save_upstream(up, tmp_path / "mine")
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["model.safetensors", "upstream.yaml"]
    loaded = build_upstream(tmp_path / "mine")
    assert loaded.cfg == up.cfg and loaded.include_pred_heads
    assert loaded.weights_hash() == up.weights_hash()
    wavs = random_wavs([3000, 5000])
    for a, b in zip(loaded(wavs).hidden_states, up(wavs).hidden_states):
        assert torch.equal(a, b)


def test_torn_save_is_detected(tmp_path):
    save_upstream(random_upstream(tiny_config(), seed=0), tmp_path / "a")
    save_upstream(random_upstream(tiny_config(), seed=1), tmp_path / "b")
    (tmp_path / "a" / "model.safetensors").write_bytes((tmp_path / "b" / "model.safetensors").read_bytes())
    with pytest.raises(ConversionError, match="checksum"):
        build_upstream(tmp_path / "a")


def test_unknown_format_lists_what_was_tried(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    for path in (tmp_path, tmp_path / "other.pt"):
        with pytest.raises(ConversionError, match="Tried: ours .*Hugging Face.*s3prl distiller.*fairseq HuBERT"):
            build_upstream(path)


@pytest.mark.parametrize("layout", ["torch_zip", "raw_pickle", "hf_bin"])
def test_malicious_pickle_never_runs(layout, tmp_path):
    marker = tmp_path / "PWNED"
    if layout == "torch_zip":
        path = tmp_path / "evil.pt"
        torch.save({"model": Payload(marker), "cfg": {}}, path)
    elif layout == "raw_pickle":
        path = tmp_path / "evil.ckpt"
        with open(path, "wb") as f:
            pickle.dump({"Distiller": Payload(marker), "Config": {}}, f, protocol=2)
    else:  # a Hugging Face dir whose pytorch_model.bin carries the payload
        path = tmp_path / "hf"
        path.mkdir()
        tiny_hf_config().save_pretrained(path)
        torch.save({"encoder.layer_norm.weight": Payload(marker)}, path / "pytorch_model.bin")
    with pytest.raises(UnsafeCheckpointError, match="trust_pickle=True") as err:
        build_upstream(path)
    assert not marker.exists(), "the pickle payload ran"
    if layout != "raw_pickle":  # zip checkpoints: the offending global is named
        assert "open" in str(err.value)


def test_hubert_mini_loads_a_checkpoint_given_and_its_random_architecture_only_on_request(tmp_path):
    saved = random_upstream(tiny_config(), seed=3)
    save_upstream(saved, tmp_path / "demo")
    assert build_upstream("hubert_mini", checkpoint=tmp_path / "demo").weights_hash() == saved.weights_hash()
    fresh = build_upstream("hubert_mini", random_init=True)  # the explicit opt-in: the demo recipe's architecture
    import upstream.builtin as builtin
    from common.config import load_yaml

    recipe = load_yaml(builtin.HUBERT_MINI_RECIPE)["model"]
    assert fresh.cfg.embed_dim == recipe["embed_dim"] and fresh.cfg.layers == recipe["layers"]


def test_demo_student_is_found_in_the_demo_dir(tmp_path, monkeypatch):
    import upstream.builtin as builtin

    saved = random_upstream(tiny_config(), seed=4)
    save_upstream(saved, tmp_path / "results" / "demo" / "distilhubert_mini_cnn")
    monkeypatch.setattr(builtin, "REPO_ROOT", tmp_path)
    monkeypatch.delenv("DISTILSUPERB_DISTILHUBERT_MINI", raising=False)
    assert build_upstream("distilhubert_mini").weights_hash() == saved.weights_hash()
