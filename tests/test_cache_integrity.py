"""The feature cache checks an entry when it is read (size + xxh3-64 hash in the entry's own trailer), extracts a
corrupt one again during the run (reported once by path), never re-reads the cache up front, keys entries by the
audio's content (valid under another mount point; digests remembered by file stat), and is safe to prune (orphan
.tmp/.lock files cleaned and counted; --unused-days must be a number of days >= 0)."""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

import run_benchmark
from benchmark import cache as cache_module
from benchmark.cache import CorruptEntry, FeatureCache, list_cache, weights_hash
from benchmark.features import CachedFeatures
from tasks.registry import build_task
from tests.fixtures.datasets import write_fsc
from tests.fixtures.upstreams import TinyFrameUpstream


@pytest.fixture(scope="module")
def utts(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache_data")
    write_fsc(root)
    return build_task("ic", root).load_split("train")[:4]


def filled(tmp_path, utts):
    up = TinyFrameUpstream().eval()
    cache = FeatureCache(tmp_path, weights_hash(up))
    assert cache.ensure(utts, up, max_seconds=10.0) == len(utts)
    return up, cache


def reopen(tmp_path, up):
    return FeatureCache(tmp_path, weights_hash(up))


DAMAGES = [
    (lambda p: p.write_bytes(p.read_bytes()[:-100]), "no checksum trailer"),                 # truncated
    (lambda p: p.write_bytes(b""), "shorter than its trailer"),                              # emptied
    (lambda p: p.write_bytes(bytearray(p.read_bytes()[:200]) + bytes(len(p.read_bytes()) - 200)), "checksum"),
    (lambda p: np.save(p, np.zeros_like(np.load(p))), "no checksum trailer"),                # rewritten by hand
]


@pytest.mark.parametrize("damage, reason", DAMAGES)
def test_a_corrupt_entry_is_extracted_again_when_read(tmp_path, utts, caplog, damage, reason):
    up, cache = filled(tmp_path, utts)
    good = cache.load(utts[1]).copy()
    bad_path = cache.path(utts[1])
    damage(bad_path)
    again = reopen(tmp_path, up)
    assert again.ensure(utts, up, max_seconds=10.0) == 0  # nothing re-read up front: the entry file exists
    with pytest.raises(CorruptEntry, match=reason):
        again.load(utts[1])
    source = CachedFeatures(again, up.downsample_rate, repair=lambda us: again.repair(us, up))
    with caplog.at_level(logging.WARNING):
        batch = source.batch(utts[:2])
        source.batch(utts[:2])
    warnings = [r.getMessage() for r in caplog.records if "corrupt" in r.getMessage()]
    assert len(warnings) == 1 and str(bad_path) in warnings[0] and "extracting it again" in warnings[0]
    np.testing.assert_array_equal(again.load(utts[1]), good)
    np.testing.assert_array_equal(batch.hidden[:, 1, : good.shape[1]].numpy(), good.astype(np.float32))
    assert again.corrupt == 1


def test_a_warm_run_reads_no_entry_and_no_audio(tmp_path, utts, monkeypatch):
    up, _ = filled(tmp_path, utts)
    monkeypatch.setattr(cache_module, "decode_entry", lambda *a: pytest.fail("an entry was read up front"))
    again = reopen(tmp_path, up)
    assert again.ensure(utts, up, max_seconds=10.0) == 0
    assert again.digests.reads == 0  # the digests came from the index: no audio file was read for its key


def test_keys_follow_the_content_not_the_path_or_mtime(tmp_path, utts):
    """A copy of the dataset under another folder (another node's mount point), without its mtimes, hits the
    entries; an edited file misses."""
    up, cache = filled(tmp_path / "cache", utts)
    data = Path(os.path.commonpath([str(u.path) for u in utts]))
    moved = tmp_path / "elsewhere"
    shutil.copytree(data, moved, copy_function=shutil.copyfile)  # new paths, new mtimes
    copies = [dataclasses.replace(u, path=moved / Path(u.path).relative_to(data)) for u in utts]
    other = FeatureCache(tmp_path / "cache", weights_hash(up))
    assert other.todo(copies) == [] and other.digests.reads == len(utts)
    np.testing.assert_array_equal(other.load(copies[0]), cache.load(utts[0]))
    with open(copies[0].path, "r+b") as f:
        f.seek(-2, os.SEEK_END)
        f.write(b"\x01\x02")
    assert FeatureCache(tmp_path / "cache", weights_hash(up)).todo(copies) == [copies[0]]


def test_the_digest_index_is_reused_while_files_are_unchanged(tmp_path, utts):
    up, _ = filled(tmp_path, utts)
    assert reopen(tmp_path, up).todo(utts) == [] and reopen(tmp_path, up).digests.reads == 0
    os.utime(utts[2].path, (time.time() + 5, time.time() + 5))  # touched: read again, same content, same key
    again = reopen(tmp_path, up)
    assert again.todo(utts) == [] and again.digests.reads == 1
    assert reopen(tmp_path, up).todo(utts) == [] and reopen(tmp_path, up).digests.reads == 0


def test_orphan_tmp_files_are_cleaned_and_counted(tmp_path, utts, capsys):
    up, cache = filled(tmp_path, utts)
    old = cache.dir / "ab" / ".deadbeef.npy.x1.tmp"
    old.parent.mkdir(parents=True, exist_ok=True)
    old.write_bytes(b"half")
    os.utime(old, (time.time() - 7200, time.time() - 7200))  # left by a run killed two hours ago
    fresh = cache.dir / "ab" / ".cafe.npy.x2.tmp"  # a write in progress in another run: left alone
    fresh.write_bytes(b"half")
    assert run_benchmark.main(["cache", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "removed 1 orphan .tmp files" in out and "left 1 .tmp files younger than an hour alone" in out
    assert not old.exists() and fresh.exists()
    assert list_cache(tmp_path)[0].files == len(utts)


@pytest.mark.parametrize("days", ["-1", "nan", "-inf"])
def test_unused_days_must_be_a_number_of_days(tmp_path, utts, capsys, days):
    up, cache = filled(tmp_path, utts)
    assert run_benchmark.main(["cache", "--cache-dir", str(tmp_path), f"--unused-days={days}"]) == 2
    err = capsys.readouterr().err
    assert "--unused-days must be a number of days >= 0" in err and "Traceback" not in err
    assert cache.dir.is_dir() and all(cache.path(u).is_file() for u in utts)  # nothing deleted


def test_unused_days_zero_still_prunes(tmp_path, utts, capsys):
    filled(tmp_path, utts)
    (tmp_path / list_cache(tmp_path)[0].path.name / "upstream.json").write_text('{"last_used": 1}')
    assert run_benchmark.main(["cache", "--cache-dir", str(tmp_path), "--unused-days", "0"]) == 0
    assert list_cache(tmp_path) == []
