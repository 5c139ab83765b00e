"""QUESST 2014 loader (English subset, as SUPERB): queries, documents and which documents contain each query.

Layout (docs/DATA_LAYOUTS.md): ``quesst14Database/Audio/*.wav`` documents, ``{dev,eval}_queries/*.wav`` queries,
``scoring/language_key_{utterances,dev,eval}.lst`` (``<id or relative path> <language>``) and
``scoring/groundtruth_quesst14_{dev,eval}/`` with ``quesst14_{dev,eval}.rttm`` whose ``LEXEME`` lines
(``LEXEME <doc> 1 <tbeg> <tdur> <query-id> ...``) mark every occurrence of a query in a document, the ECF
(``*.ecf.xml``: every document, ``<excerpt audio_filename=...>``) and the TLIST (``*.tlist.xml``: every query,
``<term termid=...>``).

Two sets come out of one split: the queries and documents SUPERB *searches* (``data.languages``: s3prl keeps
``nnenglish``, ``quesst14_dtw/dataset.py:43-53``) and the trials the official scorer *counts*
(:class:`ScoredTrials`: every TLIST query × every ECF document, all languages; the MediaEval scorer gives the
pairs a system did not score the default score of SUPERB's command, ``score-TWV-Cnxe.sh <dir>
groundtruth_quesst14_eval -10``, ``s3prl/downstream/docs/superb.md:310-318``).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common import datasets
from common.audio import audio_duration
from tasks.base import DatasetError, DatasetNotFoundError, Utterance
from tasks.listfile import ListFileError, read_fields

QUESST_DIR = datasets.QUESST14
QUERY_DIRS = {"dev": "dev_queries", "eval": "eval_queries"}


@dataclass
class ScoredTrials:
    """What the official QUESST 2014 scorer counts: every query of the TLIST × every document of the ECF (all
    languages), and the occurrences of the RTTM. ``source`` names the files they were read from (the language keys
    stand in for a missing ECF / TLIST: they list the same audio)."""

    query_ids: list[str]
    document_ids: list[str]
    occurrences: set[tuple[str, str]]  # (query id, document id)
    source: str


@dataclass
class QbESet:
    """Queries × documents of one split. ``targets[q, d]`` is True when query q occurs in document d;
    ``trials``: what the official scorer counts (a superset of the searched queries and documents)."""

    queries: list[Utterance]
    documents: list[Utterance]
    targets: np.ndarray
    trials: ScoredTrials
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


def _stem(name: str) -> str:
    """The id of an audio entry: the file name without folders and ``.wav``."""
    stem = Path(name).name
    return stem[:-4] if stem.endswith(".wav") else stem


def read_language_key(root: Path, list_name: str, default_dir: str, languages: set[str],
                      other: list[str] | None = None, every_id: list[str] | None = None) -> list[Utterance]:
    """Utterances of ``scoring/<list_name>`` whose language is in ``languages``, in file order; the languages of
    the entries left out are appended to ``other`` and every entry's id to ``every_id`` when given."""
    list_path = root / "scoring" / list_name
    if not list_path.is_file():
        raise DatasetNotFoundError(f"QUESST 2014 list {list_path} not found (expected lines '<id> <language>')")
    utts = []
    for lineno, (name, language), _ in read_fields(list_path, 2, 2, "'<id or path> <language>'"):
        if every_id is not None:
            every_id.append(_stem(name))
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
        pairs.add((_stem(fields[5]), _stem(fields[1])))
    return pairs


def read_xml_ids(path: Path, tag: str, attribute: str) -> list[str]:
    """The ``attribute`` of every ``<tag>`` element of a NIST STD XML file (ECF: ``excerpt``/``audio_filename``;
    TLIST: ``term``/``termid``), as ids, in file order; one line naming the file when it does not parse."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        raise DatasetError(f"{path}: not a readable NIST STD XML file ({e})") from None
    ids = []
    for el in root.iter(tag):
        value = el.get(attribute)
        if not value:
            raise DatasetError(f"{path}: a <{tag}> element has no {attribute}= attribute")
        ids.append(_stem(value))
    if not ids:
        raise DatasetError(f"{path}: no <{tag} {attribute}=...> element")
    return ids


def read_scored_trials(truth_dir: Path, every_query: list[str], every_document: list[str],
                       occurrences: set[tuple[str, str]]) -> ScoredTrials:
    """The trials the official scorer counts: the ECF's documents and the TLIST's queries of ``truth_dir`` (the
    files ``score-TWV-Cnxe.sh`` reads, ``$GT/*.ecf.xml`` and ``$GT/*.tlist.xml``), or, when the folder has none,
    the language keys' entries of every language (``every_query`` / ``every_document``)."""
    ecf, tlist = sorted(truth_dir.glob("*.ecf.xml")), sorted(truth_dir.glob("*.tlist.xml"))
    if ecf and tlist:
        return ScoredTrials(read_xml_ids(tlist[0], "term", "termid"),
                            read_xml_ids(ecf[0], "excerpt", "audio_filename"), occurrences,
                            f"{ecf[0].name} + {tlist[0].name}")
    return ScoredTrials(list(every_query), list(every_document), occurrences, "the language keys (no ECF/TLIST)")


def load_quesst(data_root: str | Path, split: str, languages: set[str] | frozenset[str]) -> QbESet:
    """Queries of ``split`` ("dev" or "eval"), every document, and the target matrix."""
    if split not in QUERY_DIRS:
        raise ValueError(f"QUESST 2014 split must be 'dev' or 'eval', got {split!r}")
    root = Path(data_root) / QUESST_DIR
    languages = {lang.lower() for lang in languages}
    other_docs: list[str] = []
    other_queries: list[str] = []
    every_doc: list[str] = []
    every_query: list[str] = []
    documents = read_language_key(root, "language_key_utterances.lst", "Audio", languages, other_docs, every_doc)
    queries = read_language_key(root, f"language_key_{split}.lst", QUERY_DIRS[split], languages, other_queries,
                                every_query)
    if not documents or not queries:
        raise DatasetNotFoundError(f"QUESST 2014 under {root}: no {sorted(languages)} "
                                   f"{'documents' if not documents else split + ' queries'} in the language keys")
    truth_dir = root / "scoring" / f"groundtruth_quesst14_{split}"
    occurrences = read_occurrences(truth_dir / f"quesst14_{split}.rttm")
    trials = read_scored_trials(truth_dir, every_query, every_doc, occurrences)
    # an occurrence of a query or document no language key lists (any language) would be dropped without a word
    listed_docs, listed_queries = set(every_doc), set(every_query)
    unknown = sorted({f"query {q}" for q, _ in occurrences if q not in listed_queries}
                     | {f"document {d}" for _, d in occurrences if d not in listed_docs})
    if unknown:
        raise ValueError(f"{truth_dir / f'quesst14_{split}.rttm'}: {len(unknown)} id(s) that no language key lists "
                         f"(language_key_{split}.lst, language_key_utterances.lst): " + ", ".join(unknown[:40])
                         + (f", ... and {len(unknown) - 40} more" if len(unknown) > 40 else ""))
    q_index = {u.id: i for i, u in enumerate(queries)}
    d_index = {u.id: i for i, u in enumerate(documents)}
    targets = np.zeros((len(queries), len(documents)), dtype=bool)
    for query_id, doc_id in occurrences:
        if query_id in q_index and doc_id in d_index:  # other languages' occurrences are out of scope
            targets[q_index[query_id], d_index[doc_id]] = True
    dropped = {f"{kind} in languages other than {', '.join(sorted(languages))}": len(items)
               for kind, items in (("queries", other_queries), ("documents", other_docs)) if items}
    return QbESet(queries=queries, documents=documents, targets=targets, trials=trials, dropped=dropped)
