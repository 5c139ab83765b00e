"""SD — two-speaker diarization on Libri2Mix (Kaldi data dirs), as SUPERB runs it (s3prl ``downstream/diarization``).

Protocol: the weighted sum feeds SUPERB's head (one LSTM layer of 512 units + linear to 2 speakers) at the upstream's
own frame rate. Every recording of every split is cut into chunks of ``data.chunk_frames`` (2000) label frames, the
last partial chunk kept (``diarization/dataset.py:97-118``, ``chunk_size: 2000``): 40 s at 20 ms, 20 s at 10 ms.
Frame labels come from ``segments`` + ``utt2spk``, a turn ``[t0, t1)`` covering frames ``rint(t0 / shift)`` up to
``rint(t1 / shift)`` (``dataset.py:189-190``). Loss: permutation-invariant BCE weighted per frame
(``downstream/diarization.py``, s3prl's ``pit_loss``). Checkpoints are chosen on dev frame accuracy (the mean over
dev chunks of the PIT-aligned accuracy at posterior 0.5, s3prl's ``average_acc``, ``expert.py:334-348``); DER is
reported. Inference runs each chunk on its own (the LSTM starts afresh per chunk, ``expert.py:287-293``) and the
chunks' posteriors are joined per recording; then sigmoid, threshold, per-speaker median filter, runs of active
frames → RTTM (``<run dir>/<split>.rttm``); DER (percent, primary, lower is better) from pyannote.metrics against the
Kaldi dir's ``rttm``, collar 0 and overlap scored (as dscore, which SUPERB's ``score.sh`` calls).

Differences from SUPERB: s3prl sweeps threshold {0.3 … 0.7} × median {1, 11} on the *test* set and reports the
best; here the same grid is swept on dev after the best checkpoint is chosen, and test is scored once with the
chosen pair. pyannote.metrics replaces dscore (same definition). s3prl leaves a chunk unlabelled for a speaker
whose turn starts before the chunk and ends after it (``dataset.py:191-197``); here such a turn covers the chunk.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from common.audio import SAMPLE_RATE
from downstream.diarization import DiarizationHead, pit_bce_loss, pit_frame_accuracy
from tasks.base import Task, TaskConfig, Utterance
from tasks.registry import register_task

from .data import KALDI_DIR, Recording, load_kaldi_dir, read_rttm
from .der import activity_to_segments, decide, diarization_error_rate, rttm_lines, to_annotation

SPLIT_DIRS = {"train": "train", "dev": "dev", "test": "test"}
AUDIT_DOWNSAMPLE_RATE = 320  # chunks for the dataset audit, before the upstream is known (the run cuts them again)


@dataclass
class SDHeadConfig:
    hidden_size: int = 512
    rnn_layers: int = 1
    input_cmvn: bool = False  # per-utterance mean/variance normalisation of the weighted sum (not in SUPERB)


@dataclass
class SDDataConfig:
    num_speakers: int = 2
    chunk_frames: int = 2000  # chunks of this many label frames at the upstream's rate (s3prl: chunk_size 2000)


@dataclass
class SDTuneConfig:
    thresholds: list[float] = field(default_factory=lambda: [0.3, 0.4, 0.5, 0.6, 0.7])
    medians: list[int] = field(default_factory=lambda: [1, 11])  # median-filter widths in frames
    default_threshold: float = 0.5  # used for dev evaluations during training
    default_median: int = 1


@dataclass
class SDConfig(TaskConfig):
    head: SDHeadConfig = field(default_factory=SDHeadConfig)
    data: SDDataConfig = field(default_factory=SDDataConfig)
    tune: SDTuneConfig = field(default_factory=SDTuneConfig)


@register_task("sd")
class SpeakerDiarization(Task):
    config_class = SDConfig
    primary_metric = "der"
    higher_is_better = False
    selection_metric = "accuracy"  # s3prl keeps the best dev frame accuracy (expert.py:346)
    selection_higher_is_better = True
    frame_rate_splits = ("train", "dev", "test")  # chunks are counted in label frames
    dataset_dirs = (str(KALDI_DIR),)
    layout_help = "Libri2Mix/kaldi/{train,dev,test}/{wav.scp,segments,utt2spk,reco2dur,rttm}"
    speaker_disjoint_splits = (("train", "dev"), ("train", "test"), ("dev", "test"))
    speaker_protocol = "Libri2Mix mixes the speakers of disjoint LibriSpeech splits"

    def __init__(self, config: SDConfig, data_root):
        super().__init__(config, data_root)
        self._recordings: dict[str, list[Recording]] = {}
        self.threshold = config.tune.default_threshold
        self.median = config.tune.default_median

    # -- data
    def recordings(self, split: str) -> list[Recording]:
        if split not in self._recordings:
            self.check_data()
            recs = load_kaldi_dir(self.data_root / KALDI_DIR / SPLIT_DIRS[split])
            for rec in recs:
                if len(rec.speakers) > self.config.data.num_speakers:
                    raise ValueError(f"SD: recording {rec.id} has {len(rec.speakers)} speakers; "
                                     f"data.num_speakers is {self.config.data.num_speakers}")
            self._recordings[split] = recs
        return self._recordings[split]

    def chunk_bounds(self, duration: float) -> list[tuple[int, int]]:
        """``[(first frame, end frame))`` chunks of a recording of ``duration`` seconds: s3prl's
        ``_gen_frame_indices(..., use_last_samples=True)`` over ``int(duration * 16000 / frame shift)`` frames."""
        rate = self.downsample_rate or AUDIT_DOWNSAMPLE_RATE
        frames, size = int(duration * SAMPLE_RATE / rate), self.config.data.chunk_frames
        if size <= 0:
            raise ValueError(f"SD: data.chunk_frames must be positive, got {size}")
        bounds = [(i * size, (i + 1) * size) for i in range(frames // size)]
        if frames % size:
            bounds.append((frames - frames % size, frames))
        return bounds

    def load_split(self, split: str) -> list[Utterance]:
        """Chunks of ``data.chunk_frames`` label frames of every recording (ids ``<recording>-<k>``). ``label``
        holds the speaker turns relative to the chunk start as ``((speaker_index, start_s, end_s), ...)``."""
        out = []
        shift = (self.downsample_rate or AUDIT_DOWNSAMPLE_RATE) / SAMPLE_RATE
        for rec in self.recordings(split):
            index = {s: i for i, s in enumerate(rec.speakers)}
            for k, (f0, f1) in enumerate(self.chunk_bounds(rec.duration)):
                start, dur = f0 * shift, (f1 - f0) * shift
                turns = tuple((index[s], max(t0, start) - start, min(t1, start + dur) - start)
                              for s, t0, t1 in rec.turns if t1 > start and t0 < start + dur)
                out.append(Utterance(id=f"{rec.id}-{k:04d}", path=rec.path, start=start, duration=dur, label=turns))
        return out

    def frame_labels(self, utts: Sequence[Utterance], num_frames: int) -> torch.Tensor:
        """``[batch, frame, speaker]`` 0/1 activity at the upstream frame rate: a turn ``[t0, t1)`` marks frames
        ``rint(t0 / shift)`` up to (not including) ``rint(t1 / shift)`` (shift = samples per frame / SAMPLE_RATE),
        as s3prl's ``np.rint`` (``diarization/dataset.py:189-190``)."""
        if self.downsample_rate is None:
            raise RuntimeError("SD: setup(downsample_rate) must run before frame labels are built")
        shift = self.downsample_rate / SAMPLE_RATE
        labels = torch.zeros(len(utts), num_frames, self.config.data.num_speakers)
        for b, u in enumerate(utts):
            for spk, t0, t1 in u.label:
                labels[b, int(np.rint(t0 / shift)):int(np.rint(t1 / shift)), spk] = 1.0
        return labels

    def file_records(self, path) -> list[Utterance]:
        """A file for ``predict``: its chunks, as a recording's (no labels)."""
        shift = self.downsample_rate / SAMPLE_RATE
        (whole,) = super().file_records(path)
        return [Utterance(id=f"{whole.id}-{k:04d}", path=whole.path, start=f0 * shift, duration=(f1 - f0) * shift,
                          label=()) for k, (f0, f1) in enumerate(self.chunk_bounds(whole.duration))]

    def join_file_predictions(self, records: Sequence[Utterance], predictions: Sequence[Any]) -> Any:
        """The chunks' posteriors joined in time order (each padded to its frame count, as in scoring)."""
        return np.concatenate([self._fit_chunk(np.asarray(p, dtype=np.float32).reshape(
            -1, self.config.data.num_speakers), int(round(u.duration * SAMPLE_RATE / self.downsample_rate)))
            for u, p in zip(records, predictions)]).tolist()

    def _fit_chunk(self, post: np.ndarray, frames: int) -> np.ndarray:
        """``post`` ``[frame, speaker]`` cut or padded (its last frame repeated) to ``frames``: the upstream may give
        a frame less than the labels, and s3prl's ``_match_length`` (``expert.py:93-120``) pads the same way, so
        joined chunks stay aligned with the recording's time."""
        if 0 < len(post) < frames:
            post = np.concatenate([post, np.repeat(post[-1:], frames - len(post), axis=0)])
        return post[:frames]

    def recording_posteriors(self, split: str, utts: Sequence[Utterance],
                             posteriors: Sequence[Any]) -> list[tuple[Utterance, np.ndarray]]:
        """Chunk posteriors joined per recording, in recording order: ``[(recording as an Utterance, [frame,
        speaker])]`` (s3prl's test inference: each chunk on its own, concatenated)."""
        by_id = {u.id: np.asarray(p, dtype=np.float32).reshape(-1, self.config.data.num_speakers)
                 for u, p in zip(utts, posteriors)}
        out = []
        for rec in self.recordings(split):
            parts = []
            for k, (f0, f1) in enumerate(self.chunk_bounds(rec.duration)):
                post = by_id.get(f"{rec.id}-{k:04d}")
                if post is not None and len(post):
                    parts.append(self._fit_chunk(post, f1 - f0))
            if parts:
                whole = Utterance(id=rec.id, path=rec.path, duration=rec.duration)
                out.append((whole, np.concatenate(parts)))
        return out

    # -- model
    def build_head(self, input_dim: int) -> nn.Module:
        """Output: speaker-activity logits ``[batch, frame, num_speakers]`` at the upstream frame rate; predictions
        are per-frame sigmoid posteriors."""
        h = self.config.head
        return DiarizationHead(input_dim, self.config.data.num_speakers, h.hidden_size, h.rnn_layers,
                               input_cmvn=h.input_cmvn)

    def loss(self, output: Any, lengths: torch.Tensor, utts: Sequence[Utterance]) -> torch.Tensor:
        labels = self.frame_labels(utts, output.shape[1]).to(output.device)
        return pit_bce_loss(output, labels, lengths)[0]

    def predict(self, output: Any, lengths: torch.Tensor, utts: Sequence[Utterance]) -> list[list[list[float]]]:
        probs = torch.sigmoid(output.detach().float()).cpu()
        return [probs[b, : int(n)].numpy().round(4).tolist() for b, n in enumerate(lengths.tolist())]

    def audit_splits(self, splits: dict[str, list[Utterance]], warnings: list[str]) -> list[str]:
        """Each split's ``rttm`` names exactly its recordings (both ways: a recording without RTTM lines would be
        scored as all silence, RTTM lines of an unknown recording dropped), and no speaker is in two splits
        (Libri2Mix mixes disjoint LibriSpeech speakers per split)."""
        from ..audit import speaker_leaks

        problems = super().audit_splits(splits, warnings)
        speakers: dict[str, dict[str, list[str]]] = {}
        for split in splits:
            try:
                self._reference_turns(split)
            except ValueError as e:
                problems.append(f"{split}: {e}")
            for rec in self.recordings(split):
                for spk in rec.speakers:
                    speakers.setdefault(split, {}).setdefault(spk, []).append(f"{rec.id} ({rec.path})")
        return problems + speaker_leaks(speakers, self.speaker_disjoint_splits, self.speaker_protocol)

    # -- scoring
    def _reference_turns(self, split: str) -> dict[str, list[tuple[str, float, float]]]:
        """Recording id -> reference turns from the split's ``rttm`` (else from ``segments`` + ``utt2spk``); raises
        ``ValueError`` naming the RTTM and every recording id it lacks or has in excess (both are scored wrong)."""
        from ..audit import id_mismatches

        rttm = self.data_root / KALDI_DIR / SPLIT_DIRS[split] / "rttm"
        recordings = self.recordings(split)
        if not rttm.is_file():
            return {r.id: r.turns for r in recordings}
        turns = read_rttm(rttm)
        wav_scp = rttm.with_name("wav.scp")
        mismatch = id_mismatches(turns, [r.id for r in recordings], str(rttm), str(wav_scp), "recording id")
        if mismatch:
            raise ValueError(f"{rttm}: the reference does not match the recordings: " + "; ".join(mismatch))
        return turns

    def references(self, split: str) -> dict[str, Any]:
        """Reference annotations of ``split`` from its ``rttm`` (every recording present, possibly empty)."""
        turns = self._reference_turns(split)
        return {r.id: to_annotation(turns.get(r.id, []), r.id) for r in self.recordings(split)}

    def der(self, split: str, utts: Sequence[Utterance], posteriors: Sequence[Any], threshold: float,
            median: int) -> tuple[float, dict[str, list]]:
        """DER (percent) of ``posteriors`` (one ``[frame, speaker]`` list per chunk of ``utts``, joined per recording)
        and the hypothesis segments per recording."""
        shift = self.downsample_rate / SAMPLE_RATE
        hyps, segments = {}, {}
        for u, post in self.recording_posteriors(split, utts, posteriors):
            segs = activity_to_segments(decide(post, threshold, median), shift)
            segments[u.id] = segs
            hyps[u.id] = to_annotation(segs, u.id)
        durations = {r.id: r.duration for r in self.recordings(split)}
        return 100.0 * diarization_error_rate(self.references(split), hyps, durations), segments

    def score(self, split: str, utts: Sequence[Utterance], predictions: Sequence[Any]) -> dict[str, float]:
        """DER (percent) of the split's recordings at the current threshold and median filter, and beside it the DER
        of "speaker A = all speech" (``der_one_speaker``, see :meth:`one_speaker_der`)."""
        metrics = {"der": self.der(split, utts, predictions, self.threshold, self.median)[0],
                   "der_one_speaker": self.one_speaker_der(split)}
        metrics["accuracy"] = self.frame_accuracy(utts, predictions)
        return metrics

    def frame_accuracy(self, utts: Sequence[Utterance], predictions: Sequence[Any]) -> float:
        """Percent: the mean over chunks of s3prl's PIT-aligned frame accuracy at posterior 0.5
        (:func:`downstream.diarization.pit_frame_accuracy`; s3prl averages it over its dev batches of one chunk)."""
        accs = []
        for u, post in zip(utts, predictions):
            post = torch.as_tensor(np.asarray(post, dtype=np.float32).reshape(-1, self.config.data.num_speakers))
            accs.append(pit_frame_accuracy(post, self.frame_labels([u], post.shape[0])[0]))
        return 100.0 * float(np.mean(accs))

    def prediction_files(self, split: str, utts: Sequence[Utterance], predictions: Sequence[Any]) -> dict[str, str]:
        """``<split>.rttm``: the hypothesis segments at the current threshold and median filter."""
        segments = self.der(split, utts, predictions, self.threshold, self.median)[1]
        lines = [line for rec in self.recordings(split) if rec.id in segments
                 for line in rttm_lines(segments[rec.id], rec.id)]
        return {f"{split}.rttm": "\n".join(lines) + ("\n" if lines else "")}

    def one_speaker_der(self, split: str) -> float:
        """DER (percent) of the trivial hypothesis "speaker A = all speech": one label over every stretch of
        reference speech. A head that learnt only speech activity lands here; the report prints it beside the
        SD column, so a DER can be read against it."""
        refs = self.references(split)
        hyps = {uri: to_annotation([("A", seg.start, seg.end) for seg in ref.get_timeline().support()], uri)
                for uri, ref in refs.items()}
        durations = {r.id: r.duration for r in self.recordings(split)}
        return 100.0 * diarization_error_rate(refs, hyps, durations)

    def rttm(self, utts: Sequence[Utterance], posteriors: Sequence[Any]) -> list[str]:
        """RTTM lines of ``posteriors`` (one ``[frame, speaker]`` list per utterance) at the tuned threshold and
        median filter; speakers are named by output index (``run_benchmark.py predict``)."""
        shift = self.downsample_rate / SAMPLE_RATE
        lines = []
        for u, post in zip(utts, posteriors):
            post = np.asarray(post, dtype=np.float32).reshape(-1, self.config.data.num_speakers)
            lines += rttm_lines(activity_to_segments(decide(post, self.threshold, self.median), shift), u.id)
        return lines

    def tune_on_dev(self, utts: Sequence[Utterance], predictions: Sequence[Any]) -> dict[str, Any]:
        """Pick threshold and median-filter width on dev (lowest DER; ties keep the earlier grid point)."""
        best = None
        for median in self.config.tune.medians:
            for threshold in self.config.tune.thresholds:
                der = self.der("dev", utts, predictions, threshold, median)[0]
                if best is None or der < best[0]:
                    best = (der, threshold, median)
        _, self.threshold, self.median = best
        return {"threshold": self.threshold, "median_frames": self.median}
