"""The low-level pieces the HuBERT components (``components.py``) run on: packed frames (every utterance's valid
frames one after another, so no work is spent on padding) and the oneDNN fast paths for CPU linears and conv + GELU.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from common.tensors import frame_mask as valid_mask  # the one valid-frame mask (name kept for this package)


def conv_output_lengths(lengths: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Frames a stride-``stride`` conv without padding yields from ``lengths`` inputs (0 when too short)."""
    return torch.clamp(torch.div(lengths - kernel, stride, rounding_mode="floor") + 1, min=0)


def pack(padded: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``[batch, frame, ...]`` → the valid frames of every utterance, one after another: ``[sum(lengths), ...]``."""
    return padded[valid_mask(lengths, padded.shape[1])]


def unpack(packed: torch.Tensor, lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """Inverse of :func:`pack`: ``[sum(lengths), ...]`` → ``[batch, max_len, ...]`` with zeros past each length
    (``max_len`` defaults to the longest). Differentiable."""
    max_len = int(lengths.max()) if max_len is None else max_len
    out = packed.new_zeros(len(lengths), max_len, *packed.shape[1:])
    out[valid_mask(lengths, max_len)] = packed
    return out


def per_utterance(fn, packed: torch.Tensor, lengths: list[int], out_dim: int) -> torch.Tensor:
    """Apply ``fn`` (``[b, frame, feature]`` → ``[b, frame, out_dim]``, utterances unpadded) to each utterance of
    ``packed`` ``[sum(lengths), feature]``: once for the whole batch when all lengths are equal, else once per
    utterance (no padding, so nothing computed on it and nothing leaking). Returns ``[sum(lengths), out_dim]``."""
    if lengths and min(lengths) == max(lengths) > 0:
        return fn(packed.view(len(lengths), lengths[0], *packed.shape[1:])).flatten(0, 1)
    outs = [fn(seg[None])[0] for seg in packed.split(lengths) if seg.shape[0] > 0]
    return torch.cat(outs) if outs else packed.new_zeros(0, out_dim)


# oneDNN for CPU linears and conv + GELU (issue 23, docs/SPEED.md). torch's fp32 matmul goes to MKL's sgemm, which
# on this project's AMD CPUs runs ~48 GMAC/s per core where oneDNN's runs ~90 (measured, bench/upstream_speed.py
# prints both); oneDNN also applies GELU as the GEMM's epilogue instead of another pass over memory. The ops are the
# ones torch.compile's CPU backend emits (torch.ops.mkldnn.*); outputs agree with F.linear/F.conv1d to float
# rounding (~3e-6). Off: DISTILSUPERB_ONEDNN=0 or set_onednn(False); never used on GPUs, in other dtypes, under
# autocast (it would bypass it) or while tracing/exporting a graph (an ONNX export keeps plain ops).
_ONEDNN = os.environ.get("DISTILSUPERB_ONEDNN", "1") != "0"


def set_onednn(enabled: bool) -> bool:
    """Turn the oneDNN CPU kernels on/off (e.g. to time them against torch's defaults); returns the old setting."""
    global _ONEDNN
    old, _ONEDNN = _ONEDNN, bool(enabled)
    return old


def onednn_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether ``x @ weightᵀ`` takes the oneDNN path: fp32 on CPU, oneDNN available and switched on, no autocast,
    no tracing or export (see above)."""
    return (_ONEDNN and x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32
            and hasattr(torch.ops.mkldnn, "_linear_pointwise") and torch.backends.mkldnn.is_available()
            and not torch.is_autocast_enabled("cpu") and not torch.jit.is_tracing()
            and not torch.compiler.is_compiling() and not torch.compiler.is_exporting())


def needs_grad(*tensors: torch.Tensor | None) -> bool:
    """Whether autograd records an op on ``tensors`` (grad mode on and one of them requires grad)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


class _OneDnnLinear(torch.autograd.Function):
    """``F.linear`` on 2-D input, forward and backward GEMMs in oneDNN (the backward's as ``x @ wᵀ`` products of
    transposed copies: a copy costs a memory pass, MKL's slower GEMM costs more)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        gemm = torch.ops.mkldnn._linear_pointwise  # gemm(a, b) = a @ bᵀ
        grad_x = gemm(grad, weight.t().contiguous(), None, "none", [], "") if ctx.needs_input_grad[0] else None
        grad_w = gemm(grad.t().contiguous(), x.t().contiguous(), None, "none", [], "") \
            if ctx.needs_input_grad[1] else None
        grad_b = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gelu: bool = False) -> torch.Tensor:
    """``F.linear`` (then exact GELU when ``gelu``), ``[..., in]`` → ``[..., out]``; oneDNN on CPU (see above)."""
    if not onednn_applies(x, weight):
        y = F.linear(x, weight, bias)
        return F.gelu(y) if gelu else y
    flat = x.reshape(-1, x.shape[-1]).contiguous()
    if needs_grad(x, weight, bias):
        y = _OneDnnLinear.apply(flat, weight, bias)
        y = F.gelu(y) if gelu else y
    else:
        y = torch.ops.mkldnn._linear_pointwise(flat, weight, bias, "gelu" if gelu else "none", [],
                                               "none" if gelu else "")
    return y.view(*x.shape[:-1], weight.shape[0])


def conv1d_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int) -> torch.Tensor:
    """GELU(conv1d(x)) without padding, ``[batch, in, time]`` → ``[batch, out, frame]``; fused by oneDNN when
    nothing needs gradients."""
    if onednn_applies(x, weight) and not needs_grad(x, weight, bias):
        return torch.ops.mkldnn._convolution_pointwise(x.contiguous(), weight, bias, [0], [stride], [1], 1, "gelu",
                                                       [], "none")
    return F.gelu(F.conv1d(x, weight, bias, stride=stride))


def conv_gemm_applies(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int) -> bool:
    """Whether :func:`conv1d_gelu_channels_last` runs as oneDNN GEMMs (else it falls back to ``F.conv1d``): the
    oneDNN path applies, nothing needs gradients, and ``stride <= kernel <= 2 * stride`` (HuBERT's CNN after the
    first layer: kernel 3 / stride 2 and kernel 2 / stride 2)."""
    kernel = weight.shape[-1]
    return (stride <= kernel <= 2 * stride and onednn_applies(x, weight) and not needs_grad(x, weight, bias)
            and hasattr(torch.ops.mkldnn._linear_pointwise, "binary"))


def conv1d_gelu_channels_last(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int
                              ) -> torch.Tensor:
    """GELU(conv1d(x)) without padding on channels-last input: ``x [time, in]`` → ``[frame, out]``, ``frame =
    (time - kernel) // stride + 1`` (``time >= kernel``); ``weight [out, in, kernel]``.

    With ``stride <= kernel <= 2 * stride`` the conv is at most two GEMMs on strided views of ``x``, no copy of it:
    output frame t reads input frames ``stride*t .. stride*t + kernel - 1``, which are row t of ``x`` viewed as
    ``[frame, stride * in]`` (the first ``stride`` frames, weight taps ``0..stride-1``) plus the first
    ``kernel - stride`` frames of row t + 1 (taps ``stride..kernel-1``). The second GEMM adds into the first as
    oneDNN's binary post-op. Measured on HuBERT's 512→512 kernel-3 stride-2 layer, 5 s of audio, one thread: 59 ms
    against 77 ms for oneDNN's direct conv + GELU (:func:`conv1d_gelu`), whose channels-first layout also costs a
    transpose at each end of the CNN. Outputs agree with ``F.conv1d`` to float rounding (the sum order differs)."""
    out_ch, in_ch, kernel = weight.shape
    if not conv_gemm_applies(x, weight, bias, stride):
        return F.gelu(F.conv1d(x.t()[None], weight, bias, stride=stride))[0].t()
    x = x.contiguous()
    frames = (x.shape[0] - kernel) // stride + 1
    row = stride * in_ch  # elements between the first input frames of consecutive output frames
    head = x.as_strided((frames, row), (row, 1), x.storage_offset())
    w_head = weight[:, :, :stride].permute(0, 2, 1).reshape(out_ch, row).contiguous()  # [out, tap * in] like x
    if kernel == stride:
        return torch.ops.mkldnn._linear_pointwise(head, w_head, bias, "gelu", [], "none")
    tail = x.as_strided((frames, (kernel - stride) * in_ch), (row, 1), x.storage_offset() + row)
    w_tail = weight[:, :, stride:].permute(0, 2, 1).reshape(out_ch, -1).contiguous()  # strided: oneDNN ~300x slower
    y = torch.ops.mkldnn._linear_pointwise(head, w_head, bias, "none", [], "")
    y = torch.ops.mkldnn._linear_pointwise.binary(tail, y, w_tail, None, "add")
    return F.gelu(y)
