"""The pretraining pool holds no evaluation audio (issue 16): no dev or test utterance of any task is in ``unlabeled/``.

Checked on the corpus manifest (``MANIFEST.sha256``: one sha256 per file) of the tiny corpus, which the same builder
writes as the ``small`` and ``pretrain`` corpora: by path (no task's dev/test split lists a pool file) and by content
(no pool file has the bytes of any other file of the corpus, so a copy under another name is caught too).
"""
from __future__ import annotations

from pathlib import Path

from synth.build import MANIFEST
from tasks.registry import build_task, list_tasks

POOL = "unlabeled"


def _manifest(root: Path) -> dict[str, str]:
    """relative path -> sha256, from the corpus manifest."""
    rows = (line.split("  ", 1) for line in (root / MANIFEST).read_text().splitlines() if line.strip())
    return {path: digest for digest, path in rows}


def test_pool_shares_no_audio_with_any_task(tiny_corpus):
    files = _manifest(tiny_corpus)
    pool = {p: h for p, h in files.items() if p.startswith(POOL + "/")}
    others = {h for p, h in files.items() if not p.startswith(POOL + "/") and p.endswith((".wav", ".flac"))}
    assert pool and others
    assert not set(pool.values()) & others


def test_no_dev_or_test_utterance_is_in_the_pool(tiny_corpus):
    pool_dir = (tiny_corpus / POOL).resolve()
    checked = 0
    for name in list_tasks():
        task = build_task(name, tiny_corpus, profile="demo")  # the demo profiles fit the tiny corpus
        for split in ("dev", "test"):
            for utt in task.load_split(split):
                assert not utt.path.resolve().is_relative_to(pool_dir), f"{name} {split}: {utt.path}"
                checked += 1
    assert checked > 100
