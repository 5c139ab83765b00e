"""An exported ``.onnx`` upstream run by onnxruntime: ``build_upstream("model.onnx")``.

The file must come from ``run_distill.py export`` (``upstream/onnx_export.py``): its metadata names the frame rule,
and its graph maps ``wav`` ``[batch, sample]`` + ``wav_lengths`` ``[batch]`` to ``hidden_state_0 .. N``
``[batch, frame, dim]`` + ``frames`` ``[batch]``. Everything that can make a file unusable (not ONNX, truncated,
not our export, another model family, an op onnxruntime cannot run) is found when the upstream is built, before
any extraction, and raised as :class:`OnnxUpstreamError` (a ``ValueError``; the CLIs print its one line and exit 2).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from common.io import sha256_file

from .base import Upstream, UpstreamOutput, normalize_waveforms, pad_waveforms, shortest_waveform
from .kernels import conv_output_lengths

SUPPORTED_FAMILIES = ("hubert",)


class OnnxUpstreamError(ValueError):
    """An ``.onnx`` file that cannot serve as an upstream; the message names the file and the reason."""


def _one_line(error: Exception) -> str:
    text = " ".join(str(error).split())
    return text[:300] + ("..." if len(text) > 300 else "")


def default_providers() -> list[str]:
    """CUDA when this onnxruntime build has it (onnxruntime-gpu), else the CPU execution provider."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return (["CUDAExecutionProvider"] if "CUDAExecutionProvider" in available else []) + ["CPUExecutionProvider"]


class OnnxUpstream(Upstream):
    """A frozen exported upstream behind the upstream contract (see the module docstring).

    hidden_states: the exported list (``[batch, frame, dim]`` float32 CPU tensors, padded frames zero); lengths:
    ``[batch]`` valid frames. ``weights_hash`` is the sha256 of the file's bytes, so the feature cache keys the
    fp32 and the int8 file apart. ``threads``: onnxruntime intra-op threads (default: torch's thread count).
    Raises :class:`OnnxUpstreamError` at construction for unusable files.
    """

    def __init__(self, path: str | Path, providers: list[str] | None = None, threads: int | None = None):
        super().__init__()
        self.path = Path(path)
        self.meta = self._read_metadata()
        self.normalize_waveform = bool(self.meta.get("normalize_waveform", False))
        self.downsample_rate = int(self.meta["downsample_rate"])
        self._frame_convs = [tuple(map(int, kv)) for kv in self.meta["frame_convs"]]
        self.providers = providers or default_providers()
        self.threads = threads or torch.get_num_threads()
        self.session = self._open_session()
        self._hash = sha256_file(self.path)

    def _fail(self, reason: str) -> OnnxUpstreamError:
        return OnnxUpstreamError(f"{self.path}: {reason}")

    def _read_metadata(self) -> dict:
        import onnx

        from .onnx_export import FORMAT_NAME, FORMAT_VERSION, METADATA_KEY

        try:
            model = onnx.load(str(self.path), load_external_data=False)
        except Exception as e:  # protobuf DecodeError, truncated file, a directory, ...
            raise self._fail(f"not a valid ONNX model ({type(e).__name__}: {_one_line(e)})") from None
        if not model.graph.node:
            raise self._fail("not a valid ONNX model (no graph nodes)")
        props = {p.key: p.value for p in model.metadata_props}
        if METADATA_KEY not in props:
            raise self._fail(f"an ONNX model, but not a DistilSUPERB upstream export (no {METADATA_KEY!r} metadata); "
                             "write one with `python run_distill.py export --student DIR --format onnx --out FILE`")
        try:
            meta = json.loads(props[METADATA_KEY])
            family, version = meta["family"], meta["version"]
            _ = meta["downsample_rate"], meta["frame_convs"]
        except (ValueError, KeyError, TypeError) as e:
            raise self._fail(f"unreadable {METADATA_KEY!r} metadata ({_one_line(e)})") from None
        if meta.get("format") != FORMAT_NAME or version != FORMAT_VERSION:
            raise self._fail(f"export format {meta.get('format')!r} v{version}; this code reads {FORMAT_NAME} "
                             f"v{FORMAT_VERSION}")
        if family not in SUPPORTED_FAMILIES:
            raise self._fail(f"model family {family!r} is not supported (supported: {', '.join(SUPPORTED_FAMILIES)})")
        inputs = [i.name for i in model.graph.input]
        if inputs[:2] != ["wav", "wav_lengths"] or not model.graph.output or model.graph.output[-1].name != "frames":
            raise self._fail(f"graph inputs {inputs} / outputs {[o.name for o in model.graph.output]}; expected "
                             "wav, wav_lengths -> hidden_state_0..N, frames")
        return meta

    def _open_session(self):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only; the reason reaches the user through OnnxUpstreamError
        try:
            return ort.InferenceSession(str(self.path), options, providers=self.providers)
        except Exception as e:  # NOT_IMPLEMENTED (an op without a kernel), INVALID_GRAPH, FAIL, ...
            raise self._fail(f"onnxruntime cannot run it ({_one_line(e)})") from None

    @property
    def precision(self) -> str:
        return str(self.meta.get("precision", "fp32"))

    @property
    def num_params(self) -> int | None:
        """Parameters of the exported PyTorch model (the session has no torch parameters to count)."""
        return self.meta.get("params")

    @property
    def macs_per_second(self) -> float | None:
        """MACs per second of audio counted on the PyTorch model at export (None when not recorded)."""
        return self.meta.get("macs_per_second")

    def requires_grad_(self, requires_grad: bool = True) -> "OnnxUpstream":
        if requires_grad:
            raise self._fail("an ONNX upstream is frozen (onnxruntime computes no gradients); "
                             "drop --upstream-trainable or benchmark the PyTorch checkpoint")
        return self

    def frames_for(self, num_samples: torch.Tensor) -> torch.Tensor:
        for kernel, stride in self._frame_convs:
            num_samples = conv_output_lengths(num_samples, kernel, stride)
        return num_samples

    def min_samples(self) -> int:
        return shortest_waveform(self.frames_for)

    def hash_config(self) -> dict:
        return {"type": "onnx", "precision": self.precision, "source_hash": self.meta.get("source_hash")}

    def weights_hash(self) -> str:
        return self._hash

    def extract(self, wavs: list[torch.Tensor]) -> UpstreamOutput:
        wavs = [w.detach().cpu() for w in wavs]
        if self.normalize_waveform:  # as the exported PyTorch upstream did, before padding
            wavs = normalize_waveforms(wavs)
        padded, lengths = pad_waveforms(wavs)
        outputs = self.session.run(None, {"wav": padded.numpy().astype(np.float32, copy=False),
                                          "wav_lengths": lengths.numpy().astype(np.int64)})
        states = [torch.from_numpy(o) for o in outputs[:-1]]
        return UpstreamOutput(hidden_states=states, lengths=torch.from_numpy(outputs[-1]).long())


def load_onnx_upstream(path: str | Path, **kwargs) -> OnnxUpstream:
    """``build_upstream`` for ``*.onnx`` paths; kwargs: ``providers``, ``threads``."""
    return OnnxUpstream(path, **kwargs)
