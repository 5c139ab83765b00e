"""Engine: feature cache correctness and reuse, resume after a crash, batching, results rows, CLI errors."""
from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark import results
from benchmark.batching import epoch_batches, eval_batches, pack_by_seconds
from benchmark.cache import FeatureCache, list_cache, remove_cache_entries, weights_hash
from benchmark.engine import RunOptions, run_task
from benchmark.features import CachedFeatures, HeldArrays
from common.utterance import load_utterance_audio
from tasks.registry import build_task, get_task_class
from tests.fixtures.datasets import module_corpus, write_fsc, write_librispeech, write_speech_commands, write_voxceleb1
from tests.fixtures.upstreams import TINY_PRETRAINED, TINY_UPSTREAM, TinyFrameUpstream

FAST = ["train.eval_every=3", "batch.max_seconds=0.3", "batch.eval_max_seconds=2.0", "head.proj_dim=8"]


data_root = module_corpus("engine_data", write_fsc, write_speech_commands)


def options(data_root: Path, tmp: Path, **kw) -> RunOptions:
    base = dict(upstream=TINY_UPSTREAM, task="ic", data_root=data_root, results_dir=tmp / "results", max_steps=6,
                cache_dir=tmp / "cache", overrides=list(FAST), device="cpu")
    base.update(kw)
    return RunOptions(**base)


def filled_cache(data_root: Path, folder: Path):
    """The tiny upstream, IC's train records and a feature cache in ``folder`` holding them (all extracted)."""
    up = TinyFrameUpstream().eval()
    utts = build_task("ic", data_root).load_split("train")
    cache = FeatureCache(folder, weights_hash(up))
    assert cache.ensure(utts, up, max_seconds=10.0) == len(utts)
    return up, utts, cache


def test_cached_features_equal_fresh_ones_and_are_reused(data_root, tmp_path):
    up, utts, cache = filled_cache(data_root, tmp_path)
    for u in utts:
        with torch.inference_mode():
            fresh = torch.stack(up([load_utterance_audio(u)]).hidden_states)[:, 0]  # [layer, frame, feature]
        cached = cache.load(u)
        assert cached.dtype == np.float16
        np.testing.assert_allclose(cached.astype(np.float32), fresh.numpy(), atol=2e-3, rtol=2e-3)
        one_layer = cache.load(u, layer=1)
        assert isinstance(one_layer, np.memmap)  # only that layer is read from disk
        np.testing.assert_array_equal(one_layer[0], cached[1])
    again = FeatureCache(tmp_path, weights_hash(up))
    assert again.ensure(utts, up, max_seconds=10.0) == 0
    # Other weights -> another hash -> a miss.
    assert weights_hash(TinyFrameUpstream(seed=1)) != weights_hash(up)


def test_tasks_naming_the_same_audio_differently_share_its_features(data_root, tmp_path):
    import dataclasses

    up, utts, cache = filled_cache(data_root, tmp_path)
    renamed = [dataclasses.replace(u, id=f"other-task/{u.id}") for u in utts]  # as SID and ASV name VoxCeleb files
    assert cache.ensure(renamed, up, max_seconds=10.0) == 0
    sliced = [dataclasses.replace(u, duration=u.duration / 2) for u in utts]  # another slice is other audio
    assert cache.ensure(sliced, up, max_seconds=10.0) == len(utts)


def test_features_held_in_ram_are_read_once_up_to_the_limit(data_root, tmp_path, monkeypatch):
    up = TinyFrameUpstream().eval()
    utts = build_task("ic", data_root).load_split("train")
    cache = FeatureCache(tmp_path, weights_hash(up))
    cache.ensure(utts, up, max_seconds=10.0)
    reads = []
    original = FeatureCache.load
    monkeypatch.setattr(FeatureCache, "load", lambda self, u, layer=None: reads.append(u.id) or original(self, u, layer))
    one = cache.load(utts[0]).nbytes
    reads.clear()

    held = HeldArrays(limit_bytes=int(1.5 * one))  # room for one of the three
    source = CachedFeatures(cache, up.downsample_rate, held=held)
    first = source.batch(utts)
    assert len(reads) == len(utts)
    assert 0 < len(held._arrays) < len(utts) and held.bytes <= held.limit_bytes
    reads.clear()
    second = source.batch(utts)
    assert torch.equal(first.hidden, second.hidden)
    assert len(reads) == len(utts) - len(held._arrays)  # only what did not fit is read again
    reads.clear()
    CachedFeatures(cache, up.downsample_rate, held=HeldArrays(0)).batch(utts)
    assert len(reads) == len(utts)


def test_cache_is_listed_with_its_upstreams_and_pruned_on_request(data_root, tmp_path, capsys):
    import run_benchmark

    utts = build_task("ic", data_root).load_split("train")
    for seed, source in ((0, "teacher_v1"), (1, "teacher_v2")):
        up = TinyFrameUpstream(seed=seed).eval()
        FeatureCache(tmp_path, weights_hash(up), source).ensure(utts, up, max_seconds=10.0)
    entries = list_cache(tmp_path)
    assert sorted(e.upstream for e in entries) == ["teacher_v1", "teacher_v2"]
    assert all(e.files == len(utts) and e.bytes > 0 and e.last_used > 0 for e in entries)
    assert run_benchmark.main(["cache", "--cache-dir", str(tmp_path)]) == 0
    assert "teacher_v1" in capsys.readouterr().out
    with pytest.raises(ValueError, match="matches 2 folders"):
        remove_cache_entries(tmp_path, [""])  # ambiguous: nothing is deleted
    assert len(list_cache(tmp_path)) == 2
    old = next(e for e in entries if e.upstream == "teacher_v1")
    meta = old.path / "upstream.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "last_used": time.time() - 3 * 86400}))
    removed = remove_cache_entries(tmp_path, unused_days=2)
    assert [e.upstream for e in removed] == ["teacher_v1"] and not old.path.exists()
    (kept,) = list_cache(tmp_path)
    assert run_benchmark.main(["cache", "--cache-dir", str(tmp_path), "--remove", kept.path.name[:6]]) == 0
    assert list_cache(tmp_path) == []


def test_second_run_extracts_nothing(data_root, tmp_path, monkeypatch):
    first = run_task(options(data_root, tmp_path))
    assert set(first["metrics"]) == {"dev", "test"}
    calls = []
    monkeypatch.setattr(FeatureCache, "save", lambda self, utt, feats: calls.append(utt.id))
    run_task(options(data_root, tmp_path, seed=1))
    assert calls == []


def test_max_utterances_trains_on_the_same_seeded_subset(data_root, tmp_path, monkeypatch):
    saved: dict[str, list[str]] = {}
    original = FeatureCache.save

    def record(self, utt, feats):
        saved[self._run].append(utt.id)
        return original(self, utt, feats)
    monkeypatch.setattr(FeatureCache, "save", record)
    for run, extra in (("all", []), ("two", ["train.max_utterances=2"]), ("again", ["train.max_utterances=2"])):
        saved[run] = []
        monkeypatch.setattr(FeatureCache, "_run", run, raising=False)
        run_task(options(data_root, tmp_path / run, max_steps=2, overrides=FAST + extra))
    train = {u.id for u in build_task("ic", data_root).load_split("train")}
    assert len(train & set(saved["all"])) == len(train) > 2
    subset = train & set(saved["two"])
    assert len(subset) == 2 and subset == train & set(saved["again"])


class Killed(Exception):
    """Stands for the process dying (the SIGKILL test below kills a real one)."""


def die_after(monkeypatch, task: str, updates: int) -> None:
    """``task``'s loss raises :class:`Killed` in update ``updates + 1`` (one loss per update): the run dies there,
    after its last checkpoint."""
    task_class, losses = get_task_class(task), []
    real_loss = task_class.loss

    def dying_loss(self, *args):
        losses.append(1)
        if len(losses) == updates + 1:
            raise Killed
        return real_loss(self, *args)

    monkeypatch.setattr(task_class, "loss", dying_loss)


def test_resume_after_crash_matches_uninterrupted_run(data_root, tmp_path, monkeypatch):
    kw = dict(max_steps=10, overrides=FAST + ["optimizer.lr=1e-2"])
    straight = run_task(options(data_root, tmp_path / "a", **kw))
    die_after(monkeypatch, "ic", 7)  # after the step-6 checkpoint and one more update
    with pytest.raises(Killed):
        run_task(options(data_root, tmp_path / "b", **kw))
    monkeypatch.undo()
    resumed = run_task(options(data_root, tmp_path / "b", resume=True, **kw))
    assert resumed["metrics"] == straight["metrics"]
    assert resumed["steps"] == straight["steps"] == 10
    a = torch.load(Path(straight["run_dir"]) / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(Path(resumed["run_dir"]) / "checkpoints" / "last.pt", weights_only=True)["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # A finished run is not redone by --resume, and no second set of rows is appended.
    rows = (tmp_path / "b" / "results" / "results.csv").read_text().splitlines()
    run_task(options(data_root, tmp_path / "b", resume=True, **kw))
    assert (tmp_path / "b" / "results" / "results.csv").read_text().splitlines() == rows


def test_rows_layer_and_lr_sweep(data_root, tmp_path):
    summary = run_task(options(data_root, tmp_path, layer=1, lr_sweep=True,
                               overrides=FAST + ["sweep.grid=[0.0001, 0.01]", "sweep.steps=2"]))
    sweep = json.loads((Path(summary["run_dir"]) / "lr_sweep.json").read_text())
    assert sweep["chosen_lr"] in (1e-4, 1e-2)
    with open(tmp_path / "results" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["split"], r["metric"]) for r in rows] == [("dev", "accuracy"), ("test", "accuracy")]
    assert all(float(r["lr"]) == sweep["chosen_lr"] and r["layer"] == "1" for r in rows)
    assert rows[0]["layer_weights"].split() == ["0.0000", "1.0000", "0.0000"]
    assert rows[0]["upstream"] == TINY_UPSTREAM and int(rows[0]["params"]) > 0


def test_skip_bad_audio(tmp_path):
    root = tmp_path / "data"
    write_fsc(root)
    bad = root / "fluent_speech_commands_dataset" / "wavs" / "speakers" / "S1" / "train1.wav"
    bad.write_bytes(b"RIFF not really audio")
    with pytest.raises(ValueError, match="train1.wav"):
        run_task(options(root, tmp_path))
    summary = run_task(options(root, tmp_path, skip_bad_audio=True))
    skipped = json.loads((Path(summary["run_dir"]) / "skipped_audio.json").read_text())
    assert list(skipped) == ["wavs/speakers/S1/train1.wav"]


def test_batches_are_sized_by_seconds():
    assert pack_by_seconds([0, 1, 2, 3], [1.0, 2.0, 5.0, 1.0], 3.0) == [[0, 1], [2], [3]]
    durations = [0.5 + 0.1 * (i % 7) for i in range(40)]
    a, b = epoch_batches(durations, 2.0, seed=3, epoch=1), epoch_batches(durations, 2.0, seed=3, epoch=1)
    assert a == b and a != epoch_batches(durations, 2.0, seed=3, epoch=2)
    assert sorted(i for batch in a for i in batch) == list(range(40))
    assert all(sum(durations[i] for i in batch) <= 2.0 for batch in a)
    weights = [1.0 if i < 20 else 0.0 for i in range(40)]
    drawn = [i for batch in epoch_batches(durations, 2.0, 0, 0, weights) for i in batch]
    assert len(drawn) == 40 and max(drawn) < 20
    assert eval_batches([1.0, 3.0, 2.0], 3.0) == [[1], [2, 0]]  # longest first


APPEND_100_ROWS = """
import sys
from pathlib import Path
from benchmark import results
info = results.RunInfo(sys.argv[2], 1, "h", "ks", 0, "c", "r")
for i in range(100):
    results.append_rows(Path(sys.argv[1]), results.format_rows(info, {"test": {"accuracy": i}}, 1, 0.1, 1e-3, [0.5]))
"""


def test_concurrent_appends_keep_every_row(tmp_path):
    root = Path(__file__).resolve().parent.parent
    procs = [subprocess.Popen([sys.executable, "-c", APPEND_100_ROWS, str(tmp_path), f"up{k}"], cwd=root)
             for k in range(2)]
    assert [p.wait(60) for p in procs] == [0, 0]
    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 200
    assert all(len(r) == len(results.COLUMNS) and None not in r.values() for r in rows)
    for k in range(2):
        assert sorted(int(float(r["value"])) for r in rows if r["upstream"] == f"up{k}") == list(range(100))


def test_cli_errors_name_the_problem(tmp_path, capsys, data_root):
    from run_benchmark import main

    assert main(["--upstream", TINY_UPSTREAM, "--task", "nope", "--data-root", str(data_root)]) == 2
    assert "valid tasks:" in capsys.readouterr().err
    assert main(["--upstream", "nope", "--task", "ic", "--data-root", str(data_root)]) == 2
    assert "Registered:" in capsys.readouterr().err
    assert main(["--upstream", TINY_UPSTREAM, "--task", "ks", "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "speech_commands_v0.01" in err and "DATA_LAYOUTS" in err
    assert main(["--upstream", TINY_UPSTREAM, "--task", "ic", "--data-root", str(data_root), "-o", "optimizer.lrr=1"]) == 2
    assert "unknown key" in capsys.readouterr().err


def test_cli_runs_several_tasks_and_a_bad_one_stops_no_other(tmp_path, capsys, data_root):
    from run_benchmark import main

    common = ["--upstream", TINY_UPSTREAM, "--data-root", str(data_root), "--results-dir", str(tmp_path / "r"),
              "--cache-dir", str(tmp_path / "c"), "--max-steps", "3", "--device", "cpu"]
    for o in FAST:
        common += ["-o", o]
    assert main(common + ["--task", "ic", "nope", "ks"]) == 2
    out, err = capsys.readouterr()
    assert "ic test:" in out and "ks test:" in out and "1 of 3 tasks failed: nope" in err
    with open(tmp_path / "r" / "results.csv") as f:
        assert {r["task"] for r in csv.DictReader(f)} == {"ic", "ks"}
    assert main(common + ["--task", "ic", "er", "--fold", "1"]) == 2
    assert "--fold selects a fold of one task" in capsys.readouterr().err


def test_no_cache_and_trainable_upstream(data_root, tmp_path):
    live = run_task(options(data_root, tmp_path, cache="off", max_steps=3))
    assert not (tmp_path / "cache").exists() and "accuracy" in live["metrics"]["test"]
    tuned = run_task(options(data_root, tmp_path, upstream_trainable=True, max_steps=3,
                             overrides=FAST + ["optimizer.lr=0.05"]))
    saved = torch.load(Path(tuned["run_dir"]) / "checkpoints" / "best.pt", weights_only=True)
    start = TinyFrameUpstream().state_dict()
    assert not (tmp_path / "cache").exists()
    assert any(not torch.equal(saved["upstream"][k], start[k]) for k in start)  # the upstream was fine-tuned


def test_early_stopping_when_dev_stops_improving(data_root, tmp_path):
    # lr 0: the dev metric never improves after the first evaluation, so patience 1 stops at the second one.
    summary = run_task(options(data_root, tmp_path, max_steps=30,
                               overrides=FAST + ["optimizer.lr=0.0", "train.patience=1"]))
    assert summary["steps"] == 6


KILLABLE_RUN = """
import sys
from pathlib import Path
from benchmark.engine import RunOptions, run_task
from tests.fixtures.upstreams import register_tiny_upstream
TINY_UPSTREAM = register_tiny_upstream()
run_task(RunOptions(upstream=TINY_UPSTREAM, task="ic", data_root=Path(sys.argv[1]), results_dir=Path(sys.argv[2]),
                    max_steps=120, cache_dir=Path(sys.argv[3]), overrides=sys.argv[4:], device="cpu", resume=True))
"""


def test_sigkill_during_training_then_resume(data_root, tmp_path):
    kw = dict(max_steps=120, resume=True)
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE_RUN, str(data_root), str(tmp_path / "b" / "results"),
                             str(tmp_path / "b" / "cache"), *FAST], cwd=root,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list((tmp_path / "b" / "results").glob("*/ic/*/checkpoints/last.pt")) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_early = not list((tmp_path / "b" / "results").glob("*/ic/*/DONE"))
    resumed = run_task(options(data_root, tmp_path / "b", **kw))
    straight = run_task(options(data_root, tmp_path / "a", **kw))
    assert killed_early  # the kill landed mid-training, so the resume had work to do
    assert resumed["metrics"] == straight["metrics"] and resumed["steps"] == 120


def test_rows_record_the_protocol_and_a_random_upstream(data_root, tmp_path):
    """Every row says how the features were used and whether the upstream's weights were random."""
    run_task(options(data_root, tmp_path, max_steps=2))
    run_task(options(data_root, tmp_path, max_steps=2, layer=1))
    run_task(options(data_root, tmp_path, max_steps=2, upstream_trainable=True))
    with pytest.raises(ValueError, match="needs its weights: pass --upstream-ckpt PATH"):
        run_task(options(data_root, tmp_path, upstream=TINY_PRETRAINED, max_steps=2))
    run_task(options(data_root, tmp_path, upstream=TINY_PRETRAINED, random_init=True, max_steps=2))
    with open(tmp_path / "results" / "results.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test"]
    assert [(r["upstream"], r["protocol"], r["upstream_random"]) for r in rows] == [
        (TINY_UPSTREAM, "weighted-sum", "0"), (TINY_UPSTREAM, "layer-1", "0"),
        (TINY_UPSTREAM, "finetune-weighted-sum", "0"), (TINY_PRETRAINED, "weighted-sum", "1")]
    stats = list((tmp_path / "results" / TINY_PRETRAINED / "upstream_stats").glob("*.json"))
    assert [p.stem for p in stats] == [rows[-1]["checkpoint_hash"]]


ASR_FAST = ["train.eval_every=4", "batch.max_seconds=0.7", "batch.eval_max_seconds=2.0", "head.proj_dim=8",
            "head.hidden_size=8", "head.dropout=0.5", "optimizer.lr=1e-2"]


def test_resume_without_a_checkpoint_equals_a_fresh_run_bit_for_bit(tmp_path):
    """--resume on a run that has no checkpoint yet re-seeds like a fresh run (the ASR head has dropout, which
    draws from the global RNG: without the re-seed the final weights differed)."""
    root = tmp_path / "data"
    write_librispeech(root)
    kw = dict(task="asr", max_steps=4, overrides=ASR_FAST)
    fresh = run_task(options(root, tmp_path / "a", **kw))
    resumed = run_task(options(root, tmp_path / "b", resume=True, **kw))
    a = torch.load(Path(fresh["run_dir"]) / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(Path(resumed["run_dir"]) / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["metrics"] == fresh["metrics"]


def test_resume_after_a_config_change_says_it_starts_a_new_run(data_root, tmp_path, caplog, monkeypatch):
    die_after(monkeypatch, "ic", 1)
    with pytest.raises(Killed):
        run_task(options(data_root, tmp_path))
    monkeypatch.undo()
    with caplog.at_level("WARNING", logger="benchmark.engine"):
        summary = run_task(options(data_root, tmp_path, resume=True, overrides=FAST + ["optimizer.lr=0.5"]))
    said = [r.getMessage() for r in caplog.records if "--resume" in r.getMessage()]
    assert len(said) == 1 and "task_config.optimizer.lr" in said[0] and "new run starts in" in said[0]
    assert summary["run_dir"] in said[0] and len(list(Path(summary["run_dir"]).parent.iterdir())) == 2
    caplog.clear()
    with caplog.at_level("WARNING", logger="benchmark.engine"):
        run_task(options(data_root, tmp_path / "other", resume=True))
    assert any("nothing to resume" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("steps", [0, -5])
def test_max_steps_must_be_positive(data_root, tmp_path, steps):
    with pytest.raises(ValueError, match=f"--max-steps must be a positive number of updates, got {steps}"):
        run_task(options(data_root, tmp_path, max_steps=steps))
    with pytest.raises(ValueError, match=f"train.max_steps must be a positive number of updates, got {steps}"):
        run_task(options(data_root, tmp_path, max_steps=None, overrides=FAST + [f"train.max_steps={steps}"]))
    assert not (tmp_path / "results").exists()  # no test rows scored on an untrained head


def test_a_bad_test_line_stops_the_run_before_training(tmp_path, monkeypatch):
    """A bad line in the test part of VoxCeleb1's iden_split.txt is reported before any training, and leaves no
    run folder behind."""
    root = tmp_path / "data"
    write_voxceleb1(root)
    split = root / "VoxCeleb1" / "iden_split.txt"
    split.write_text(split.read_text() + "3 id10002/vid1/00009.wav extra-field\n")
    trained = []
    monkeypatch.setattr("benchmark.engine.train", lambda *a, **k: trained.append(1))
    with pytest.raises(ValueError, match=r"iden_split.txt:9: expected"):
        run_task(options(root, tmp_path, task="sid"))
    assert not trained and not list((tmp_path / "results").glob("*/sid/*"))


def test_a_run_failing_before_training_leaves_no_half_made_folder(data_root, tmp_path):
    root = tmp_path / "data"
    write_fsc(root)
    bad = root / "fluent_speech_commands_dataset" / "wavs" / "speakers" / "S2" / "test2.wav"
    good = bad.read_bytes()
    bad.write_bytes(b"RIFF not really audio")  # the test split's audio is unreadable
    with pytest.raises(ValueError, match="test2.wav"):
        run_task(options(root, tmp_path))
    assert not list((tmp_path / "results").glob("*/ic/*"))
    bad.write_bytes(good)
    summary = run_task(options(root, tmp_path))
    assert not Path(summary["run_dir"]).name.endswith("-2")
