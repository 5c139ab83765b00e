"""Golden values: refactors keep every behaviour.

Every task's ``results.csv`` values on the tiny offline corpus (tiny deterministic upstream, seed 0, demo profile,
4 updates with dev every 2, one CPU thread) and the loss history of a 10-step distillation run on a tiny random
teacher must equal the values recorded in ``tests/golden/`` (to 6 significant digits, as the rows print them).

A change that is meant to move these numbers re-records them with ``GOLDEN_UPDATE=1 pytest tests/test_golden.py``
and says why in its commit message.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("GOLDEN_UPDATE") == "1"
BOOKKEEPING = {"config.yaml", "summary.json", "DONE", "checkpoints", "tensorboard"}  # paths, dates, hashes
TASKS = ["pr", "ks", "ic", "sid", "er", "asr", "qbe", "sf", "asv", "sd"]


@pytest.fixture
def one_thread():
    """One torch thread, so float sums do not depend on the machine's core count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _check(name: str, value) -> None:
    path = GOLDEN / f"{name}.json"
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(json.dumps(value, indent=1, sort_keys=True) + "\n")
        return
    expected = json.loads(path.read_text())
    assert _rounded(value) == _rounded(expected)


def _rounded(value):
    """Floats to 6 significant digits (the precision of results.csv), recursively."""
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def task_golden_values(data_root: Path, task: str, out: Path) -> dict:
    """The run's results rows, the sha256 of every file it wrote besides its bookkeeping (predictions, RTTMs,
    QbE scores) and its summary's dev choices: what a refactor must not change."""
    from e2e_runs import run_and_read_rows

    summary, rows = run_and_read_rows(data_root, task, out, max_steps=4)
    keep = ("split", "metric", "value", "steps", "lr", "fold", "layer", "layer_weights", "params")
    values = {"rows": [{k: r[k] for k in keep} for r in rows]}
    run_dir = Path(summary["run_dir"])
    values["files"] = {p.relative_to(run_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                       for p in sorted(run_dir.rglob("*")) if p.is_file() and p.parts[len(run_dir.parts)] not in
                       BOOKKEEPING}
    if summary.get("selected"):  # dev choices (SD threshold, QbE layer)
        values["selected"] = summary["selected"]
    return values


@pytest.mark.parametrize("task", TASKS)
def test_task_results_rows_are_unchanged(tiny_corpus, tmp_path, one_thread, task):
    from tasks.registry import get_task_class

    values = task_golden_values(tiny_corpus, task, tmp_path)
    primary = get_task_class(task).primary_metric  # every task runs end to end on the offline corpus
    assert {r["split"] for r in values["rows"] if r["metric"] == primary and r["value"] != ""} == {"dev", "test"}
    _check(f"task_{task}", values)


def test_distillation_loss_history_is_unchanged(tmp_path, one_thread):
    import run_distill
    from tests.fixtures.datasets import write_tone_corpus
    from tests.fixtures.upstreams import tiny_teacher
    from upstream.checkpoints import save_upstream

    write_tone_corpus(tmp_path / "audio", count=6)
    save_upstream(tiny_teacher(), tmp_path / "teacher")
    args = ["--config", "configs/distill/distilhubert.yaml", "--teacher", str(tmp_path / "teacher"),
            "--data", str(tmp_path / "audio"), "--output", str(tmp_path / "out"), "--max-steps", "10"]
    for o in ["run.data.max_batch_seconds=4.0", "run.data.max_item_seconds=1.5", "run.threads=1",
              "run.log_every=1", "run.optim.lr=2e-3"]:
        args += ["-o", o]
    assert run_distill.main(args) == 0
    history = [json.loads(line) for line in (tmp_path / "out" / "loss_history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in history] == list(range(1, 11))
    _check("distill_history", history)
