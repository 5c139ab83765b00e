"""Export a HuBERT-family upstream (teacher or student, CNN or Fbank front end) to ONNX, and quantize it.

    python run_distill.py export --student DIR --format onnx --out FILE.onnx [--quantize dynamic]

The graph takes ``wav`` ``[batch, sample]`` (float32, 16 kHz, zero-padded) and ``wav_lengths`` ``[batch]`` (int64
samples), both with dynamic axes, and returns ``hidden_state_0 .. hidden_state_N`` ``[batch, frame, dim]`` (the
same hidden states as :class:`upstream.hubert.HubertUpstream`, padded frames zero) and ``frames`` ``[batch]``
(int64 valid frames). ``upstream/onnx_upstream.py`` runs such a file with onnxruntime behind the upstream contract.

Exporter: ``torch.onnx.export(..., dynamo=True)`` (torch.export + onnxscript). The TorchScript-based exporter
(``dynamo=False``) fails on the Fbank front end's complex STFT (torch 2.14.1: "STFT does not currently support
complex types") and is deprecated; tracing would also silently freeze whichever Python branch the example batch
took, where torch.export refuses data-dependent branches. The Fbank spectrum is exported as a DFT matmul rather
than ONNX's STFT op (see :meth:`ExportGraph._fbank`).

The eager model skips masking when a batch has no padding and normalises the first CNN layer one utterance at a
time (``MaskedGroupNorm``); both are Python control flow on tensor values, which a graph cannot hold. So the graph
is traced from :class:`ExportGraph`, which runs the same submodules with the masked path always on and a vectorised
masked group norm: the same arithmetic on valid frames (tests hold it within 1e-4 of the eager model, and batched
within 1e-4 of alone).
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from common.audio import SAMPLE_RATE
from common.io import atomic_path

from .base import Upstream, count_parameters
from .front_ends import ConvFrontEnd, FbankFrontEnd
from .kernels import conv_output_lengths, valid_mask
from .hubert import HubertModel, HubertUpstream

log = logging.getLogger(__name__)

# Written into the ONNX file's metadata_props under METADATA_KEY; onnx_upstream.py refuses files without it.
METADATA_KEY = "distilsuperb"
FORMAT_NAME = "distilsuperb-onnx-upstream"
FORMAT_VERSION = 1
# Opset 20: GELU is one op (Gelu-20; at 18 it is five elementwise passes over the CNN's largest tensors; the demo's
# CNN student ran 0-20% faster at 20 in one interleaved run) and LayerNormalization is one op; onnxruntime 1.31
# runs every op of the exported graphs on CPU.
OPSET = 20
QUANTIZE_CHOICES = ("dynamic", "fp16")
# Buffers of the Fbank front end's spectrum matmuls; the quantizer leaves the matmuls reading them in fp32.
DFT_BASIS, MEL_FB = "dft_basis", "mel_fb"


class UnsupportedModelError(ValueError):
    """The upstream is not of a family this exporter handles (only HuBERT-family models are)."""


class ExportGraph(nn.Module):
    """A :class:`HubertUpstream`'s model as one traceable function of (wav, wav_lengths).

    forward: wav ``[batch, sample]`` float32, wav_lengths ``[batch]`` int64 → (``hidden_state_0 .. N``
    ``[batch, frame, dim]``, frames ``[batch]`` int64). Weight norm of the positional conv is folded into a plain
    weight (same values), dropout is off (eval).
    """

    def __init__(self, upstream: HubertUpstream):
        super().__init__()
        model = HubertModel(upstream.cfg)  # a fresh copy: the caller's model keeps its weight norm
        model.load_state_dict(upstream.model.state_dict())
        model.eval()
        conv = model.encoder.pos_conv.conv
        if hasattr(conv, "parametrizations"):
            torch.nn.utils.parametrize.remove_parametrizations(conv, "weight", leave_parametrized=True)
        self.model = model
        self.include_pred_heads = upstream.include_pred_heads
        self.first_state = upstream.first_state
        if isinstance(model.front_end, FbankFrontEnd):
            spec, fb = model.front_end.mel.spectrogram, model.front_end.mel.mel_scale.fb
            if spec.n_fft != spec.win_length or spec.power != 2.0 or spec.normalized or spec.center:
                raise UnsupportedModelError("Fbank front end: only n_fft == win_length, power 2, center=False, "
                                            "unnormalised spectra export to ONNX")
            n, k = torch.arange(spec.n_fft, dtype=torch.float64), torch.arange(fb.shape[0], dtype=torch.float64)
            angle = 2 * math.pi * n[:, None] * k[None, :] / spec.n_fft
            basis = torch.cat([torch.cos(angle), -torch.sin(angle)], 1) * spec.window.double()[:, None]
            self.register_buffer(DFT_BASIS, basis.float())  # [win, 2 * bins]
            self.register_buffer(MEL_FB, fb.detach().clone().float())  # [bins, mel]

    def _cnn(self, front: ConvFrontEnd, wav: torch.Tensor, lengths: torch.Tensor):
        x = wav[:, None, :] * valid_mask(lengths, wav.shape[-1])[:, None, :].to(wav.dtype)
        for block in front.conv_layers:
            x = block.conv(x)
            lengths = conv_output_lengths(lengths, block.kernel, block.stride)
            keep = valid_mask(lengths, x.shape[-1])[:, None, :].to(x.dtype)
            if block.norm_kind == "group_norm":  # per-utterance, per-channel statistics over valid frames only
                norm = block.layer_norm
                count = keep.sum(-1, keepdim=True).clamp(min=1.0)
                mean = (x * keep).sum(-1, keepdim=True) / count
                var = (((x - mean) * keep) ** 2).sum(-1, keepdim=True) / count
                x = (x - mean) * torch.rsqrt(var + norm.eps) * norm.weight[None, :, None] + norm.bias[None, :, None]
            elif block.norm_kind == "layer_norm":
                x = block.layer_norm(x.transpose(1, 2)).transpose(1, 2)
            x = F.gelu(x) * keep
        return x.transpose(1, 2), lengths

    def _fbank(self, front: FbankFrontEnd, wav: torch.Tensor, lengths: torch.Tensor):
        # The power spectrum as framed audio @ a windowed DFT basis: onnxruntime's STFT op differs from torch.stft
        # by up to 8e-4 in log-mel (naive float32 sums), this matmul by 1e-5 (measured with onnxruntime 1.31).
        frames = wav.unfold(1, front.win, front.hop)  # [batch, frame10, win]; center=False as in the eager model
        spectrum = frames @ self.dft_basis  # [batch, frame10, 2 * bins]: real parts, then imaginary parts
        bins = self.mel_fb.shape[0]
        power = spectrum[..., :bins] ** 2 + spectrum[..., bins:] ** 2
        log_mel = torch.log(power @ self.mel_fb + 1e-6).transpose(1, 2)  # [batch, mel, frame10]
        mel_lengths = conv_output_lengths(lengths, front.win, front.hop)
        log_mel = log_mel * valid_mask(mel_lengths, log_mel.shape[-1])[:, None, :].to(log_mel.dtype)
        x = F.gelu(front.stack(log_mel))
        lengths = conv_output_lengths(mel_lengths, 2, 2)
        x = x * valid_mask(lengths, x.shape[-1])[:, None, :].to(x.dtype)
        return x.transpose(1, 2), lengths

    def forward(self, wav: torch.Tensor, wav_lengths: torch.Tensor):
        model = self.model
        if isinstance(model.front_end, ConvFrontEnd):
            features, lengths = self._cnn(model.front_end, wav, wav_lengths)
        else:
            features, lengths = self._fbank(model.front_end, wav, wav_lengths)
        x = model.feature_projection(features)
        encoder = model.encoder
        mask = valid_mask(lengths, x.shape[1])
        keep = mask[:, :, None].to(x.dtype)
        x = x * keep
        projected = x
        x = x + encoder.pos_conv(x)
        if not encoder.layer_norm_first:
            x = encoder.layer_norm(x)
        states = [projected if self.first_state == "projection" else x]
        for layer in encoder.layers:
            x = layer(x, mask)
            states.append(x)
        if encoder.layer_norm_first:
            states[-1] = encoder.layer_norm(states[-1])
        if self.include_pred_heads:
            states = states + list(model.predict(states[-1]).unbind(1))
        return tuple(s * keep for s in states) + (lengths,)


def frame_convs(upstream: HubertUpstream) -> list[tuple[int, int]]:
    """(kernel, stride) of every length-reducing step of the front end, in order: the valid-frame rule."""
    front = upstream.model.front_end
    if isinstance(front, ConvFrontEnd):
        return [(b.kernel, b.stride) for b in front.conv_layers]
    return [(front.win, front.hop), (2, 2)]


def _write_metadata(path: Path, meta: dict, fp16_conv_weights: bool = False) -> None:
    """Set our metadata; drop the exporter's per-node metadata (source locations, 5% of a student's file).
    ``fp16_conv_weights``: see :func:`_store_conv_weights_fp16`."""
    import onnx

    model = onnx.load(str(path))
    for node in model.graph.node:
        del node.metadata_props[:]
    if fp16_conv_weights:
        _store_conv_weights_fp16(model)
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta, sort_keys=True)
    onnx.save(model, str(path))


def export_onnx(upstream: Upstream, out: str | Path, source: str = "", macs_per_second: float | None = None
                ) -> Path:
    """Write ``upstream`` as an fp32 ONNX graph to ``out`` (atomically: a temporary file renamed at the end).

    Raises :class:`UnsupportedModelError` for upstreams that are not :class:`HubertUpstream` (FBANK, MFCC, a plugin).
    ``macs_per_second`` (MACs per second of audio, measured on the PyTorch model) is stored for the report, since
    an onnxruntime session cannot be counted by torch's FlopCounterMode.
    """
    if not isinstance(upstream, HubertUpstream):
        raise UnsupportedModelError(f"{source or type(upstream).__name__}: only HuBERT-family upstreams (teachers "
                                    f"and students, CNN or Fbank front end) export to ONNX; got "
                                    f"{type(upstream).__name__}")
    out = Path(out)
    graph = ExportGraph(upstream).eval()
    num_states = upstream.num_hidden_states
    wav = torch.randn(2, SAMPLE_RATE) * 0.1
    lengths = torch.tensor([SAMPLE_RATE, 12000])
    batch, time = torch.export.Dim("batch", min=1), torch.export.Dim("time", min=upstream.min_samples())
    names = [f"hidden_state_{i}" for i in range(num_states)] + ["frames"]
    with atomic_path(out) as tmp, torch.no_grad():
        program = torch.onnx.export(graph, (wav, lengths), dynamo=True, opset_version=OPSET,
                                    input_names=["wav", "wav_lengths"], output_names=names,
                                    dynamic_shapes=({0: batch, 1: time}, {0: batch}), verbose=False)
        _fold_weight_subgraphs(program, max(p.numel() for p in graph.parameters()))
        program.save(str(tmp), external_data=False)
        meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "family": "hubert",
                "source": str(source), "source_hash": upstream.weights_hash(),
                "hash_config": upstream.hash_config(), "downsample_rate": int(upstream.downsample_rate),
                "frame_convs": frame_convs(upstream), "num_hidden_states": num_states,
                "params": count_parameters(upstream), "macs_per_second": macs_per_second,
                "precision": "fp32", "torch": torch.__version__,
                "normalize_waveform": bool(upstream.normalize_waveform)}
        _write_metadata(tmp, meta)
    return out


def _fold_weight_subgraphs(program, largest_weight: int) -> None:
    """Fold every subgraph that reads only weights into one initializer (in place), e.g. the Concat + Transpose
    that builds the fused q/k/v weight from ``q_proj``/``k_proj``/``v_proj``
    (:class:`upstream.components.SelfAttention`).

    The exporter's own pass (onnxscript's optimizer) skips inputs over 8192 elements, so for any model wider than
    a test fixture the fused weight stayed a runtime Concat: the int8 quantizer, which only quantizes matmuls with
    a constant weight, then left all q/k/v projections fp32 (the demo's CNN student's int8 file was 2.17x smaller
    than fp32 instead of ~3x). Folding is exact (concatenation and transposition copy values)."""
    from onnxscript import optimizer

    limit = 3 * largest_weight  # the fused q/k/v weight is the largest folded result
    optimizer.optimize(program.model, input_size_limit=limit, output_size_limit=limit)


def _store_conv_weights_fp16(model) -> None:
    """Store every fp32 Conv weight as fp16 plus a Cast back to fp32 (in place). onnxruntime folds the Cast into
    an fp32 weight when it loads the session, so inference runs the same fp32 convolution at the same speed; only
    the file shrinks (by a third for the demo's CNN student, whose convolutions int8 does not touch). The rounding
    (relative 2^-11 per weight) is small next to int8's."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    casts = []
    for node in graph.node:
        if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in inits:
            continue
        weight = inits.pop(node.input[1])
        if weight.data_type != TensorProto.FLOAT:
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(weight).astype("float16"), weight.name + "_fp16")
        graph.initializer.remove(weight)
        graph.initializer.append(half)
        casts.append(helper.make_node("Cast", [half.name], [weight.name], to=TensorProto.FLOAT,
                                      name=weight.name + "_to_fp32"))
    for i, cast in enumerate(casts):  # first in the node list: the graph stays topologically sorted
        graph.node.insert(i, cast)


def read_metadata(path: str | Path) -> dict:
    """The ``distilsuperb`` metadata of an exported file (raises ``KeyError`` when absent)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    return json.loads(props[METADATA_KEY])


def quantized_path(out: str | Path, kind: str) -> Path:
    """Where the second file of ``--quantize kind`` goes: ``m.onnx`` → ``m.int8.onnx`` / ``m.fp16.onnx``."""
    out = Path(out)
    tag = "int8" if kind == "dynamic" else kind
    return out.with_name(f"{out.stem}.{tag}{out.suffix or '.onnx'}")


# onnxruntime's dynamic quantization of the weight matmuls. Stay fp32, and why:
# * Conv (the waveform CNN, the Fbank stack conv, the grouped positional conv): quantizing them too (ConvInteger,
#   per-tensor uint8) was no faster on this 2-core AVX2 CPU for the demo's CNN student (fastest of 25 runs of 4 s:
#   20 ms vs 16 ms with fp32 convs) and tripled its hidden-state error (4.1% relative vs 1.4%); the first CNN
#   layer reads raw audio, where 8-bit activations lose most. Their weights are stored in fp16 instead (size only).
# * MatMuls between two activations (attention scores and the attention-weighted values): MatMulConstBOnly keeps
#   them fp32, since their per-tensor dynamic ranges change with every utterance.
# * The Fbank front end's DFT and mel matmuls: the log after them amplifies the relative error of low-energy
#   bins, which int8 rounding of the spectrum would make large; they are excluded by name.
# * LayerNorm, GELU and softmax are not matmuls.
QUANTIZED_OPS = ("MatMul", "Gemm")


def quantize_dynamic_int8(fp32: str | Path, out: str | Path) -> Path:
    """int8 weights (per-channel) for ``QUANTIZED_OPS`` with dynamically quantized activations (uint8), via
    onnxruntime.quantization.quantize_dynamic; the fp32 convolutions keep their weights in fp16 on disk
    (:func:`_store_conv_weights_fp16`). Written atomically to ``out``; the metadata says ``precision: int8``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    import onnx

    out = Path(out)
    meta = read_metadata(fp32)
    graph = onnx.load(str(fp32)).graph
    spectral = [n.name for n in graph.node if any(DFT_BASIS in i or MEL_FB in i for i in n.input)]
    with atomic_path(out) as tmp:
        quantize_dynamic(str(fp32), str(tmp), op_types_to_quantize=list(QUANTIZED_OPS), per_channel=True,
                         weight_type=QuantType.QInt8, nodes_to_exclude=spectral,
                         extra_options={"MatMulConstBOnly": True})
        meta.update(precision="int8", quantized_ops=list(QUANTIZED_OPS), conv_weights="fp16")
        _write_metadata(tmp, meta, fp16_conv_weights=True)
    return out


def convert_fp16(fp32: str | Path, out: str | Path) -> Path:
    """fp16 weights and activations inside, fp32 inputs/outputs (onnxruntime.transformers.float16), written atomically.

    Pays on GPUs (CUDA EP) and on disk (half the size); onnxruntime's CPU EP has few fp16 kernels and inserts
    casts, so on CPU use the fp32 or int8 file (bench/onnx_speed.py measures it)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    out = Path(out)
    meta = read_metadata(fp32)
    model = convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True)
    with atomic_path(out) as tmp:
        onnx.save(model, str(tmp))
        meta.update(precision="fp16")
        _write_metadata(tmp, meta)
    return out
