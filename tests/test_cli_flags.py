"""Every command line: abbreviated flags are errors (argparse's prefix matching once made ``--cache on`` mean
``--cache-dir on``), and ``--help`` or an argument error is answered before torch is imported, with the subcommands
listed."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import run_benchmark
import run_distill
import run_pretrain

REPO = Path(__file__).resolve().parents[1]


def _parser_calls():
    """(file, line, keywords) of every ``ArgumentParser(...)`` call in the repository's code (tests excluded)."""
    for path in sorted(REPO.rglob("*.py")):
        rel = path.relative_to(REPO)
        if rel.parts[0] in {".venv", "tests"} or rel.parts[0].startswith("."):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(rel))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == \
                    "ArgumentParser":
                yield rel, node.lineno, {k.arg: k.value for k in node.keywords}


def test_every_parser_refuses_abbreviations():
    calls = list(_parser_calls())
    assert len(calls) > 20  # the scan sees the CLIs, the scripts and the bench/ scripts
    bad = [f"{rel}:{line}" for rel, line, kw in calls
           if not (isinstance(kw.get("allow_abbrev"), ast.Constant) and kw["allow_abbrev"].value is False)]
    assert not bad, f"ArgumentParser without allow_abbrev=False: {bad}"


@pytest.mark.parametrize("main, argv, flag", [
    (run_benchmark.main, ["--upstream", "fbank", "--task", "ks", "--cache-d", "on"], "--cache-d"),
    (run_benchmark.main, ["report", "--results", "r"], "--results"),
    (run_benchmark.main, ["cache", "--unused", "3"], "--unused"),
    (run_distill.main, ["--config", "c.yaml", "--data", "d", "--output", "o", "--teacher", "t", "--max", "3"],
     "--max"),
    (run_distill.main, ["export", "--student", "s", "--format", "onnx", "--out", "x.onnx", "--quant", "dynamic"],
     "--quant"),
    (run_pretrain.main, ["--config", "c.yaml", "--data", "d", "--output", "o", "--ini", "x"], "--ini"),
])
def test_an_abbreviated_flag_is_an_error(main, argv, flag, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert f"unrecognized arguments: {flag}" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # no folder named after the value ("on", "o", "r")


def _fresh(argv: list[str]) -> tuple[int, str, bool]:
    """Run a script in a fresh interpreter: (exit code, stdout + stderr, whether torch got imported)."""
    code = ("import runpy, sys\nsys.argv = sys.argv[1:]\ntry:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
            "except SystemExit as e:\n    code = e.code\nelse:\n    code = 0\n"
            "print('TORCH', 'torch' in sys.modules)\nsys.exit(code)")
    r = subprocess.run([sys.executable, "-c", code, *argv], cwd=REPO, capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout + r.stderr, "TORCH True" in r.stdout


@pytest.mark.parametrize("argv, listed", [
    (["run_benchmark.py", "--help"], ["run_benchmark.py report", "run_benchmark.py cache", "run_benchmark.py predict",
                                      "run_benchmark.py evaluate"]),
    (["run_benchmark.py", "report", "--help"], ["--results-dir"]),
    (["run_benchmark.py", "predict", "--help"], ["--run"]),
    (["run_distill.py", "--help"], ["run_distill.py export", "--teacher"]),
    (["run_distill.py", "export", "--help"], ["--quantize"]),
    (["run_pretrain.py", "--help"], ["--init"]),
])
def test_help_is_answered_before_torch_is_imported(argv, listed):
    rc, out, torch_imported = _fresh(argv)
    assert rc == 0 and all(s in out for s in listed), out
    assert not torch_imported


@pytest.mark.parametrize("argv", [["run_benchmark.py", "--task", "ks"],
                                  ["run_distill.py", "--config", "c.yaml"],
                                  ["run_pretrain.py", "--output", "o", "--bogus"]])
def test_argument_errors_are_answered_before_torch_is_imported(argv):
    rc, out, torch_imported = _fresh(argv)
    assert rc == 2 and "error:" in out and not torch_imported


def test_without_the_default_corpus_the_hint_names_the_one_that_exists(tmp_path, monkeypatch, capsys):
    """After `make demo QUICK=1` only data/mini_superb_tiny exists: the hint points there, not at building a tiny
    corpus under the default name."""
    monkeypatch.chdir(tmp_path)
    assert run_benchmark.main(["--upstream", "fbank", "--task", "ks"]) == 2
    assert "make demo" in capsys.readouterr().err
    (tmp_path / "data" / "mini_superb_tiny").mkdir(parents=True)
    assert run_benchmark.main(["--upstream", "fbank", "--task", "ks"]) == 2
    assert "pass --data-root data/mini_superb_tiny" in capsys.readouterr().err
