"""Issue 30: know before you spend. The cache size is estimated before extraction and compared with the free space
(injected here); ``--cache on`` refuses up front, ``auto`` falls back to live features, ``off`` writes nothing;
``--layer K`` stores one layer; the default folder honours ``XDG_CACHE_HOME``."""
from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

import run_benchmark
from benchmark import cache_plan
from benchmark.cache import FeatureCache, default_cache_dir, weights_hash
from tasks.registry import build_task
from tests.fixtures.datasets import module_corpus, write_fsc
from tests.fixtures.upstreams import TINY_UPSTREAM, tiny_config
from upstream.hubert import HubertModel, HubertUpstream

FAST = ["-o", "train.eval_every=2", "-o", "batch.max_seconds=0.3", "-o", "batch.eval_max_seconds=2.0",
        "-o", "head.proj_dim=8"]

data_root = module_corpus("cache_policy_data", write_fsc)


def argv(data_root: Path, tmp: Path, *extra: str) -> list[str]:
    return ["--upstream", TINY_UPSTREAM, "--task", "ic", "--data-root", str(data_root), "--results-dir",
            str(tmp / "results"), "--cache-dir", str(tmp / "cache"), "--max-steps", "2", "--device", "cpu",
            *FAST, *extra]


def entries(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.npy")) if folder.is_dir() else []


def test_on_refuses_up_front_when_the_estimate_exceeds_the_free_space(data_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cache_plan, "free_bytes", lambda folder: 1000)  # 1 kB free
    assert run_benchmark.main(argv(data_root, tmp_path, "--cache", "on")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: feature cache ")
    assert "needs about" in err[0] and "1e-06 GB free" in err[0] and "--cache off" in err[0], err[0]
    assert entries(tmp_path / "cache") == []  # nothing extracted
    assert not (tmp_path / "results").exists() or not list((tmp_path / "results").rglob("config.yaml"))


def test_a_cap_below_the_estimate_refuses_too_and_a_bad_cap_is_one_line(data_root, tmp_path, capsys):
    assert run_benchmark.main(argv(data_root, tmp_path, "--cache", "on", "--cache-max-gb", "1e-6")) == 2
    assert "--cache-max-gb" in capsys.readouterr().err
    assert run_benchmark.main(argv(data_root, tmp_path, "--cache-max-gb", "-1")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --cache-max-gb must be a positive number of GB, got -1.0"]


def test_auto_falls_back_to_live_features_and_gets_the_same_rows(data_root, tmp_path, monkeypatch, caplog):
    assert run_benchmark.main(argv(data_root, tmp_path / "off", "--no-cache")) == 0
    assert entries(tmp_path / "off" / "cache") == []
    monkeypatch.setattr(cache_plan, "free_bytes", lambda folder: 1000)
    with caplog.at_level(logging.WARNING):
        assert run_benchmark.main(argv(data_root, tmp_path / "auto", "--cache", "auto")) == 0
    assert any("--cache auto: running on live features" in r.getMessage() for r in caplog.records)
    assert entries(tmp_path / "auto" / "cache") == []

    def values(d):
        with open(d / "results" / "results.csv", newline="") as f:
            return [(r["split"], r["metric"], r["value"]) for r in csv.DictReader(f)]
    assert values(tmp_path / "auto") == values(tmp_path / "off")


def test_a_layer_run_caches_that_layer_only(data_root, tmp_path):
    assert run_benchmark.main(argv(data_root, tmp_path, "--layer", "1")) == 0
    written = entries(tmp_path / "cache")
    assert written and all(p.name.endswith(".L1.npy") for p in written)
    assert all(np.load(p).shape[0] == 1 for p in written)


def test_a_layer_cache_reads_the_layer_of_an_all_layer_entry(data_root, tmp_path):
    up = HubertUpstream(HubertModel(tiny_config())).eval()
    utts = build_task("ic", data_root).load_split("train")[:3]
    full = FeatureCache(tmp_path, weights_hash(up))
    assert full.ensure(utts, up, 10.0) == 3
    one = FeatureCache(tmp_path, weights_hash(up), layer=2)
    assert one.todo(utts) == [] and one.ensure(utts, up, 10.0) == 0  # served by the all-layer entries
    np.testing.assert_array_equal(one.load(utts[0], 2), full.load(utts[0])[2:3])


def test_the_estimate_is_within_5_percent_of_the_bytes_written(data_root, tmp_path):
    torch.manual_seed(0)
    up = HubertUpstream(HubertModel(tiny_config())).eval()
    utts = build_task("ic", data_root).load_split("train")
    for layer in (None, 1):
        cache = FeatureCache(tmp_path / str(layer), weights_hash(up), layer=layer)
        est = cache_plan.estimate(tmp_path, cache_plan.probe_entry_shape(up, layer), cache.todo(utts), None)
        assert cache.ensure(utts, up, 10.0) == len(utts)
        written = sum(p.stat().st_size for p in entries(cache.dir))
        assert abs(est.bytes - written) <= 0.05 * written, (est.bytes, written)
        assert cache.todo(utts) == []


def test_the_default_folder_honours_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.delenv("DISTILSUPERB_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "distilsuperb" / "features"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # invalid by the XDG spec: ignored
    assert default_cache_dir() == Path.home() / ".cache" / "distilsuperb" / "features"
    monkeypatch.setenv("DISTILSUPERB_CACHE", str(tmp_path / "own"))
    assert default_cache_dir() == tmp_path / "own" / "features"
