"""Text, phone mapping and speaker pool of the corpus generator (no audio rendered)."""
from __future__ import annotations

import random

import numpy as np
import pytest

from synth.augment import add_noise, coloured_noise, random_channel, reverberate
from synth.phones import PHONES, PhoneError, cmudict_phones, espeak_to_cmu
from synth.text import SentenceGenerator, lexicon, vocabulary
from synth.voices import build_speakers


def test_vocabulary_is_large_and_in_cmudict():
    words = vocabulary()
    assert len(words) >= 1500
    assert all(w in lexicon() for w in words)


def test_sentences_are_reproducible_and_distinct():
    a = SentenceGenerator(random.Random(3)).unique_sentences(50)
    b = SentenceGenerator(random.Random(3)).unique_sentences(50)
    assert a == b and len({" ".join(s) for s in a}) == 50
    held_out = {" ".join(s) for s in a}
    assert not held_out & {" ".join(s) for s in SentenceGenerator(random.Random(3)).unique_sentences(50, held_out)}


def test_espeak_phonemes_map_to_superb_phone_set_with_stress():
    # espeak-ng -v en-us -x --sep=_ "little bottle near hair": flap, syllabic l, r-coloured vowels; ' primary and
    # , secondary stress go to the vowel they precede, other vowels are unstressed (CMUdict: L IH1 T AH0 L ...)
    phones = espeak_to_cmu("l_'I_t#_@L b_'0_t#_@L n_,i@3 h_'e@_r")
    assert phones == "L IH1 T AH0 L B AA1 T AH0 L N IH2 R HH EH1 R".split()
    assert set(phones) <= PHONES
    with pytest.raises(PhoneError, match="unknown espeak-ng phoneme"):
        espeak_to_cmu("k_QQ_t")


def test_cmudict_phones_keep_stress():
    assert cmudict_phones(["cat", "dog"]) == "K AE1 T D AO1 G".split()
    with pytest.raises(PhoneError, match="not in CMUdict"):
        cmudict_phones(["qzxv"])


def test_speaker_pool_has_many_distinct_voices():
    speakers = build_speakers(0)
    assert len(speakers) >= 80 and len({s.name for s in speakers}) == len(speakers)
    assert len({(s.engine, s.voice, s.rate, s.pitch) for s in speakers}) == len(speakers)
    assert {s.gender for s in speakers} == {"f", "m"}
    assert build_speakers(0) == speakers


def test_noise_snr_and_reverb_keep_length():
    rng = np.random.default_rng(0)
    speech = np.sin(np.arange(16000) * 0.05).astype(np.float32)
    noise = coloured_noise(16000, rng, "pink")
    noisy = add_noise(speech, noise, 10.0)
    snr = 10 * np.log10(np.mean(speech ** 2) / np.mean((noisy - speech) ** 2))
    assert abs(snr - 10.0) < 0.01
    assert reverberate(speech, rng, 0.3).shape == speech.shape
    coloured = random_channel(speech, rng)
    assert coloured.shape == speech.shape and not np.allclose(coloured, speech)
