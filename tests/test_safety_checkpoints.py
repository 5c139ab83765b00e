"""Issue 22 §1: a run folder is as untrusted as a foreign checkpoint. Every checkpoint the toolkit writes loads with
``weights_only=True``, and a malicious ``last.pt`` planted in a benchmark, distillation or pretraining run folder is
refused on ``--resume`` without its payload running."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

import run_benchmark
import run_distill
import run_pretrain
from common.checkpoint import CheckpointError, load_checkpoint
from tests.fixtures.datasets import write_fsc, write_tone_corpus
from tests.fixtures.unsafe import Payload
from tests.fixtures.upstreams import (TINY_DISTILL_RUN, TINY_UPSTREAM, tiny_distill_args, tiny_pretrain_args,
                                     write_teacher_and_tones)

FAST = ["train.eval_every=3", "batch.max_seconds=0.3", "batch.eval_max_seconds=2.0", "head.proj_dim=8"]


def plant(path: Path, marker: Path) -> None:
    buf = io.BytesIO()
    torch.save({"model": {}, "step": 1, "evil": Payload(marker)}, buf)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())


def test_the_payload_is_real_when_loaded_unsafely(tmp_path):
    """The planted file does run code under weights_only=False (so the tests below can fail)."""
    marker = tmp_path / "pwned"
    plant(tmp_path / "last.pt", marker)
    torch.load(tmp_path / "last.pt", weights_only=False)
    assert marker.exists()


def test_load_checkpoint_refuses_a_pickle_with_code(tmp_path):
    marker = tmp_path / "pwned"
    plant(tmp_path / "last.pt", marker)
    with pytest.raises(CheckpointError, match=r"last\.pt: refusing to load .*\(it calls io\.open\)"):
        load_checkpoint(tmp_path / "last.pt")
    assert not marker.exists()


def test_benchmark_resume_refuses_a_planted_last_pt(tmp_path, capsys):
    data = tmp_path / "data"
    write_fsc(data)
    marker = tmp_path / "pwned"
    args = ["--upstream", TINY_UPSTREAM, "--task", "ic", "--data-root", str(data), "--results-dir",
            str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"), "--max-steps", "3", "--device", "cpu"]
    for o in FAST:
        args += ["-o", o]
    assert run_benchmark.main(args) == 0
    run_dir = next((tmp_path / "results").glob("*/ic/*/DONE")).parent
    ours = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)  # what we write is plain data
    assert ours["state"]["step"] == 3 and isinstance(ours["rng"]["numpy_key"], torch.Tensor)
    torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    (run_dir / "DONE").unlink()  # an unfinished run folder, as --resume picks up
    plant(run_dir / "checkpoints" / "last.pt", marker)
    capsys.readouterr()
    assert run_benchmark.main(args + ["--resume"]) == 2
    err = capsys.readouterr().err
    assert "last.pt: refusing to load" in err and "Traceback" not in err
    assert not marker.exists()


def assert_resume_refuses_a_planted_last_pt(main, args: list[str], last_pt: Path, marker: Path, capsys) -> None:
    """After a finished run (``main(args)``), a ``last.pt`` replaced by a pickle with code makes ``--resume`` stop
    with one line (exit code 2) without running the code."""
    assert torch.load(last_pt, weights_only=True)["step"] == 2
    plant(last_pt, marker)
    capsys.readouterr()
    assert main(args + ["--resume"]) == 2
    err = capsys.readouterr().err
    assert "last.pt: refusing to load" in err
    assert not marker.exists()


def test_distillation_resume_refuses_a_planted_last_pt(tmp_path, capsys):
    out = tmp_path / "student"
    args = tiny_distill_args(write_teacher_and_tones(tmp_path), out, 2)
    assert run_distill.main(args) == 0
    assert_resume_refuses_a_planted_last_pt(run_distill.main, args, out / "checkpoints" / "last.pt",
                                            tmp_path / "pwned", capsys)


def test_pretraining_resume_refuses_a_planted_last_pt(tmp_path, capsys):
    write_tone_corpus(tmp_path / "audio", count=3)
    out = tmp_path / "teacher"
    args = tiny_pretrain_args(tmp_path / "audio", out, 2, "run.max_minutes=0", *TINY_DISTILL_RUN)
    assert run_pretrain.main(args) == 0
    assert_resume_refuses_a_planted_last_pt(run_pretrain.main, args, out / "iter1" / "checkpoints" / "last.pt",
                                            tmp_path / "pwned", capsys)
