"""SID and ASV data in the VoxCeleb1 layout: ``VoxCeleb1/{dev,test}/wav/<spk>/<video>/<NNNNN>.wav``,
``iden_split.txt`` (1 train / 2 dev / 3 test, over the speakers of both parts) and ``veri_test.txt`` (trials between
test-part speakers only, half of them target trials; ASV trains on the dev part, so test speakers are unseen), and
``vox1_meta.csv`` as the real dataset ships it (tab-separated ``VoxCeleb1 ID, VGGFace1 ID, Gender, Nationality, Set``;
lhotse's ``prepare_voxceleb`` reads the gender and the dev/test set of each speaker from it).
"""
from __future__ import annotations

import hashlib
import itertools

from common import datasets
from common.io import atomic_write_text

from .augment import Degradation
from .context import Context
from .render import SpeechJob

ROOT = datasets.VOXCELEB1
# "In the wild": more noise and reverberation than the read-speech sets.
DEGRADATION = Degradation(noise_prob=0.8, snr_db=(5.0, 30.0), reverb_prob=0.4, channel_prob=0.8)
_VIDEO_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"


def video_id(seed: int, speaker: str, k: int) -> str:
    digest = hashlib.sha256(f"{seed}-{speaker}-{k}".encode()).digest()
    return "".join(_VIDEO_CHARS[b % len(_VIDEO_CHARS)] for b in digest[:11])


_ACCENTS = {"en-us": "USA", "en-us-nyc": "USA", "en-gb": "UK", "en-gb-scotland": "UK", "en-gb-x-rp": "UK",
            "en-gb-x-gbclan": "UK", "en-gb-x-gbcwmd": "UK", "en-029": "Jamaica"}
_FLITE_NATIONALITY = {"awb": "UK", "rms": "USA", "slt": "USA", "kal": "USA", "kal16": "USA"}


def _nationality(voice: str) -> str:
    """A nationality for ``vox1_meta.csv`` from the voice's accent (``en-gb-scotland+f3`` -> UK; flite ``awb`` is a
    Scottish voice)."""
    if "+" in voice:
        return _ACCENTS.get(voice.split("+")[0], "unknown")
    return _FLITE_NATIONALITY.get(voice, "unknown")


def plan(ctx: Context):
    cfg, rng, text = ctx.draws("voxceleb")
    dev, test = ctx.speaker_groups("voxceleb", [cfg.dev_speakers, cfg.test_speakers])
    jobs, iden, utts_of, meta = [], [], {}, []
    for part, speakers, first_id in (("dev", dev, 10001), ("test", test, 10270)):
        for i, speaker in enumerate(speakers):
            spk = f"id{first_id + i}"
            # the real file names a celebrity; ours names the synthetic voice (its nationality: the voice's accent)
            meta.append(f"{spk}\tsynthetic_{speaker.name}\t{speaker.gender}\t"
                        f"{_nationality(speaker.voice)}\t{part}")
            rels = []
            for v in range(cfg.videos_per_speaker):
                video = video_id(ctx.seed, spk, v)
                for u in range(cfg.utts_per_video):
                    rel = f"{spk}/{video}/{u + 1:05d}.wav"
                    words = text.sentence(10, 22)
                    # s3prl's ASV drops utterances under 2 s; real VoxCeleb1 segments are at least 4 s.
                    jobs.append(SpeechJob(f"{ROOT}/{part}/wav/{rel}", speaker, (" ".join(words),),
                                          degradation=DEGRADATION, min_seconds=3.0,
                                          session=ctx.session("voxceleb", f"{spk}/{video}")))
                    rels.append(rel)
            # The last fifth of a speaker's utterances (latest videos) is test, the fifth before it dev.
            n_eval = max(2, len(rels) // 5)
            for j, rel in enumerate(rels):
                iden.append(f"{3 if j >= len(rels) - n_eval else 2 if j >= len(rels) - 2 * n_eval else 1} {rel}")
            utts_of[spk] = (part, rels)

    test_spk = [s for s, (part, _) in utts_of.items() if part == "test"]
    targets = [(a, b) for s in test_spk for a, b in itertools.combinations(utts_of[s][1], 2)]
    impostors = [(a, b) for s, t in itertools.combinations(test_spk, 2)
                 for a, b in itertools.product(utts_of[s][1], utts_of[t][1])]
    n_half = min(cfg.trials // 2, len(targets), len(impostors))
    trials = [(1, a, b) for a, b in rng.sample(targets, n_half)] + [(0, a, b) for a, b in rng.sample(impostors, n_half)]
    rng.shuffle(trials)

    def finish(results: dict[str, dict]) -> dict:
        atomic_write_text(ctx.root / ROOT / "iden_split.txt", "\n".join(iden) + "\n")
        atomic_write_text(ctx.root / ROOT / "vox1_meta.csv",
                          "VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet\n" + "\n".join(meta) + "\n")
        atomic_write_text(ctx.root / ROOT / "veri_test.txt", "\n".join(f"{lab} {a} {b}" for lab, a, b in trials) + "\n")
        stats = {}
        for part in ("dev", "test"):
            paths = [f"{ROOT}/{part}/wav/{rel}" for spk, (p, rels) in utts_of.items() if p == part for rel in rels]
            stats[part] = {"utterances": len(paths), "speakers": sum(p == part for p, _ in utts_of.values()),
                           "hours": round(sum(results[p]["duration"] for p in paths) / 3600, 3)}
        stats["veri_test trials"] = {"utterances": len(trials), "speakers": len(test_spk)}
        return stats

    return jobs, finish
