"""ASR and PR data in the LibriSpeech layout (``LibriSpeech/{train-clean-100,dev-clean,test-clean}``).

Per chapter: ``<spk>-<chapter>.trans.txt`` (upper-case words) and, offline corpus only, ``<spk>-<chapter>.phn.txt``
with phone transcripts in SUPERB's stress-marked set: espeak-ng speakers get the phonemes espeak-ng spoke, flite speakers CMUdict's
pronunciations. Splits have disjoint speakers; no dev/test sentence occurs in training.
"""
from __future__ import annotations

from common import datasets
from common.io import atomic_write_text

from .augment import Degradation
from .context import Context
from .phones import cmudict_phones
from .render import SpeechJob
from .voices import Speaker

ROOT = datasets.LIBRISPEECH
SPLITS = ("train-clean-100", "dev-clean", "test-clean")
DEGRADATION = Degradation(noise_prob=0.5, snr_db=(10.0, 30.0), reverb_prob=0.25)


def speaker_id(speaker: Speaker) -> str:
    """LibriSpeech-style numeric speaker id."""
    return str(100 + int(speaker.name[1:]))


def plan(ctx: Context):
    cfg, rng, text = ctx.draws("librispeech")
    groups = ctx.speaker_groups("librispeech", [cfg.train_speakers, cfg.dev_speakers, cfg.test_speakers])
    per_speaker = [cfg.train_utts_per_speaker, cfg.eval_utts_per_speaker, cfg.eval_utts_per_speaker]
    # Held-out sentences first, so training can exclude them.
    held_out = text.unique_sentences(sum(len(groups[i]) * per_speaker[i] for i in (1, 2)),
                                     min_words=cfg.min_words, max_words=cfg.max_words)
    train = text.unique_sentences(len(groups[0]) * per_speaker[0], exclude={" ".join(w) for w in held_out},
                                  min_words=cfg.min_words, max_words=cfg.max_words)
    pools = [train, held_out[: len(groups[1]) * per_speaker[1]], held_out[len(groups[1]) * per_speaker[1]:]]
    jobs, chapters = [], []  # chapters: (split, spk id, chapter id, [(utt id, words, speaker, path)])
    for split, speakers, sentences, n in zip(SPLITS, groups, pools, per_speaker):
        it = iter(sentences)
        for speaker in speakers:
            spk = speaker_id(speaker)
            # Two chapters per speaker when there is enough material, as in the real corpus.
            n_chapters = 2 if n >= 8 else 1
            for c in range(n_chapters):
                chapter = str(rng.randint(10000, 199999))
                utts = []
                for i in range(c * n // n_chapters, (c + 1) * n // n_chapters):
                    words = next(it)
                    utt = f"{spk}-{chapter}-{i:04d}"
                    path = f"{ROOT}/{split}/{spk}/{chapter}/{utt}.flac"
                    jobs.append(SpeechJob(path, speaker, (" ".join(words),), degradation=DEGRADATION,
                                          phonemes=True, session=ctx.session("librispeech", f"{spk}/{chapter}")))
                    utts.append((utt, words, speaker, path))
                chapters.append((split, spk, chapter, utts))

    def finish(results: dict[str, dict]) -> dict:
        stats: dict[str, dict] = {s: {"utterances": 0, "hours": 0.0, "speakers": set()} for s in SPLITS}
        for split, spk, chapter, utts in chapters:
            folder = ctx.root / ROOT / split / spk / chapter
            trans, phn = [], []
            for utt, words, speaker, path in utts:
                trans.append(f"{utt} {' '.join(words).upper()}")
                phones = results[path].get("phones") or cmudict_phones(words, where=path)
                phn.append(f"{utt} {' '.join(phones)}")
                st = stats[split]
                st["utterances"] += 1
                st["hours"] += results[path]["duration"] / 3600
                st["speakers"].add(spk)
            atomic_write_text(folder / f"{spk}-{chapter}.trans.txt", "\n".join(trans) + "\n")
            atomic_write_text(folder / f"{spk}-{chapter}.phn.txt", "\n".join(phn) + "\n")
        lines = [";ID  |SEX| SUBSET           |MINUTES| NAME"]
        for split, speakers in zip(SPLITS, groups):
            minutes = stats[split]["hours"] * 60 / max(1, len(speakers))
            lines += [f"{speaker_id(s):<5}| {s.gender.upper()} | {split:<17}| {minutes:5.2f} | {s.voice} ({s.engine})"
                      for s in speakers]
        atomic_write_text(ctx.root / ROOT / "SPEAKERS.TXT", "\n".join(lines) + "\n")
        return {split: {"utterances": st["utterances"], "hours": round(st["hours"], 3),
                        "speakers": len(st["speakers"])} for split, st in stats.items()}

    return jobs, finish
