"""Loss curves as a PNG (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

from pathlib import Path

from common.io import atomic_path


def plot_losses(history: list[dict], path: str | Path) -> Path:
    """Plot every loss-like series of ``history`` (one dict per step) against the step; log-scale y when positive."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    if history:
        steps = [r["step"] for r in history]
        for name in [k for k in history[0] if k not in ("step", "lr", "grad_norm")]:
            ax.plot(steps, [r[name] for r in history], label=name, linewidth=1.5 if name == "loss" else 0.8)
        positive = all(r[k] > 0 for r in history for k in history[0] if k not in ("step", "lr", "grad_norm"))
        if positive:
            ax.set_yscale("log")
        ax.legend(fontsize=7)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (per frame)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
