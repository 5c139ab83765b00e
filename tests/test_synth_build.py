"""The corpus generator as a whole: deterministic, resumable, and clear about missing engines."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from synth import voices
from synth.build import MANIFEST, build_corpus


def _manifest(root: Path) -> dict[str, str]:
    lines = (root / MANIFEST).read_text().splitlines()
    return {line.split("  ", 1)[1]: line.split("  ", 1)[0] for line in lines}


def test_same_seed_gives_byte_identical_corpus_and_rerun_skips(tiny_corpus, tmp_path):
    out = tmp_path / "again"
    build_corpus(out, size="tiny", seed=0, workers=2, verbose=False)
    first, second = _manifest(tiny_corpus), _manifest(out)
    assert len(first) > 50
    assert first == second
    # A re-run renders nothing: every audio file keeps its inode and modification time.
    stamps = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.rglob("*") if p.suffix in (".wav", ".flac")}
    build_corpus(out, size="tiny", seed=0, workers=2, verbose=False)
    assert stamps and all((p.stat().st_ino, p.stat().st_mtime_ns) == s for p, s in stamps.items())


def test_interrupted_build_resumes_missing_files(tiny_corpus, tmp_path):
    out = tmp_path / "resume"
    shutil.copytree(tiny_corpus, out)
    victims = sorted(out.rglob("*.flac"))[:3]
    for v in victims:
        v.unlink()
    (out / MANIFEST).unlink()
    build_corpus(out, size="tiny", seed=0, workers=1, verbose=False, tasks=None)
    assert all(v.exists() for v in victims)
    assert _manifest(out) == _manifest(tiny_corpus)
    assert not list(out.rglob("*.tmp"))


def test_missing_engine_names_the_install_command(monkeypatch):
    monkeypatch.setattr(voices.shutil, "which", lambda name: None if name == "flite" else "/usr/bin/" + name)
    with pytest.raises(voices.SynthesisError, match="apt-get install -y espeak-ng flite"):
        voices.check_engines()


def test_different_seed_changes_the_audio(tmp_path):
    a = build_corpus(tmp_path / "a", size="tiny", seed=1, workers=2, verbose=False, tasks=["librispeech"])
    assert a["librispeech"]["train-clean-100"]["utterances"] > 0
    build_corpus(tmp_path / "b", size="tiny", seed=2, workers=2, verbose=False, tasks=["librispeech"])
    assert _manifest(tmp_path / "a") != _manifest(tmp_path / "b")


def test_folder_refuses_a_second_size_or_seed(tmp_path):
    build_corpus(tmp_path, size="tiny", seed=5, workers=1, verbose=False, tasks=["snips"])
    with pytest.raises(ValueError, match="Use another --out folder"):
        build_corpus(tmp_path, size="tiny", seed=6, workers=1, verbose=False, tasks=["snips"])


@pytest.mark.parametrize("module", ["synth", "tasks.synth"])
def test_the_builder_runs_as_python_m_synth_and_as_its_old_name(module):
    out = subprocess.run([sys.executable, "-m", module, "--help"], cwd=Path(__file__).resolve().parents[1],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "python -m synth" in out.stdout and "--size" in out.stdout
