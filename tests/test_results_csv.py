"""Issue 22 §5: results.csv survives editors and full disks. Each append starts on a fresh line and is all or
nothing; ``report`` names and skips a malformed line instead of crashing."""
from __future__ import annotations

import csv
import errno
import os

import pytest

import run_benchmark
from benchmark import results
from benchmark.table import load_results
from common import io as common_io


def rows_text(upstream: str, value: float) -> str:
    info = results.RunInfo(upstream, 1, "h", "ks", 0, "c", "r")
    return results.format_rows(info, {"test": {"accuracy": value}}, 1, 0.1, 1e-3, [0.5, 0.5])


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_an_append_after_a_last_line_without_newline_starts_a_fresh_line(tmp_path):
    path = results.append_rows(tmp_path, rows_text("a", 1.0))
    path.write_bytes(path.read_bytes().rstrip(b"\n"))  # an editor saved it without the final newline
    results.append_rows(tmp_path, rows_text("b", 2.0))
    rows = read_rows(path)
    assert [(r["upstream"], r["value"]) for r in rows] == [("a", "1"), ("b", "2")]
    assert all(len(r) == len(results.COLUMNS) and None not in r.values() for r in rows)  # no 35-field line


def test_a_failed_append_leaves_no_fragment(tmp_path, monkeypatch):
    path = results.append_rows(tmp_path, rows_text("a", 1.0))
    before = path.read_bytes()
    real_write = os.write

    def disk_full_after_60_bytes(fd, data):
        real_write(fd, bytes(data[:60]))  # the disk takes a fragment, then is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(common_io.os, "write", disk_full_after_60_bytes)
    with pytest.raises(OSError, match="No space left on device") as info:
        results.append_rows(tmp_path, rows_text("b", 2.0))
    assert info.value.filename == str(path)  # the error names the file
    monkeypatch.undo()
    assert path.read_bytes() == before  # truncated back: nothing for the next row to glue onto
    results.append_rows(tmp_path, rows_text("c", 3.0))
    assert [r["upstream"] for r in read_rows(path)] == ["a", "c"]


def test_report_names_and_skips_a_malformed_line(tmp_path, caplog, capsys):
    path = results.append_rows(tmp_path, rows_text("a", 1.0))
    good = path.read_text().splitlines()[1]
    with open(path, "a") as f:
        f.write(good + good + "\n")          # line 3: two rows glued together (2 x columns - 1 fields)
        fields = good.split(",")
        fields[results.COLUMNS.index("value")] = "oops"
        f.write(",".join(fields) + "\n")  # line 4: a damaged value
    results.append_rows(tmp_path, rows_text("b", 2.0))
    df = load_results(tmp_path)
    assert list(df["upstream"]) == ["a", "b"]
    width = len(results.COLUMNS)
    assert f"{path}:3: malformed row skipped ({2 * width - 1} fields, expected {width})" in caplog.text
    assert f"{path}:4: malformed row skipped (value 'oops' is not a number)" in caplog.text


def test_report_without_results_is_one_line_and_exit_2(tmp_path, capsys):
    assert run_benchmark.main(["report", "--results-dir", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "no results table at" in err and "Traceback" not in err
