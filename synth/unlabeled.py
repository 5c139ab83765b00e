"""The unlabelled pool for pretraining and distillation: ``unlabeled/<speaker>/<speaker>-<NNNNN>.flac``.

Every speaker of the pool, many sentences each, degraded like the labelled data; no labels are written.
"""
from __future__ import annotations

from .augment import Degradation
from .context import Context
from .render import SpeechJob

DEGRADATION = Degradation(noise_prob=0.6, reverb_prob=0.3, channel_prob=0.3)


def plan(ctx: Context):
    cfg, rng, text = ctx.draws("unlabeled")
    jobs = []
    for i in range(cfg.utterances):
        speaker = ctx.speakers[i % len(ctx.speakers)]
        words = text.sentence(cfg.min_words, cfg.max_words)
        if rng.random() < 0.5:  # some longer utterances, as read speech has
            words += text.sentence(4, cfg.max_words)
        jobs.append(SpeechJob(f"unlabeled/{speaker.name}/{speaker.name}-{i:05d}.flac", speaker,
                              (" ".join(words),), degradation=DEGRADATION))

    def finish(results: dict[str, dict]) -> dict:
        hours = sum(results[j.path]["duration"] for j in jobs) / 3600
        return {"all": {"utterances": len(jobs), "hours": round(hours, 3), "speakers": len({j.speaker for j in jobs})}}

    return jobs, finish
