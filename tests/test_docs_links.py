"""Every relative markdown link in README.md and docs/**/*.md resolves, and docs/README.md indexes every docs page.

A link's target is resolved against the folder of the file that holds it (as GitHub renders it); a ``#fragment`` on a
markdown target must name one of its headings, slugged as GitHub does (lower case, punctuation dropped, spaces to
hyphens, ``-1``, ``-2`` ... for repeats). Links inside fenced code blocks and inline code are not links; absolute
URLs (``https:``, ``mailto:``) are not checked (no network here).
"""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
FENCE = re.compile(r"^ {0,3}(```|~~~)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks (a fence's own lines count as code)."""
    lines, in_fence = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: markdown marks and punctuation dropped, lower case, spaces → '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in _prose_lines(path.read_text(encoding="utf-8")):
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[str]:
    prose = "\n".join(_prose_lines(path.read_text(encoding="utf-8")))
    prose = re.sub(r"(`+)(?:(?!\1).)+?\1", "", prose, flags=re.DOTALL)  # inline code spans
    return INLINE_LINK.findall(prose) + REFERENCE_DEF.findall(prose)


def broken_links(path: Path) -> list[str]:
    """One 'file: target (why)' line per relative link of ``path`` that does not resolve."""
    problems = []
    for target in links(path):
        if SCHEME.match(target):
            continue
        file_part, _, fragment = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {target}"
        if not dest.exists():
            problems.append(f"{where} (no such file or folder)")
        elif fragment and dest.suffix == ".md" and dest.is_file() and fragment not in anchors(dest):
            problems.append(f"{where} (no heading with anchor #{fragment} in {dest.name})")
    return problems


def test_every_relative_link_resolves():
    problems = [p for f in markdown_files() for p in broken_links(f)]
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_docs_index_lists_every_docs_page():
    index = ROOT / "docs" / "README.md"
    listed = {(index.parent / t.partition("#")[0]).resolve() for t in links(index) if not SCHEME.match(t)}
    pages = {p.resolve() for p in (ROOT / "docs").rglob("*.md") if p != index}
    missing = sorted(str(p.relative_to(ROOT)) for p in pages - listed)
    assert not missing, f"docs/README.md does not link these pages (add one line each): {missing}"


def test_the_checker_finds_broken_links_and_anchors(tmp_path):
    (tmp_path / "other.md").write_text("# Some `code` title: yes\n\n## Twice\n\n## Twice\n", encoding="utf-8")
    doc = tmp_path / "doc.md"
    doc.write_text(
        "[ok](other.md) [ok anchor](other.md#some-code-title-yes) [repeat](other.md#twice-1) [web](https://x.org/y)\n"
        "[gone](missing.md) [bad anchor](other.md#nope) `[in code](nowhere.md)` [self](#local)\n"
        "```\n[in a fence](nowhere.md)\n```\n"
        "## Local\n\n[ref]: also_missing.md\n",
        encoding="utf-8",
    )
    problems = broken_links(doc)
    assert len(problems) == 3, problems
    assert "missing.md (no such file or folder)" in problems[0]
    assert "other.md#nope (no heading with anchor #nope in other.md)" in problems[1]
    assert "also_missing.md (no such file or folder)" in problems[2]
