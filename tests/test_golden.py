"""Golden values: refactors keep every behaviour.

Every task's ``results.csv`` values on the tiny offline corpus (tiny deterministic upstream, seed 0, demo profile,
4 updates with dev every 2, one CPU thread), the files each run writes (predictions, RTTMs, QbE scores) and the loss
history of a 10-step distillation run on a tiny random teacher must equal the values recorded in ``tests/golden/``.

Floats are compared with a tolerance, everything else exactly. The same code on another x86 CPU does not give
bit-identical floats: MKL and oneDNN pick AVX2 or AVX-512 kernels at run time, which sum in a different order. Measured
here (AVX-512 vs ``MKL_ENABLE_INSTRUCTIONS=AVX2 DNNL_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2``, and vs
``ATEN_CPU_CAPABILITY=default``): ASV's saved speaker embeddings (values up to ~0.5) differ by at most 5.5e-5, QbE's
scores (printed to 4 decimals) by 3e-4, the distillation history by one unit in the 6th digit (1.3e-6 relative), the
results rows not at all. So a written file's floats must agree within ``FILE_TOL`` (abs + rel 1e-3, 18x the largest
difference measured) and the rows and the history within ``ROW_TOL`` (abs + rel 1e-4: one unit of the 4-decimal
layer weights): still far below what a real change moves: a 1% larger head learning rate puts 61 of ASV's 4608
embedding values beyond ``FILE_TOL``, a 5% larger one 1786 (and changes KS's predicted labels and SD's RTTMs).

A file is recorded as its text with every decimal number replaced by ``#`` (its sha256: ids, labels, integers,
layout; compared exactly) and those numbers in order (compared with ``FILE_TOL``).

A change that is meant to move these numbers re-records them with ``GOLDEN_UPDATE=1 pytest tests/test_golden.py``
and says why in its commit message.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("GOLDEN_UPDATE") == "1"
BOOKKEEPING = {"config.yaml", "summary.json", "DONE", "checkpoints", "tensorboard"}  # paths, dates, hashes
TASKS = ["pr", "ks", "ic", "sid", "er", "asr", "qbe", "sf", "asv", "sd"]
# A decimal number standing on its own (not part of an id such as "id10003" or "0001.wav"): "0.25", "-1e-05", "nan".
# Integers are not matched: counts, steps and ids compare exactly.
DECIMAL = re.compile(r"(?<![\w.])[-+]?(?:\d+\.\d*(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+|nan|inf)(?![\w.])")


@dataclass(frozen=True)
class Tolerance:
    """``|a - b| <= abs + rel * |b|`` (numpy.isclose's rule); nan equals nan."""
    abs: float
    rel: float

    def close(self, a: float, b: float) -> bool:
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b or abs(a - b) <= self.abs + self.rel * abs(b)


# Settings rather than computed values (the learning rate, steps, sizes): the same on every machine, compared exactly.
EXACT_KEYS = {"lr", "step", "steps", "params", "split", "metric", "fold", "layer"}
FILE_TOL = Tolerance(abs=1e-3, rel=1e-3)
ROW_TOL = Tolerance(abs=1e-4, rel=1e-4)


@pytest.fixture
def one_thread():
    """One torch thread, so float sums do not depend on the machine's core count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def split_decimals(text: str) -> tuple[str, list[float]]:
    """``text`` with each decimal number replaced by ``#``, and those numbers in order."""
    return DECIMAL.sub("#", text), [float(m) for m in DECIMAL.findall(text)]


def file_fingerprint(path: Path) -> dict:
    """What a written file must keep: the sha256 of its text without decimals and the decimals themselves (a string
    of 6-significant-digit numbers, so the golden file stays small and diffable)."""
    skeleton, numbers = split_decimals(path.read_text())
    return {"skeleton_sha256": hashlib.sha256(skeleton.encode()).hexdigest(),
            "decimals": " ".join(f"{x:.6g}" for x in numbers)}


def mismatches(got, expected, tol: Tolerance, where: str = "") -> list[str]:
    """Every place where ``got`` differs from ``expected``: floats (and decimals inside strings) beyond ``tol``,
    anything else not equal. Empty when they agree."""
    if isinstance(expected, dict) and isinstance(got, dict):
        if set(got) != set(expected):
            return [f"{where}: keys {sorted(got)} != {sorted(expected)}"]
        return [m for k in sorted(expected) for m in
                (_decimals_mismatch(got[k], expected[k], f"{where}.{k}") if k == "decimals" else
                 _exact_mismatch(got[k], expected[k], f"{where}.{k}") if k in EXACT_KEYS else
                 mismatches(got[k], expected[k], tol, f"{where}.{k}"))]
    if isinstance(expected, list) and isinstance(got, list):
        if len(got) != len(expected):
            return [f"{where}: {len(got)} items != {len(expected)}"]
        return [m for i, (g, e) in enumerate(zip(got, expected)) for m in mismatches(g, e, tol, f"{where}[{i}]")]
    if isinstance(expected, str) and isinstance(got, str):
        (g_text, g_nums), (e_text, e_nums) = split_decimals(got), split_decimals(expected)
        if g_text != e_text or len(g_nums) != len(e_nums):
            return [f"{where}: {got[:80]!r} != {expected[:80]!r}"]
        return _numbers_mismatch(g_nums, e_nums, tol, where)
    if isinstance(expected, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        return [] if tol.close(float(got), expected) else [f"{where}: {got} != {expected} beyond {tol}"]
    return _exact_mismatch(got, expected, where)


def _exact_mismatch(got, expected, where: str) -> list[str]:
    return [] if got == expected else [f"{where}: {got!r} != {expected!r}"]


def _numbers_mismatch(got: list[float], expected: list[float], tol: Tolerance, where: str) -> list[str]:
    if len(got) != len(expected):
        return [f"{where}: {len(got)} numbers != {len(expected)}"]
    bad = [(i, g, e) for i, (g, e) in enumerate(zip(got, expected)) if not tol.close(g, e)]
    return [f"{where}: {len(bad)} of {len(expected)} numbers differ beyond {tol}, first #{i}: {g} != {e}"
            for i, g, e in bad[:1]]


def _decimals_mismatch(got: str, expected: str, where: str) -> list[str]:
    """A file fingerprint's decimals (a space-separated string) within ``FILE_TOL``."""
    return _numbers_mismatch([float(x) for x in got.split()], [float(x) for x in expected.split()], FILE_TOL, where)


def _check(name: str, value) -> None:
    path = GOLDEN / f"{name}.json"
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(json.dumps(value, indent=1, sort_keys=True) + "\n")
        return
    expected = json.loads(path.read_text())
    problems = mismatches(json.loads(json.dumps(value)), expected, ROW_TOL, name)
    assert not problems, "\n".join(problems[:20])


def task_golden_values(data_root: Path, task: str, out: Path) -> dict:
    """The run's results rows, the fingerprint of every file it wrote besides its bookkeeping (predictions, RTTMs,
    QbE scores) and its summary's dev choices: what a refactor must not change."""
    from e2e_runs import run_and_read_rows

    summary, rows = run_and_read_rows(data_root, task, out, max_steps=4)
    keep = ("split", "metric", "value", "steps", "lr", "fold", "layer", "layer_weights", "params")
    values = {"rows": [{k: r[k] for k in keep} for r in rows]}
    run_dir = Path(summary["run_dir"])
    values["files"] = {p.relative_to(run_dir).as_posix(): file_fingerprint(p)
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


def test_the_comparison_tolerates_kernel_noise_and_catches_changes():
    """The measured AVX2/AVX-512 differences pass; a changed label, count or value beyond the tolerance fails."""
    text = '{"id": "id10003/a/00001", "label": "yes", "prediction": [0.0, 0.172763, -1.5e-05]}\n'
    fp = {"skeleton_sha256": "x", "decimals": "0 0.172763 -1.5e-05"}
    assert split_decimals(text) == ('{"id": "id10003/a/00001", "label": "yes", "prediction": [#, #, #]}\n',
                                    [0.0, 0.172763, -1.5e-05])
    assert not mismatches({**fp, "decimals": "3e-07 0.17275 0"}, fp, ROW_TOL)  # 5.5e-5 apart: kernel noise
    assert mismatches({**fp, "decimals": "0 0.175 0"}, fp, ROW_TOL)  # 2e-3 apart: a change
    assert mismatches({**fp, "decimals": "0 0.172763"}, fp, ROW_TOL)  # a number lost
    assert mismatches({**fp, "skeleton_sha256": "y"}, fp, ROW_TOL)  # a label or id changed
    row = {"value": "40", "layer_weights": "0.3338 0.3338 0.3325", "lr": "0.001"}
    assert not mismatches({**row, "layer_weights": "0.3337 0.3338 0.3325"}, row, ROW_TOL)  # one unit of the print
    assert mismatches({**row, "value": "45"}, row, ROW_TOL) and mismatches({**row, "lr": "0.0011"}, row, ROW_TOL)
    assert mismatches([{"loss": 1.16018}], [{"loss": 1.1605}], ROW_TOL) and not mismatches(
        [{"loss": 1.1601801}], [{"loss": 1.16018}], ROW_TOL)
