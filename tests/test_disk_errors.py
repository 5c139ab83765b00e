"""Issue 22 §7: a full disk under --cache-dir, --results-dir or the distillation --output, a read-only
--results-dir, and a file given where a folder is expected: one line naming the path and the problem, exit code 2,
and no partial file left behind. Full and read-only disks are simulated by patching ``os`` for one folder (the
tests run as root, which ignores permission bits)."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

import run_benchmark
import run_distill
from tests.fixtures.datasets import module_corpus, write_fsc
from tests.fixtures.upstreams import TINY_UPSTREAM, tiny_distill_args, tiny_pretrain_args, write_teacher_and_tones

FAST = ["train.eval_every=3", "batch.max_seconds=0.3", "batch.eval_max_seconds=2.0", "head.proj_dim=8"]


def disk_full_under(monkeypatch, folder: Path) -> None:
    """Every fsync of a file under ``folder`` fails with ENOSPC (as a write to a full disk does)."""
    real = os.fsync

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(folder)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)
    monkeypatch.setattr(os, "fsync", fsync)


def read_only_under(monkeypatch, folder: Path) -> None:
    """Creating a file or folder under ``folder`` fails with EROFS."""
    real_open, real_mkdir = os.open, os.mkdir

    def guarded_open(path, flags, *args, **kwargs):
        if str(path).startswith(str(folder)) and flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    def guarded_mkdir(path, *args, **kwargs):
        if str(path).startswith(str(folder)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_mkdir(path, *args, **kwargs)
    monkeypatch.setattr(os, "open", guarded_open)
    monkeypatch.setattr(os, "mkdir", guarded_mkdir)


data_root = module_corpus("disk_data", write_fsc)


def bench_args(data_root: Path, tmp: Path, results: Path | None = None, cache: Path | None = None) -> list[str]:
    args = ["--upstream", TINY_UPSTREAM, "--task", "ic", "--data-root", str(data_root), "--results-dir",
            str(results or tmp / "results"), "--cache-dir", str(cache or tmp / "cache"), "--max-steps", "3",
            "--device", "cpu"]
    for o in FAST:
        args += ["-o", o]
    return args


def tmp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*.tmp")] if folder.exists() else []


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def disk_full_error(monkeypatch, capsys, folder: Path, main, args: list[str]) -> str:
    """Runs ``main(args)`` with a full disk under ``folder``; asserts exit code 2 and returns its one error line."""
    disk_full_under(monkeypatch, folder)
    assert main(args) == 2
    return one_error_line(capsys.readouterr().err)


def test_disk_full_on_the_cache_dir(data_root, tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    line = disk_full_error(monkeypatch, capsys, cache, run_benchmark.main, bench_args(data_root, tmp_path))
    assert str(cache) in line and "No space left on device" in line
    assert tmp_files(cache) == [] and list(cache.rglob("*.npy")) == []  # no partial array


def test_disk_full_on_the_results_dir_keeps_results_csv_whole(data_root, tmp_path, monkeypatch, capsys):
    results = tmp_path / "results"
    assert run_benchmark.main(bench_args(data_root, tmp_path)) == 0
    before = (results / "results.csv").read_bytes()
    disk_full_under(monkeypatch, results)
    assert run_benchmark.main(bench_args(data_root, tmp_path) + ["--seed", "1"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(results) in line and "No space left on device" in line
    assert (results / "results.csv").read_bytes() == before and tmp_files(results) == []


def test_read_only_results_dir(data_root, tmp_path, monkeypatch, capsys):
    results = tmp_path / "results"
    read_only_under(monkeypatch, results)
    assert run_benchmark.main(bench_args(data_root, tmp_path)) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(results) in line and "Read-only file system" in line and "choose a writable folder" in line


@pytest.mark.parametrize("which", ["results", "cache"])
def test_a_file_where_a_folder_is_expected(data_root, tmp_path, capsys, which):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    args = bench_args(data_root, tmp_path, **{which: blocker})
    assert run_benchmark.main(args) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"{blocker} is a file, but a folder is expected there" in line
    assert blocker.read_text() == "not a folder"


distill_setup = module_corpus("disk_distill", write_teacher_and_tones)


def test_disk_full_on_the_distillation_output(distill_setup, tmp_path, monkeypatch, capsys):
    out = tmp_path / "student"
    line = disk_full_error(monkeypatch, capsys, out, run_distill.main, tiny_distill_args(distill_setup, out, 2))
    assert str(out) in line and "No space left on device" in line
    assert tmp_files(out) == [] and not (out / "model.safetensors").exists()


def test_distillation_output_that_is_a_file(distill_setup, tmp_path, capsys):
    out = tmp_path / "student"
    out.write_text("x")
    assert run_distill.main(tiny_distill_args(distill_setup, out, 2)) == 2
    assert f"{out} is a file, but a folder is expected there" in one_error_line(capsys.readouterr().err)


def test_disk_full_while_pretraining_writes_its_labels(distill_setup, tmp_path, monkeypatch, capsys):
    """labels.pt went through torch.save straight into the file: a full disk was a C++ 'enforce fail'. The first
    file the labels write is now a feature shard (pretrain/label_shards.py); a full disk there is the same line."""
    import run_pretrain

    out = tmp_path / "teacher"
    args = tiny_pretrain_args(distill_setup / "audio", out, 2, "run.threads=1")
    line = disk_full_error(monkeypatch, capsys, out / "iter1", run_pretrain.main, args)
    assert f"{out / 'iter1'}/" in line and ": No space left on device" in line
    assert tmp_files(out) == [] and not (out / "iter1" / "labels.pt").exists()
    assert not list((out / "iter1").rglob("*.json"))  # no shard marked done: a rerun dumps it again
