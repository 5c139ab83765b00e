"""QUESST 2014 loader (English subset, as SUPERB): queries, documents and which documents contain each query.

Layout (docs/DATA_LAYOUTS.md): ``quesst14Database/Audio/*.wav`` documents, ``{dev,eval}_queries/*.wav`` queries,
``scoring/language_key_{utterances,dev,eval}.lst`` (``<id or relative path> <language>``) and
``scoring/groundtruth_quesst14_{dev,eval}/quesst14_{dev,eval}.rttm`` whose ``LEXEME`` lines
(``LEXEME <doc> 1 <tbeg> <tdur> <query-id> ...``) mark every occurrence of a query in a document.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common import datasets
from common.audio import audio_duration
from tasks.base import DatasetNotFoundError, Utterance
from tasks.listfile import ListFileError, read_fields

QUESST_DIR = datasets.QUESST14
QUERY_DIRS = {"dev": "dev_queries", "eval": "eval_queries"}


@dataclass
class QbESet:
    """Queries × documents of one split. ``targets[q, d]`` is True when query q occurs in document d."""

    queries: list[Utterance]
    documents: list[Utterance]
    targets: np.ndarray
    dropped: dict[str, int] = field(default_factory=dict)  # entries left out on purpose (other languages) -> count


def _resolve(root: Path, name: str, default_dir: str, list_path: Path, lineno: int) -> Path:
    """Audio path of a language-key entry: a path relative to the database (optionally starting with the
    database folder's own name, as in the official lists) or a bare id looked up in ``default_dir``."""
    candidates = []
    if "/" in name:
        candidates += [root / name, root / name.split("/", 1)[1]]
    stem = Path(name).name
    stem = stem[:-4] if stem.endswith(".wav") else stem
    candidates.append(root / default_dir / f"{stem}.wav")
    for path in candidates:
        if path.is_file():
            return path
    raise ListFileError(list_path, lineno, f"audio for {name!r} not found (looked for {candidates[-1]})")


def read_language_key(root: Path, list_name: str, default_dir: str, languages: set[str],
                      other: list[str] | None = None, listed: set[str] | None = None) -> list[Utterance]:
    """Utterances of ``scoring/<list_name>`` whose language is in ``languages``, in file order; the languages of
    the entries left out are appended to ``other`` when given, and the ids of every entry (any language) are added
    to ``listed`` when given."""
    list_path = root / "scoring" / list_name
    if not list_path.is_file():
        raise DatasetNotFoundError(f"QUESST 2014 list {list_path} not found (expected lines '<id> <language>')")
    utts = []
    for lineno, (name, language), _ in read_fields(list_path, 2, 2, "'<id or path> <language>'"):
        if listed is not None:
            listed.add(Path(name).stem)
        if language.lower() not in languages:
            if other is not None:
                other.append(language.lower())
            continue
        path = _resolve(root, name, default_dir, list_path, lineno)
        utts.append(Utterance(id=path.stem, path=path, duration=audio_duration(path)))
    return utts


def read_occurrences(rttm_path: Path) -> set[tuple[str, str]]:
    """``{(query_id, document_id)}`` from the ``LEXEME`` lines of a QUESST ground-truth RTTM."""
    if not rttm_path.is_file():
        raise DatasetNotFoundError(f"QUESST 2014 ground truth {rttm_path} not found")
    pairs = set()
    for lineno, fields, raw in read_fields(rttm_path, 1, None):
        if fields[0] != "LEXEME":
            continue
        if len(fields) < 6:
            raise ListFileError(rttm_path, lineno, "expected 'LEXEME <doc> <chnl> <tbeg> <tdur> <query-id> ...'",
                                raw)
        pairs.add((Path(fields[5]).stem, Path(fields[1]).stem))
    return pairs


def load_quesst(data_root: str | Path, split: str, languages: set[str] | frozenset[str]) -> QbESet:
    """Queries of ``split`` ("dev" or "eval"), every document, and the target matrix."""
    if split not in QUERY_DIRS:
        raise ValueError(f"QUESST 2014 split must be 'dev' or 'eval', got {split!r}")
    root = Path(data_root) / QUESST_DIR
    languages = {lang.lower() for lang in languages}
    other_docs: list[str] = []
    other_queries: list[str] = []
    all_docs: set[str] = set()
    all_queries: set[str] = set()
    documents = read_language_key(root, "language_key_utterances.lst", "Audio", languages, other_docs, all_docs)
    queries = read_language_key(root, f"language_key_{split}.lst", QUERY_DIRS[split], languages, other_queries,
                                all_queries)
    if not documents or not queries:
        raise DatasetNotFoundError(f"QUESST 2014 under {root}: no {sorted(languages)} "
                                   f"{'documents' if not documents else split + ' queries'} in the language keys")
    truth = root / "scoring" / f"groundtruth_quesst14_{split}" / f"quesst14_{split}.rttm"
    occurrences = read_occurrences(truth)
    # an occurrence of a query or document no language key lists (any language) would be dropped without a word
    unknown = sorted({f"query {q}" for q, _ in occurrences if q not in all_queries}
                     | {f"document {d}" for _, d in occurrences if d not in all_docs})
    if unknown:
        raise ValueError(f"{truth}: {len(unknown)} id(s) that no language key lists (language_key_{split}.lst, "
                         f"language_key_utterances.lst): " + ", ".join(unknown[:40])
                         + (f", ... and {len(unknown) - 40} more" if len(unknown) > 40 else ""))
    q_index = {u.id: i for i, u in enumerate(queries)}
    d_index = {u.id: i for i, u in enumerate(documents)}
    targets = np.zeros((len(queries), len(documents)), dtype=bool)
    for query_id, doc_id in occurrences:
        if query_id in q_index and doc_id in d_index:  # other languages' occurrences are out of scope
            targets[q_index[query_id], d_index[doc_id]] = True
    dropped = {f"{kind} in languages other than {', '.join(sorted(languages))}": len(items)
               for kind, items in (("queries", other_queries), ("documents", other_docs)) if items}
    return QbESet(queries=queries, documents=documents, targets=targets, dropped=dropped)
