"""Mixed precision for the three training loops (``--precision {fp32,bf16,fp16}``): torch autocast, plus a
GradScaler for fp16 on GPU (fp16's narrow exponent underflows small gradients; bf16 has fp32's range and needs none).

Parameters, optimizer state and checkpoints stay fp32; autocast runs matmuls/convs in the low-precision dtype.
fp16 on CPU is refused: CPU autocast supports it only partially and slowly, and there is no GradScaler
path worth having there (bf16 is the CPU's low-precision type).
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class PrecisionError(ValueError):
    """A precision this device cannot run (raised before any training step)."""


def check_precision(precision: str, device: str | torch.device, where: str = "--precision") -> None:
    """Raise :class:`PrecisionError` for an unknown precision, or fp16 on a non-CUDA device."""
    if precision not in PRECISIONS:
        raise PrecisionError(f"{where}: {precision!r} is not one of {', '.join(PRECISIONS)}")
    device_type = torch.device(device).type
    if precision == "fp16" and device_type != "cuda":
        raise PrecisionError(f"{where} fp16 needs a CUDA device (got {device_type}); use --precision bf16 on CPU "
                             "(or fp32)")


def set_tf32(enabled: bool) -> None:
    """TF32 for fp32 matmuls and cuDNN convolutions on CUDA GPUs (Ampere and later): the inputs are rounded to a
    10-bit mantissa inside the matmul, accumulation stays fp32; on an A100/H100 fp32 matmuls then run at the tensor
    cores' TF32 rate (156/495 TFLOPS) instead of the FP32 rate (19.5/67). torch leaves matmul TF32 off by default;
    this toolkit turns it on for CUDA runs (``run.tf32`` in training configs, ``--no-tf32`` for the benchmark) and
    keeps the switch for bit-exact fp32. Only the CUDA flags are set: CPU matmuls are unaffected."""
    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)


def autocast(precision: str, device: str | torch.device):
    """The autocast context for ``precision`` on ``device`` (a no-op context for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=_DTYPES[precision])


def grad_scaler(precision: str, device: str | torch.device) -> torch.amp.GradScaler:
    """A GradScaler, enabled only for fp16 on CUDA (disabled, it passes calls through unchanged)."""
    device_type = torch.device(device).type
    return torch.amp.GradScaler(device_type, enabled=precision == "fp16" and device_type == "cuda")


@contextlib.contextmanager
def fp32(device: str | torch.device) -> Iterator[None]:
    """Leave autocast (e.g. for a loss that needs fp32: CTC, log-softmax over many classes)."""
    with torch.autocast(torch.device(device).type, enabled=False):
        yield
