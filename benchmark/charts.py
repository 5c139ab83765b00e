"""The report's pictures, PNG beside REPORT.md (``benchmark/report.py`` says what each shows): the bars of every
upstream per metric, the DistilHuBERT picture (the share of the teacher's gain each student keeps) and the learnt
layer weights. matplotlib draws them with its Agg backend (no display needed)."""
from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from common.io import atomic_path

from .superb_score import Reference
from .table import FBANK, FBANK_ROWS, metric_directions, retained_percent


def _save_figure(fig, path: Path, tight_layout: bool = False) -> Path:
    """Writes ``fig`` to ``path`` as a PNG (atomically; after ``fig.tight_layout()`` if asked) and closes it."""
    import matplotlib.pyplot as plt

    if tight_layout:
        fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_layer_weights(values: pd.DataFrame, out_dir: Path) -> list[Path]:
    """One heatmap (task x layer) of the learnt softmax layer weights per upstream."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    for up, group in values[values["layer_weights"] != ""].groupby("upstream", sort=False):
        per_task = group.groupby("task", sort=False)["layer_weights"].last()
        rows = {t: [float(x) for x in w.split()] for t, w in per_task.items()}
        width = max(len(w) for w in rows.values())
        if width < 2:
            continue  # a single hidden state has nothing to weigh
        matrix = [w + [math.nan] * (width - len(w)) for w in rows.values()]
        fig, ax = plt.subplots(figsize=(1 + 0.5 * width, 1 + 0.45 * len(rows)))
        im = ax.imshow(matrix, aspect="auto", cmap="viridis", vmin=0)
        ax.set_yticks(range(len(rows)), list(rows))
        ax.set_xticks(range(width))
        ax.set_xlabel("hidden state (0 = encoder input)")
        ax.set_title(f"{up}: learnt layer weights")
        fig.colorbar(im, ax=ax)
        files.append(_save_figure(fig, out_dir / f"layer_weights_{re.sub(r'[^A-Za-z0-9_.+@-]+', '_', up)}.png"))
    return files


def _colours(upstreams: list[str], teacher: str | None) -> dict[str, str]:
    """FBANK rows grey, the teacher dark blue, every other row its own colour."""
    others = iter(["tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
                   "tab:cyan"] * 4)
    return {u: ("0.55" if u == FBANK else "0.75") if u in FBANK_ROWS else "navy" if u == teacher else next(others)
            for u in upstreams}


def _direction(higher_is_better: bool | None) -> str:
    return "" if higher_is_better is None else "↑ higher is better" if higher_is_better else "↓ lower is better"


# metric names the field writes as acronyms (SUPERB paper, s3prl logs); others (accuracy, ...) stay as written
ACRONYMS = {"per", "wer", "cer", "eer", "der", "mtwv", "atwv", "f1", "mindcf"}


def column_label(column: str) -> str:
    """``"pr per"`` -> ``"PR PER"``, ``"ks accuracy"`` -> ``"KS accuracy"`` (for chart titles and axis labels)."""
    task, _, metric = column.partition(" ")
    words = [w.upper() if w.lower() in ACRONYMS else w for w in metric.replace("_", " ").split()]
    return " ".join([task.upper(), *words])


def plot_task_bars(table: pd.DataFrame, out_dir: Path, spread: pd.DataFrame | None = None,
                   directions: dict[str, bool] | None = None, teacher: str | None = None,
                   reference_der: float | None = None) -> Path | None:
    """A grid of panels, one per metric column: one horizontal bar per upstream (same order and colour in every
    panel), the metric's direction in the panel title, the standard deviation over seeds as error bars; the SD
    panel marks ``reference_der`` ("speaker A = all speech")."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric_cols = [c for c in table.columns if " " in c]
    if not metric_cols:
        return None
    directions = directions or {}
    ups = list(table["upstream"])
    colours = _colours(ups, teacher)
    ncols = min(4, len(metric_cols))
    nrows = math.ceil(len(metric_cols) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.3 * ncols, 0.8 + (0.42 * len(ups) + 0.9) * nrows),
                             squeeze=False, sharey=True)
    y = list(range(len(ups)))[::-1]  # first row of the table at the top
    for ax, col in zip(axes.flat, metric_cols):
        task, metric = col.split(" ", 1)
        vals = table[col].astype(float).tolist()
        err = [math.nan] * len(ups)
        if spread is not None and len(spread):
            sd = spread[(spread.task == task) & (spread.metric == metric)].set_index("upstream")["sd"]
            err = [float(sd.get(u, math.nan)) for u in ups]
        xerr = [0.0 if math.isnan(e) else e for e in err]
        ax.barh(y, [0.0 if math.isnan(v) else v for v in vals], xerr=xerr if any(xerr) else None,
                color=[colours[u] for u in ups], ecolor="black", capsize=3)
        finite = [v for v in vals if not math.isnan(v)]
        top = max([abs(v) + e for v, e in zip(vals, xerr) if not math.isnan(v)] or [1.0]) or 1.0
        for yi, v, e in zip(y, vals, xerr):
            text = "—" if math.isnan(v) else f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
            ax.text((0.0 if math.isnan(v) else v) + e + 0.02 * top, yi, text, va="center", fontsize=8)
        title = f"{column_label(col)}\n{_direction(directions.get(col))}"
        if (task, metric) == ("sd", "der") and reference_der is not None:
            ax.axvline(reference_der, color="crimson", ls=":", lw=1.5)
            title += f"; red: speaker A = all speech ({reference_der:.1f})"
            top = max(top, reference_der)
        ax.set_xlim(min(0.0, min(finite or [0.0]) * 1.15), top * 1.25)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        ax.set_yticks(y, ups)
    for ax in list(axes.flat)[len(metric_cols):]:
        ax.axis("off")
    seeds = int(table["seeds"].max()) if "seeds" in table and len(table) else 1
    fig.suptitle("Test metric per task" + (f" (mean over {seeds} seeds, error bars: ±1 sd over seeds)"
                                           if seeds > 1 else " (one seed)"), fontsize=12)
    return _save_figure(fig, out_dir / "tasks_by_upstream.png", tight_layout=True)


def plot_distillation(table: pd.DataFrame, ref: Reference, out_dir: Path, teacher: str,
                      students: list[str]) -> Path | None:
    """The DistilHuBERT picture: each student's score per task as % of the teacher's (FBANK anchor = 0%), and
    each student's parameters and speed-up in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if teacher not in set(table["upstream"]) or not students:
        return None
    kept = retained_percent(table, ref, teacher, students)
    if kept.empty:
        return None
    t = table.set_index("upstream")
    colours = _colours(list(table["upstream"]), teacher)
    cols = list(kept.index)
    height = 0.8 / len(students)
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.32 * len(cols) * max(2, len(students))))
    lo, hi = -50.0, 150.0  # bars are clipped to this range; the value is written beside
    y0 = list(range(len(cols)))[::-1]
    for i, s in enumerate(students):
        params, rtf = float(t.loc[s, "params_M"]), float(t.loc[s, "RTF"])
        t_params, t_rtf = float(t.loc[teacher, "params_M"]), float(t.loc[teacher, "RTF"])
        size = f"{params:.2f} M params ({100 * params / t_params:.0f}% of the teacher)" \
            if t_params > 0 and not math.isnan(params) else "params unknown"
        speed = f"{t_rtf / rtf:.1f}x faster" if rtf > 0 and not math.isnan(t_rtf) else "speed unknown"
        ys = [y + (len(students) / 2 - i - 0.5) * height for y in y0]
        vals = [float(kept.loc[c, s]) for c in cols]
        ax.barh(ys, [0.0 if math.isnan(v) else min(max(v, lo), hi) for v in vals], height=height * 0.9,
                color=colours[s], label=f"{s}: {size}, {speed}")
        for yi, v in zip(ys, vals):
            if not math.isnan(v):
                ax.text(min(max(v, lo), hi) + (2 if v >= 0 else -2), yi, f"{v:.0f}%", va="center",
                        ha="left" if v >= 0 else "right", fontsize=7)
    for yi, c in zip(y0, cols):
        if kept.loc[c, "teacher_gain"] <= 0:
            ax.text(50, yi, "teacher does not beat FBANK here: no scale", ha="center", va="center", fontsize=8,
                    color="0.35", style="italic")
    ax.axvline(0, color="0.4", lw=1)
    ax.axvline(100, color="navy", lw=1, ls="--")
    ax.text(0, len(cols) - 0.45, " FBANK", color="0.4", fontsize=8, va="bottom")
    ax.text(100, len(cols) - 0.45, f" teacher ({teacher})", color="navy", fontsize=8, va="bottom")
    dirs = metric_directions(ref)
    ax.set_yticks(y0, ["SUPERB_local (all tasks)" if c == "SUPERB_local" else
                       f"{column_label(c)} {'↑' if dirs.get(c) else '↓'}"
                       for c in cols])
    if cols[0] == "SUPERB_local":
        ax.axhline(y0[0] - 0.5, color="0.2", lw=0.8)
    ax.set_xlim(lo - 15, hi + 15)
    ax.set_ylim(-0.7, len(cols) - 0.1)
    ax.set_xlabel("% of the teacher's gain over FBANK kept (FBANK = 0%, teacher = 100%; bars clipped to "
                  f"{lo:.0f}…{hi:.0f}%)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=9, frameon=False)
    ax.set_title("How much of the teacher each student keeps, per task", fontsize=12)
    return _save_figure(fig, out_dir / "distillation.png", tight_layout=True)
