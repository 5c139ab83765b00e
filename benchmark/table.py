"""The report's table (``run_benchmark.py report``; ``benchmark/report.py`` describes its columns): the results rows
read back, the latest test values per upstream, task and seed, the SUPERB scores against the FBANK and SOTA
anchors, the spread over seeds, and each student's share of the teacher's gain over FBANK."""
from __future__ import annotations

import logging
import math
from pathlib import Path

import pandas as pd

from . import results
from .results import DEFAULT_PROTOCOL
from .superb_score import Reference, superb_score
from .upstream_stats import read_upstream_stats

log = logging.getLogger(__name__)

FBANK = "fbank"
# The rows whose per-metric best is the zero anchor of SUPERB_local / SUPERB_rel (see benchmark/report.py).
FBANK_ROWS = (FBANK, "fbank_no_cmvn")
# Metrics shown beside a task's scored ones, outside every score: task -> [(metric, higher_is_better)].
EXTRA_METRICS = {"asr": [("cer", False)]}
SD_ONE_SPEAKER = ("sd", "der_one_speaker")  # the SD reference DER, printed below the table


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
    for column in ("protocol", "upstream_random", "superb_comparable", "not_comparable_because"):
        if column not in df:
            df[column] = math.nan
    df["fold"] = pd.to_numeric(df["fold"], errors="coerce")
    df["layer_weights"] = df["layer_weights"].fillna("")
    df["checkpoint_hash"] = df["checkpoint_hash"].fillna("").astype(str)
    layer = pd.to_numeric(df["layer"], errors="coerce")
    legacy = layer.map(lambda k: DEFAULT_PROTOCOL if math.isnan(k) else f"layer-{int(k)}")  # rows before `protocol`
    df["protocol"] = df["protocol"].fillna(legacy)
    df["upstream_random"] = pd.to_numeric(df["upstream_random"], errors="coerce").fillna(0).astype(int)
    # rows written before the column existed: unknown (-1), never counted as comparable
    df["superb_comparable"] = pd.to_numeric(df["superb_comparable"], errors="coerce").fillna(-1).astype(int)
    df["not_comparable_because"] = df["not_comparable_because"].fillna("").astype(str)
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
                 layer_weights=("layer_weights", "last"), superb_comparable=("superb_comparable", "min"),
                 not_comparable_because=("not_comparable_because", _joined_reasons))
            .reset_index())


def _joined_reasons(reasons: pd.Series) -> str:
    """The distinct reasons of several rows (``;``-separated in each), in order."""
    parts = [r.strip() for text in reasons for r in str(text).split(";") if r.strip()]
    return "; ".join(dict.fromkeys(parts))


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
        flags = values.loc[values.upstream == up, "superb_comparable"]
        row: dict = {"upstream": up, "protocol": who["protocol"], "random": "yes" if who["upstream_random"] else "",
                     "superb_comparable": {1: "yes", 0: "no"}.get(int(flags.min()), "?"),
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


def mean_sd_table(table: pd.DataFrame, spread: pd.DataFrame, directions: dict[str, bool]) -> pd.DataFrame | None:
    """Each metric column of ``table`` as ``mean ± sd`` strings over seeds (``spread``: :func:`seed_spread`), plus
    ``seeds``; None when no row has more than one seed. The ordering of upstreams is read against this spread."""
    if "seeds" not in table or table["seeds"].max() <= 1:
        return None
    sd = {(u, f"{t} {m}"): v for u, t, m, v in spread.itertuples(index=False)}
    columns = [c for c in table.columns if c in directions]
    rows = []
    for row in table.to_dict("records"):
        out = {"upstream": row["upstream"], "seeds": row["seeds"]}
        for c in columns:
            mean, dev = row[c], sd.get((row["upstream"], c), math.nan)
            digits = 4 if abs(mean) < 1 else 2
            out[c] = "—" if math.isnan(mean) else (f"{mean:.{digits}f}" if math.isnan(dev)
                                                   else f"{mean:.{digits}f} ± {dev:.{digits}f}")
        rows.append(out)
    return pd.DataFrame(rows)


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


def comparability_notes(values: pd.DataFrame) -> list[str]:
    """One line per (upstream, task) whose values are not SUPERB-comparable, with the reasons the rows recorded;
    and one for rows from before the flag existed."""
    lines = []
    rows = values.drop_duplicates(["upstream", "task"])
    for _, r in rows[rows.superb_comparable == 0].iterrows():
        lines.append(f"not SUPERB-comparable: {r['upstream']} {r['task']}: {r['not_comparable_because']}")
    unknown = rows[rows.superb_comparable < 0]
    if len(unknown):
        lines.append(f"SUPERB-comparable unknown (rows written before the flag existed): "
                     f"{', '.join(sorted(set(unknown['upstream'])))}")
    return lines


def report_notes(values: pd.DataFrame) -> list[str]:
    """Lines printed below the table: which values are not SUPERB-comparable and why, and the SD reference DER of
    "speaker A = all speech" on the test set."""
    notes = comparability_notes(values)
    task, metric = SD_ONE_SPEAKER
    hit = values[(values.task == task) & (values.metric == metric)]
    if not len(hit):
        return notes
    # the same test set gives every upstream the same value; rows differ only if their corpora did
    lo, hi = float(hit["value"].min()), float(hit["value"].max())
    value = f"{lo:.2f}" if hi - lo < 0.005 else f"{lo:.2f}–{hi:.2f}"
    return notes + [f'SD reference: "speaker A = all speech" (one label over all reference speech) scores DER '
                    f"{value}% on this test set; a diarization head that learnt only speech activity sits there."]


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
