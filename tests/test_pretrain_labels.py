"""Pretraining labels at scale (pretrain/label_shards.py): features dumped in shards by every rank, k-means on a
bounded sample read from the memory-mapped shards, labels per shard, and the iteration-2 extraction on the device
the iteration-1 model is on (``meta`` stands in for cuda)."""
from __future__ import annotations

import datetime
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from common.distributed import DistEnv
from pretrain.label_shards import build_labels, dump_shard, label_shard, open_shard, sample_frames, shard_files
from pretrain.labels import LabelConfig, fit_kmeans, fit_kmeans_labels, layer_features, mfcc_features
from tests.fixtures.datasets import write_tone_corpus
from tests.fixtures.ports import free_port
from tests.fixtures.upstreams import tiny_teacher_config
from upstream.hubert import HubertModel
from common.audio import load_audio

CFG = LabelConfig(clusters=5, kmeans_init_runs=1, max_kmeans_frames=400)


@pytest.fixture(autouse=True)
def one_thread():
    """One torch and one OpenMP thread: on a busy 2-core machine k-means' threads spin against torch's (13 s
    instead of 0.07 s)."""
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(before)


def test_iteration_2_features_are_computed_on_the_models_device():
    model = HubertModel(tiny_teacher_config(layers=2, codewords=0)).to("meta")  # as the Trainer leaves it: cuda
    feats = layer_features(model, 1)(torch.randn(16000))  # CPU audio: the model's device takes it
    assert feats.device.type == "meta" and feats.shape == (49, 32)


def test_sharded_labels_equal_the_in_memory_fit(tmp_path):
    files = write_tone_corpus(tmp_path / "audio", count=5)
    metas, shards = [], []
    for rank in range(2):  # two ranks' shards, as build_labels writes them
        base = tmp_path / "features" / f"shard-{rank}-of-2"
        metas.append(dump_shard(shard_files(files, rank, 2), mfcc_features, base))
        shards.append(open_shard(base, metas[-1]))
    assert [len(shard_files(files, r, 2)) for r in range(2)] == [2, 3]
    assert all(isinstance(s, np.memmap) for s in shards)  # read on access: RAM does not hold the pool
    sample = sample_frames(shards, CFG)
    assert sample.shape == (400, 39)  # bounded by max_kmeans_frames, not the pool's frames
    centroids, _ = fit_kmeans(sample, CFG)
    sharded = [lab for s, m in zip(shards, metas) for lab in label_shard(s, m, centroids, torch.device("cpu"))]

    expected, _ = fit_kmeans_labels([mfcc_features(load_audio(f)) for f in files], CFG)
    assert [len(a) for a in sharded] == [len(b) for b in expected]
    assert all(torch.equal(a.long(), b) for a, b in zip(sharded, expected))
    assert sharded[0].dtype == torch.int16  # 0.35 GB for 960 h at 50 Hz


def test_kmeans_fraction_bounds_the_sample(tmp_path):
    files = write_tone_corpus(tmp_path / "audio", count=2)
    meta = dump_shard(files, mfcc_features, tmp_path / "shard-0-of-1")
    shard = open_shard(tmp_path / "shard-0-of-1", meta)
    cfg = LabelConfig(clusters=5, max_kmeans_frames=10 ** 6, kmeans_fraction=0.1)
    assert len(sample_frames([shard], cfg)) == round(0.1 * len(shard))


def _rank(rank: int, port: int, work: str, files: list[str], out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=60))
    torch.set_num_threads(1)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        labels = build_labels(Path(work), [Path(f) for f in files], mfcc_features, 100, CFG,
                              DistEnv(rank, 2, torch.device("cpu")))
    torch.save(labels, f"{out}.{rank}")
    dist.destroy_process_group()


def test_two_ranks_build_the_labels_one_process_builds(tmp_path):
    files = write_tone_corpus(tmp_path / "audio", count=5)
    one = build_labels(tmp_path / "one", files, mfcc_features, 100, CFG, DistEnv())
    mp.spawn(_rank, args=(free_port(), str(tmp_path / "two"), [str(f) for f in files], str(tmp_path / "out")),
             nprocs=2)
    for rank in range(2):  # every rank holds every file's labels
        two = torch.load(tmp_path / f"out.{rank}", weights_only=True)
        assert all(torch.equal(a, b) for a, b in zip(one, two)) and len(two) == len(files)
    assert not (tmp_path / "two" / "features").exists()  # the features' disk is given back once labels exist
    assert (tmp_path / "two" / "labels.pt").is_file()
