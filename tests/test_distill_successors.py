"""The successors' recipes (FitHuBERT, MaskHuBERT, ARMHuBERT, STaRHuBERT, DPHuBERT) end to end on a tiny random
teacher: each trains and lowers its loss, its output folder is an upstream with the paper's hidden-state convention,
kill -9 + --resume ends with the same weights, and DPHuBERT's dense export has the parameters it reports and the
outputs of the gated model."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import safetensors.torch
import torch

import run_distill
from common.config import load_config
from distill.config import DistillConfig
from distill.successors import SuccessorObjective
from tests.fixtures.processes import kill_at_first_checkpoint
from tests.fixtures.upstreams import random_wavs, tiny_teacher, write_teacher_and_audio
from upstream import build_upstream
from upstream.base import count_parameters
from upstream.compact import CompactUpstream, parameter_count

ROOT = Path(__file__).resolve().parents[1]
TINY = ["run.data.max_batch_seconds=4.0", "run.data.max_item_seconds=1.5", "run.threads=1", "run.log_every=1",
        "run.optim.lr=3e-3", "run.optim.warmup_ratio=0.0"]
THIN = ["student.layers=3", "student.width=16", "student.heads=2", "student.head_dim=8", "student.ffn_dim=24",
        "student.conv_layers=[[8,10,5],[8,1,1],[8,3,2],[8,3,2],[8,3,2],[8,3,2],[16,2,2],[16,2,2]]"]
# recipe → (overrides fitting the 6-layer 32-dim tiny teacher, loss parts, hidden states of the exported upstream)
RECIPES = {
    "fithubert_mini": (THIN + ["objective.hint_layers=1"], ["last", "hint"], 3),
    "maskhubert_mini": (THIN + ["objective.hint_layers=2"], ["last", "hint"], 3),
    "armhubert_mini": (THIN + ["objective.hint_layers=2", "student.reuse_attention=[false,true,true]"],
                       ["last", "hint"], 3),
    "starhubert_mini": (THIN + ["student.reuse_attention=[false,true,false]"], ["tgm_layerwise", "tgm_intra"], 3),
    "dphubert_mini": (["objective.pruning.warmup_steps=4",
                       "objective.pruning.target_sparsity=0.5"], ["layer0", "layer6", "expected_sparsity"], 7),
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return write_teacher_and_audio(tmp_path_factory.mktemp("successors"))


def history(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "loss_history.jsonl").read_text().splitlines()]


def args(setup: Path, recipe: str, out: str, steps: int, *extra: str) -> list[str]:
    cmd = ["--config", f"configs/distill/{recipe}.yaml", "--teacher", str(setup / "teacher"), "--data",
           str(setup / "audio"), "--output", str(setup / out), "--max-steps", str(steps)]
    for o in TINY + list(RECIPES[recipe][0]) + list(extra):
        cmd += ["-o", o]
    return cmd


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_each_successor_trains_lowers_its_loss_and_exports_an_upstream(setup, recipe):
    steps = 12
    assert run_distill.main(args(setup, recipe, f"out_{recipe}", steps)) == 0
    records = history(setup / f"out_{recipe}")
    assert [r["step"] for r in records] == list(range(1, steps + 1))
    assert all(p in records[-1] or p == "hint" for p in RECIPES[recipe][1])
    key = "layer6" if recipe == "dphubert_mini" else "loss"  # DPHuBERT's total includes the growing penalty
    first, last = sum(r[key] for r in records[:3]) / 3, sum(r[key] for r in records[-3:]) / 3
    assert last < first, f"{recipe}: the loss did not go down ({first:.4f} -> {last:.4f})"
    upstream = build_upstream(str(setup / f"out_{recipe}"))
    assert isinstance(upstream, CompactUpstream)
    wavs = random_wavs([4000, 2500])
    out = upstream(wavs)
    assert len(out.hidden_states) == RECIPES[recipe][2]
    assert int(out.lengths[1]) == int(upstream.frames_for(torch.tensor([2500]))[0])
    alone = upstream([wavs[1]]).hidden_states[-1][0]
    torch.testing.assert_close(out.hidden_states[-1][1, : alone.shape[0]], alone, atol=1e-5, rtol=1e-4)


def test_fithubert_runs_its_layers_at_40_ms(setup):
    upstream = build_upstream(str(setup / "out_fithubert_mini")) if (setup / "out_fithubert_mini").exists() else None
    if upstream is None:
        assert run_distill.main(args(setup, "fithubert_mini", "out_fithubert_mini", 2)) == 0
        upstream = build_upstream(str(setup / "out_fithubert_mini"))
    assert upstream.downsample_rate == 640
    assert upstream([torch.zeros(16000)]).hidden_states[0].shape[1] == 24  # 49 CNN frames → 24


def test_armhubert_reusing_layers_have_no_query_or_key(setup):
    cfg = load_config(DistillConfig, ROOT / "configs/distill/armhubert.yaml")
    objective_cfg = load_config(DistillConfig, ROOT / "configs/distill/armhubert_mini.yaml",
                                RECIPES["armhubert_mini"][0])
    assert cfg.student.reuse_attention == [False, True] * 6
    objective = SuccessorObjective(objective_cfg, tiny_teacher())
    names = {k for k in objective.student.state_dict() if ".attention." in k}
    assert "encoder.layers.0.attention.q_proj.weight" in names
    assert not any(k.startswith(("encoder.layers.1.attention.q_proj", "encoder.layers.1.attention.k_proj"))
                   for k in names)


def test_dphubert_export_has_the_parameters_it_reports_and_the_gated_models_outputs(setup):
    cfg = load_config(DistillConfig, ROOT / "configs/distill/dphubert_mini.yaml", RECIPES["dphubert_mini"][0])
    objective = SuccessorObjective(cfg, tiny_teacher())
    torch.manual_seed(3)
    with torch.no_grad():  # a trained-looking gate state: some units closed, the rest at various openings
        for gate in objective.gates.modules():
            if hasattr(gate, "log_alpha"):
                gate.log_alpha.copy_(torch.randn(gate.log_alpha.shape) * 3)
    objective.eval()
    gates = objective.deterministic_gates()
    assert any(float((g == 0).float().mean()) > 0 for g in gates.heads + gates.ffn if g is not None)
    dense = objective.export()
    assert count_parameters(dense.model) == parameter_count(dense.cfg) < parameter_count(objective.student.cfg)
    wav = torch.randn(2, 6000) * 0.1
    lengths = torch.tensor([6000, 4100])
    with torch.no_grad():
        gated, _ = objective.student.encode(wav, lengths, gates=gates)
        pruned, _ = dense.model.encode(wav, lengths)
    for a, b in zip(gated, pruned):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    # the saved folder reports the same count it has
    assert run_distill.main(args(setup, "dphubert_mini", "dp_export", 3)) == 0
    summary = json.loads((setup / "dp_export" / "distill_summary.json").read_text())
    loaded = build_upstream(str(setup / "dp_export"))
    assert summary["student_params"] == count_parameters(loaded) == parameter_count(loaded.cfg)


@pytest.mark.parametrize("recipe", ["armhubert_mini", "dphubert_mini"])
def test_kill_9_then_resume_gives_the_same_weights(setup, recipe):
    steps, extra = 24, ["run.checkpoint_every=3"]
    killed = f"killed_{recipe}"
    killed_at = kill_at_first_checkpoint(["run_distill.py"] + args(setup, recipe, killed, steps, *extra),
                                         setup / killed / "checkpoints" / "last.pt")
    assert 0 < killed_at < steps, "the run must die mid-way for this test to mean anything"
    assert run_distill.main(args(setup, recipe, killed, steps, *extra) + ["--resume"]) == 0
    assert run_distill.main(args(setup, recipe, f"straight_{recipe}", steps, *extra)) == 0
    resumed = safetensors.torch.load_file(str(setup / killed / "model.safetensors"))
    straight = safetensors.torch.load_file(str(setup / f"straight_{recipe}" / "model.safetensors"))
    assert resumed.keys() == straight.keys()
    for k in straight:
        torch.testing.assert_close(resumed[k], straight[k], rtol=1e-5, atol=1e-6)
