"""ONNX export (run_distill.py export) and the onnxruntime upstream: parity with PyTorch, batch invariance, the
int8 file, the benchmark CLI on a .onnx upstream, and every bad-input path (exit 2, one line naming the file)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

import run_distill
from benchmark import results
from benchmark.cache import weights_hash
from tests.fixtures.datasets import write_speech_commands
from tests.fixtures.upstreams import perturb_, random_wavs, tiny_config
from upstream import build_upstream
from upstream.checkpoints import save_upstream
from upstream.hubert import HubertModel, HubertUpstream
from upstream.onnx_export import METADATA_KEY, export_onnx, read_metadata
from upstream.onnx_upstream import OnnxUpstream, OnnxUpstreamError

LENGTHS = [16000, 7001, 23456]  # an odd length, a short and a long one

VARIANTS = {
    # The demo student's shape: group-norm CNN, post-LN, 2 layers.
    "cnn": dict(),
    # Fbank front end (log-mel through the exported DFT matmul), 1 layer.
    "fbank": dict(front_end="fbank", layers=1),
    # HuBERT Large's flavour: layer-norm CNN with bias, pre-LN layers, prediction heads exported as hidden states.
    "large_heads": dict(extractor_mode="layer_norm", conv_bias=True, layer_norm_first=True, layers=1,
                        pred_layer_ids=(1, 2)),
}


def _tiny_upstream(name: str) -> HubertUpstream:
    torch.manual_seed(0)
    cfg = tiny_config(**VARIANTS[name])
    return HubertUpstream(perturb_(HubertModel(cfg), seed=1), include_pred_heads=bool(cfg.pred_layer_ids))


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, tuple[HubertUpstream, Path]]:
    """name -> (PyTorch upstream, fp32 .onnx). The cnn and fbank students go through the CLI from a saved student
    dir (cnn with --quantize dynamic); the one with heads through export_onnx, since include_pred_heads is a
    loading option rather than part of the saved format."""
    root = tmp_path_factory.mktemp("onnx")
    out = {}
    for name in VARIANTS:
        upstream = _tiny_upstream(name).requires_grad_(False)
        path = root / f"{name}.onnx"
        if upstream.include_pred_heads:
            export_onnx(upstream, path, source=name)
        else:
            argv = ["export", "--student", str(save_upstream(upstream, root / name)), "--format", "onnx",
                    "--out", str(path)] + (["--quantize", "dynamic"] if name == "cnn" else [])
            assert run_distill.main(argv) == 0
        out[name] = (upstream, path)
    return out


@pytest.mark.parametrize("name", list(VARIANTS))
def test_fp32_onnx_matches_pytorch_alone_and_batched(exported, name):
    torch_up, path = exported[name]
    onnx_up = build_upstream(path)
    assert isinstance(onnx_up, OnnxUpstream)
    wavs = random_wavs(LENGTHS, seed=3)
    batched = onnx_up(wavs)
    with torch.no_grad():
        for b, wav in enumerate(wavs):
            ref = torch_up([wav])
            alone = onnx_up([wav])
            assert torch.equal(alone.lengths, ref.lengths)
            assert len(alone.hidden_states) == len(ref.hidden_states)
            n = int(ref.lengths[0])
            assert int(batched.lengths[b]) == n
            for a, r, bt in zip(alone.hidden_states, ref.hidden_states, batched.hidden_states):
                assert a.shape == r.shape
                assert (a - r).abs().max() < 1e-4  # fp32 ONNX vs PyTorch, one utterance
                assert (bt[b, :n] - a[0]).abs().max() < 1e-4  # batched vs alone
                assert not bt[b, n:].any()  # padded frames are zero
    assert onnx_up.frames_for(torch.tensor(LENGTHS)).tolist() == batched.lengths.tolist()
    assert onnx_up.min_samples() == torch_up.min_samples()
    assert onnx_up.num_hidden_states == torch_up.num_hidden_states


def test_int8_file_is_smaller_runs_and_its_error_is_measured(exported, capsys):
    torch_up, fp32 = exported["cnn"]
    int8 = fp32.with_name("cnn.int8.onnx")
    assert int8.is_file() and int8.stat().st_size < fp32.stat().st_size
    meta = read_metadata(int8)
    assert meta["precision"] == "int8" and read_metadata(fp32)["precision"] == "fp32"
    ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert "DynamicQuantizeLinear" in ops and "MatMulInteger" in ops  # weight matmuls are int8
    assert "Conv" in ops and "ConvInteger" not in ops  # convolutions stay fp32 (see QUANTIZED_OPS)
    up8 = build_upstream(int8)
    wav = random_wavs([16000], seed=4)
    with torch.no_grad():
        ref = torch_up(wav).hidden_states
    got = up8(wav).hidden_states
    # Measured, not asserted small: the relative error per hidden state is printed for the record. Only a sanity
    # bound (a broken quantization gives errors of order 1) is checked.
    rel = [float((g - r).norm() / r.norm()) for g, r in zip(got, ref)]
    print("int8 relative error per hidden state:", [f"{e:.4f}" for e in rel])
    assert 0 < max(rel) < 0.5
    assert weights_hash(up8) != weights_hash(build_upstream(fp32))  # the feature cache keys them apart


def test_int8_fbank_student_keeps_its_spectrum_matmuls_fp32(exported, tmp_path):
    from upstream.onnx_export import DFT_BASIS, MEL_FB, quantize_dynamic_int8

    _, fp32 = exported["fbank"]
    int8 = quantize_dynamic_int8(fp32, tmp_path / "fbank.int8.onnx")
    nodes = onnx.load(str(int8)).graph.node
    spectral = [n for n in nodes if any(DFT_BASIS in i or MEL_FB in i for i in n.input)]
    assert len(spectral) == 2 and {n.op_type for n in spectral} == {"MatMul"}
    assert any(n.op_type == "MatMulInteger" for n in nodes)  # the transformer's linears are int8
    assert build_upstream(int8)(random_wavs([8000])).hidden_states[0].shape[1] == 24


def test_cache_key_is_the_files_hash_and_the_label_keeps_the_suffix(exported, tmp_path):
    from common.io import sha256_file

    _, path = exported["cnn"]
    up = build_upstream(path)
    assert weights_hash(up) == sha256_file(path)
    assert results.safe_name(str(path)) == "cnn.onnx"
    assert results.safe_name("students/cnn.int8.onnx") == "cnn.int8.onnx"
    assert results.safe_name("results/demo/distilhubert_mini_cnn") == "distilhubert_mini_cnn"
    meta = read_metadata(path)
    assert meta["params"] == sum(p.numel() for p in exported["cnn"][0].parameters())
    assert meta["macs_per_second"] > 0


def test_run_benchmark_on_an_onnx_upstream_and_its_report_row(exported, tmp_path, capsys):
    import run_benchmark

    _, path = exported["cnn"]
    data = tmp_path / "data"
    write_speech_commands(data)
    common = ["--data-root", str(data), "--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"),
              "--max-steps", "3", "--device", "cpu", "--task", "ks", "-o", "train.eval_every=3",
              "-o", "batch.max_seconds=0.3", "-o", "head.proj_dim=8"]
    assert run_benchmark.main(["--upstream", str(path)] + common) == 0
    assert "ks test:" in capsys.readouterr().out
    int8 = path.with_name("cnn.int8.onnx")
    assert run_benchmark.main(["--upstream", str(int8)] + common) == 0
    with open(tmp_path / "r" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["upstream"] for r in rows} == {"cnn.onnx", "cnn.int8.onnx"}
    stats = json.loads(next((tmp_path / "r" / "cnn.onnx" / "upstream_stats").glob("*.json")).read_text())
    assert stats["params"] == read_metadata(path)["params"] and stats["rtf"] > 0
    cached = {p.name for p in (tmp_path / "c").iterdir() if p.is_dir()}
    assert len(cached) == 2  # one feature folder per file hash
    assert run_benchmark.main(["report", "--results-dir", str(tmp_path / "r"),
                               "--out-dir", str(tmp_path / "rep")]) == 0
    table = capsys.readouterr().out
    assert "| cnn.onnx |" in table and "| cnn.int8.onnx |" in table


# ---- bad input ----------------------------------------------------------------------------------------------------

def _with_metadata(path: Path, nodes, meta: dict | None) -> Path:
    wav = helper.make_tensor_value_info("wav", TensorProto.FLOAT, ["b", "t"])
    lens = helper.make_tensor_value_info("wav_lengths", TensorProto.INT64, ["b"])
    h0 = helper.make_tensor_value_info("hidden_state_0", TensorProto.FLOAT, None)
    frames = helper.make_tensor_value_info("frames", TensorProto.INT64, ["b"])
    graph = helper.make_graph(nodes, "g", [wav, lens], [h0, frames])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.x", 1)])
    if meta is not None:
        helper.set_model_props(model, {METADATA_KEY: json.dumps(meta)})
    onnx.save(model, str(path))
    return path


GOOD_META = {"format": "distilsuperb-onnx-upstream", "version": 1, "family": "hubert", "downsample_rate": 320,
             "frame_convs": [[400, 320]]}


def _bad_files(root: Path, exported) -> dict[str, tuple[Path, str]]:
    _, good = exported["cnn"]
    truncated = root / "truncated.onnx"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    garbage = root / "garbage.onnx"
    garbage.write_bytes(b"\x00\x01 this is not protobuf \xff" * 50)
    identity = [helper.make_node("Identity", ["wav"], ["hidden_state_0"]),
                helper.make_node("Identity", ["wav_lengths"], ["frames"])]
    unknown_op = [helper.make_node("NoSuchOp", ["wav"], ["hidden_state_0"], domain="com.x"),
                  helper.make_node("Identity", ["wav_lengths"], ["frames"])]
    return {
        "truncated": (truncated, "not a valid ONNX model"),
        "garbage": (garbage, "not a valid ONNX model"),
        "foreign": (_with_metadata(root / "foreign.onnx", identity, None), "not a DistilSUPERB upstream export"),
        "family": (_with_metadata(root / "w2v.onnx", identity, dict(GOOD_META, family="wav2vec2")),
                   "model family 'wav2vec2' is not supported"),
        "op": (_with_metadata(root / "op.onnx", unknown_op, GOOD_META), "onnxruntime cannot run it"),
    }


@pytest.mark.parametrize("case", ["truncated", "garbage", "foreign", "family", "op"])
def test_bad_onnx_files_are_refused_before_extraction(exported, tmp_path, capsys, case, monkeypatch):
    import run_benchmark
    from benchmark.cache import FeatureCache

    path, reason = _bad_files(tmp_path, exported)[case]
    with pytest.raises(OnnxUpstreamError, match=reason) as info:
        build_upstream(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)

    def no_extraction(*a, **k):
        raise AssertionError("extraction started")

    monkeypatch.setattr(FeatureCache, "ensure", no_extraction)
    data = tmp_path / "data"
    write_speech_commands(data)
    code = run_benchmark.main(["--upstream", str(path), "--task", "ks", "--data-root", str(data),
                               "--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and str(path) in err[0] and reason in err[0]
    assert not (tmp_path / "c").exists()


def test_onnx_upstream_cannot_be_fine_tuned(exported):
    with pytest.raises(OnnxUpstreamError, match="frozen"):
        build_upstream(exported["cnn"][1]).requires_grad_(True)


def test_export_cli_bad_input(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert run_distill.main(["export", "--student", "fbank", "--format", "onnx", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--student fbank" in err and "not a HuBERT-family upstream" in err and "\n" not in err
    assert run_distill.main(["export", "--student", str(tmp_path / "nope"), "--format", "onnx",
                             "--out", str(out)]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    assert run_distill.main(["export", "--student", "fbank", "--format", "onnx", "--out", str(tmp_path / "m.pt")]) == 2
    assert "ending in .onnx" in capsys.readouterr().err
    (tmp_path / "d.onnx").mkdir()
    argv = ["export", "--student", "fbank", "--format", "onnx", "--out", str(tmp_path / "d.onnx")]
    assert run_distill.main(argv) == 2
    assert "is a directory" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))


def test_int8_quantizes_every_weight_matmul_of_a_wider_model(tmp_path):
    # 96-dim: q/k/v weights of 96 x 96 = 9216 elements, over the 8192-element limit of the exporter's own constant
    # folding, so the fused q/k/v weight (a Concat of three weights) must be folded by export_onnx itself; the
    # 64-dim fixtures above are under the limit and would not notice. Unfolded, the quantizer skips the q/k/v
    # matmuls (their weight is not a constant) and the file stays half fp32.
    from upstream.onnx_export import quantize_dynamic_int8

    torch.manual_seed(0)
    upstream = HubertUpstream(HubertModel(tiny_config(embed_dim=96, ffn_dim=128, layers=1)))
    fp32 = export_onnx(upstream, tmp_path / "wide.onnx")
    int8 = quantize_dynamic_int8(fp32, tmp_path / "wide.int8.onnx")
    nodes = onnx.load(str(int8)).graph.node
    # feature projection + per layer: fused q/k/v, out_proj, two feed-forward linears
    assert sum(n.op_type == "MatMulInteger" for n in nodes) == 1 + 4
    assert not [n for n in nodes if n.op_type == "Concat" and "q_proj" in " ".join(n.input)]
    wav = random_wavs([16000], seed=5)
    with torch.no_grad():
        ref = upstream(wav).hidden_states
    assert all((a - r).abs().max() < 1e-4 for a, r in zip(build_upstream(fp32)(wav).hidden_states, ref))
