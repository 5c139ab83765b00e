"""Our checkpoint format, format detection errors, and pickle safety."""
from __future__ import annotations

import pickle

import pytest
import torch

from upstream import build_upstream
from upstream.builtin import WeightsRequiredError, random_upstream
from upstream.checkpoints import ConversionError, UnsafeCheckpointError, save_upstream
from tests.fixtures.unsafe import Payload
from tests.fixtures.upstreams import foreign_class, perturb_, random_wavs, tiny_config, tiny_hf_config


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
    with pytest.raises(UnsafeCheckpointError, match="--trust-pickle") as err:
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


def _spoofed_dictionary_file(tmp_path, marker, how):
    """A pickle that uses the allow-listed name fairseq.data.dictionary.Dictionary to smuggle something in."""
    path = tmp_path / f"spoof_{how}.pt"
    if how == "payload_in_state":  # the record's attributes carry a payload
        with foreign_class("fairseq.data.dictionary.Dictionary") as cls:
            record = cls()
            record.symbols = Payload(marker)
            torch.save({"model": {}, "cfg": {}, "task_state": {"dictionaries": [record]}}, path)
    elif how == "called_with_args":  # the name is called (pickle REDUCE) with arguments, as a function would be
        with foreign_class("fairseq.data.dictionary.Dictionary",
                           {"__reduce__": lambda self: (type(self), (str(marker), "w"))}) as cls:
            torch.save({"model": {}, "cfg": {}, "task_state": {"dictionaries": [cls()]}}, path)
    elif how == "other_fairseq_class":  # a fairseq class that is not on the inert list
        with foreign_class("fairseq.models.hubert.HubertModel") as cls:
            torch.save({"model": {}, "cfg": {}, "obj": cls()}, path)
    return path


@pytest.mark.parametrize("how,error,named", [("payload_in_state", UnsafeCheckpointError, "io.open"),
                                             ("called_with_args", ConversionError, "spoof_called_with_args.pt"),
                                             ("other_fairseq_class", UnsafeCheckpointError,
                                              "fairseq.models.hubert.HubertModel")])
def test_allow_listed_foreign_name_cannot_smuggle_code(how, error, named, tmp_path):
    marker = tmp_path / "PWNED"
    path = _spoofed_dictionary_file(tmp_path, marker, how)
    with pytest.raises(error) as err:
        build_upstream(path)
    assert not marker.exists(), "the pickle payload ran"
    assert named in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_truncated_and_garbage_checkpoints_are_conversion_errors(tmp_path):
    torch.save({"model": {"w": torch.zeros(1000)}, "cfg": {}}, tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.pt").write_bytes(b"\x00not a checkpoint" * 10)
    (tmp_path / "empty.pt").write_bytes(b"")
    for name in ("truncated.pt", "garbage.pt", "empty.pt"):
        with pytest.raises(ConversionError, match=f"{name}: not a readable torch checkpoint") as err:
            build_upstream(tmp_path / name)
        assert "\n" not in str(err.value)


def test_pretrained_names_need_weights_or_an_explicit_random_init(tmp_path):
    for name in ("hubert_base", "hubert_large", "distilhubert"):
        with pytest.raises(WeightsRequiredError, match=f"{name}.*--upstream-ckpt PATH.*--random-init"):
            build_upstream(name)
    random = build_upstream("distilhubert", random_init=True)
    assert random.random_init and random.cfg.layers == 2
    assert random.weights_hash() == build_upstream("distilhubert", random_init=True).weights_hash()
    saved = perturb_(random_upstream(tiny_config(), seed=5))
    save_upstream(saved, tmp_path / "w")
    loaded = build_upstream("distilhubert", checkpoint=tmp_path / "w")
    assert not loaded.random_init and loaded.weights_hash() == saved.weights_hash()
    assert not build_upstream(tmp_path / "w").random_init
    with pytest.raises(ValueError, match="exclude each other"):
        build_upstream("hubert_base", checkpoint=tmp_path / "w", random_init=True)
    with pytest.raises(FileNotFoundError, match="missing.pt: no such checkpoint"):
        build_upstream("hubert_base", checkpoint=tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="'fbank' has no weights"):
        build_upstream("fbank", checkpoint=tmp_path / "w")
    with pytest.raises(ValueError, match="'fbank' has no weights"):
        build_upstream("fbank", random_init=True)
    with pytest.raises(ValueError, match="is a checkpoint path already"):
        build_upstream(tmp_path / "w", checkpoint=tmp_path / "w")


def test_trust_pickle_uses_the_safe_loader_first_and_names_a_missing_module(tmp_path):
    """trust_pickle=True on a fairseq file no longer needs fairseq (the safe loader reads it); a legacy pickle of a
    module that is not installed is one ConversionError naming the module, not a traceback."""
    with foreign_class("fairseq.data.dictionary.Dictionary") as dictionary_cls:
        torch.save({"model": {}, "cfg": {}, "task_state": {"dictionaries": [dictionary_cls()]}}, tmp_path / "fs.pt")
    with foreign_class("somelib.models.Thing") as thing_cls:
        torch.save({"model": {}, "cfg": {}, "obj": thing_cls()}, tmp_path / "legacy.pt")
    from upstream.checkpoints import safe_torch_load

    assert "task_state" in safe_torch_load(tmp_path / "fs.pt", trust_pickle=True)
    with pytest.raises(ConversionError, match="legacy.pt: the full unpickle needs the module 'somelib'"):
        safe_torch_load(tmp_path / "legacy.pt", trust_pickle=True)
