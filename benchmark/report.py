"""``run_benchmark.py report``: one table of upstreams x task metrics, costs and SUPERB scores, plus plots.

Columns (also written at the top of REPORT.md):
* ``upstream`` — one row per upstream *and* protocol: an upstream is its label with its weights hash, written
  ``label@hash8`` whenever one label names several weights (two ``checkpoint-1000`` folders of different
  experiments, a retrained model); a protocol other than SUPERB's frozen weighted sum is appended in brackets
  (``[layer-K]``, ``[finetune-weighted-sum]``) and never merged with it. ``protocol`` repeats it; ``random`` is
  ``yes`` for randomly initialised weights (``--random-init``).
* ``params_M`` — upstream parameters (millions); ``GMACs_per_s`` — multiply-accumulates per second of 16 kHz audio
  (torch FlopCounterMode on 1 s); ``RTF`` — forward time / audio time on the machine that ran the benchmark.
* ``<task> <metric>`` — test-split value of the latest run (percent for accuracies and error rates); ER averages the
  folds that were run (``er_folds`` says how many); runs with several ``--seed`` values are averaged too.
* Manifest tasks (``--task custom``) get ``<manifest name> <metric>`` columns; they are not part of any SUPERB score.
* ``seeds`` — how many seeds every task of the row has; ``SUPERB_local_sd`` — the standard deviation of
  ``SUPERB_local`` over those seeds (each seed's values against the mean ``fbank`` row): the noise to read
  differences against. Empty for a single seed.
* ``SUPERB_s`` — the leaderboard formula with the published anchors (FBANK -> 0, SOTA -> 1000), averaged over the
  tasks in this table; comparable to the leaderboard only when all ten tasks are present and the data is the real
  datasets.
* ``asr cer`` — ASR's character error rate beside its WER (not in any score).
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

Below the table: the SD reference DER of "speaker A = all speech" (one label over all reference speech) on the test
set, which a diarization head that learnt only speech activity reaches.

Pictures (PNG beside REPORT.md):
* ``tasks_by_upstream.png`` — one panel per metric, one bar per upstream, the direction (higher/lower is better) in
  the title, the standard deviation over seeds as error bars (none for one seed).
* ``distillation.png`` — the DistilHuBERT picture: each student's metric per task as a percentage of the teacher's
  on the scale FBANK anchor = 0%, teacher = 100%, with each student's parameters and speed-up (teacher RTF /
  student RTF) in its legend. Tasks where the teacher does not beat the FBANK anchor have no such scale and are
  marked instead. The teacher is ``hubert_mini`` unless given (``report --teacher``); students: every other row
  except the FBANK rows, unless given (``--students``).
* ``layer_weights_<upstream>.png`` — the learnt softmax layer weights per task.
"""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from common.io import atomic_path, atomic_write_text

from . import results
from .results import DEFAULT_PROTOCOL
from .superb_score import Reference, load_reference, superb_score
from .upstream_stats import read_upstream_stats

log = logging.getLogger(__name__)

FBANK = "fbank"
# The rows whose per-metric best is the zero anchor of SUPERB_local / SUPERB_rel (see the module docstring).
FBANK_ROWS = (FBANK, "fbank_no_cmvn")
DEFAULT_TEACHER = "hubert_mini"
# Metrics shown beside a task's scored ones, outside every score: task -> [(metric, higher_is_better)].
EXTRA_METRICS = {"asr": [("cer", False)]}
SD_ONE_SPEAKER = ("sd", "der_one_speaker")  # the SD reference DER, printed below the table


@dataclass
class Report:
    table: pd.DataFrame
    markdown: str
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # lines printed below the table (the SD reference)


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
        # rows written before the newest columns existed are shorter (their missing trailing fields are empty)
        oldest = results.COLUMNS.index("run_id") + 1 if "run_id" in header else len(header)
        if not oldest <= len(fields) <= len(header):
            problem = f"{len(fields)} fields, expected {len(header)}"
        elif value_at is not None:
            try:
                float(fields[value_at])
            except ValueError:
                problem = f"value {fields[value_at]!r} is not a number"
        if problem:
            log.warning("%s:%d: malformed row skipped (%s): %.80s", path, lineno, problem, line)
            continue
        good.append(line + "," * (len(header) - len(fields)))
    return lines[0], good


def load_results(results_dir: Path) -> pd.DataFrame:
    """The results table with one ``upstream`` id per (label, weights hash, protocol) (see the module docstring);
    the label, hash and protocol are kept in ``label``, ``checkpoint_hash`` and ``protocol``."""
    import io

    path = Path(results_dir) / "results.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no results table at {path}: run `run_benchmark.py --upstream ... --task ...` first")
    header, rows = read_results_rows(path)
    df = pd.read_csv(io.StringIO("\n".join([header, *rows]) + "\n"),
                     dtype={"upstream": str, "task": str, "split": str, "metric": str, "layer_weights": str,
                            "checkpoint_hash": str, "protocol": str})
    for column in ("protocol", "upstream_random"):
        if column not in df:
            df[column] = math.nan
    df["fold"] = pd.to_numeric(df["fold"], errors="coerce")
    df["layer_weights"] = df["layer_weights"].fillna("")
    df["checkpoint_hash"] = df["checkpoint_hash"].fillna("").astype(str)
    layer = pd.to_numeric(df["layer"], errors="coerce")
    legacy = layer.map(lambda k: DEFAULT_PROTOCOL if math.isnan(k) else f"layer-{int(k)}")  # rows before `protocol`
    df["protocol"] = df["protocol"].fillna(legacy)
    df["upstream_random"] = pd.to_numeric(df["upstream_random"], errors="coerce").fillna(0).astype(int)
    df["label"] = df["upstream"]
    several = df.groupby("label")["checkpoint_hash"].nunique()
    model = [label if several[label] <= 1 else f"{label}@{h[:8]}" for label, h in zip(df["label"],
                                                                                       df["checkpoint_hash"])]
    df["upstream"] = [m if p == DEFAULT_PROTOCOL else f"{m} [{p}]" for m, p in zip(model, df["protocol"])]
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


def _columns(values: pd.DataFrame, upstream: str, tasks: list[str], ref: Reference) -> dict[str, float]:
    """One upstream's values by leaderboard column (``PR``, ``KS``, ...)."""
    out = {}
    for task in tasks:
        for m in ref.task_metrics(task):
            hit = values[(values.upstream == upstream) & (values.task == task) & (values.metric == m.metric)]
            if len(hit):
                out[m.column] = float(hit["value"].iloc[0])
    return out


def fbank_anchor(by_column: dict[str, dict[str, float]], ref: Reference,
                 rows: tuple[str, ...] | list[str] = FBANK_ROWS) -> dict[str, float]:
    """Per leaderboard column, the better value of the FBANK rows present (``rows``: their ids in ``by_column``,
    default ``FBANK_ROWS``); {} when none is."""
    anchor: dict[str, float] = {}
    for m in ref.metrics:
        vals = [by_column[r][m.column] for r in rows if m.column in by_column.get(r, {})]
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


def _fbank_rows(df: pd.DataFrame) -> list[str]:
    """Row ids of the FBANK anchor rows (``FBANK_ROWS``) under SUPERB's protocol: per label the latest weights, if a
    label has several (another FBANK configuration run under the same name)."""
    rows = df[df["label"].isin(FBANK_ROWS) & (df["protocol"] == DEFAULT_PROTOCOL)]
    return [str(group["upstream"].iloc[-1]) for _, group in rows.groupby("label", sort=False)]


def build_table(df: pd.DataFrame, ref: Reference, results_dir: Path) -> pd.DataFrame:
    values = latest_test_values(df)
    upstreams = list(dict.fromkeys(values["upstream"]))
    identity = df.drop_duplicates("upstream", keep="last").set_index("upstream")
    tasks = [t for t in ref.tasks if t in set(values["task"])]
    # tasks outside the SUPERB reference (manifest tasks: --task custom) get metric columns but no SUPERB score
    extra = values[~values["task"].isin(ref.tasks)]
    extra_columns = list(dict.fromkeys(f"{t} {m}" for t, m in zip(extra["task"], extra["metric"])))
    by_column: dict[str, dict[str, float]] = {}  # upstream -> leaderboard column -> value
    seeds = {u: int(values.loc[values.upstream == u, "seeds"].min()) for u in upstreams}
    rows = []
    for up in upstreams:
        who = identity.loc[up]
        stats = read_upstream_stats(results_dir, who["label"], who["checkpoint_hash"])
        row: dict = {"upstream": up, "protocol": who["protocol"], "random": "yes" if who["upstream_random"] else "",
                     "params_M": stats.get("params", math.nan) / 1e6 if stats else math.nan,
                     "GMACs_per_s": stats.get("macs_per_second", math.nan) / 1e9 if stats else math.nan,
                     "RTF": stats.get("rtf", math.nan)}
        by_column[up] = _columns(values, up, tasks, ref)
        for task in tasks:
            for m in ref.task_metrics(task):
                row[f"{task} {m.metric}"] = by_column[up].get(m.column, math.nan)
            for metric, _ in EXTRA_METRICS.get(task, []):
                hit = values[(values.upstream == up) & (values.task == task) & (values.metric == metric)]
                row[f"{task} {metric}"] = float(hit["value"].iloc[0]) if len(hit) else math.nan
            if task == "er":
                folds = values.loc[(values.upstream == up) & (values.task == task), "folds"]
                if len(folds):
                    row["er_folds"] = int(folds.iloc[0])
        for col in extra_columns:
            task, metric = col.rsplit(" ", 1)
            hit = extra[(extra.upstream == up) & (extra.task == task) & (extra.metric == metric)]
            row[col] = float(hit["value"].iloc[0]) if len(hit) else math.nan
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
    fbank_row = fbank_anchor(by_column, ref, _fbank_rows(df))
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


def seed_spread(df: pd.DataFrame) -> pd.DataFrame:
    """Standard deviation over seeds of each (upstream, task, metric) test value (folds averaged first); NaN for a
    single seed."""
    rows = _latest_test_rows(df)
    per_seed = rows.groupby(["upstream", "task", "metric", "seed"], sort=False)["value"].mean().reset_index()
    return per_seed.groupby(["upstream", "task", "metric"], sort=False)["value"].std().rename("sd").reset_index()


def metric_directions(ref: Reference) -> dict[str, bool]:
    """Table column (``"<task> <metric>"``) -> higher is better, for the scored and the extra metrics."""
    out = {f"{m.task} {m.metric}": m.higher_is_better for m in ref.metrics}
    out.update({f"{t} {metric}": hib for t, items in EXTRA_METRICS.items() for metric, hib in items})
    return out


def one_speaker_der(values: pd.DataFrame) -> float | None:
    """The SD reference DER ("speaker A = all speech") of the test set, or None when no SD run wrote it."""
    task, metric = SD_ONE_SPEAKER
    hit = values[(values.task == task) & (values.metric == metric)]
    return float(hit["value"].mean()) if len(hit) else None


def report_notes(values: pd.DataFrame) -> list[str]:
    """Lines printed below the table: the SD reference DER of "speaker A = all speech" on the test set."""
    task, metric = SD_ONE_SPEAKER
    hit = values[(values.task == task) & (values.metric == metric)]
    if not len(hit):
        return []
    # the same test set gives every upstream the same value; rows differ only if their corpora did
    lo, hi = float(hit["value"].min()), float(hit["value"].max())
    value = f"{lo:.2f}" if hi - lo < 0.005 else f"{lo:.2f}–{hi:.2f}"
    return [f'SD reference: "speaker A = all speech" (one label over all reference speech) scores DER {value}% on '
            "this test set; a diarization head that learnt only speech activity sits there."]


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


def _column_label(column: str) -> str:
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
        title = f"{_column_label(col)}\n{_direction(directions.get(col))}"
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


def retained_percent(table: pd.DataFrame, ref: Reference, teacher: str, students: list[str]) -> pd.DataFrame:
    """Per scored metric column and student: 100 * (student - anchor) / (teacher - anchor), anchor = the FBANK
    anchor (so FBANK = 0%, the teacher = 100%, for lower- and higher-is-better metrics alike). NaN where the teacher
    does not beat the anchor (no scale) or a value is missing."""
    t = table.set_index("upstream")
    anchor = {}
    for m in ref.metrics:
        col = f"{m.task} {m.metric}"
        if col not in t.columns:
            continue
        vals = [float(t.loc[r, col]) for r in FBANK_ROWS if r in t.index and not math.isnan(float(t.loc[r, col]))]
        if vals:
            anchor[col] = (max(vals) if m.higher_is_better else min(vals), m.higher_is_better)
    rows = {}
    if "SUPERB_local" in t.columns:  # already on the anchor's scale (anchor = 0): the ratio of the scores
        tv = pd.to_numeric(pd.Series([t.loc[teacher, "SUPERB_local"]]), errors="coerce").fillna(math.nan)[0]
        local = pd.to_numeric(t["SUPERB_local"], errors="coerce")  # None (no FBANK row to anchor on) -> NaN
        rows["SUPERB_local"] = {s: 100.0 * float(local[s]) / tv if tv > 0 else math.nan for s in students}
        rows["SUPERB_local"]["teacher_gain"] = tv
    for col, (a, hib) in anchor.items():
        tv = float(t.loc[teacher, col])
        gain = (tv - a) if hib else (a - tv)
        rows[col] = {s: (100.0 * (float(t.loc[s, col]) - a) / (tv - a) if gain > 0 else math.nan) for s in students}
        rows[col]["teacher_gain"] = gain
    return pd.DataFrame(rows).T


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
                       f"{_column_label(c)} {'↑' if dirs.get(c) else '↓'}"
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


def build_report(results_dir: Path, out_dir: Path | None = None, reference: Path | None = None,
                 teacher: str | None = None, students: list[str] | None = None) -> Report:
    """Write report.csv, REPORT.md and the pictures (see the module docstring) into ``out_dir`` (default
    ``results_dir``). ``teacher``/``students`` choose the rows of the DistilHuBERT picture (defaults there)."""
    results_dir = Path(results_dir)
    out_dir = Path(out_dir or results_dir)
    ref = load_reference(reference)
    df = load_results(results_dir)
    table = build_table(df, ref, results_dir)
    values = latest_test_values(df)
    notes = report_notes(values)
    markdown = to_markdown(table) + "".join(f"\n\n{n}" for n in notes)
    files = []
    with atomic_path(out_dir / "report.csv") as tmp:
        table.to_csv(tmp, index=False)
    files.append(out_dir / "report.csv")
    doc = (__doc__ or "").split("Columns", 1)[-1]
    atomic_write_text(out_dir / "REPORT.md", "# Benchmark report\n\nColumns" + doc + "\n" + markdown + "\n")
    files.append(out_dir / "REPORT.md")
    files += plot_layer_weights(values, out_dir)
    ups = list(table["upstream"]) if len(table) else []
    teacher = teacher or (DEFAULT_TEACHER if DEFAULT_TEACHER in ups else None)
    bars = plot_task_bars(table, out_dir, seed_spread(df), metric_directions(ref), teacher, one_speaker_der(values))
    if bars:
        files.append(bars)
    if teacher is not None and teacher in ups:
        # default students: the other rows under SUPERB's protocol (not the teacher's own --layer/fine-tune rows)
        same_protocol = set(table.loc[table["protocol"] == DEFAULT_PROTOCOL, "upstream"]) if "protocol" in table \
            else set(ups)
        students = students or [u for u in ups if u != teacher and u not in FBANK_ROWS and u in same_protocol]
        distil = plot_distillation(table, ref, out_dir, teacher, [s for s in students if s in ups])
        if distil:
            files.append(distil)
    return Report(table, markdown, files, notes)
