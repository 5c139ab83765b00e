"""The shipped teacher: scripts/ship_teacher.py on a tiny pretraining run, then ``build_upstream("hubert_mini")``
loading exactly those weights (sha256 checked, fp16 on disk, fp32 in memory), and the explicit random-init opt-in."""
from __future__ import annotations

import json

import pytest
import torch

import run_pretrain

from tests.fixtures.datasets import write_tone_corpus
from tests.fixtures.scripts import load_script
from tests.fixtures.upstreams import tiny_teacher_config
from upstream import build_upstream
from upstream.builtin import ShippedWeightsError
from upstream.hubert import HubertUpstream
import upstream.builtin as builtin


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A finished tiny run_pretrain.py output (both iterations, a few updates each)."""
    tmp = tmp_path_factory.mktemp("pretrain")
    corpus = tmp / "pool"
    write_tone_corpus(corpus / "unlabeled", count=4)
    (corpus / ".synth").mkdir()
    (corpus / ".synth" / "build.json").write_text(json.dumps({"size": "tiny", "seed": 7}))  # as tasks.synth writes
    cfg = tiny_teacher_config(codewords=0)
    args = ["--config", "configs/pretrain/hubert_mini.yaml", "--data", str(corpus / "unlabeled"),
            "--output", str(tmp / "teacher"), "--max-steps", "4"]
    for o in [f"model.conv_layers={[list(c) for c in cfg.conv_layers]}", f"model.embed_dim={cfg.embed_dim}",
              f"model.ffn_dim={cfg.ffn_dim}", f"model.heads={cfg.heads}", "model.layers=3", "model.conv_pos=8",
              "model.conv_pos_groups=4", "model.final_dim=8", "labels.clusters=6", "labels.kmeans_init_runs=1",
              "iteration2.enabled=true", "iteration2.layer=2", "iteration2.clusters=4", "iteration2.max_steps=3",
              "run.data.max_batch_seconds=4.0", "run.data.max_item_seconds=1.5", "run.threads=1",
              "front_end_warmup.steps=2"]:
        args += ["-o", o]
    assert run_pretrain.main(args) == 0
    return tmp / "teacher"


@pytest.fixture
def shipped(pretrained, tmp_path, monkeypatch, capsys):
    """The tiny teacher shipped into a temporary upstream/pretrained/, its printed sha256 recorded."""
    dest = tmp_path / "pretrained" / "hubert_mini"
    assert load_script("scripts/ship_teacher.py").main([str(pretrained), "--dest", str(dest)]) == 0
    out = capsys.readouterr().out
    sha = next(line.split()[1] for line in out.splitlines() if line.startswith("sha256 "))
    assert f"SHIPPED_SHA256 = {{'hubert_mini': '{sha}'}}" in out  # the line to paste into upstream/builtin.py
    monkeypatch.setattr(builtin, "SHIPPED_DIR", tmp_path / "pretrained")
    monkeypatch.setitem(builtin.SHIPPED_SHA256, "hubert_mini", sha)
    return dest


def test_ship_teacher_writes_fp16_weights_and_full_provenance(pretrained, shipped):
    from safetensors import safe_open

    with safe_open(str(shipped / "model.safetensors"), "pt") as f:
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}
    assert dtypes == {torch.float16}
    summary = json.loads((pretrained / "pretrain_summary.json").read_text())
    prov = (shipped / "PROVENANCE.md").read_text()
    sha = builtin.SHIPPED_SHA256["hubert_mini"]
    for expected in [summary["command"], summary["commit"], summary["machine"], sha, "4 files",
                     "synthetic corpus size `tiny`, seed 7", "iter1 4", "iter2 3", "iter1_front_end 2",
                     "training `run.seed` 0", "wall time"]:
        assert expected in prov, expected
    assert "run_pretrain.py --config configs/pretrain/hubert_mini.yaml" in summary["command"]
    acc = [json.loads(line)["masked_accuracy"]
           for line in (pretrained / "iter2" / "loss_history.jsonl").read_text().splitlines()]
    assert f"iter2 {100 * sum(acc) / len(acc):.1f}%" in prov  # fewer than 10 updates: the mean of all of them


def test_hubert_mini_loads_exactly_the_shipped_weights_as_fp32(pretrained, shipped):
    teacher = build_upstream("hubert_mini")
    assert all(p.dtype == torch.float32 for p in teacher.parameters())
    assert teacher.weights_hash() == build_upstream(shipped).weights_hash()
    original = build_upstream(pretrained)
    wav = [torch.randn(8000, generator=torch.Generator().manual_seed(0)) * 0.1]
    a, b = teacher(wav).hidden_states[-1], original(wav).hidden_states[-1]
    assert (a - b).abs().max() < 0.05 * b.abs().max()  # fp16 rounding only


def test_a_changed_shipped_file_is_refused_with_one_clear_error(shipped):
    weights = shipped / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ShippedWeightsError, match=r"model\.safetensors: sha256 [0-9a-f]{64} differs from the recorded"):
        build_upstream("hubert_mini")


def test_missing_or_unrecorded_shipped_weights_need_an_explicit_choice(tmp_path, monkeypatch):
    monkeypatch.setattr(builtin, "SHIPPED_DIR", tmp_path)
    with pytest.raises(ShippedWeightsError, match="no shipped weights in .*random_init=True"):
        build_upstream("hubert_mini")
    assert not builtin.has_shipped_weights("hubert_mini")
    fresh = build_upstream("hubert_mini", random_init=True)  # the opt-in: the recipe's architecture, random weights
    assert fresh.cfg == builtin.HUBERT_MINI
    with pytest.raises(ValueError, match="exclude each other"):
        build_upstream("hubert_mini", random_init=True, checkpoint=tmp_path)
    (tmp_path / "hubert_mini").mkdir()
    for name in ("model.safetensors", "upstream.yaml"):
        (tmp_path / "hubert_mini" / name).write_text("x")
    monkeypatch.setitem(builtin.SHIPPED_SHA256, "hubert_mini", None)
    with pytest.raises(ShippedWeightsError, match="no sha256 recorded for 'hubert_mini'"):
        build_upstream("hubert_mini")


def test_ship_teacher_bad_inputs_exit_2_with_one_line_and_keep_the_previous_folder(pretrained, shipped, tmp_path,
                                                                                     capsys):
    ship = load_script("scripts/ship_teacher.py")
    before = (shipped / "model.safetensors").read_bytes()
    assert ship.main([str(tmp_path / "nope"), "--dest", str(shipped)]) == 2
    assert "nope: no such folder" in capsys.readouterr().err
    assert ship.main([str(pretrained), "--dest", str(shipped), "--max-mb", "0.001"]) == 2
    err = capsys.readouterr().err
    assert "over --max-mb 0.001" in err and len(err.strip().splitlines()) == 1
    older = tmp_path / "older"  # an output written before run_pretrain.py recorded its command
    older.mkdir()
    for f in pretrained.iterdir():
        if f.is_file():
            (older / f.name).write_bytes(f.read_bytes())
    summary = json.loads((older / "pretrain_summary.json").read_text())
    del summary["command"]
    (older / "pretrain_summary.json").write_text(json.dumps(summary))
    assert ship.main([str(older), "--dest", str(shipped)]) == 2
    err = capsys.readouterr().err
    assert "pretrain_summary.json: no 'command' recorded" in err and "pass --command" in err
    assert (shipped / "model.safetensors").read_bytes() == before  # nothing already shipped was lost
    assert not [p for p in shipped.parent.iterdir() if p.name.startswith(".")]  # no half-built folder left


def test_benchmark_cli_without_shipped_weights_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    import run_benchmark
    from tests.fixtures.datasets import write_speech_commands

    write_speech_commands(tmp_path / "data")
    monkeypatch.setattr(builtin, "SHIPPED_DIR", tmp_path / "empty")
    code = run_benchmark.main(["--upstream", "hubert_mini", "--task", "ks", "--data-root", str(tmp_path / "data"),
                               "--results-dir", str(tmp_path / "res"), "--max-steps", "1", "--no-cache"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(err) == 1 and "hubert_mini: no shipped weights in" in err[0]
    assert "--random-init" in err[0]


def test_ship_teacher_from_an_iteration_checkpoint(pretrained, tmp_path, capsys):
    """--checkpoint ships that iteration's model; provenance counts the stages up to it, not the later ones."""
    from pretrain.export import model_from_checkpoint

    ship = load_script("scripts/ship_teacher.py")
    ckpt = pretrained / "iter1" / "checkpoints" / "last.pt"
    dest = tmp_path / "iter1_teacher"
    assert ship.main([str(pretrained), "--dest", str(dest), "--checkpoint", str(ckpt),
                      "--note", "82.8 CPU minutes"]) == 0
    prov = (dest / "PROVENANCE.md").read_text()
    assert "iter1 4" in prov and "iter1_front_end 2" in prov and "iter2" not in prov.split("## Pretraining")[0]
    assert "| note | 82.8 CPU minutes |" in prov and "iter1 is the shipped model" in prov
    model, _ = model_from_checkpoint(ckpt)
    shipped = build_upstream(str(dest))
    wav = [torch.randn(8000)]
    with torch.inference_mode():
        ours = shipped(wav).hidden_states[-1]
        expected = HubertUpstream(model.half().float())(wav).hidden_states[-1]
    torch.testing.assert_close(ours, expected)
    capsys.readouterr()
    stray = tmp_path / "elsewhere.pt"
    stray.write_bytes(ckpt.read_bytes())
    assert ship.main([str(pretrained), "--dest", str(dest), "--checkpoint", str(stray)]) == 2
    err = capsys.readouterr().err.strip()
    assert "elsewhere.pt: expected a checkpoint inside" in err and "\n" not in err
    assert (dest / "PROVENANCE.md").read_text() == prov  # the refused run left the shipped folder as it was
