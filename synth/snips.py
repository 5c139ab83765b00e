"""SF data in the SUPERB Audio-SNIPS layout: ``SNIPS/all.iob.snips.txt`` (``<uttid> BOS words EOS O tags <intent>``),
``SNIPS/slots.txt`` (slot types) and ``SNIPS/{train,valid,test}/<uttid>.wav`` with ``<uttid>`` =
``<speaker>-snips-<split>-<n>``. Seven SNIPS intents, 17 slot types; 8 / 4 / 4 speakers for train / valid / test,
named after the Polly voices SUPERB keeps in each split (``common.datasets.SNIPS_VOICES``), so the loader's voice
filter reads the offline corpus as it reads the real one.
"""
from __future__ import annotations

import random
import re

from common import datasets
from common.io import atomic_write_text

from .augment import Degradation
from .context import Context
from .render import SpeechJob

ROOT = datasets.SNIPS
DEGRADATION = Degradation(noise_prob=0.5, snr_db=(10.0, 30.0), reverb_prob=0.2)
FILLERS = {
    "artist": ["john lennon", "taylor swift", "miles davis", "the beatles", "bob marley", "elton john", "adele",
               "frank sinatra", "nina simone", "johnny cash"],
    "playlist": ["road trip", "morning coffee", "workout", "chill evening", "rock classics", "sunday jazz"],
    "music_item": ["song", "track", "album", "tune", "record"],
    "restaurant_type": ["pizzeria", "steakhouse", "bistro", "sushi bar", "diner", "cafe"],
    "party_size_number": ["two", "three", "four", "five", "six", "eight"],
    "city": ["boston", "chicago", "london", "paris", "denver", "seattle", "dublin", "madrid"],
    "state": ["texas", "ohio", "oregon", "florida", "nevada", "maine"],
    "timeRange": ["tonight", "tomorrow", "this weekend", "next week", "at noon", "on friday"],
    "condition_description": ["rainy", "sunny", "cold", "windy", "snowy", "humid"],
    "genre": ["jazz", "blues", "pop", "country", "classical", "hip hop"],
    "service": ["spotify", "pandora", "youtube", "deezer"],
    "object_type": ["book", "novel", "album", "movie", "series", "painting"],
    "object_name": ["the long journey", "silent river", "the golden key", "winter garden", "a distant shore"],
    "rating_value": ["one", "two", "three", "four", "five"],
    "best_rating": ["five", "ten"],
    "movie_name": ["the lost city", "dark harbor", "blue horizon", "the last train", "morning star"],
    "location_name": ["the grand cinema", "park theater", "city mall cinema", "the odeon"],
}
TEMPLATES = {
    "AddToPlaylist": ["add {artist} to my {playlist} playlist", "put this {music_item} on {playlist}",
                      "add the {music_item} by {artist} to {playlist}", "please add a {music_item} to {playlist}"],
    "BookRestaurant": ["book a table for {party_size_number} at a {restaurant_type} in {city}",
                       "reserve a {restaurant_type} for {party_size_number} people {timeRange}",
                       "i need a table in {city} {timeRange}", "book a {restaurant_type} in {state} {timeRange}"],
    "GetWeather": ["what is the weather in {city} {timeRange}", "will it be {condition_description} in {city}",
                   "is it going to be {condition_description} {timeRange} in {state}", "weather for {state}"],
    "PlayMusic": ["play {artist}", "play some {genre} music", "play the {music_item} by {artist} on {service}",
                  "put on some {genre} on {service}"],
    "RateBook": ["rate this {object_type} {rating_value} out of {best_rating}",
                 "give {object_name} {rating_value} stars", "i rate {object_name} {rating_value} out of {best_rating}"],
    "SearchCreativeWork": ["find the {object_type} called {object_name}", "show me the {object_type} {object_name}",
                           "look for {object_name}"],
    "SearchScreeningEvent": ["find movie times at {location_name}", "when is {movie_name} playing {timeRange}",
                             "what movies are showing at {location_name}", "is {movie_name} on {timeRange}"],
}


def sample_sentence(rng: random.Random) -> tuple[str, list[str], list[str]]:
    """One (intent, words, IOB tags) triple from a random template with random slot values."""
    intent = rng.choice(sorted(TEMPLATES))
    words, tags = [], []
    for piece in re.split(r"(\{\w+\})", rng.choice(TEMPLATES[intent])):
        if piece.startswith("{"):
            slot = piece[1:-1]
            value = rng.choice(FILLERS[slot]).split()
            words += value
            tags += [f"B-{slot}"] + [f"I-{slot}"] * (len(value) - 1)
        else:
            words += piece.split()
            tags += ["O"] * len(piece.split())
    return intent, words, tags


def plan(ctx: Context):
    cfg, rng, _ = ctx.draws("snips")
    voices = datasets.SNIPS_VOICES
    groups = ctx.speaker_groups("snips", [len(voices["train"]), len(voices["dev"]), len(voices["test"])])
    jobs, lines, stats = [], [], {}
    for split, names, speakers, per_speaker in zip(("train", "valid", "test"), voices.values(), groups,
                                                   (cfg.train_utts_per_speaker, cfg.eval_utts_per_speaker,
                                                    cfg.eval_utts_per_speaker)):
        n = 0
        for name, speaker in zip(names, speakers):
            for _ in range(per_speaker):
                intent, words, tags = sample_sentence(rng)
                uttid = f"{name}-snips-{split}-{n}"
                n += 1
                jobs.append(SpeechJob(f"{ROOT}/{split}/{uttid}.wav", speaker, (" ".join(words),),
                                      degradation=DEGRADATION, session=ctx.session("snips", speaker.name)))
                lines.append(f"{uttid} BOS {' '.join(words)} EOS\tO {' '.join(tags)} {intent}")
        stats[split] = {"utterances": n, "speakers": len(speakers)}

    def finish(results: dict[str, dict]) -> dict:
        atomic_write_text(ctx.root / ROOT / "all.iob.snips.txt", "\n".join(lines) + "\n")
        atomic_write_text(ctx.root / ROOT / "slots.txt", "\n".join(sorted(FILLERS)) + "\n")
        for split, st in stats.items():
            st["hours"] = round(sum(results[j.path]["duration"] for j in jobs if f"/{split}/" in j.path) / 3600, 3)
        return stats

    return jobs, finish
