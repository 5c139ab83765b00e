"""QbE — query-by-example spoken term detection on QUESST 2014 (English subset), as SUPERB runs it.

Protocol: no training. For one hidden layer, every query and document is encoded; features are standardised per
dimension over all of that split's frames; each query is matched to each document by subsequence DTW
(``downstream/dtw.py``: cosine-based frame distance, asymmetric steps, open begin and end, cost normalised by query
length); the score is the negated cost, standardised per query over the documents. Metric: MTWV (fraction, as the
SUPERB table prints it) with the QUESST 2014 costs, plus ATWV at score 2.0 — the fixed YES/NO threshold s3prl
writes into its system output. Both are computed on the official scorer's trials (``tasks/qbe/twv.py``): every
query of the split's TLIST × every document of the ECF, all languages, the pairs not searched at the default
score -10 of SUPERB's command, scores rounded to the 4 decimals of s3prl's ``stdlist.xml``. ``-o
twv.scorer=<quesst14Database/scoring/score-TWV-Cnxe.sh>`` runs the official scorer itself on the chosen layer
(needs ``java``; ``tasks/qbe/scorer.py``): its numbers then fill the rows, with Cnxe, and ``qbe_twv.json`` keeps
both. ``qbe_twv.json`` also records ``mtwv_searched``: the MTWV over the searched queries × documents only (the
scale this toolkit used before, several times larger on QUESST 2014).

Layer choice: every hidden state is scored on the dev queries and the best dev MTWV picks the layer reported on the
eval ("test") queries, as SUPERB's protocol says. ``--layer K`` skips the sweep.

Differences from SUPERB: without ``twv.scorer`` Cnxe is not reported (MTWV and ATWV follow the scorer's
definition either way). Queries and documents whose language is not in ``data.languages`` are not searched, as s3prl
keeps only ``nnenglish`` (``s3prl/downstream/quesst14_dtw/dataset.py:43-53``). Every query and document goes
through sox ``gain -3.0`` first, as s3prl's (``data.gain_db``).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from downstream.dtw import match_scores, znorm_per_query
from tasks.base import LayerFeatures, RunOutcome, Task, TaskConfig, Utterance
from tasks.registry import register_task

from .data import QUESST_DIR, QbESet, load_quesst
from .scorer import ScorerResult, check_scorer, run_scorer, stdlist_xml
from .twv import maximum_twv, scorer_trials, twv_at, twv_beta

log = logging.getLogger(__name__)
SPLITS = {"dev": "dev", "test": "eval"}


@dataclass
class DTWConfig:
    distance: str = "cosine_exp"  # "cosine_exp" (s3prl's default: exp(d) - 1) or "cosine"
    minmax_norm: bool = True  # min-max normalise each query frame's distances over the document
    feature_normalization: bool = True  # standardise feature dimensions over the split's frames
    min_query_frames: int = 5  # shorter queries score 0 everywhere (s3prl)


@dataclass
class TWVConfig:
    p_target: float = 0.0008
    c_miss: float = 100.0
    c_fa: float = 1.0
    decision_threshold: float = 2.0  # YES when the per-query standardised score exceeds this (for ATWV)
    default_score: float = -10.0  # the scorer's score for pairs not searched (SUPERB's command: -10)
    score_decimals: int = 4  # scores as s3prl prints them into stdlist.xml ("%.4f"); -1 keeps them unrounded
    scorer: str = ""  # path of the official score-TWV-Cnxe.sh: run it on the chosen layer (needs java)


@dataclass
class QbEDataConfig:
    languages: list[str] = field(default_factory=lambda: ["nnenglish", "english"])
    gain_db: float = -3.0  # sox gain before the upstream (s3prl quesst14_dtw/dataset.py:31; 0 = none)


@dataclass
class QbEConfig(TaskConfig):
    dtw: DTWConfig = field(default_factory=DTWConfig)
    twv: TWVConfig = field(default_factory=TWVConfig)
    data: QbEDataConfig = field(default_factory=QbEDataConfig)


def normalise_features(feats: list[torch.Tensor]) -> list[torch.Tensor]:
    """Standardise every feature dimension over all frames of ``feats`` (a list of ``[frame, feature]``)."""
    allf = torch.cat(feats).double()
    mean, std = allf.mean(0), allf.std(0).clamp(min=1e-9)
    return [((f.double() - mean) / std).float() for f in feats]


@register_task("qbe")
class QueryByExample(Task):
    config_class = QbEConfig
    primary_metric = "mtwv"
    higher_is_better = True
    dataset_dirs = (QUESST_DIR,)
    layout_help = "quesst14Database/{Audio,dev_queries,eval_queries,scoring}/"
    required_splits = ("dev", "test")  # nothing is trained
    shared_audio_splits = (("dev", "test"),)  # QUESST 2014: dev and eval queries search the same documents

    def __init__(self, config: QbEConfig, data_root):
        super().__init__(config, data_root)
        self._sets: dict[str, QbESet] = {}
        if config.twv.scorer:  # a wrong path ends the run before any feature is extracted
            check_scorer(config.twv.scorer)
        else:
            log.info("QbE: Cnxe is not reported (the official scorer is not given: -o twv.scorer=<quesst14Database/"
                     "scoring/score-TWV-Cnxe.sh>); MTWV and ATWV follow its definition")

    def qbe_set(self, split: str) -> QbESet:
        if split not in self._sets:
            self.check_data()
            self._sets[split] = load_quesst(self.data_root, SPLITS[split], set(self.config.data.languages))
        return self._sets[split]

    def load_split(self, split: str) -> list[Utterance]:
        """dev/test: that split's queries followed by every document; train: nothing (QbE does not train)."""
        if split == "train":
            return []
        s = self.qbe_set(split)
        for reason, n in s.dropped.items():
            self.count_dropped(split, reason, n)
        return [replace(u, effects=self.audio_effects()) for u in s.queries + s.documents]

    def audio_effects(self) -> tuple[tuple[str, ...], ...]:
        """s3prl's ``gain -3.0`` (``data.gain_db``; none at 0)."""
        gain = self.config.data.gain_db
        return (("gain", f"{gain:.1f}"),) if gain else ()

    # QbE has no head and no loss; the engine never trains it (``run`` replaces the procedure).
    def build_head(self, input_dim: int) -> nn.Module:
        """Never trained or called (``run`` replaces the procedure); the identity keeps the Task contract."""
        return nn.Identity()

    def loss(self, output: Any, lengths: torch.Tensor, utts: Sequence[Utterance]) -> torch.Tensor:
        raise RuntimeError("QbE has no training loss: it matches features directly (see QueryByExample.run)")

    def predict(self, output: Any, lengths: torch.Tensor, utts: Sequence[Utterance]) -> list[Any]:
        raise RuntimeError("QbE predictions come from DTW in QueryByExample.run, not from a head")

    def score(self, split: str, utts: Sequence[Utterance], predictions: Sequence[Any]) -> dict[str, float]:
        raise RuntimeError("QbE is scored with detection_metrics on a [query, document] score matrix")

    # -- the QbE procedure
    def detection_scores(self, split: str, features: dict[str, torch.Tensor]) -> np.ndarray:
        """Per-query standardised DTW scores ``[query, document]`` from features (utterance id → ``[frame, dim]``)."""
        s, cfg = self.qbe_set(split), self.config.dtw
        queries = [features[u.id] for u in s.queries]
        docs = [features[u.id] for u in s.documents]
        if cfg.feature_normalization:
            normed = normalise_features(queries + docs)
            queries, docs = normed[: len(queries)], normed[len(queries):]
        raw = match_scores(queries, docs, cfg.distance, cfg.minmax_norm, cfg.min_query_frames)
        return znorm_per_query(raw).numpy()

    def detection_metrics(self, split: str, scores: np.ndarray) -> dict[str, float]:
        """MTWV and ATWV on the official scorer's trials (every TLIST query × ECF document, the pairs not searched
        at ``twv.default_score``), the MTWV threshold (None: best with no detection at all), how many queries the
        mean ran over, and ``mtwv_searched``: the MTWV over the searched queries × documents alone."""
        t = self.config.twv
        s = self.qbe_set(split)
        beta = twv_beta(t.p_target, t.c_miss, t.c_fa)
        if t.score_decimals >= 0:  # what the scorer reads from s3prl's stdlist.xml
            scores = np.round(scores, t.score_decimals)
        full, targets = scorer_trials(scores, [u.id for u in s.queries], [u.id for u in s.documents],
                                      s.trials.query_ids, s.trials.document_ids, s.trials.occurrences,
                                      t.default_score)
        best = maximum_twv(full, targets, beta)
        # ATWV: s3prl marks YES when score > 2.0; twv_at uses >=, so nudge the threshold up by one ulp.
        atwv = twv_at(full, targets, float(np.nextafter(t.decision_threshold, np.inf)), beta)
        threshold = best.threshold if np.isfinite(best.threshold) else None
        searched = maximum_twv(scores, s.targets, beta).mtwv if s.targets.any() else None
        return {"mtwv": best.mtwv, "atwv": atwv, "mtwv_threshold": threshold,
                "queries_scored": float(best.num_queries), "documents_scored": float(full.shape[1]),
                "mtwv_searched": searched}

    def official_scorer(self, split: str, scores: np.ndarray) -> ScorerResult:
        """Run ``twv.scorer`` on s3prl's stdlist.xml of ``scores`` against the split's ground-truth folder."""
        t, s = self.config.twv, self.qbe_set(split)
        xml = stdlist_xml(scores, [u.id for u in s.queries], [u.id for u in s.documents], t.decision_threshold)
        truth = self.data_root / QUESST_DIR / "scoring" / f"groundtruth_quesst14_{SPLITS[split]}"
        return run_scorer(t.scorer, truth, xml, t.default_score)

    def evaluate_layer(self, features: LayerFeatures, split: str, layer: int) -> tuple[dict[str, float], np.ndarray]:
        """Metrics and scores of ``split`` with hidden state ``layer``."""
        by_id = {}
        for fb in features.features(features.split(split), layer):
            for b, utt in enumerate(fb.utts):
                by_id[utt.id] = fb.hidden[0, b, : int(fb.lengths[b])]
        missing = [u.id for u in self.load_split(split) if u.id not in by_id]
        if missing:  # skipped unreadable audio (--skip-bad-audio) cannot be matched
            raise ValueError(f"QbE: no features for {len(missing)} {split} utterances, e.g. {missing[0]}")
        scores = self.detection_scores(split, by_id)
        return self.detection_metrics(split, scores), scores

    def run(self, features: LayerFeatures) -> RunOutcome:
        """Sweep layers on dev (unless a layer is fixed), then score the eval queries with the chosen layer.

        Results rows: MTWV and ATWV of dev and test; ``selected``: the layer; files: the per-layer dev MTWV
        (``qbe_dev_layers.tsv``), the chosen layer's details (``qbe_twv.json``) and the test scores.
        """
        layers = features.layers
        dev_by_layer, dev_scores = {}, {}
        for layer in layers:
            dev_by_layer[layer], dev_scores[layer] = self.evaluate_layer(features, "dev", layer)
            log.info("QbE dev layer %d: MTWV %.4f", layer, dev_by_layer[layer]["mtwv"])
            # keep the scores of the best layer so far only (the official scorer reads the chosen one's)
            lead = max(dev_scores, key=lambda k: (dev_by_layer[k]["mtwv"], -k))
            dev_scores = {lead: dev_scores[lead]}
        best = max(layers, key=lambda k: (dev_by_layer[k]["mtwv"], -k))  # ties: the lower layer
        test, scores = self.evaluate_layer(features, "test", best)
        sweep = "\n".join(f"{k}\t{dev_by_layer[k]['mtwv']:.6f}" for k in layers)
        details = {"chosen_layer": best, "trials_from": self.qbe_set("test").trials.source,
                   "dev": dev_by_layer[best], "test": test}
        files = {"qbe_test_scores.tsv": self.scores_tsv("test", scores),
                 "qbe_dev_layers.tsv": "layer\tdev_mtwv\n" + sweep + "\n"}
        # results rows: the detection metrics (threshold details stay in qbe_twv.json)
        metrics = {split: {"mtwv": m["mtwv"], "atwv": m["atwv"]} for split, m in (("dev", dev_by_layer[best]),
                                                                                ("test", test))}
        if self.config.twv.scorer:  # the official scorer's own numbers replace ours in the rows
            for split, split_scores in (("dev", dev_scores[best]), ("test", scores)):
                res = self.official_scorer(split, split_scores)
                metrics[split] = {"mtwv": res.mtwv, "atwv": res.atwv}
                if res.min_cnxe is not None:
                    metrics[split].update(min_cnxe=res.min_cnxe, act_cnxe=res.act_cnxe)
                details[split]["official_scorer"] = {"mtwv": res.mtwv, "atwv": res.atwv,
                                                     "threshold": res.mtwv_threshold, "act_cnxe": res.act_cnxe,
                                                     "min_cnxe": res.min_cnxe}
                files[f"qbe_scorer_{split}.out"] = res.output
        files["qbe_twv.json"] = json.dumps(details, indent=2)
        return RunOutcome(metrics, selected={"layer": best}, files=files)

    def scores_tsv(self, split: str, scores: np.ndarray) -> str:
        """query, document, standardised score (what the detector output), one row per pair."""
        s = self.qbe_set(split)
        rows = [f"{q.id}\t{d.id}\t{scores[i, j]:.4f}" for i, q in enumerate(s.queries)
                for j, d in enumerate(s.documents)]
        return "query\tdocument\tscore\n" + "\n".join(rows) + "\n"
