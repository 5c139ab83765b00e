"""The names every dataset reader and writer shares: the official folder names under a data root and the phone set.

Task loaders (``tasks/``), the offline corpus builder (``synth/``) and the test fixtures import these, so a layout
is named in one place (the full layouts: docs/DATA_LAYOUTS.md).
"""
from __future__ import annotations

LIBRISPEECH = "LibriSpeech"                              # ASR, PR
SPEECH_COMMANDS = "speech_commands_v0.01"                # KS train/dev (+ lists, _background_noise_)
SPEECH_COMMANDS_TEST = "speech_commands_test_set_v0.01"  # KS test archive
FLUENT = "fluent_speech_commands_dataset"                # IC
VOXCELEB1 = "VoxCeleb1"                                  # SID, ASV
IEMOCAP = "IEMOCAP_full_release"                         # ER
QUESST14 = "quesst14Database"                            # QbE
SNIPS = "SNIPS"                                          # SF (SUPERB's Audio-SNIPS)
LIBRI2MIX = "Libri2Mix"                                  # SD

# Audio SNIPS voices (Amazon Polly) per split, as SUPERB keeps them (s3prl downstream/ctc/snips.yaml:49-99): the
# folders may hold other voices, which SUPERB leaves out. The offline corpus names its SNIPS speakers the same way.
SNIPS_VOICES: dict[str, tuple[str, ...]] = {
    "train": ("Ivy", "Joanna", "Joey", "Justin", "Kendra", "Kimberly", "Matthew", "Salli"),
    "dev": ("Aditi", "Amy", "Geraint", "Nicole"),
    "test": ("Brian", "Emma", "Raveena", "Russell"),
}

# The 39 ARPAbet phones of CMUdict without stress, alphabetical; the vowels carry a stress digit 0/1/2 in CMUdict.
CMU_PHONES: tuple[str, ...] = tuple(
    "AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH UH UW V W Y Z ZH".split())
CMU_VOWELS = frozenset("AA AE AH AO AW AY EH ER EY IH IY OW OY UH UW".split())
# SUPERB's PR phone set, in the order of s3prl's downstream/ctc/vocab/phoneme.txt: SIL, SPN, then the 39 phones
# alphabetically with each vowel stress-marked 0/1/2 (69 phones): 71 tokens.
SUPERB_PHONES: tuple[str, ...] = ("SIL", "SPN") + tuple(
    v for p in CMU_PHONES for v in ((p + "0", p + "1", p + "2") if p in CMU_VOWELS else (p,)))
