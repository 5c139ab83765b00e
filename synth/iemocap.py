"""ER data in the IEMOCAP layout: ``IEMOCAP_full_release/Session{1..5}/sentences/wav/<dialog>/<utt>.wav`` with labels
in ``Session{N}/dialog/EmoEvaluation/<dialog>.txt``.

Each session has its own two speakers (one female, one male), so leave-one-session-out folds are speaker-disjoint.
Emotions are acted through prosody (rate, pitch, pitch range and volume as espeak-ng SSML) and recording level. As
in the real data, happy utterances are labelled ``hap`` or ``exc`` and a few carry labels SUPERB drops (``fru``,
``xxx``).
"""
from __future__ import annotations

from common import datasets
from common.io import atomic_write_text

from .augment import Degradation
from .context import Context
from .render import SpeechJob
from .voices import Style

ROOT = datasets.IEMOCAP
DEGRADATION = Degradation(noise_prob=0.5, snr_db=(10.0, 30.0), reverb_prob=0.3)
EMOTION_STYLES = {
    "neu": Style(rate=1.0, pitch=0, pitch_range=1.0, volume=100),
    "hap": Style(rate=1.12, pitch=10, pitch_range=1.7, volume=120),
    "sad": Style(rate=0.8, pitch=-8, pitch_range=0.45, volume=65),
    "ang": Style(rate=1.1, pitch=4, pitch_range=1.35, volume=170),
    "fru": Style(rate=1.0, pitch=2, pitch_range=1.2, volume=130),
}
# Recording level per emotion (random peak range): loud anger, quiet sadness, overlapping on purpose.
EMOTION_LEVELS = {"neu": (0.3, 0.7), "hap": (0.4, 0.85), "exc": (0.4, 0.85), "sad": (0.15, 0.5), "ang": (0.55, 0.95),
                  "fru": (0.4, 0.85)}
_VAD = {"neu": (3.0, 2.5, 2.5), "hap": (4.0, 3.5, 3.0), "exc": (4.0, 4.0, 3.5), "sad": (2.0, 2.0, 2.0),
        "ang": (1.5, 4.0, 4.0), "fru": (2.0, 3.5, 3.0), "xxx": (2.5, 3.0, 3.0)}
_DIALOGS = ("impro01", "impro02", "script01_1", "script02_1")


def plan(ctx: Context):
    cfg, rng, text = ctx.draws("iemocap")
    females = [s for s in ctx.speakers if s.gender == "f" and s.engine == "espeak-ng"]
    males = [s for s in ctx.speakers if s.gender == "m" and s.engine == "espeak-ng"]
    pick = ctx.rng("iemocap-speakers")
    female_pick, male_pick = pick.sample(females, 5), pick.sample(males, 5)
    jobs, dialogs = [], {}  # dialogs: (session, dialog) -> [(utt, label, path)]
    turn_counts: dict[tuple[str, str], int] = {}
    for session in range(1, 6):
        for gender, speaker in (("F", female_pick[session - 1]), ("M", male_pick[session - 1])):
            labels = [e for e in ("neu", "hap", "sad", "ang") for _ in range(cfg.utts_per_emotion_per_speaker)]
            labels += ["fru", "xxx"][: max(1, cfg.utts_per_emotion_per_speaker // 4)]
            for k, label in enumerate(labels):
                dialog_kind = _DIALOGS[k % len(_DIALOGS)]
                # Dialog names carry the gender of the speaker who started the session's recording.
                dialog = f"Ses{session:02d}{'FM'[k // len(_DIALOGS) % 2]}_{dialog_kind}"
                turns = dialogs.setdefault((session, dialog), [])
                n = turn_counts[(dialog, gender)] = turn_counts.get((dialog, gender), -1) + 1
                utt = f"{dialog}_{gender}{n:03d}"
                base = EMOTION_STYLES.get(label, EMOTION_STYLES["neu"])
                # Wide per-utterance spread so emotions overlap and speakers differ in how they act them.
                style = Style(rate=base.rate * rng.uniform(0.9, 1.1), pitch=base.pitch + rng.randint(-5, 5),
                              pitch_range=base.pitch_range * rng.uniform(0.8, 1.25),
                              volume=int(base.volume * rng.uniform(0.85, 1.15)))
                if label == "hap" and rng.random() < 0.4:
                    label = "exc"
                path = f"{ROOT}/Session{session}/sentences/wav/{dialog}/{utt}.wav"
                jobs.append(SpeechJob(path, speaker, (" ".join(text.sentence(4, 14)),), style=style,
                                      degradation=DEGRADATION, level=EMOTION_LEVELS.get(label, (0.3, 0.9)),
                                      session=ctx.session("iemocap", f"Session{session}")))
                turns.append((utt, label, path))

    def finish(results: dict[str, dict]) -> dict:
        stats = {}
        for (session, dialog), turns in sorted(dialogs.items()):
            lines, t = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""], 1.0
            for utt, label, path in sorted(turns):
                dur = results[path]["duration"]
                v, a, d = _VAD[label]
                lines += [f"[{t:.4f} - {t + dur:.4f}]\t{utt}\t{label}\t[{v:.4f}, {a:.4f}, {d:.4f}]",
                          f"C-E1:\t{label};\t()", f"A-E1:\tval {v:.0f}; act {a:.0f}; dom {d:.0f};\t()", ""]
                t += dur + 0.5
            atomic_write_text(ctx.root / ROOT / f"Session{session}" / "dialog" / "EmoEvaluation" / f"{dialog}.txt",
                              "\n".join(lines) + "\n")
            st = stats.setdefault(f"Session{session}", {"utterances": 0, "hours": 0.0, "speakers": 2})
            st["utterances"] += len(turns)
            st["hours"] = round(st["hours"] + sum(results[p]["duration"] for _, _, p in turns) / 3600, 3)
        return stats

    return jobs, finish
