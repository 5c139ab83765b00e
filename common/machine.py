"""A one-line description of the machine a run happened on (recorded with results and shipped weights)."""
from __future__ import annotations

import os
import platform
from pathlib import Path


def machine_summary() -> str:
    """``"2 cores, vector extensions AVX2, x86_64, Intel(R) Xeon(R) ..."``.

    Cores and vector extensions matter: CPU matmul and conv kernels run about twice as fast with AVX-512 as with AVX2
    only (measured on the demo), and pretraining and distillation stop at time caps, so a slower CPU trains fewer
    steps and its results differ. A CUDA device, when torch is already imported and sees one, is named too.
    """
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    flags = next((line for line in lines if line.startswith("flags")), "")
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")
    vector = "AVX-512" if " avx512f" in flags else "AVX2" if " avx2" in flags else "unknown"
    parts = [f"{os.cpu_count()} cores", f"vector extensions {vector}", platform.machine()]
    if model:
        parts.append(model)
    import sys

    torch = sys.modules.get("torch")  # never import torch just for this line
    if torch is not None and torch.cuda.is_available():
        parts.append(f"GPU {torch.cuda.get_device_name(0)}")
    return ", ".join(p for p in parts if p)
