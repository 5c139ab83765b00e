"""ASV — automatic speaker verification on VoxCeleb1, as SUPERB runs it.

Protocol (s3prl ``downstream/sv_voxceleb1``, config ``configs/amsoftmax.yaml``): every utterance, train and test,
goes through sox ``gain -3.0`` and ``silence 1 0.1 0.1% -1 0.1 0.1%`` before the upstream
(``sv_voxceleb1/dataset.py:22-27``; ``common/effects.py`` runs the sox binary: ``data.gain_db``,
``data.trim_silence``); training keeps the development speakers' utterances *longer* than ``data.min_seconds`` (2 s)
after trimming (``dataset.py:61-63``, ``min_sec: 32000`` samples) and draws random ``batch.train_crop_seconds``
(8 s, ``max_timestep: 128000``) crops; the weighted sum feeds SUPERB's x-vector head (projector 512, five TDNN
layers, statistics pooling) trained with AM-Softmax (s = 30, m = 0.4) by AdamW (lr 1e-4, torch's default weight
decay 0.01: s3prl passes none, ``s3prl/optimizers.py:90-97``) with gradients clipped at norm 1000
(``gradient_clipping: 1000``). Verification: the embedding of each utterance of a trial list, L2-normalised; score =
cosine similarity; EER (primary, percent, lower is better) from scikit-learn's ROC curve, plus minDCF (P_target
0.01, C_miss = C_fa = 1).

Differences from SUPERB: s3prl evaluates checkpoints on the *test* trials and keeps the best; here ``data.dev_speakers``
development speakers are held out of training and a seeded, balanced trial list over them (``data.dev_trials``) picks
the checkpoint. Test = the official ``veri_test.txt`` list over ``test/wav``. The 8 s crops are cut from the cached
features of the whole trimmed utterance (s3prl crops the waveform and runs the upstream on the crop); ``--no-cache``
crops the waveform as s3prl does (docs/PROTOCOL.md, ASV, has the measured difference). Without the ``sox`` binary the
silence is not trimmed (said once; the rows are then not SUPERB's).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from common.effects import TRIM_SILENCE, durations_after_effects, sox_available
from downstream.xvector import AMSoftmaxLoss, XVectorHead, am_softmax_loss
from tasks.base import BatchConfig, Task, TaskConfig, Utterance
from tasks.registry import register_task

from .data import VOX_DIR, Trial, make_trials, read_trial_list, scan_speakers, split_dev_speakers
from .metrics import equal_error_rate, min_dcf


@dataclass
class ASVHeadConfig:
    hidden_dim: int = 512
    pooled_dim: int = 1500
    embed_dim: int = 512
    scale: float = 30.0  # AM-Softmax s
    margin: float = 0.4  # AM-Softmax m


@dataclass
class ASVDataConfig:
    min_seconds: float = 2.0  # training keeps utterances longer than this after trimming (SUPERB: 32000 samples)
    gain_db: float = -3.0  # sox gain before the upstream (SUPERB: -3.0; 0 = none)
    trim_silence: bool = True  # sox "silence 1 0.1 0.1% -1 0.1 0.1%" on every utterance (SUPERB)
    dev_speakers: int = 20  # development speakers held out for the dev trial list
    dev_trials: int = 2000
    seed: int = 0


@dataclass
class ASVConfig(TaskConfig):
    head: ASVHeadConfig = field(default_factory=ASVHeadConfig)
    data: ASVDataConfig = field(default_factory=ASVDataConfig)
    batch: BatchConfig = field(default_factory=lambda: BatchConfig(max_seconds=80.0, train_crop_seconds=8.0))


class SpeakerVerificationModel(nn.Module):
    """x-vector head + AM-Softmax classifier weights: output = (cosine to every training speaker ``[batch, spk]``,
    verification embedding ``[batch, embed_dim]``)."""

    def __init__(self, input_dim: int, num_speakers: int, cfg: ASVHeadConfig):
        super().__init__()
        self.xvector = XVectorHead(input_dim, cfg.hidden_dim, cfg.pooled_dim, cfg.embed_dim)
        self.classifier = AMSoftmaxLoss(cfg.embed_dim, num_speakers, cfg.scale, cfg.margin)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        train_embedding, verify = self.xvector.embeddings(features, lengths)
        return self.classifier.cosine(train_embedding), verify


@register_task("asv")
class SpeakerVerification(Task):
    config_class = ASVConfig
    primary_metric = "eer"
    higher_is_better = False
    dataset_dirs = (VOX_DIR,)
    layout_help = "VoxCeleb1/{dev,test}/wav/<spk>/<video>/<n>.wav and VoxCeleb1/veri_test.txt"
    speaker_disjoint_splits = (("train", "dev"), ("train", "test"), ("dev", "test"))
    speaker_protocol = ("VoxCeleb1 verification: the test speakers are not development speakers, and the dev "
                        "speakers are held out of training")

    def __init__(self, config: ASVConfig, data_root):
        super().__init__(config, data_root)
        self._splits: dict[str, list[Utterance]] | None = None
        self._trials: dict[str, list[Trial]] = {}
        self.speakers: list[str] = []
        self._short = 0  # training utterances dropped for their length

    def audio_effects(self) -> tuple[tuple[str, ...], ...]:
        """The sox chain every ASV utterance goes through (``data.gain_db``, ``data.trim_silence``)."""
        cfg = self.config.data
        chain = [("gain", f"{cfg.gain_db:.1f}")] if cfg.gain_db else []
        return tuple(chain + ([TRIM_SILENCE] if cfg.trim_silence else []))

    def with_effects(self, utts: list[Utterance]) -> list[Utterance]:
        """``utts`` with the sox chain attached and, when it trims, their durations after it (computed once per
        file and remembered, as s3prl's ``.wav_lengths``); an unreadable file keeps its record (the audit names it)."""
        chain = self.audio_effects()
        if not chain:
            return utts
        if not any(e[0] == "silence" for e in chain):
            return [replace(u, effects=chain) for u in utts]
        seconds = durations_after_effects([u.path for u in utts], chain)
        return [replace(u, effects=chain, duration=d) if d >= 0 else u for u, d in zip(utts, seconds)]

    def _prepare(self) -> None:
        if self._splits is not None:
            return
        self.check_data()
        cfg = self.config.data
        root = self.data_root / VOX_DIR
        by_speaker = scan_speakers(root / "dev" / "wav")
        train_spk, dev_spk = split_dev_speakers(list(by_speaker), cfg.dev_speakers, cfg.seed)
        self.speakers = train_spk
        dev_by_speaker = {s: by_speaker[s] for s in dev_spk}
        self._trials["dev"] = make_trials(dev_by_speaker, cfg.dev_trials, cfg.seed)
        used = {t.enroll for t in self._trials["dev"]} | {t.test for t in self._trials["dev"]}
        dev = [u for s in dev_spk for u in by_speaker[s] if u.id in used]
        self._trials["test"], test = read_trial_list(root / "veri_test.txt", root / "test" / "wav")
        candidates = [u for s in train_spk for u in by_speaker[s]]
        # s3prl keeps a training utterance when its length *after* the sox chain exceeds min_sec
        train_all, dev, test = (self.with_effects(x) for x in (candidates, dev, test))
        train = [u for u in train_all if u.duration > cfg.min_seconds]
        self._short = len(train_all) - len(train)
        if not train:
            raise ValueError(f"ASV: no training utterance longer than {cfg.min_seconds} s under {root / 'dev/wav'}")
        index = {s: i for i, s in enumerate(train_spk)}
        train = [replace(u, label=index[u.speaker]) for u in train]
        self._splits = {"train": train, "dev": dev, "test": test}

    def superb_comparability(self, dropped: dict[str, dict[str, int]]) -> list[str]:
        """Not SUPERB's audio when the silence is to be trimmed but the sox binary is missing (the run trimmed
        nothing: ``common/effects.py`` applies the gain alone)."""
        if self.config.data.trim_silence and not sox_available():
            return ["sox not installed: silence not trimmed (SUPERB trims it with sox)"]
        return []

    def file_records(self, path) -> list[Utterance]:
        """A file for ``predict``: the whole file through the sox chain, its duration after it."""
        return self.with_effects(super().file_records(path))

    def load_split(self, split: str) -> list[Utterance]:
        self._prepare()
        if split == "train" and self._short:
            self.count_dropped("train", f"utterances of at most {self.config.data.min_seconds} s after the sox "
                               f"chain", self._short)
        return self._splits[split]

    def trials(self, split: str) -> list[Trial]:
        self._prepare()
        return self._trials[split]

    def build_head(self, input_dim: int) -> nn.Module:
        """Output: ``(cosine [batch, training speakers]`` of the AM-softmax classifier, ``embedding [batch,
        embed_dim])``; predictions are the unit-norm embeddings."""
        self._prepare()
        return SpeakerVerificationModel(input_dim, len(self.speakers), self.config.head)

    def loss(self, output: Any, lengths: torch.Tensor, utts: Sequence[Utterance]) -> torch.Tensor:
        cosine, _ = output
        labels = torch.tensor([u.label for u in utts], device=cosine.device)
        return am_softmax_loss(cosine, labels, self.config.head.scale, self.config.head.margin)

    def predict(self, output: Any, lengths: torch.Tensor, utts: Sequence[Utterance]) -> list[list[float]]:
        return F.normalize(output[1].detach().float(), dim=-1).cpu().tolist()

    def score(self, split: str, utts: Sequence[Utterance], predictions: Sequence[Any]) -> dict[str, float]:
        """EER and minDCF of ``split``'s trial list from the embeddings (``predictions``) of its utterances."""
        return self.score_trials(self.trials(split), utts, predictions)

    def prediction_files(self, split: str, utts: Sequence[Utterance], predictions: Sequence[Any]) -> dict[str, str]:
        """``predictions/<split>.jsonl`` (the base format): the unit-norm embedding of each utterance, as
        ``run_benchmark.py predict`` gives it, so a prediction on a test file can be checked against the run's."""
        return super().prediction_files(split, utts, predictions)

    @staticmethod
    def score_trials(trials: Sequence[Trial], utts: Sequence[Utterance], embeddings: Sequence[Any]) -> dict[str, float]:
        """EER and minDCF (percent / absolute) of cosine scores between unit-norm embeddings of each trial."""
        table = dict(zip((u.id for u in utts), embeddings))
        missing = [t for t in trials if t.enroll not in table or t.test not in table]
        if missing:
            raise ValueError(f"ASV: {len(missing)} trials use utterances without embeddings, e.g. {missing[0]}")
        ids = sorted(table)
        pos = {u: i for i, u in enumerate(ids)}
        emb = F.normalize(torch.tensor([table[u] for u in ids], dtype=torch.float64), dim=-1)
        a = emb[[pos[t.enroll] for t in trials]]
        b = emb[[pos[t.test] for t in trials]]
        scores = (a * b).sum(-1).numpy()
        labels = [t.label for t in trials]
        eer, _ = equal_error_rate(labels, scores)
        return {"eer": 100.0 * eer, "min_dcf": min_dcf(labels, scores)}
