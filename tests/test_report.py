"""SUPERB score against the published leaderboard, and the report table/plots from a results CSV."""
from __future__ import annotations

import json

import pytest

from benchmark import results
from benchmark.report import build_report
from benchmark.superb_score import load_reference, superb_score
from benchmark.upstream_stats import stats_path


def test_superb_score_reproduces_the_leaderboard():
    ref = load_reference()
    assert superb_score(ref.published["hubert_base"], ref.fbank, ref.sota, ref) == pytest.approx(941, abs=1)
    assert superb_score(ref.published["distilhubert"], ref.fbank, ref.sota, ref) == pytest.approx(717, abs=1)
    assert superb_score(ref.fbank, ref.fbank, ref.sota, ref) == 0
    partial = dict(ref.published["hubert_base"])
    del partial["SD"]
    assert superb_score(partial, ref.fbank, ref.sota, ref) is None  # a missing task is not silently skipped


def _append(results_dir, upstream, task, metric, value, fold=None, weights=None, seed=0):
    info = results.RunInfo(upstream, 1_000_000, "h", task, seed, "c", "r", fold=fold)
    results.append_rows(results_dir, results.format_rows(info, {"dev": {metric: value + 1}, "test": {metric: value}},
                                                         10, 1.0, 1e-3, weights))


def test_report_table_folds_latest_rows_and_plots(tmp_path):
    for up, acc, per in [("fbank", 50.0, 80.0), ("student", 70.0, 20.0)]:
        (tmp_path / up).mkdir()
        (tmp_path / up / "upstream_stats.json").write_text(json.dumps(
            {"params": 2_000_000, "macs_per_second": 3e9, "rtf": 0.05, "checkpoint_hash": "h"}))
        _append(tmp_path, up, "ks", "accuracy", acc - 10)  # superseded by the next row
        _append(tmp_path, up, "ks", "accuracy", acc, weights=[0.2, 0.3, 0.5])
        _append(tmp_path, up, "pr", "per", per, weights=[0.6, 0.2, 0.2])
        _append(tmp_path, up, "er", "accuracy", acc, fold=1)
        _append(tmp_path, up, "er", "accuracy", acc + 10, fold=2)
    report = build_report(tmp_path)
    t = report.table.set_index("upstream")
    assert t.loc["student", "ks accuracy"] == 70.0 and t.loc["student", "er accuracy"] == 75.0
    assert t.loc["student", "er_folds"] == 2 and t.loc["fbank", "params_M"] == 2.0
    assert t.loc["fbank", "SUPERB_local"] == pytest.approx(0.0) and t.loc["student", "SUPERB_rel"] == pytest.approx(1000)
    ref = load_reference()
    expected = sum(1000 * (v - ref.fbank[c]) / (ref.sota[c] - ref.fbank[c])
                   for c, v in [("PR", 20.0), ("KS", 70.0), ("ER", 75.0)]) / 3
    assert t.loc["student", "SUPERB_s"] == pytest.approx(expected)
    assert "| student |" in report.markdown
    names = {p.name for p in report.files}
    assert {"report.csv", "REPORT.md", "layer_weights_student.png", "tasks_by_upstream.png"} <= names
    assert "distillation.png" not in names  # no hubert_mini row: no teacher to compare with
    assert all(p.stat().st_size > 0 for p in report.files)


def test_local_score_leaves_out_metrics_where_fbank_already_beats_the_published_sota():
    ref = load_reference()
    fbank = dict(ref.sota)
    fbank["QbE"] = ref.sota["QbE"] + 0.3  # the offline corpus: FBANK's MTWV is above the leaderboard's best
    fbank["KS"] = ref.sota["KS"] - 40.0
    worse = dict(fbank, QbE=fbank["QbE"] - 0.1, KS=fbank["KS"] + 20.0)
    tasks = ["ks", "qbe"]
    # Only KS has a scale: halfway from FBANK to SOTA. QbE would have scored +1000*0.1/0.3 for being worse.
    assert superb_score(worse, fbank, ref.sota, ref, tasks, skip_unscaled=True) == pytest.approx(500.0)
    with pytest.raises(ValueError, match="QbE"):
        superb_score(worse, fbank, ref.sota, ref, tasks)


def test_report_averages_seeds_and_gives_the_spread_of_the_local_score(tmp_path):
    ref = load_reference()
    for seed, ks_student in [(0, 70.0), (1, 80.0)]:
        _append(tmp_path, "fbank", "ks", "accuracy", 50.0 + seed, seed=seed)
        _append(tmp_path, "student", "ks", "accuracy", ks_student, seed=seed)
    _append(tmp_path, "single", "ks", "accuracy", 75.0)
    t = build_report(tmp_path).table.set_index("upstream")
    assert t.loc["student", "ks accuracy"] == 75.0 and t.loc["fbank", "ks accuracy"] == 50.5
    assert t.loc["student", "seeds"] == 2 and t.loc["single", "seeds"] == 1
    # each seed against the mean FBANK row (50.5): KS scores 1000 * (v - 50.5) / (SOTA - 50.5), sd over the two
    per_seed = [1000 * (v - 50.5) / (ref.sota["KS"] - 50.5) for v in (70.0, 80.0)]
    assert t.loc["student", "SUPERB_local_sd"] == pytest.approx(abs(per_seed[1] - per_seed[0]) / 2 ** 0.5)
    assert t.loc["student", "SUPERB_local"] == pytest.approx(sum(per_seed) / 2)
    assert t.loc["single", "SUPERB_local_sd"] != t.loc["single", "SUPERB_local_sd"]  # NaN: one seed has no spread
    spread = (tmp_path / "REPORT.md").read_text().split("Mean ± standard deviation over seeds:")[1]
    assert "| student | 2 | 75.00 ± 7.07 |" in spread  # sd of 70 and 80
    assert "| single | 1 | 75.00 |" in spread  # one seed: no spread to give


def _row(results_dir, label, h, task, metric, value, protocol="weighted-sum", layer=None, random=False, params=1):
    info = results.RunInfo(label, params, h, task, 0, "c", "r", layer=layer, protocol=protocol, upstream_random=random)
    results.append_rows(results_dir, results.format_rows(info, {"test": {metric: value}}, 10, 1.0, 1e-3, None))


def _stats(results_dir, label, h, params):
    path = stats_path(results_dir, label, h)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"params": params, "macs_per_second": 1e9, "rtf": 0.1, "checkpoint_hash": h + "0" * 48}))


def test_two_models_sharing_a_folder_name_are_two_rows(tmp_path):
    """expA/checkpoint-1000 and expB/checkpoint-1000 (or s3prl's states-200000.ckpt in every experiment): one label,
    two weights hashes, so two rows with their own tasks, stats and scores; nothing of A is shown for B."""
    a, b = "a" * 16, "b" * 16
    _stats(tmp_path, "checkpoint-1000", a, 3_000_000)
    _stats(tmp_path, "checkpoint-1000", b, 9_000_000)
    _row(tmp_path, "fbank", "f" * 16, "ks", "accuracy", 40.0)
    _row(tmp_path, "fbank", "f" * 16, "ic", "accuracy", 30.0)
    _row(tmp_path, "checkpoint-1000", a, "ks", "accuracy", 90.0)
    _row(tmp_path, "checkpoint-1000", b, "ic", "accuracy", 60.0)
    t = build_report(tmp_path).table.set_index("upstream")
    assert set(t.index) == {"fbank", "checkpoint-1000@aaaaaaaa", "checkpoint-1000@bbbbbbbb"}
    assert t.loc["checkpoint-1000@aaaaaaaa", "ks accuracy"] == 90.0
    assert t.loc["checkpoint-1000@aaaaaaaa", "ic accuracy"] != t.loc["checkpoint-1000@aaaaaaaa", "ic accuracy"]
    assert t.loc["checkpoint-1000@bbbbbbbb", "ic accuracy"] == 60.0
    assert t.loc["checkpoint-1000@aaaaaaaa", "params_M"] == 3.0 and t.loc["checkpoint-1000@bbbbbbbb", "params_M"] == 9.0
    assert t.loc["checkpoint-1000@aaaaaaaa", "tasks_scored"] == 1  # no SUPERB score combined from A's KS + B's IC
    assert t.loc["checkpoint-1000@aaaaaaaa", "SUPERB_s"] != t.loc["checkpoint-1000@aaaaaaaa", "SUPERB_s"]


def test_protocols_are_never_merged(tmp_path):
    """A frozen weighted-sum run, a --layer run and an --upstream-trainable run of the same upstream and task are
    three results; the latest (fine-tuned 12.5) must not replace the frozen 20.83."""
    h = "c" * 16
    _row(tmp_path, "hubert_mini", h, "ks", "accuracy", 20.83)
    _row(tmp_path, "hubert_mini", h, "ks", "accuracy", 17.0, protocol="layer-3", layer=3)
    _row(tmp_path, "hubert_mini", h, "ks", "accuracy", 12.5, protocol="finetune-weighted-sum")
    report = build_report(tmp_path)
    t = report.table.set_index("upstream")
    assert t.loc["hubert_mini", "ks accuracy"] == 20.83 and t.loc["hubert_mini", "protocol"] == "weighted-sum"
    assert t.loc["hubert_mini [layer-3]", "ks accuracy"] == 17.0
    assert t.loc["hubert_mini [finetune-weighted-sum]", "ks accuracy"] == 12.5
    assert "| hubert_mini [finetune-weighted-sum] | finetune-weighted-sum |" in report.markdown


def test_random_init_is_shown_and_the_protocol_names():
    assert results.protocol_name(None, False) == "weighted-sum"
    assert results.protocol_name(4, False) == "layer-4"
    assert results.protocol_name(None, True) == "finetune-weighted-sum"
    assert results.protocol_name(2, True) == "finetune-layer-2"


def test_results_table_from_before_the_protocol_columns_is_upgraded(tmp_path):
    old = results.COLUMNS[: results.COLUMNS.index("protocol")]
    row = ["fbank", "0", "f" * 16, "ks", "test", "accuracy", "40", "0", "10", "1.0", "x", "c", "2026-01-01", "0.001",
           "", "2", "", "r"]
    (tmp_path / "results.csv").write_text(",".join(old) + "\n" + ",".join(row) + "\n")
    _row(tmp_path, "fbank", "f" * 16, "ks", "accuracy", 42.0, random=True)
    lines = (tmp_path / "results.csv").read_text().splitlines()
    assert lines[0] == ",".join(results.COLUMNS) and lines[1] == ",".join(row)  # the old row is kept as written
    t = build_report(tmp_path).table.set_index("upstream")
    assert t.loc["fbank [layer-2]", "ks accuracy"] == 40.0  # its protocol follows from its layer column
    assert t.loc["fbank", "ks accuracy"] == 42.0 and t.loc["fbank", "random"] == "yes"
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    (tmp_path / "other.csv").rename(tmp_path / "results.csv")
    with pytest.raises(ValueError, match="results.csv: its header is not"):
        _row(tmp_path, "fbank", "f" * 16, "ks", "accuracy", 1.0)


def test_local_score_anchor_is_the_better_of_the_two_fbank_rows_per_metric(tmp_path):
    ref = load_reference()
    # fbank (CMVN) at chance on KS but better on PR; fbank_no_cmvn the other way round
    for up, ks, per in [("fbank", 8.3, 60.0), ("fbank_no_cmvn", 45.0, 70.0), ("teacher", 70.0, 30.0)]:
        _append(tmp_path, up, "ks", "accuracy", ks)
        _append(tmp_path, up, "pr", "per", per)
    t = build_report(tmp_path).table.set_index("upstream")
    expected = (1000 * (70.0 - 45.0) / (ref.sota["KS"] - 45.0) + 1000 * (30.0 - 60.0) / (ref.sota["PR"] - 60.0)) / 2
    assert t.loc["teacher", "SUPERB_local"] == pytest.approx(expected)
    # each FBANK row is at the anchor where it is the better one and below it elsewhere
    assert t.loc["fbank", "SUPERB_local"] == pytest.approx(1000 * (8.3 - 45.0) / (ref.sota["KS"] - 45.0) / 2)
    assert t.loc["fbank_no_cmvn", "SUPERB_local"] == pytest.approx(1000 * (70.0 - 60.0) / (ref.sota["PR"] - 60.0) / 2)
    assert t.loc["fbank", "SUPERB_local"] < 0 and t.loc["fbank_no_cmvn", "SUPERB_local"] < 0


def test_report_pictures_sd_reference_and_cer_beside_wer(tmp_path):
    from benchmark.table import load_results, retained_percent, seed_spread

    stats = {"fbank": 0, "fbank_no_cmvn": 0, "hubert_mini": 5_000_000, "student": 1_000_000}
    rtf = {"fbank": 0.001, "fbank_no_cmvn": 0.001, "hubert_mini": 0.02, "student": 0.005}
    for up in stats:
        (tmp_path / up).mkdir()
        (tmp_path / up / "upstream_stats.json").write_text(json.dumps({"params": stats[up], "rtf": rtf[up]}))
    for seed in (0, 1):
        for up, ks, wer, cer, der in [("fbank", 8.0, 100.0, 90.0, 20.0), ("fbank_no_cmvn", 40.0, 100.0, 92.0, 34.0),
                                      ("hubert_mini", 80.0, 40.0, 12.0, 30.0), ("student", 70.0, 60.0, 20.0, 31.0)]:
            _append(tmp_path, up, "ks", "accuracy", ks + 2 * seed, seed=seed)
            _append(tmp_path, up, "asr", "wer", wer, seed=seed)
            _append(tmp_path, up, "asr", "cer", cer, seed=seed)
            _append(tmp_path, up, "sd", "der", der, seed=seed)
            _append(tmp_path, up, "sd", "der_one_speaker", 35.2, seed=seed)
    report = build_report(tmp_path)
    t = report.table.set_index("upstream")
    cols = list(report.table.columns)
    assert cols.index("asr cer") == cols.index("asr wer") + 1 and t.loc["student", "asr cer"] == 20.0
    assert '"speaker A = all speech"' in report.markdown and "DER 35.20%" in report.markdown
    assert "DER 35.20%" in (tmp_path / "REPORT.md").read_text()
    assert {"tasks_by_upstream.png", "distillation.png"} <= {p.name for p in report.files}
    sd = seed_spread(load_results(tmp_path)).set_index(["upstream", "task", "metric"])["sd"]
    assert sd[("student", "ks", "accuracy")] == pytest.approx(2 ** 0.5)  # 70 and 72
    kept = retained_percent(report.table, load_reference(), "hubert_mini", ["student"])
    # anchor KS = 41 (fbank_no_cmvn's mean), teacher 81, student 71: 75% kept; ASR WER anchor 100: (60-100)/(40-100)
    assert kept.loc["ks accuracy", "student"] == pytest.approx(75.0)
    assert kept.loc["asr wer", "student"] == pytest.approx(100 * 40 / 60)
    assert kept.loc["sd der", "student"] != kept.loc["sd der", "student"]  # teacher worse than FBANK's 20: no scale
    assert kept.loc["SUPERB_local", "student"] == pytest.approx(
        100 * t.loc["student", "SUPERB_local"] / t.loc["hubert_mini", "SUPERB_local"])


def test_chart_labels_write_metric_acronyms_as_the_field_does():
    from benchmark.charts import column_label

    assert column_label("pr per") == "PR PER"
    assert column_label("asv eer") == "ASV EER"
    assert column_label("sf slot_type_f1") == "SF slot type F1"
    assert column_label("ks accuracy") == "KS accuracy"
