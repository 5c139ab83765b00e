"""Phone transcripts in SUPERB's PR phone set (ARPAbet, vowels stress-marked 0/1/2: ``SUPERB_PHONES``).

espeak-ng utterances: the phonemes espeak-ng itself spoke (``espeak-ng -x --sep=_``, same voice), mapped from
espeak-ng's English phoneme mnemonics; its primary (``'``) and secondary (``,``) stress marks, written before the
stressed vowel, become the vowel's 1 / 2, every other vowel gets 0. flite utterances: CMUdict pronunciations
(flite's own lexicon is CMUdict based), first pronunciation, stress as CMUdict marks it.
"""
from __future__ import annotations

from common import datasets, phones

PHONES = frozenset(datasets.SUPERB_PHONES)

# espeak-ng English phoneme mnemonic -> CMU phones. Allophones (flap t#, glottal ?, dental t[) map to their phoneme;
# r-coloured and centring diphthongs expand to vowel + R / vowel + AH as CMUdict writes them.
ESPEAK_TO_CMU: dict[str, tuple[str, ...]] = {
    **{c: (c.upper(),) for c in "p b t d k g f v s z m n l r w".split()},
    "T": ("TH",), "D": ("DH",), "S": ("SH",), "Z": ("ZH",), "h": ("HH",), "tS": ("CH",), "dZ": ("JH",),
    "N": ("NG",), "j": ("Y",), "t#": ("T",), "t2": ("T",), "t[": ("T",), "d[": ("D",), "?": ("T",),
    "x": ("K",), "r-": ("R",), "w#": ("W",), "n-": ("AH", "N"), "@L": ("AH", "L"), "l-": ("AH", "L"),
    "@": ("AH",), "@2": ("AH",), "@5": ("AH",), "@-": ("AH",), "a#": ("AH",), "V": ("AH",),
    "3": ("ER",), "3:": ("ER",), "VR": ("ER",), "IR": ("ER",), "@r": ("ER",),
    "a": ("AE",), "aa": ("AE",), "A:": ("AA",), "A@": ("AA", "R"), "0": ("AA",), "A": ("AA",),
    "E": ("EH",), "e": ("EH",), "e@": ("EH", "R"), "eI": ("EY",),
    "i": ("IY",), "i:": ("IY",), "I": ("IH",), "I2": ("IH",), "I#": ("IH",), "i@": ("IY", "AH"), "i@3": ("IH", "R"),
    "O:": ("AO",), "O2": ("AO",), "O": ("AO",), "O@": ("AO", "R"), "o@": ("AO", "R"), "OI": ("OY",),
    "oU": ("OW",), "o": ("OW",), "U": ("UH",), "u:": ("UW",), "U@": ("UH", "R"),
    "aI": ("AY",), "aI2": ("AY",), "aI3": ("AY", "ER"), "aI@": ("AY", "ER"), "aU": ("AW",), "aU@": ("AW", "ER"),
}
# Stress, length and boundary marks in espeak-ng's mnemonic output carry no phone.
_MARKS = str.maketrans("", "", "',%=;!|")


class PhoneError(ValueError):
    """A phoneme string could not be mapped to SUPERB's phone set."""


def espeak_to_cmu(phonemes: str, where: str = "") -> list[str]:
    """Map ``espeak-ng -x --sep=_`` output (words separated by white space) to a flat list of stress-marked CMU
    phones (``AH0``, ``OW1``, ``K``).

    A token's stress mark goes to its first vowel (``'`` → 1, ``,`` → 2); other vowels get 0. A repeated R (rhotic
    vowel followed by an explicit r) is written once, as CMUdict does.
    """
    out: list[str] = []
    for raw in phonemes.replace("\n", " ").replace(" ", "_").split("_"):
        token = raw.translate(_MARKS)
        if token in ("", ":", "::"):
            continue
        if token not in ESPEAK_TO_CMU:
            raise PhoneError(f"{where}: unknown espeak-ng phoneme {token!r} in {phonemes!r}")
        stress = "1" if "'" in raw else "2" if "," in raw else "0"
        for phone in ESPEAK_TO_CMU[token]:
            if phone == "R" and out and out[-1].rstrip("012") in ("R", "ER"):
                continue
            if phone in datasets.CMU_VOWELS:
                phone, stress = phone + stress, "0"
            out.append(phone)
    return out


def cmudict_phones(words: list[str], where: str = "") -> list[str]:
    """CMUdict phones (first pronunciation, stress-marked) of ``words``; PhoneError naming ``where`` and the word
    if a word is not in the lexicon."""
    try:
        return phones.cmudict_phones(words)
    except KeyError as e:
        raise PhoneError(f"{where}: word {e.args[0]!r} is not in CMUdict") from None
