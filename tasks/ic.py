"""IC — intent classification on Fluent Speech Commands (SUPERB protocol).

Protocol: ``data/{train,valid,test}_data.csv`` give train/dev/test; an intent is three slots (action, object,
location). Mean-pooled linear head with one linear output per slot (Linear(D -> 256), mean pool, 3 linears), loss =
sum of the three cross-entropies; metric accuracy % where an utterance counts only if all three slots are right.

Differences from SUPERB (s3prl ``fluent_commands``) and why:
* The slot vocabularies are built from the union of the three CSVs; s3prl builds them from the train CSV only
  (``fluent_commands/expert.py:57-64``), where a value missing from train would crash its label lookup. Here it is a
  wrong prediction instead. No effect on FSC, where every value occurs in train (24 values either way).
* Batches are sized by seconds instead of 32 utterances.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from common import datasets
from common.audio import audio_duration
from downstream.pooled_linear import PooledLinearHead

from .base import Task, Utterance, accuracy_percent, require_file
from .classification import PooledTaskConfig
from .registry import register_task

FSC_DIR = datasets.FLUENT
SLOTS = ("action", "object", "location")
CSV = {"train": "train_data.csv", "dev": "valid_data.csv", "test": "test_data.csv"}


@register_task("ic")
class IntentClassification(Task):
    config_class = PooledTaskConfig
    primary_metric = "accuracy"
    dataset_dirs = (FSC_DIR,)
    layout_help = (f"{FSC_DIR}/data/{{train,valid,test}}_data.csv (,path,speakerId,transcription,action,object,"
                   f"location) + {FSC_DIR}/wavs/speakers/<speakerId>/<uttid>.wav")

    def __init__(self, config: PooledTaskConfig, data_root):
        super().__init__(config, data_root)
        self._tables: dict[str, Any] = {}
        self._slot_values: list[list[str]] | None = None

    def _table(self, split: str):
        import pandas as pd

        if split not in self._tables:
            path = require_file(self.data_root / FSC_DIR / "data" / CSV[split], self.name, f"{split} list")
            try:  # utf-8-sig: a BOM written by a spreadsheet must not rename the first column
                table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
            except pd.errors.EmptyDataError:
                raise ValueError(f"{path}: the file is empty (expected a header line ,path,speakerId,transcription,"
                                 f"action,object,location and one row per utterance)") from None
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}: not UTF-8 text (byte offset {e.start}); save the file as UTF-8") from None
            except pd.errors.ParserError as e:
                raise ValueError(f"{path}: malformed CSV ({str(e).strip()})") from None
            missing = {"path", "speakerId", "transcription", *SLOTS} - set(table.columns)
            if missing:
                raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
            repeated = table["path"].duplicated(keep="first")
            if repeated.any():
                first_line = {p: i + 2 for i, p in reversed(list(enumerate(table["path"])))}
                shown = [f"{path}:{i + 2}: {p} repeats line {first_line[p]}"
                         for i, p in zip(table.index[repeated], table["path"][repeated])]
                raise ValueError(f"{int(repeated.sum())} duplicated row(s): " + "; ".join(shown[:3]))
            self._tables[split] = table
        return self._tables[split]

    def slot_values(self) -> list[list[str]]:
        if self._slot_values is None:
            self._slot_values = [sorted(set().union(*(set(self._table(s)[slot]) for s in CSV))) for slot in SLOTS]
        return self._slot_values

    def load_split(self, split: str) -> list[Utterance]:
        root = self.data_root / FSC_DIR
        utts = []
        for row in self._table(split).itertuples(index=False):
            wav = root / row.path
            utts.append(Utterance(id=row.path, path=wav, duration=audio_duration(wav), speaker=row.speakerId,
                                  transcript=row.transcription, label=(row.action, row.object, row.location)))
        return utts

    def build_head(self, input_dim: int) -> PooledLinearHead:
        """Output: one ``logits [batch, values of that slot]`` per slot (action, object, location), mean-pooled."""
        return PooledLinearHead(input_dim, [len(v) for v in self.slot_values()], self.config.head.proj_dim)

    def loss(self, output: list[torch.Tensor], lengths: torch.Tensor, utts: Sequence[Utterance]) -> torch.Tensor:
        total = 0.0
        for k, values in enumerate(self.slot_values()):
            index = {v: i for i, v in enumerate(values)}
            target = torch.tensor([index[u.label[k]] for u in utts], device=output[k].device)
            total = total + F.cross_entropy(output[k], target)
        return total

    def predict(self, output: list[torch.Tensor], lengths: torch.Tensor, utts: Sequence[Utterance]) -> list[Any]:
        picks = [o.argmax(-1).tolist() for o in output]
        values = self.slot_values()
        return [tuple(values[k][picks[k][b]] for k in range(len(SLOTS))) for b in range(len(utts))]

    def prediction_details(self, output: list[torch.Tensor], lengths: torch.Tensor,
                           utts: Sequence[Utterance]) -> list[dict]:
        values = self.slot_values()
        probs = [torch.softmax(o.float(), -1).tolist() for o in output]
        return [{"probabilities": {slot: {v: round(p, 6) for v, p in zip(values[k], probs[k][b])}
                                   for k, slot in enumerate(SLOTS)}} for b in range(len(utts))]

    def score(self, split: str, utts: Sequence[Utterance], predictions: Sequence[Any]) -> dict[str, float]:
        return {"accuracy": accuracy_percent([tuple(u.label) for u in utts], [tuple(p) for p in predictions])}
