"""Issue 29 item 6 / issue 30: batches reach the head through a DataLoader (workers, prefetch, pinned memory on a
GPU) for cached and live features, and cached features stay fp16 until they are on the device."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from benchmark.cache import FeatureCache, weights_hash
from benchmark.engine import RunOptions, loader_workers, run_task
from benchmark.features import BatchRequest, CachedFeatures
from tasks.registry import build_task
from tests.fixtures.datasets import module_corpus, write_fsc, write_voxceleb1
from tests.fixtures.upstreams import TINY_UPSTREAM, TinyFrameUpstream

data_root = module_corpus("loader_data", write_fsc, write_voxceleb1)
# SID with 0.25-s random crops: the crops drawn ahead by the loader must be those of the batch-by-batch run
FAST = ["train.eval_every=3", "batch.max_seconds=0.8", "batch.eval_max_seconds=2.0", "batch.train_crop_seconds=0.25",
        "batch.grad_accum=1"]


def test_cached_features_cross_to_the_device_as_fp16(data_root, tmp_path):
    up = TinyFrameUpstream().eval()
    utts = build_task("ic", data_root).load_split("train")[:3]
    cache = FeatureCache(tmp_path, weights_hash(up))
    cache.ensure(utts, up, 10.0)
    source = CachedFeatures(cache, up.downsample_rate, device="meta")
    prepared = source._prepare(BatchRequest(utts))
    assert prepared.hidden.dtype == torch.float16 and prepared.hidden.device.type == "cpu"  # what is copied
    fb = source.batch(utts)
    assert fb.hidden.device.type == "meta" and fb.hidden.dtype == torch.float32  # converted there
    assert tuple(fb.hidden.shape) == tuple(prepared.hidden.shape)


def rows(results: Path) -> list[tuple]:
    with open(results / "results.csv", newline="") as f:
        return [(r["split"], r["metric"], r["value"], r["steps"]) for r in csv.DictReader(f)]


@pytest.mark.parametrize("cache", ["on", "off"])
def test_loader_workers_give_the_batch_by_batch_results(data_root, tmp_path, cache):
    def run(workers: int, out: Path):
        run_task(RunOptions(upstream=TINY_UPSTREAM, task="sid", data_root=data_root, results_dir=out / "results",
                            cache_dir=tmp_path / "cache", max_steps=6, overrides=list(FAST), device="cpu",
                            cache=cache, loader_workers=workers))
        return rows(out / "results")

    assert run(2, tmp_path / "two") == run(0, tmp_path / "zero")


def test_loader_worker_defaults():
    assert loader_workers(None, "cpu") == 0 and loader_workers(None, "cuda:1") == 4 and loader_workers(3, "cpu") == 3
    with pytest.raises(ValueError, match="--loader-workers must be 0 or more, got -1"):
        loader_workers(-1, "cpu")
