"""Phone transcripts in the 39-phone CMU set (ARPAbet without stress) for the PR task.

espeak-ng utterances: the phonemes espeak-ng itself spoke (``espeak-ng -x --sep=_``, same voice), mapped from
espeak-ng's English phoneme mnemonics. flite utterances: CMUdict pronunciations (flite's own lexicon is CMUdict
based), first pronunciation, stress removed.
"""
from __future__ import annotations

from common import datasets, phones

CMU_PHONES = frozenset(datasets.CMU_PHONES)

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
    """A phoneme string could not be mapped to the 39-phone set."""


def espeak_to_cmu(phonemes: str, where: str = "") -> list[str]:
    """Map ``espeak-ng -x --sep=_`` output (words separated by white space) to a flat list of CMU phones.

    A repeated R (rhotic vowel followed by an explicit r) is written once, as CMUdict does.
    """
    out: list[str] = []
    for token in phonemes.replace("\n", " ").replace(" ", "_").split("_"):
        token = token.translate(_MARKS)
        if token in ("", ":", "::"):
            continue
        if token not in ESPEAK_TO_CMU:
            raise PhoneError(f"{where}: unknown espeak-ng phoneme {token!r} in {phonemes!r}")
        for phone in ESPEAK_TO_CMU[token]:
            if phone == "R" and out and out[-1] in ("R", "ER"):
                continue
            out.append(phone)
    return out


def cmudict_phones(words: list[str], where: str = "") -> list[str]:
    """CMUdict phones (first pronunciation, stress removed) of ``words``; PhoneError naming ``where`` and the word
    if a word is not in the lexicon."""
    try:
        return phones.cmudict_phones(words)
    except KeyError as e:
        raise PhoneError(f"{where}: word {e.args[0]!r} is not in CMUdict") from None
