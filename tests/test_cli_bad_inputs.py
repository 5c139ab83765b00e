"""Issue 17 §5: every user error of the four command-line tools is one line naming the file or key, exit code 2, no
traceback, and nothing already written is lost.

Each CLI is driven in-process (``main(argv)``) through its bad inputs: paths, configs, checkpoints, data layouts,
flags. argparse's own refusals (a malformed flag value) exit 2 with its usage line and one ``error:`` line.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import transformers

import run_benchmark
import run_distill
import run_pretrain
from synth.__main__ import main as synth_main
from tests.fixtures.datasets import write_fsc, write_speech_commands, write_tone_corpus, write_voxceleb1
from tests.fixtures.unsafe import Payload
from tests.fixtures.upstreams import (TINY_DISTILL_RUN, TINY_PRETRAINED, TINY_UPSTREAM, tiny_config, tiny_hf_config,
                                     tiny_pretrain_args, tiny_teacher)
from upstream.builtin import random_upstream
from upstream.checkpoints import save_upstream

FAST = ["train.eval_every=3", "batch.max_seconds=0.3", "batch.eval_max_seconds=2.0", "head.proj_dim=8"]


def call(main, argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse
        code = e.code
    out, err = capsys.readouterr()
    return code, err


def assert_user_error(main, argv, named: str, capsys) -> str:
    code, err = call(main, argv, capsys)
    assert code == 2, (argv, code, err[-2000:])
    assert "Traceback" not in err, err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith("error:") or ": error:" in line]
    assert len(lines) == 1, err[-2000:]
    # the file or key is named on the error line (a dataset audit lists its problems on the lines below it)
    assert named in lines[0] or named in err[err.index(lines[0]):], (named, err[-2000:])
    return lines[0]


@pytest.fixture(scope="module")
def w(tmp_path_factory) -> dict[str, Path]:
    """Every bad file the sweep needs, made once."""
    root = tmp_path_factory.mktemp("cli")
    p: dict[str, Path] = {"root": root}
    p["data"] = root / "data"
    write_fsc(p["data"])
    write_speech_commands(p["data"])
    write_voxceleb1(p["data"])
    p["bad_split"] = root / "bad_split"
    write_voxceleb1(p["bad_split"])
    split = p["bad_split"] / "VoxCeleb1" / "iden_split.txt"
    split.write_text(split.read_text() + "3 id10002/vid1/00009.wav extra-field\n")
    p["bad_audio"] = root / "bad_audio"
    write_fsc(p["bad_audio"])
    (p["bad_audio"] / "fluent_speech_commands_dataset" / "wavs" / "speakers" / "S2" / "test2.wav").write_bytes(
        b"RIFF not really audio")
    p["empty"] = root / "empty"
    p["empty"].mkdir()
    p["a_file"] = root / "a_file.txt"
    p["a_file"].write_text("not a folder\n")
    # checkpoints
    torch.manual_seed(0)
    hf = transformers.HubertModel(tiny_hf_config())
    p["hf"] = root / "hf"
    hf.save_pretrained(p["hf"])
    p["hf_truncated"] = root / "hf_truncated"
    shutil.copytree(p["hf"], p["hf_truncated"])
    weights = p["hf_truncated"] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    p["hf_no_weights"] = root / "hf_no_weights"
    p["hf_no_weights"].mkdir()
    shutil.copy(p["hf"] / "config.json", p["hf_no_weights"] / "config.json")
    p["hf_mismatch"] = root / "hf_mismatch"  # config says 64-dim, weights are 48-dim
    shutil.copytree(p["hf"], p["hf_mismatch"])
    transformers.HubertModel(tiny_hf_config(hidden_size=48, num_attention_heads=4)).save_pretrained(
        root / "hf48")
    shutil.copy(root / "hf48" / "model.safetensors", p["hf_mismatch"] / "model.safetensors")
    p["evil"] = root / "evil.pt"
    p["marker"] = root / "PWNED"
    torch.save({"model": Payload(p["marker"]), "cfg": {}}, p["evil"])
    p["garbage"] = root / "garbage.pt"
    p["garbage"].write_bytes(b"\x00not a checkpoint" * 10)
    p["junk_pt"] = root / "junk.pt"  # text: the unpickler fails with a KeyError (once a traceback, exit 1)
    p["junk_pt"].write_text("junk\n")
    p["junk_safetensors"] = root / "junk.safetensors"  # torch.load hands .safetensors names to safetensors
    p["junk_safetensors"].write_text("junk\n")
    p["ours_v9"] = root / "ours_v9"
    save_upstream(random_upstream(tiny_config()), p["ours_v9"])
    meta = p["ours_v9"] / "upstream.yaml"
    meta.write_text(meta.read_text().replace("version: 1", "version: 9"))
    p["teacher"] = root / "teacher"
    save_upstream(tiny_teacher(), p["teacher"])
    # audio folders and configs for distillation / pretraining
    p["audio"] = root / "audio"
    write_tone_corpus(p["audio"], count=3)
    p["corrupt_audio"] = root / "corrupt_audio"
    p["corrupt_audio"].mkdir()
    for i in range(3):
        (p["corrupt_audio"] / f"bad{i}.wav").write_bytes(b"RIFF\x00\x00 not audio")
    p["unknown_key_yaml"] = root / "unknown_key.yaml"
    p["unknown_key_yaml"].write_text("run: {max_stepz: 3}\n")
    p["bad_yaml"] = root / "bad.yaml"
    p["bad_yaml"].write_text("run: {max_steps: [1, 2\n")
    p["list_yaml"] = root / "list.yaml"
    p["list_yaml"].write_text("- a\n- b\n")
    # a results table that must survive every failed run untouched
    p["results"] = root / "results"
    p["results"].mkdir()
    (p["results"] / "results.csv").write_text("upstream,params\nkeep,1\n")
    return p


# ---------------------------------------------------------------- run_benchmark.py

def bench(w, *extra, upstream=TINY_UPSTREAM, task="ic", data=None):
    args = ["--upstream", upstream, "--task", *([task] if isinstance(task, str) else task), "--data-root",
            data or w["data"], "--results-dir", w["root"] / "bench_results", "--cache-dir", w["root"] / "cache",
            "--device", "cpu"]
    for o in FAST:
        args += ["-o", o]
    return args + [str(e) for e in extra]


BENCH_CASES = {
    "unknown task": (lambda w: bench(w, task="nope"), "nope"),
    "unknown upstream": (lambda w: bench(w, upstream="nope"), "nope"),
    "dataset folder missing": (lambda w: bench(w, task="ks", data=w["empty"]), "speech_commands_v0.01"),
    "data root is a file": (lambda w: bench(w, data=w["a_file"]), "fluent_speech_commands_dataset"),
    "unknown -o key": (lambda w: bench(w, "-o", "optimizer.lrr=1"), "lrr"),
    "-o wrong type": (lambda w: bench(w, "-o", "optimizer.lr=fast"), "optimizer.lr"),
    "-o list for a number": (lambda w: bench(w, "-o", "batch.max_seconds=[1, 2]"), "batch.max_seconds"),
    "-o without =": (lambda w: bench(w, "-o", "optimizer.lr"), "optimizer.lr"),
    "unknown profile": (lambda w: bench(w, "--profile", "nope"), "nope"),
    "--max-steps 0": (lambda w: bench(w, "--max-steps", "0"), "--max-steps"),
    "--max-steps negative": (lambda w: bench(w, "--max-steps", "-3"), "--max-steps"),
    "train.max_steps 0": (lambda w: bench(w, "-o", "train.max_steps=0"), "train.max_steps"),
    "--max-steps not a number": (lambda w: bench(w, "--max-steps", "ten"), "--max-steps"),
    "--fold with several tasks": (lambda w: bench(w, "--fold", "1", task=["ic", "ks"]), "--fold"),
    "--layer out of range": (lambda w: bench(w, "--layer", "7"), "--layer"),
    "--upstream-ckpt on fbank": (lambda w: bench(w, "--upstream-ckpt", w["hf"], upstream="fbank"),
                                 "--upstream-ckpt"),
    "--random-init on a path": (lambda w: bench(w, "--random-init", upstream=w["hf"]), "--random-init"),
    "--upstream-ckpt with --random-init": (lambda w: bench(w, "--upstream-ckpt", w["hf"], "--random-init",
                                                           upstream=TINY_PRETRAINED), "--random-init"),
    "pretrained name without weights": (lambda w: bench(w, upstream="hubert_base"), "--upstream-ckpt"),
    "--upstream-ckpt missing": (lambda w: bench(w, "--upstream-ckpt", w["root"] / "missing.pt",
                                                upstream="hubert_base"), "missing.pt"),
    "truncated safetensors": (lambda w: bench(w, upstream=w["hf_truncated"]), "model.safetensors"),
    "config/weights shape mismatch": (lambda w: bench(w, upstream=w["hf_mismatch"]), "hf_mismatch"),
    "HF dir without weights": (lambda w: bench(w, upstream=w["hf_no_weights"]), "hf_no_weights"),
    "pickle with code": (lambda w: bench(w, upstream=w["evil"]), "--trust-pickle"),
    "garbage checkpoint": (lambda w: bench(w, upstream=w["garbage"]), "garbage.pt"),
    "garbage -k": (lambda w: bench(w, "-k", w["garbage"], upstream=TINY_PRETRAINED), "garbage.pt"),
    "junk text .pt": (lambda w: bench(w, upstream=w["junk_pt"]), "junk.pt"),
    "junk text -k": (lambda w: bench(w, "-k", w["junk_pt"], upstream=TINY_PRETRAINED), "junk.pt"),
    "junk .safetensors": (lambda w: bench(w, upstream=w["junk_safetensors"]), "junk.safetensors"),
    "junk .safetensors -k": (lambda w: bench(w, "-k", w["junk_safetensors"], upstream=TINY_PRETRAINED),
                             "junk.safetensors"),
    "our format, unknown version": (lambda w: bench(w, upstream=w["ours_v9"]), "upstream.yaml"),
    "bad line in the test split": (lambda w: bench(w, task="sid", data=w["bad_split"]), "iden_split.txt:9"),
    "unreadable audio": (lambda w: bench(w, data=w["bad_audio"]), "test2.wav"),
    "results dir is a file": (lambda w: [*bench(w)[:8], "--results-dir", w["a_file"], *bench(w)[10:]], "a_file.txt"),
    "report without results": (lambda w: ["report", "--results-dir", w["empty"]], "results.csv"),
    "report with a bad reference": (lambda w: ["report", "--results-dir", w["results"], "--reference",
                                               w["bad_yaml"]], "bad.yaml"),
    "cache: unknown hash": (lambda w: ["cache", "--cache-dir", w["root"] / "cache", "--remove", "zzzz"], "zzzz"),
}


@pytest.mark.parametrize("case", list(BENCH_CASES))
def test_run_benchmark_bad_input(case, w, capsys):
    argv, named = BENCH_CASES[case]
    before = (w["results"] / "results.csv").read_bytes()
    assert_user_error(run_benchmark.main, argv(w), named, capsys)
    assert (w["results"] / "results.csv").read_bytes() == before
    assert not w["marker"].exists()
    # a run that failed before training leaves no run folder behind
    assert not list((w["root"] / "bench_results").glob("*/*/*/config.yaml"))


# ---------------------------------------------------------------- run_distill.py

def training_cli_cases(run) -> dict:
    """The bad inputs run_distill.py and run_pretrain.py share (the same flags and config loader), for
    ``run(w, *extra, config=, data=, out=)`` building either's arguments."""
    return {
        "config missing": (lambda w: run(w, config=w["root"] / "nope.yaml"), "nope.yaml"),
        "config unknown key": (lambda w: run(w, config=w["unknown_key_yaml"]), "max_stepz"),
        "config not YAML": (lambda w: run(w, config=w["bad_yaml"]), "bad.yaml"),
        "config not a mapping": (lambda w: run(w, config=w["list_yaml"]), "list.yaml"),
        "--max-steps 0": (lambda w: run(w, "--max-steps", "0"), "max-steps"),
        "--max-steps negative": (lambda w: run(w, "--max-steps", "-1"), "max-steps"),
        "--max-steps not a number": (lambda w: run(w, "--max-steps", "two"), "--max-steps"),
        "data missing": (lambda w: run(w, data=w["root"] / "no_audio_here"), "no_audio_here"),
        "data has no audio": (lambda w: run(w, data=w["empty"]), str(Path("empty"))),
        "data all unreadable": (lambda w: run(w, data=w["corrupt_audio"]), "corrupt_audio"),
        "output is a file": (lambda w: run(w, out=w["a_file"]), "a_file.txt"),
    }


def distill(w, *extra, teacher=None, config="configs/distill/distilhubert.yaml", data=None, out=None):
    args = ["--config", config, "--teacher", teacher or w["teacher"], "--data", data or w["audio"],
            "--output", out or w["root"] / "student", "--max-steps", "2"]
    for o in TINY_DISTILL_RUN:
        args += ["-o", o]
    return args + [str(e) for e in extra]


DISTILL_CASES = {
    **training_cli_cases(distill),
    "unknown -o key": (lambda w: distill(w, "-o", "run.optim.lrr=1"), "lrr"),
    "-o wrong type": (lambda w: distill(w, "-o", "run.optim.lr=fast"), "run.optim.lr"),
    "-o without =": (lambda w: distill(w, "-o", "run.optim.lr"), "run.optim.lr"),
    "unknown teacher": (lambda w: distill(w, teacher="nope"), "nope"),
    "pretrained teacher without weights": (lambda w: distill(w, teacher="hubert_base"), "--teacher-ckpt"),
    "--teacher-ckpt missing": (lambda w: distill(w, "--teacher-ckpt", w["root"] / "missing.pt",
                                                 teacher="hubert_base"), "missing.pt"),
    "--teacher-ckpt on fbank": (lambda w: distill(w, "--teacher-ckpt", w["hf"], teacher="fbank"),
                                "--teacher-ckpt"),
    "teacher pickle with code": (lambda w: distill(w, teacher=w["evil"]), "--trust-pickle"),
    "teacher truncated safetensors": (lambda w: distill(w, teacher=w["hf_truncated"]), "model.safetensors"),
    "teacher HF dir without weights": (lambda w: distill(w, teacher=w["hf_no_weights"]), "hf_no_weights"),
    "teacher config/weights mismatch": (lambda w: distill(w, teacher=w["hf_mismatch"]), "hf_mismatch"),
    "teacher garbage": (lambda w: distill(w, teacher=w["garbage"]), "garbage.pt"),
    "teacher junk text .pt": (lambda w: distill(w, teacher=w["junk_pt"]), "junk.pt"),
    "teacher junk .safetensors": (lambda w: distill(w, teacher=w["junk_safetensors"]), "junk.safetensors"),
    "target layer beyond the reference depth": (lambda w: distill(w, "-o", "objective.target_layers=[4, 8, 99]"),
                                                 "objective.target_layers"),
}


@pytest.mark.parametrize("case", list(DISTILL_CASES))
def test_run_distill_bad_input(case, w, capsys):
    argv, named = DISTILL_CASES[case]
    assert_user_error(run_distill.main, argv(w), named, capsys)
    assert not w["marker"].exists()
    assert not list((w["root"] / "student").glob("checkpoints/last.pt"))  # nothing was trained
    assert w["a_file"].read_text() == "not a folder\n"


# ---------------------------------------------------------------- run_pretrain.py

def pretrain(w, *extra, config="configs/pretrain/hubert_mini.yaml", data=None, out=None):
    args = tiny_pretrain_args(data or w["audio"], out or w["root"] / "teacher_out", 2, "run.max_minutes=0",
                              *TINY_DISTILL_RUN, config=config)
    return args + [str(e) for e in extra]


PRETRAIN_CASES = {
    **training_cli_cases(pretrain),
    "unknown -o key": (lambda w: pretrain(w, "-o", "labels.clusterz=3"), "clusterz"),
    "-o wrong type": (lambda w: pretrain(w, "-o", "labels.clusters=many"), "labels.clusters"),
    "-o malformed conv layers": (lambda w: pretrain(w, "-o", "model.conv_layers=[[16, 10]]"), "model.conv_layers"),
    "-o without =": (lambda w: pretrain(w, "-o", "model.layers"), "model.layers"),
    "iteration2 layer out of range": (lambda w: pretrain(w, "-o", "iteration2.enabled=true", "-o",
                                                         "iteration2.layer=9"), "iteration2.layer"),
    "heads do not divide the width": (lambda w: pretrain(w, "-o", "model.heads=5"), "model.heads"),
    "no k-means clusters": (lambda w: pretrain(w, "-o", "labels.clusters=0"), "labels.clusters"),
    "no layers": (lambda w: pretrain(w, "-o", "model.layers=0"), "model.layers"),
    "mask probability above 1": (lambda w: pretrain(w, "-o", "masking.mask_prob=1.5"), "masking.mask_prob"),
    "unknown masking key": (lambda w: pretrain(w, "-o", "masking.prob=0.5"), "prob"),
}


@pytest.mark.parametrize("case", list(PRETRAIN_CASES))
def test_run_pretrain_bad_input(case, w, capsys):
    argv, named = PRETRAIN_CASES[case]
    assert_user_error(run_pretrain.main, argv(w), named, capsys)
    assert w["a_file"].read_text() == "not a folder\n"
    assert not list((w["root"] / "teacher_out").glob("*/checkpoints/last.pt"))  # nothing was trained
    shutil.rmtree(w["root"] / "teacher_out", ignore_errors=True)


# ---------------------------------------------------------------- python -m tasks.synth

SYNTH_CASES = {
    "unknown size": (lambda w: ["--out", w["root"] / "corpus", "--size", "huge"], "--size"),
    "unknown part": (lambda w: ["--out", w["root"] / "corpus", "--only", "timit"], "--only"),
    "seed not a number": (lambda w: ["--out", w["root"] / "corpus", "--seed", "abc"], "--seed"),
    "negative seed": (lambda w: ["--out", w["root"] / "corpus", "--seed", "-1"], "--seed"),
    "workers not a number": (lambda w: ["--out", w["root"] / "corpus", "--workers", "two"], "--workers"),
    "zero workers": (lambda w: ["--out", w["root"] / "corpus", "--workers", "0"], "--workers"),
    "negative workers": (lambda w: ["--out", w["root"] / "corpus", "--workers", "-3"], "--workers"),
    "no --out": (lambda w: ["--size", "tiny"], "--out"),
    "empty --out": (lambda w: ["--out", ""], "--out"),
    "unknown flag": (lambda w: ["--out", w["root"] / "corpus", "--sise", "tiny"], "--sise"),
    "--out is a file": (lambda w: ["--out", w["a_file"], "--size", "tiny"], "a_file.txt"),
    "--out below a file": (lambda w: ["--out", w["a_file"] / "corpus", "--size", "tiny"], "a_file.txt"),
    "--out holds another corpus": (lambda w: ["--out", w["root"] / "other_corpus", "--size", "tiny"],
                                   "other_corpus"),
    "--out has a damaged build marker": (lambda w: ["--out", w["root"] / "damaged_corpus", "--size", "tiny"],
                                         "build.json"),
    "--out has a marker of another shape": (lambda w: ["--out", w["root"] / "list_corpus", "--size", "tiny"],
                                            "list_corpus"),
    "seed not an integer": (lambda w: ["--out", w["root"] / "corpus", "--seed", "1.5"], "--seed"),
    "workers not an integer": (lambda w: ["--out", w["root"] / "corpus", "--workers", "1.5"], "--workers"),
    "--out where no folder can be made": (lambda w: ["--out", "/proc/distilsuperb_corpus", "--size", "tiny"],
                                          "/proc/distilsuperb_corpus"),
    "--out through a symlink loop": (lambda w: ["--out", w["root"] / "loop_a" / "corpus", "--size", "tiny"],
                                     "loop_a"),
    "unknown part among known ones": (lambda w: ["--out", w["root"] / "corpus", "--only", "fluent", "timit"],
                                      "--only"),
}


@pytest.mark.parametrize("case", list(SYNTH_CASES))
def test_synth_bad_input(case, w, capsys):
    state = {"other_corpus": '{"size": "small", "seed": 3}\n', "damaged_corpus": '{"size": "ti',
             "list_corpus": '["tiny", 0]\n'}
    for a, b in (("loop_a", "loop_b"), ("loop_b", "loop_a")):
        if not (w["root"] / a).is_symlink():
            (w["root"] / a).symlink_to(w["root"] / b)
    for name, text in state.items():
        marker = w["root"] / name / ".synth" / "build.json"
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(text)
    argv, named = SYNTH_CASES[case]
    assert_user_error(synth_main, argv(w), named, capsys)
    assert w["a_file"].read_text() == "not a folder\n"
    assert json.loads((w["root"] / "other_corpus" / ".synth" / "build.json").read_text())["seed"] == 3


# ---------------------------------------------------------------- a GPU asked for on a machine without one

NO_GPU_CASES = {
    "run_benchmark --device cuda": (run_benchmark.main, lambda w: bench(w, "--device", "cuda"), "--device cuda"),
    "run_benchmark --device cuda:1": (run_benchmark.main, lambda w: bench(w, "--device", "cuda:1"), "cuda:1"),
    "run_benchmark --device gpu": (run_benchmark.main, lambda w: bench(w, "--device", "gpu"), "--device 'gpu'"),
    "predict --device cuda": (run_benchmark.main, lambda w: ["predict", "--run", w["root"], "--device", "cuda",
                                                              w["root"] / "x.wav"], "--device cuda"),
    "run_distill run.device=cuda": (run_distill.main, lambda w: distill(w, "-o", "run.device=cuda"), "run.device"),
    "run_pretrain run.device=cuda:0": (run_pretrain.main, lambda w: pretrain(w, "-o", "run.device=cuda:0"),
                                       "run.device"),
}


@pytest.mark.parametrize("case", list(NO_GPU_CASES))
def test_a_gpu_device_without_a_gpu_is_one_line(case, w, capsys, monkeypatch):
    main, argv, named = NO_GPU_CASES[case]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # this machine, or a GPU machine pretending
    line = assert_user_error(main, argv(w), named, capsys)
    assert "cpu" in line  # says what to use instead
    assert not list((w["root"] / "bench_results").glob("*/*/*/config.yaml"))
    assert not list((w["root"] / "student").glob("checkpoints/last.pt"))
