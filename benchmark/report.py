"""``run_benchmark.py report``: one table of upstreams x task metrics, costs and SUPERB scores, plus plots.

Columns (also written at the top of REPORT.md):
* ``upstream`` — one row per upstream *and* protocol: an upstream is its label with its weights hash, written
  ``label@hash8`` whenever one label names several weights (two ``checkpoint-1000`` folders of different
  experiments, a retrained model); a protocol other than SUPERB's frozen weighted sum is appended in brackets
  (``[layer-K]``, ``[finetune-weighted-sum]``) and never merged with it. ``protocol`` repeats it; ``random`` is
  ``yes`` for randomly initialised weights (``--random-init``).
* ``superb_comparable`` — ``yes`` when every value of the row comes from a run that followed SUPERB's procedure
  (full profile, SUPERB's settings, nothing SUPERB used missing: ``benchmark/comparability.py``), ``no`` otherwise
  (the reasons are listed below the table, per task), ``?`` for rows written before the flag existed.
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

Below the table: each (upstream, task) that is not SUPERB-comparable with its reasons; the SD reference DER of "speaker A = all speech" (one label over all reference speech) on the test
set, which a diarization head that learnt only speech activity reaches.
With several seeds, a second table gives each metric as mean ± standard deviation over the seeds.

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

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from common.io import atomic_path, atomic_write_text

from .charts import plot_distillation, plot_layer_weights, plot_task_bars
from .results import DEFAULT_PROTOCOL
from .superb_score import load_reference
from .table import (FBANK_ROWS, build_table, latest_test_values, load_results, mean_sd_table, metric_directions,
                    one_speaker_der, report_notes, seed_spread, to_markdown)

DEFAULT_TEACHER = "hubert_mini"


@dataclass
class Report:
    table: pd.DataFrame
    markdown: str
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # lines printed below the table (the SD reference)


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
    spread = seed_spread(df)
    spread_table = mean_sd_table(table, spread, metric_directions(ref)) if len(table) else None
    if spread_table is not None:
        markdown += "\n\nMean ± standard deviation over seeds:\n\n" + to_markdown(spread_table)
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
    bars = plot_task_bars(table, out_dir, spread, metric_directions(ref), teacher, one_speaker_der(values))
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
