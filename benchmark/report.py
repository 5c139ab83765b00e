"""``run_benchmark.py report``: one table of upstreams x task metrics, costs and SUPERB scores, plus plots.

Columns (also written at the top of REPORT.md):
* ``params_M`` — upstream parameters (millions); ``GMACs_per_s`` — multiply-accumulates per second of 16 kHz audio
  (torch FlopCounterMode on 1 s); ``RTF`` — forward time / audio time on the machine that ran the benchmark.
* ``<task> <metric>`` — test-split value of the latest run (percent for accuracies and error rates); ER averages the
  folds that were run (``er_folds`` says how many); runs with several ``--seed`` values are averaged too.
* ``seeds`` — how many seeds every task of the row has; ``SUPERB_local_sd`` — the standard deviation of
  ``SUPERB_local`` over those seeds (each seed's values against the mean ``fbank`` row): the noise to read
  differences against. Empty for a single seed.
* ``SUPERB_s`` — the leaderboard formula with the published anchors (FBANK -> 0, SOTA -> 1000), averaged over the
  tasks in this table; comparable to the leaderboard only when all ten tasks are present and the data is the real
  datasets.
* ``SUPERB_local`` — zero anchor = this table's FBANK anchor: per metric, the better of the ``fbank`` row
  (s3prl's FBANK, per-utterance CMVN) and the ``fbank_no_cmvn`` row (the same features without CMVN) when both
  are present. Why the better of two: after CMVN, mean pooling gives every utterance the same vector, so ``fbank``
  sits at chance on the mean-pooled tasks (KS, IC, ER, SID; s3prl issue 316) and an anchor at chance would
  flatter every other row there. Top anchor = the published SOTA. Metrics on which the anchor already matches or
  beats the published SOTA (QbE on the offline corpus) have no scale here and are left out. The FBANK rows
  themselves score at or below 0.
* ``SUPERB_rel`` — zero anchor = the same FBANK anchor, top anchor = the best upstream in this table per metric
  (so the best upstream of every metric scores 1000); meaningful on the offline corpus, where the published SOTA
  values are unreachable. Metrics on which the anchor itself is the best (or tied best) have no scale and are left
  out, so an upstream worse than FBANK there is not penalised in this column — read the metric columns too.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from common.io import atomic_path, atomic_write_text

from .superb_score import Reference, load_reference, superb_score

log = logging.getLogger(__name__)

FBANK = "fbank"
# The rows whose per-metric best is the zero anchor of SUPERB_local / SUPERB_rel (see the module docstring).
FBANK_ROWS = (FBANK, "fbank_no_cmvn")


@dataclass
class Report:
    table: pd.DataFrame
    markdown: str
    files: list[Path] = field(default_factory=list)


def read_results_rows(path: Path) -> tuple[str, list[str]]:
    """The header and the well-formed lines of ``results.csv``; each malformed line (wrong field count, e.g. two
    rows glued together by an editor, or a value that is not a number) is named with its line number in a warning
    and skipped, so one damaged line never hides the rest of the table."""
    import csv
    import io

    text = path.read_text(encoding="utf-8-sig", errors="replace")
    lines = text.splitlines()
    if not lines:
        raise ValueError(f"{path} is empty: run `run_benchmark.py --upstream ... --task ...` first")
    header = next(csv.reader([lines[0]]))
    value_at = header.index("value") if "value" in header else None
    good = []
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = next(csv.reader(io.StringIO(line)), [])
        problem = None
        if len(fields) != len(header):
            problem = f"{len(fields)} fields, expected {len(header)}"
        elif value_at is not None:
            try:
                float(fields[value_at])
            except ValueError:
                problem = f"value {fields[value_at]!r} is not a number"
        if problem:
            log.warning("%s:%d: malformed row skipped (%s): %.80s", path, lineno, problem, line)
            continue
        good.append(line)
    return lines[0], good


def load_results(results_dir: Path) -> pd.DataFrame:
    import io

    path = Path(results_dir) / "results.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no results table at {path}: run `run_benchmark.py --upstream ... --task ...` first")
    header, rows = read_results_rows(path)
    df = pd.read_csv(io.StringIO("\n".join([header, *rows]) + "\n"),
                     dtype={"upstream": str, "task": str, "split": str, "metric": str, "layer_weights": str})
    df["fold"] = pd.to_numeric(df["fold"], errors="coerce")
    df["layer_weights"] = df["layer_weights"].fillna("")
    return df


def _latest_test_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Test rows, the last appended per (upstream, task, metric, fold, seed)."""
    test = df[df["split"] == "test"].copy()
    test["fold_key"] = test["fold"].fillna(-1)
    test["seed"] = pd.to_numeric(test["seed"], errors="coerce").fillna(0).astype(int)
    return test.groupby(["upstream", "task", "metric", "fold_key", "seed"], sort=False).tail(1)


def latest_test_values(df: pd.DataFrame) -> pd.DataFrame:
    """The latest test value per (upstream, task, metric), averaged over folds and seeds."""
    return (_latest_test_rows(df).groupby(["upstream", "task", "metric"], sort=False)
            .agg(value=("value", "mean"), folds=("fold_key", "nunique"), seeds=("seed", "nunique"),
                 layer_weights=("layer_weights", "last"))
            .reset_index())


def _values_per_seed(df: pd.DataFrame) -> dict[int, pd.DataFrame]:
    """seed -> the latest test value per (upstream, task, metric) of that seed, averaged over folds."""
    rows = _latest_test_rows(df)
    return {int(seed): group.groupby(["upstream", "task", "metric"], sort=False)["value"].mean().reset_index()
            for seed, group in rows.groupby("seed")}


def _stats(results_dir: Path, upstream: str) -> dict:
    path = Path(results_dir) / upstream / "upstream_stats.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _columns(values: pd.DataFrame, upstream: str, tasks: list[str], ref: Reference) -> dict[str, float]:
    """One upstream's values by leaderboard column (``PR``, ``KS``, ...)."""
    out = {}
    for task in tasks:
        for m in ref.task_metrics(task):
            hit = values[(values.upstream == upstream) & (values.task == task) & (values.metric == m.metric)]
            if len(hit):
                out[m.column] = float(hit["value"].iloc[0])
    return out


def fbank_anchor(by_column: dict[str, dict[str, float]], ref: Reference) -> dict[str, float]:
    """Per leaderboard column, the better value of the FBANK rows present (``FBANK_ROWS``); {} when none is."""
    anchor: dict[str, float] = {}
    for m in ref.metrics:
        vals = [by_column[r][m.column] for r in FBANK_ROWS if m.column in by_column.get(r, {})]
        if vals:
            anchor[m.column] = max(vals) if m.higher_is_better else min(vals)
    return anchor


def _local_score_sd(per_seed: dict[int, pd.DataFrame], upstream: str, columns: set[str], fbank_row: dict,
                    ref: Reference, tasks: list[str]) -> float:
    """Standard deviation over seeds of ``SUPERB_local``, counting the seeds that have every column of the row."""
    scores = []
    for values in per_seed.values():
        row = _columns(values, upstream, tasks, ref)
        if set(row) == columns:
            scores.append(superb_score(row, fbank_row, ref.sota, ref, tasks, skip_unscaled=True))
    scores = [x for x in scores if x is not None]
    return float(pd.Series(scores).std()) if len(scores) > 1 else math.nan


def build_table(df: pd.DataFrame, ref: Reference, results_dir: Path) -> pd.DataFrame:
    values = latest_test_values(df)
    upstreams = list(dict.fromkeys(values["upstream"]))
    tasks = [t for t in ref.tasks if t in set(values["task"])]
    by_column: dict[str, dict[str, float]] = {}  # upstream -> leaderboard column -> value
    seeds = {u: int(values.loc[values.upstream == u, "seeds"].min()) for u in upstreams}
    rows = []
    for up in upstreams:
        stats = _stats(results_dir, up)
        row: dict = {"upstream": up,
                     "params_M": stats.get("params", math.nan) / 1e6 if stats else math.nan,
                     "GMACs_per_s": stats.get("macs_per_second", math.nan) / 1e9 if stats else math.nan,
                     "RTF": stats.get("rtf", math.nan)}
        by_column[up] = _columns(values, up, tasks, ref)
        for task in tasks:
            for m in ref.task_metrics(task):
                row[f"{task} {m.metric}"] = by_column[up].get(m.column, math.nan)
            if task == "er":
                folds = values.loc[(values.upstream == up) & (values.task == task), "folds"]
                if len(folds):
                    row["er_folds"] = int(folds.iloc[0])
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    best = {}
    for t in tasks:
        for m in ref.task_metrics(t):
            vals = [by_column[u][m.column] for u in upstreams if m.column in by_column[u]]
            if vals:
                best[m.column] = max(vals) if m.higher_is_better else min(vals)
    fbank_row = fbank_anchor(by_column, ref)
    table["SUPERB_s"] = [superb_score(by_column[u], ref.fbank, ref.sota, ref, tasks) for u in upstreams]
    table["SUPERB_local"] = [superb_score(by_column[u], fbank_row, ref.sota, ref, tasks, skip_unscaled=True)
                             for u in upstreams]
    table["SUPERB_rel"] = [superb_score(by_column[u], fbank_row, best, ref, tasks, skip_unscaled=True)
                           for u in upstreams]
    table["tasks_scored"] = [sum(all(c in by_column[u] for c in [m.column for m in ref.task_metrics(t)])
                                 for t in tasks) for u in upstreams]
    table["seeds"] = [seeds[u] for u in upstreams]
    per_seed = _values_per_seed(df) if max(seeds.values()) > 1 else {}
    table["SUPERB_local_sd"] = [_local_score_sd(per_seed, u, set(by_column[u]), fbank_row, ref, tasks)
                                if seeds[u] > 1 else math.nan for u in upstreams]
    return table


def to_markdown(table: pd.DataFrame) -> str:
    def fmt(v) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "—"
        if isinstance(v, float):
            return f"{v:.4g}" if abs(v) < 1 else f"{v:.2f}"
        return str(v)

    header = "| " + " | ".join(table.columns) + " |"
    sep = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, sep, *body])


def _save_figure(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
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
        files.append(_save_figure(fig, out_dir / f"layer_weights_{up}.png"))
        plt.close(fig)
    return files


def plot_task_bars(table: pd.DataFrame, out_dir: Path) -> Path | None:
    """Bar chart: one panel per task metric, one bar per upstream."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric_cols = [c for c in table.columns if " " in c]
    if not metric_cols:
        return None
    fig, axes = plt.subplots(1, len(metric_cols), figsize=(2.6 * len(metric_cols), 3), squeeze=False)
    for ax, col in zip(axes[0], metric_cols):
        ax.bar(table["upstream"], table[col].astype(float), color="tab:blue")
        ax.set_title(col)
        ax.tick_params(axis="x", rotation=60)
    fig.tight_layout()
    path = _save_figure(fig, out_dir / "tasks_by_upstream.png")
    plt.close(fig)
    return path


def build_report(results_dir: Path, out_dir: Path | None = None, reference: Path | None = None) -> Report:
    results_dir = Path(results_dir)
    out_dir = Path(out_dir or results_dir)
    ref = load_reference(reference)
    df = load_results(results_dir)
    table = build_table(df, ref, results_dir)
    markdown = to_markdown(table)
    files = []
    with atomic_path(out_dir / "report.csv") as tmp:
        table.to_csv(tmp, index=False)
    files.append(out_dir / "report.csv")
    doc = (__doc__ or "").split("Columns", 1)[-1]
    atomic_write_text(out_dir / "REPORT.md", "# Benchmark report\n\nColumns" + doc + "\n" + markdown + "\n")
    files.append(out_dir / "REPORT.md")
    files += plot_layer_weights(latest_test_values(df), out_dir)
    bars = plot_task_bars(table, out_dir)
    if bars:
        files.append(bars)
    return Report(table, markdown, files)
