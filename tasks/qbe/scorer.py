"""The official QUESST 2014 scorer, run by path when the user has it (``-o twv.scorer=.../score-TWV-Cnxe.sh``).

The scorer ships with the database (``quesst14Database/scoring/score-TWV-Cnxe.sh`` and the MediaEval jar next to
it, run from its own folder, needs ``java`` and ``bc``); we cannot ship it. SUPERB ran it as ``./score-TWV-Cnxe.sh
<system dir> groundtruth_quesst14_eval -10`` (``s3prl/downstream/docs/superb.md:310-318``) on the
``benchmark.stdlist.xml`` that s3prl writes (``s3prl/downstream/quesst14_dtw/expert.py:152-186``): one
``<detected_termlist>`` per searched query, one ``<term>`` per searched document with the score printed ``%.4f``
and ``decision="YES"`` when the score exceeds 2.0. :func:`write_stdlist` writes the same file and :func:`run_scorer`
runs the script and reads its ``Main Results`` lines (actTWV, maxTWV, its threshold, actCnxe, minCnxe).
"""
from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np

_TWV = re.compile(r"actTWV:\s*(\S+)\s+maxTWV:\s*(\S+)\s+Threshold:\s*(\S+)")
_CNXE = re.compile(r"actCnxe:\s*(\S+)\s+minCnxe:\s*(\S+)")


class ScorerError(ValueError):
    """The official scorer is missing, failed, or printed no result; the message says which and why."""


@dataclass
class ScorerResult:
    atwv: float
    mtwv: float
    mtwv_threshold: float
    act_cnxe: float | None
    min_cnxe: float | None
    output: str  # what the scorer printed (kept in the run folder)


def check_scorer(path: str | Path) -> Path:
    """The scorer script's path, or :class:`ScorerError` when it is not a file."""
    script = Path(path).expanduser()
    if not script.is_file():
        raise ScorerError(f"twv.scorer: {script} not found (expected the QUESST 2014 score-TWV-Cnxe.sh, next to "
                          f"its MediaEval jar in quesst14Database/scoring/)")
    return script.resolve()


def stdlist_xml(scores: np.ndarray, query_ids: list[str], document_ids: list[str], decision_threshold: float) -> str:
    """s3prl's ``benchmark.stdlist.xml`` for ``scores`` ``[query, document]``: ``%.4f`` scores, YES when a score
    exceeds ``decision_threshold``."""
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             '<stdlist termlist_filename="benchmark.stdlist.xml" indexing_time="1.00" language="english" '
             'index_size="1" system_id="benchmark">']
    for i, q in enumerate(query_ids):
        lines.append(f'  <detected_termlist termid={quoteattr(q)} term_search_time="1.0" oov_term_count="1">')
        for j, d in enumerate(document_ids):
            s = float(scores[i, j])
            lines.append(f'    <term file={quoteattr(d)} channel="1" tbeg="0.000" dur="0.00" score="{s:.4f}" '
                         f'decision="{"YES" if s > decision_threshold else "NO"}"/>')
        lines.append("  </detected_termlist>")
    lines.append("</stdlist>")
    return "\n".join(lines) + "\n"


def parse_scorer_output(text: str) -> ScorerResult:
    """The first ``actTWV: … maxTWV: … Threshold: …`` and ``actCnxe: … minCnxe: …`` lines (the main results)."""
    twv = _TWV.search(text)
    if twv is None:
        tail = text.strip().splitlines()[-1] if text.strip() else "(no output)"
        raise ScorerError(f"the official QUESST scorer printed no 'actTWV: ... maxTWV: ...' line; last line: {tail}")
    cnxe = _CNXE.search(text)
    return ScorerResult(atwv=float(twv.group(1)), mtwv=float(twv.group(2)), mtwv_threshold=float(twv.group(3)),
                        act_cnxe=float(cnxe.group(1)) if cnxe else None,
                        min_cnxe=float(cnxe.group(2)) if cnxe else None, output=text)


def run_scorer(script: str | Path, truth_dir: Path, stdlist: str, default_score: float,
               timeout_s: float = 3600.0) -> ScorerResult:
    """Write ``stdlist`` into a fresh folder, run ``bash <script> <folder> <truth_dir> <default_score>`` from the
    script's folder (it expects its jar there) and parse the result; :class:`ScorerError` when it fails."""
    script = check_scorer(script)
    with tempfile.TemporaryDirectory(prefix="qbe_scorer_") as tmp:
        (Path(tmp) / "benchmark.stdlist.xml").write_text(stdlist, encoding="utf-8")
        cmd = ["bash", str(script), tmp, str(Path(truth_dir).resolve()), f"{default_score:g}"]
        try:
            done = subprocess.run(cmd, cwd=script.parent, capture_output=True, text=True, timeout=timeout_s)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ScorerError(f"the official QUESST scorer {script} could not run: {e}") from None
    out = done.stdout + done.stderr
    if done.returncode != 0:
        tail = out.strip().splitlines()[-1] if out.strip() else "(no output)"
        raise ScorerError(f"the official QUESST scorer {script} failed (exit {done.returncode}): {tail}")
    return parse_scorer_output(done.stdout)
