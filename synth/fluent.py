"""IC data in the Fluent Speech Commands layout: ``fluent_speech_commands_dataset/data/{train,valid,test}_data.csv``
(header ``,path,speakerId,transcription,action,object,location``) and ``wavs/speakers/<speakerId>/<uttid>.wav``.

31 intents (action, object, location) as in the real dataset, several phrasings each; splits by speaker.
"""
from __future__ import annotations

import csv
import hashlib
import io

from common import datasets
from common.io import atomic_write_text

from .augment import Degradation
from .context import Context
from .render import SpeechJob

ROOT = datasets.FLUENT
LOCATIONS = ("kitchen", "bedroom", "washroom")
DEGRADATION = Degradation(noise_prob=0.7, snr_db=(5.0, 30.0), reverb_prob=0.3)

# Phrasings per (action, object); "{where}" becomes " in the <location>" (or "" for location none).
_PHRASES = {
    ("activate", "lights"): ["turn on the lights{where}", "switch on the lights{where}", "lights on{where}",
                             "turn the lights on{where}", "put the lights on{where}"],
    ("deactivate", "lights"): ["turn off the lights{where}", "switch off the lights{where}", "lights off{where}",
                               "turn the lights off{where}", "kill the lights{where}"],
    ("increase", "heat"): ["turn up the heat{where}", "increase the heating{where}", "make it warmer{where}",
                           "increase the temperature{where}", "heat up{where}"],
    ("decrease", "heat"): ["turn down the heat{where}", "decrease the heating{where}", "make it cooler{where}",
                           "decrease the temperature{where}", "turn the heat down{where}"],
    ("increase", "volume"): ["turn up the volume", "increase the volume", "louder please", "make it louder",
                             "volume up"],
    ("decrease", "volume"): ["turn down the volume", "decrease the volume", "quieter please", "make it quieter",
                             "volume down"],
    ("activate", "music"): ["play the music", "turn on the music", "start the music", "put on some music"],
    ("deactivate", "music"): ["stop the music", "turn off the music", "pause the music", "music off"],
    ("activate", "lamp"): ["turn on the lamp", "switch on the lamp", "lamp on", "turn the lamp on"],
    ("deactivate", "lamp"): ["turn off the lamp", "switch off the lamp", "lamp off", "turn the lamp off"],
    ("bring", "newspaper"): ["bring me the newspaper", "get me the newspaper", "fetch the newspaper",
                             "go get the newspaper"],
    ("bring", "juice"): ["bring me some juice", "get me some juice", "fetch the juice", "i want some juice"],
    ("bring", "socks"): ["bring me my socks", "get me my socks", "fetch my socks", "go get my socks"],
    ("bring", "shoes"): ["bring me my shoes", "get me my shoes", "fetch my shoes", "go get my shoes"],
    ("change language", "none"): ["change the language", "switch the language", "use a different language",
                                  "language settings"],
}
for _lang in ("chinese", "korean", "english", "german"):
    _PHRASES[("change language", _lang.capitalize())] = [
        f"change the language to {_lang}", f"switch the language to {_lang}", f"set my device to {_lang}",
        f"i want to use {_lang}", f"{_lang} please"]


def intents() -> list[tuple[str, str, str]]:
    """The 31 (action, object, location) intents."""
    out = []
    for action, obj in _PHRASES:
        locations = ("none",) + LOCATIONS if obj in ("lights", "heat") else ("none",)
        out += [(action, obj, loc) for loc in locations]
    return out


def phrasings(intent: tuple[str, str, str]) -> list[str]:
    action, obj, location = intent
    where = "" if location == "none" else f" in the {location}"
    return [p.format(where=where) for p in _PHRASES[(action, obj)]]


def plan(ctx: Context):
    cfg, rng, _ = ctx.draws("fluent")
    groups = ctx.speaker_groups("fluent", [cfg.train_speakers, cfg.valid_speakers, cfg.test_speakers])
    jobs, rows = [], {}
    for split, speakers, per_intent in zip(("train", "valid", "test"), groups,
                                           (cfg.train_utts_per_intent, cfg.eval_utts_per_intent,
                                            cfg.eval_utts_per_intent, )):
        rows[split] = []
        for intent in intents():
            options = phrasings(intent)
            for k in range(per_intent):
                speaker = speakers[(k + rng.randrange(len(speakers))) % len(speakers)]
                text = options[rng.randrange(len(options))]
                spk_id = hashlib.sha1(f"{ctx.seed}-{speaker.name}".encode()).hexdigest()[:16]
                utt = hashlib.sha1(f"{ctx.seed}-{split}-{intent}-{k}".encode()).hexdigest()[:24]
                rel = f"wavs/speakers/{spk_id}/{utt}.wav"
                jobs.append(SpeechJob(f"{ROOT}/{rel}", speaker, (text,), degradation=DEGRADATION,
                                      session=ctx.session("fluent", speaker.name)))
                rows[split].append((rel, spk_id, text[0].upper() + text[1:], *intent))

    def finish(results: dict[str, dict]) -> dict:
        stats = {}
        for split, split_rows in rows.items():
            buf = io.StringIO()
            writer = csv.writer(buf, lineterminator="\n")
            writer.writerow(["", "path", "speakerId", "transcription", "action", "object", "location"])
            for i, row in enumerate(split_rows):
                writer.writerow([i, *row])
            atomic_write_text(ctx.root / ROOT / "data" / f"{split}_data.csv", buf.getvalue())
            hours = sum(results[f"{ROOT}/{r[0]}"]["duration"] for r in split_rows) / 3600
            stats[split] = {"utterances": len(split_rows), "hours": round(hours, 3),
                            "speakers": len({r[1] for r in split_rows})}
        return stats

    return jobs, finish
