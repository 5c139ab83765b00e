"""SID — speaker identification on VoxCeleb1 (SUPERB protocol).

Protocol: ``iden_split.txt`` (1 train, 2 dev, 3 test) over all 1,251 speakers; mean-pooled linear head over the
speakers seen in training, cross-entropy, random 8 s crops in training (``batch.train_crop_seconds``), whole
utterances at dev/test; metric accuracy %.

Differences from SUPERB (s3prl ``voxceleb1``) and why:
* With the feature cache the 8 s crop is cut from the cached frames of the whole utterance rather than from the
  waveform; with a frame-local upstream the two agree, with a transformer they differ slightly (context beyond the
  crop). ``--no-cache`` crops the waveform as s3prl does.
* Batches are sized by seconds instead of 8 utterances x 4 accumulation.
"""
from __future__ import annotations

from common import datasets
from common.audio import audio_duration

from .base import DatasetNotFoundError, Utterance, require_file
from .classification import ClassificationTask, PooledTaskConfig
from .listfile import read_text_lines
from .registry import register_task

VOX_DIR = datasets.VOXCELEB1
SPLIT_CODE = {"train": "1", "dev": "2", "test": "3"}


@register_task("sid")
class SpeakerIdentification(ClassificationTask):
    config_class = PooledTaskConfig
    dataset_dirs = (VOX_DIR,)
    layout_help = f"{VOX_DIR}/iden_split.txt + {VOX_DIR}/{{dev,test}}/wav/<spk>/<video>/<NNNNN>.wav"

    def __init__(self, config: PooledTaskConfig, data_root):
        super().__init__(config, data_root)
        self._lines: list[tuple[str, str]] | None = None

    def _split_lines(self) -> list[tuple[str, str]]:
        if self._lines is None:
            path = require_file(self.data_root / VOX_DIR / "iden_split.txt", self.name, "identification split")
            lines, problems, first = [], [], {}
            for n, line in enumerate(read_text_lines(path), 1):
                if not line.strip():
                    continue
                parts = line.split()
                if len(parts) != 2 or parts[0] not in SPLIT_CODE.values():
                    problems.append(f"{path}:{n}: expected '<1|2|3> <spk>/<video>/<file>.wav', got {line!r}")
                    continue
                if parts[1] in first:  # twice in one split, or in two splits (leakage): both are errors
                    problems.append(f"{path}:{n}: {parts[1]} is already listed on line {first[parts[1]]}")
                    continue
                first[parts[1]] = n
                lines.append((parts[0], parts[1]))
            if problems:
                more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
                raise ValueError("; ".join(problems[:5]) + more)
            self._lines = lines
            self.classes = sorted({rel.split("/")[0] for code, rel in lines if code == SPLIT_CODE["train"]})
        return self._lines

    def _audio(self, rel: str):
        """The file ``rel`` names under ``dev/wav`` or ``test/wav``; None when it is in neither."""
        for part in ("dev", "test"):
            path = self.data_root / VOX_DIR / part / "wav" / rel
            if path.is_file():
                return path
        return None

    def load_split(self, split: str) -> list[Utterance]:
        """The split's utterances; raises :class:`DatasetNotFoundError` naming every listed file that is missing."""
        code = SPLIT_CODE[split]
        out, missing = [], []
        for c, rel in self._split_lines():
            if c == code:
                path = self._audio(rel)
                if path is None:
                    missing.append(rel)
                    continue
                spk = rel.split("/")[0]
                out.append(Utterance(id=rel, path=path, duration=audio_duration(path), speaker=spk, label=spk))
        if missing:
            raise DatasetNotFoundError(f"task 'sid': {len(missing)} file(s) listed in iden_split.txt are in neither "
                                       f"{self.data_root / VOX_DIR / 'dev/wav'} nor "
                                       f"{self.data_root / VOX_DIR / 'test/wav'}: " + ", ".join(missing[:40])
                                       + (f", ... and {len(missing) - 40} more" if len(missing) > 40 else ""))
        return out

    def build_head(self, input_dim: int):
        self._split_lines()  # the class list comes from the train lines
        return super().build_head(input_dim)
