"""``CORPUS.md``: the data card written at the top of every built corpus (from ``CORPUS.template.md``)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from .context import Context
from .text import vocabulary

TEMPLATE = Path(__file__).parent / "CORPUS.template.md"


def _table(stats: dict[str, dict]) -> str:
    rows = ["| part | split | utterances / files | hours | speakers | notes |", "|---|---|---:|---:|---:|---|"]
    main = ("utterances", "hours", "speakers")
    for part, splits in stats.items():
        for split, st in splits.items():
            notes = ", ".join(f"{k}: {v}" for k, v in st.items() if k not in main)
            rows.append(f"| {part} | {split} | {st.get('utterances', '')} | {st.get('hours', '')} "
                        f"| {st.get('speakers', '')} | {notes} |")
    return "\n".join(rows)


def render_card(ctx: Context, stats: dict[str, dict]) -> str:
    engines = Counter(s.engine for s in ctx.speakers)
    genders = Counter(s.gender for s in ctx.speakers)
    return TEMPLATE.read_text().format(
        size=ctx.size.name, seed=ctx.seed, table=_table(stats), n_speakers=len(ctx.speakers),
        n_espeak=engines["espeak-ng"], n_flite=engines["flite"], n_female=genders["f"], n_male=genders["m"],
        flite_voices=", ".join(sorted({s.voice for s in ctx.speakers if s.engine == "flite"})) or "none",
        vocabulary=len(vocabulary()))
