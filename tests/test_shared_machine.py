"""Issue 22 §8: files written through ``atomic_path`` honour the umask (a shared feature cache works), and an error
raised while a tqdm bar is open is printed on a line of its own."""
from __future__ import annotations

import io
import os
import stat

import pytest
from tqdm import tqdm

from common import cli
from common.io import atomic_write_text, locked_append


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_honour_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        locked_append(tmp_path / "b.csv", "x\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "b.csv").stat().st_mode) == mode


def test_an_error_during_a_progress_bar_is_printed_on_its_own_line(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(cli.sys, "stderr", err)

    def failing_main() -> int:
        bar = tqdm(total=10, file=err, desc="train", leave=False, mininterval=0)
        bar.update(3)  # the bar's line is drawn, with no newline after it
        raise ValueError("data/x.wav: broken")

    assert cli.run_main(failing_main) == 2
    text = err.getvalue()
    assert "train" in text and text.endswith("error: data/x.wav: broken\n")
    before_error = text[: text.rindex("error:")]
    assert before_error.endswith(("\n", "\r"))  # the bar's line was ended or cleared first
