"""KS data in the Speech Commands v0.01 layout: the train root ``speech_commands_v0.01/`` (30 word folders,
``validation_list.txt``, ``testing_list.txt``, ``_background_noise_/``) and the separate test archive
``speech_commands_test_set_v0.01/`` (12 folders: the 10 keywords, ``_unknown_``, ``_silence_``).

Every clip is exactly 1 s. Validation, testing-list and test-archive speakers are disjoint from training speakers.
"""
from __future__ import annotations

import hashlib

from common import datasets
from common.io import atomic_write_text

from .augment import NOISE_COLOURS, Degradation
from .context import Context
from .render import NoiseJob, SpeechJob

KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
AUXILIARY = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "bed", "bird", "cat",
             "dog", "happy", "house", "marvin", "sheila", "tree", "wow")
TRAIN_ROOT, TEST_ROOT = datasets.SPEECH_COMMANDS, datasets.SPEECH_COMMANDS_TEST
DEGRADATION = Degradation(noise_prob=0.8, snr_db=(5.0, 30.0), reverb_prob=0.3, channel_prob=0.6)


def speaker_hash(seed: int, name: str) -> str:
    return hashlib.sha1(f"{seed}-{name}".encode()).hexdigest()[:8]


def plan(ctx: Context):
    cfg, rng, _ = ctx.draws("speech_commands")
    train, valid, testing, test_set = ctx.speaker_groups(
        "speech_commands", [cfg.train_speakers, cfg.validation_speakers, cfg.testing_speakers, cfg.test_set_speakers])
    jobs: list = []
    lists: dict[str, list[str]] = {"validation": [], "testing": []}
    counts: dict[str, dict[str, int]] = {"train": {}, "validation": {}, "testing": {}, "test set": {}}

    def clip(path: str, speaker, word: str) -> None:
        # each contributor records every word on their own device: the channel follows the speaker, not the word
        jobs.append(SpeechJob(path, speaker, (word,), degradation=DEGRADATION, clip_seconds=1.0,
                              session=ctx.session("speech_commands", speaker.name)))

    for group, list_name in ((train, None), (valid, "validation"), (testing, "testing")):
        for speaker in group:
            h = speaker_hash(ctx.seed, speaker.name)
            words = [w for w in KEYWORDS for _ in range(cfg.keyword_repeats)]
            words += rng.sample(AUXILIARY, cfg.auxiliary_words_per_speaker)
            seen: dict[str, int] = {}
            for word in words:
                n = seen[word] = seen.get(word, -1) + 1
                rel = f"{word}/{h}_nohash_{n}.wav"
                clip(f"{TRAIN_ROOT}/{rel}", speaker, word)
                if list_name:
                    lists[list_name].append(rel)
                label = word if word in KEYWORDS else "_unknown_"
                c = counts[list_name or "train"]
                c[label] = c.get(label, 0) + 1
    for colour in NOISE_COLOURS:
        jobs.append(NoiseJob(f"{TRAIN_ROOT}/_background_noise_/{colour}_noise.wav", cfg.background_seconds, colour))

    c = counts["test set"]
    for speaker in test_set:
        h = speaker_hash(ctx.seed, speaker.name)
        for word in [w for w in KEYWORDS for _ in range(cfg.keyword_repeats)]:
            n = c[word] = c.get(word, 0) + 1
            clip(f"{TEST_ROOT}/{word}/{h}_nohash_{n - 1}.wav", speaker, word)
        for i, word in enumerate(rng.sample(AUXILIARY, cfg.test_set_unknown_per_speaker)):
            c["_unknown_"] = c.get("_unknown_", 0) + 1
            clip(f"{TEST_ROOT}/_unknown_/{word}_{h}_nohash_{i}.wav", speaker, word)
    for i in range(cfg.test_set_silence_clips):
        colour = NOISE_COLOURS[i % len(NOISE_COLOURS)]
        jobs.append(NoiseJob(f"{TEST_ROOT}/_silence_/{colour}_{i:04d}_nohash_0.wav", 1.0, colour))
    c["_silence_"] = cfg.test_set_silence_clips

    def finish(results: dict[str, dict]) -> dict:
        for name, rels in lists.items():
            atomic_write_text(ctx.root / TRAIN_ROOT / f"{name}_list.txt", "\n".join(sorted(rels)) + "\n")
        speakers = {"train": train, "validation": valid, "testing": testing, "test set": test_set}
        return {split: {"utterances": sum(cnt.values()), "speakers": len(speakers[split]),
                        "hours": round(sum(cnt.values()) / 3600, 3)} for split, cnt in counts.items()}

    return jobs, finish
