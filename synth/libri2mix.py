"""SD data in the Libri2Mix layout as s3prl's diarization recipe reads it: Kaldi data dirs
``Libri2Mix/kaldi/{train,dev,test}/`` (``wav.scp``, ``segments``, ``utt2spk``, ``spk2utt``, ``reco2dur``, ``rttm``)
and mixtures ``Libri2Mix/wav16k/max/{train,dev,test}/mix_both/<reco>.wav``.

Each recording is a two-speaker conversation whose turns overlap by 10-30 % of the speech; splits have disjoint
speakers.
"""
from __future__ import annotations

from common import datasets
from common.io import atomic_write_text

from .context import Context
from .librispeech import speaker_id
from .render import MixJob, Turn

ROOT = datasets.LIBRI2MIX
SPLITS = ("train", "dev", "test")


def plan(ctx: Context):
    cfg, rng, text = ctx.draws("libri2mix")
    groups = ctx.speaker_groups("libri2mix", list(cfg.speakers_per_split))
    jobs, recos = [], {s: [] for s in SPLITS}
    for split, speakers, count in zip(SPLITS, groups, (cfg.train_recordings, cfg.dev_recordings,
                                                       cfg.test_recordings)):
        for i in range(count):
            a, b = rng.sample(speakers, 2)
            n_turns = rng.randint(*cfg.turns)
            turns = tuple(Turn((a, b)[k % 2], " ".join(text.sentence(4, 10))) for k in range(n_turns))
            reco = f"{speaker_id(a)}-{i:04d}_{speaker_id(b)}-{i:04d}"
            path = f"{ROOT}/wav16k/max/{split}/mix_both/{reco}.wav"
            jobs.append(MixJob(path, turns, session=ctx.session("libri2mix", reco)))
            recos[split].append((reco, path))

    by_name = {s.name: speaker_id(s) for s in ctx.speakers}

    def finish(results: dict[str, dict]) -> dict:
        stats = {}
        for split in SPLITS:
            wav_scp, segments, utt2spk, reco2dur, rttm, spk2utt = [], [], [], [], [], {}
            overlap = speech = 0.0
            for reco, path in recos[split]:
                res = results[path]
                wav_scp.append(f"{reco} ../../wav16k/max/{split}/mix_both/{reco}.wav")
                reco2dur.append(f"{reco} {res['duration']:.4f}")
                for k, (name, start, end) in enumerate(res["segments"]):
                    spk = by_name[name]
                    utt = f"{spk}-{reco}-{k:02d}"
                    segments.append(f"{utt} {reco} {start:.3f} {end:.3f}")
                    utt2spk.append(f"{utt} {spk}")
                    spk2utt.setdefault(spk, []).append(utt)
                    rttm.append(f"SPEAKER {reco} 1 {start:.3f} {end - start:.3f} <NA> <NA> {spk} <NA> <NA>")
                    speech += end - start
                segs = res["segments"]
                overlap += sum(max(0.0, min(e1, e2) - max(s1, s2))
                               for i, (_, s1, e1) in enumerate(segs) for (_, s2, e2) in segs[i + 1:])
            folder = ctx.root / ROOT / "kaldi" / split
            for name, lines in (("wav.scp", wav_scp), ("segments", segments), ("utt2spk", utt2spk),
                                ("reco2dur", reco2dur), ("rttm", rttm),
                                ("spk2utt", [f"{s} {' '.join(u)}" for s, u in spk2utt.items()])):
                atomic_write_text(folder / name, "\n".join(sorted(lines)) + "\n")
            hours = sum(results[p]["duration"] for _, p in recos[split]) / 3600
            stats[split] = {"utterances": len(recos[split]), "hours": round(hours, 3), "speakers": len(spk2utt),
                            "overlap of speech": round(overlap / max(speech, 1e-9), 3)}
        return stats

    return jobs, finish
