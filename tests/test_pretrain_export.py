"""A pretraining checkpoint exported as an upstream (pretrain/export.py, scripts/teacher_curve.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import run_pretrain
from pretrain.export import ExportError, model_from_checkpoint
from tests.fixtures.datasets import write_tone_corpus
from tests.fixtures.scripts import load_script
from tests.fixtures.upstreams import tiny_pretrain_args
from upstream.checkpoints import save_upstream
from upstream.hubert import HubertUpstream
from upstream.registry import build_upstream

TINY_RUN = ["run.max_minutes=0", "run.data.max_batch_seconds=4.0", "run.data.max_item_seconds=1.5", "run.threads=1"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pretrain_export")
    write_tone_corpus(root / "audio", count=3)
    out = root / "teacher"
    assert run_pretrain.main(tiny_pretrain_args(root / "audio", out, 2, *TINY_RUN)) == 0
    return out


def test_last_checkpoint_exports_the_model_run_pretrain_saved(pretrained, tmp_path):
    model, step = model_from_checkpoint(pretrained / "iter1" / "checkpoints" / "last.pt")
    assert step == 2
    save_upstream(HubertUpstream(model), tmp_path / "exported")
    wav = [torch.randn(16000), torch.randn(9000)]
    with torch.inference_mode():
        ours = build_upstream(str(tmp_path / "exported"))(wav)
        final = build_upstream(str(pretrained))(wav)
    assert len(ours.hidden_states) == len(final.hidden_states)
    for a, b in zip(ours.hidden_states, final.hidden_states):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_file_that_is_not_a_pretraining_checkpoint_is_named(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"step": 3, "model": {}}, path)
    with pytest.raises(ExportError, match=r"other\.pt: not a run_pretrain\.py checkpoint"):
        model_from_checkpoint(path)


def test_teacher_curve_bad_point_is_one_line_exit_2(tmp_path, capsys):
    curve = load_script("scripts/teacher_curve.py")
    assert curve.main(["--out", str(tmp_path / "c"), "--point", "no_equals_sign"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --point 'no_equals_sign': expected NAME=SOURCE:CPU_MINUTES") and "\n" not in err
    assert curve.main(["--out", str(tmp_path / "c"), "--point", f"a={tmp_path / 'missing.pt'}:3"]) == 2
    assert "missing.pt: no such checkpoint" in capsys.readouterr().err


def test_teacher_curve_export_stage_writes_an_upstream_per_checkpoint(pretrained, tmp_path, capsys):
    curve = load_script("scripts/teacher_curve.py")
    ckpt = pretrained / "iter1" / "checkpoints" / "last.pt"
    out = tmp_path / "curve"
    assert curve.main(["--out", str(out), "--only", "export", "--point", f"u2={ckpt}:0.5",
                       "--point", f"final={pretrained}:1"]) == 0
    assert (out / "upstreams" / "u2" / "upstream.yaml").is_file()
    # an upstream dir is saved under the point's name too: the benchmark labels rows by folder name
    assert build_upstream(str(out / "upstreams" / "final")).weights_hash() == \
        build_upstream(str(pretrained)).weights_hash()
    assert build_upstream(str(out / "upstreams" / "u2")).weights_hash() == build_upstream(str(pretrained)).weights_hash()
