"""Issue 22 §6: the feature cache is verified (size + xxh3-64 hash per entry), self-healing (a corrupt entry is
reported once by path and extracted again) and safe to prune (orphan .tmp files cleaned and counted; --unused-days must be
a number of days >= 0)."""
from __future__ import annotations

import logging
import os
import time

import numpy as np
import pytest

import run_benchmark
from benchmark.cache import FeatureCache, list_cache, weights_hash
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


@pytest.mark.parametrize("damage, reason", [
    (lambda p: p.write_bytes(p.read_bytes()[:-100]), "bytes, expected"),                   # truncated
    (lambda p: p.write_bytes(b""), "0 bytes, expected"),                                   # emptied
    (lambda p: np.save(p, np.zeros_like(np.load(p))), "checksum mismatch"),                # zeros, same shape
])
def test_a_corrupt_entry_is_reported_once_by_path_and_extracted_again(tmp_path, utts, caplog, damage, reason):
    up, cache = filled(tmp_path, utts)
    good = cache.load(utts[1]).copy()
    bad_path = cache.path(utts[1])
    damage(bad_path)
    again = reopen(tmp_path, up)
    with caplog.at_level(logging.WARNING):
        assert again.ensure(utts, up, max_seconds=10.0) == 1  # only the damaged one
        assert again.ensure(utts, up, max_seconds=10.0) == 0
    warnings = [r.getMessage() for r in caplog.records if "corrupt" in r.getMessage()]
    assert len(warnings) == 1 and str(bad_path) in warnings[0] and reason in warnings[0]
    np.testing.assert_array_equal(again.load(utts[1]), good)
    assert again.corrupt == 1


def test_an_entry_without_its_checksum_is_extracted_again(tmp_path, utts):
    up, cache = filled(tmp_path, utts)
    cache.path(utts[0]).with_suffix(".sum").unlink()  # killed between the array and its sidecar, or older cache
    assert reopen(tmp_path, up).ensure(utts, up, max_seconds=10.0) == 1


def test_an_entry_damaged_during_a_run_names_its_file(tmp_path, utts):
    up, cache = filled(tmp_path, utts)
    cache.path(utts[2]).write_bytes(b"")
    with pytest.raises(ValueError, match=r"feature cache entry .*\.npy .* is unreadable"):
        cache.load(utts[2])


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


def test_entries_without_checksums_are_said_once_not_per_entry(tmp_path, utts, caplog):
    up, cache = filled(tmp_path, utts)
    for u in utts:
        cache.path(u).with_suffix(".sum").unlink()  # a cache written before checksums existed
    with caplog.at_level(logging.WARNING):
        assert reopen(tmp_path, up).ensure(utts, up, max_seconds=10.0) == len(utts)
    said = [r.getMessage() for r in caplog.records if "checksum" in r.getMessage()]
    assert len(said) == 1 and f"{len(utts)} entries have no checksum" in said[0]
