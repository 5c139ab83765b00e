"""QbE data in the QUESST 2014 layout (``quesst14Database/``): documents ``Audio/quesst14_<NNNNN>.wav``, spoken
queries ``dev_queries/quesst14_dev_<NNNN>.wav`` and ``eval_queries/quesst14_eval_<NNNN>.wav``, and under
``scoring/`` the language keys and, per split, NIST STD ground truth (ECF, TLIST, RTTM of every occurrence).

Queries are single content words spoken in isolation by query speakers; documents are sentences by other speakers.
A document holds at most one query term, synthesised as its own chunk so that its time span is known exactly.
Language: ``nnenglish`` (non-native English), the one QUESST language SUPERB keeps.
"""
from __future__ import annotations

from xml.sax.saxutils import quoteattr

from common import datasets
from common.io import atomic_write_text

from .augment import Degradation
from .context import Context
from .render import SpeechJob
from .text import ADJECTIVES, NOUNS

ROOT = datasets.QUESST14
LANGUAGE = "nnenglish"
DEGRADATION = Degradation(noise_prob=0.6, snr_db=(10.0, 30.0), reverb_prob=0.3)
QUERY_DEGRADATION = Degradation(noise_prob=0.3, snr_db=(15.0, 30.0), reverb_prob=0.1)


def plan(ctx: Context):
    cfg, rng, text = ctx.draws("quesst")
    doc_speakers, query_speakers = ctx.speaker_groups("quesst", [cfg.document_speakers, cfg.query_speakers])
    # Longer words make better spoken-term-detection targets.
    candidates = sorted({w for w in NOUNS + ADJECTIVES if len(w) >= 6})
    terms = rng.sample(candidates, cfg.dev_queries + cfg.eval_queries)
    n_hits = (cfg.dev_queries + cfg.eval_queries) * cfg.docs_per_query
    if n_hits > cfg.documents:
        raise ValueError(f"quesst: {n_hits} query occurrences need at least as many documents, got {cfg.documents}")
    term_words = set(terms)
    hosts = [terms[i // cfg.docs_per_query] for i in range(n_hits)] + [None] * (cfg.documents - n_hits)
    rng.shuffle(hosts)

    jobs, docs, queries = [], [], {"dev": [], "eval": []}
    for i, term in enumerate(hosts):
        doc_id = f"quesst14_{i + 1:05d}"
        words = text.sentence(6, 16)
        while term_words & set(words):
            words = text.sentence(6, 16)
        if term is None:
            chunks = (" ".join(words),)
        else:
            cut = rng.randint(0, len(words))
            chunks = tuple(c for c in (" ".join(words[:cut]), term, " ".join(words[cut:])) if c)
        path = f"{ROOT}/Audio/{doc_id}.wav"
        jobs.append(SpeechJob(path, rng.choice(doc_speakers), chunks, degradation=DEGRADATION,
                              session=ctx.session("quesst", doc_id)))
        docs.append((doc_id, path, term, chunks.index(term) if term else None))
    for k, term in enumerate(terms):
        split = "dev" if k < cfg.dev_queries else "eval"
        number = len(queries[split]) + 1
        query_id = f"quesst14_{split}_{number:04d}"
        path = f"{ROOT}/{split}_queries/{query_id}.wav"
        jobs.append(SpeechJob(path, rng.choice(query_speakers), (term,), degradation=QUERY_DEGRADATION,
                              session=ctx.session("quesst", query_id)))
        queries[split].append((query_id, term))

    def finish(results: dict[str, dict]) -> dict:
        scoring = ctx.root / ROOT / "scoring"
        # Official key lines hold the audio path behind one leading folder, which s3prl strips off.
        atomic_write_text(scoring / "language_key_utterances.lst",
                          "".join(f"{ROOT}/Audio/{d[0]}.wav {LANGUAGE}\n" for d in docs))
        total = sum(results[d[1]]["duration"] for d in docs)
        stats = {"documents": {"utterances": len(docs), "hours": round(total / 3600, 3),
                               "speakers": len(doc_speakers)}}
        for split, qs in queries.items():
            atomic_write_text(scoring / f"language_key_{split}.lst",
                              "".join(f"{ROOT}/{split}_queries/{q}.wav {LANGUAGE}\n" for q, _ in qs))
            truth = scoring / f"groundtruth_quesst14_{split}"
            ecf = [f'<ecf source_signal_duration="{total:.3f}" language="multiple" version="quesst14 {split}">']
            ecf += [f'  <excerpt audio_filename={quoteattr("Audio/" + d[0] + ".wav")} channel="1" tbeg="0.000" '
                    f'dur="{results[d[1]]["duration"]:.3f}" source_type="splitcts"/>' for d in docs]
            atomic_write_text(truth / f"quesst14_{split}.ecf.xml", "\n".join(ecf + ["</ecf>"]) + "\n")
            tlist = [f'<termlist ecf_filename="quesst14_{split}.ecf.xml" language="multiple" version="quesst14">']
            tlist += [f'  <term termid="{q}"><termtext>{q}</termtext></term>' for q, _ in qs]
            atomic_write_text(truth / f"quesst14_{split}.tlist.xml", "\n".join(tlist + ["</termlist>"]) + "\n")
            ids = {term: q for q, term in qs}
            rttm = []
            for doc_id, path, term, chunk in docs:
                if term in ids:
                    start, end = results[path]["chunks"][chunk]
                    rttm.append(f"LEXEME {doc_id} 1 {start:.3f} {end - start:.3f} {ids[term]} <NA> <NA> <NA>")
            atomic_write_text(truth / f"quesst14_{split}.rttm", "\n".join(rttm) + "\n")
            stats[f"{split} queries"] = {"utterances": len(qs), "speakers": len(query_speakers),
                                         "hours": round(sum(results[f"{ROOT}/{split}_queries/{q}.wav"]["duration"]
                                                            for q, _ in qs) / 3600, 4)}
        return stats

    return jobs, finish
