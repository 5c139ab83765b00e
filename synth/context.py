"""What every task builder gets: the corpus root, the seed, the size settings and the speaker pool."""
from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any, NamedTuple

from .augment import Session
from .sizes import SizeConfig
from .text import SentenceGenerator
from .voices import Speaker


class TaskDraws(NamedTuple):
    """One task builder's share of the context, keyed by the task's name once: its section of the size
    settings, its private generator and its sentence generator (both seeded from the corpus seed and the name)."""

    size: Any  # e.g. sizes.QuesstSize for "quesst"
    rng: random.Random
    text: SentenceGenerator


@dataclasses.dataclass
class Context:
    root: Path
    seed: int
    size: SizeConfig
    speakers: list[Speaker]

    def rng(self, task: str) -> random.Random:
        """A generator private to ``task``: one task's plan never shifts because another task changed."""
        return random.Random(f"{self.seed}-{task}")

    def sentences(self, task: str) -> SentenceGenerator:
        return SentenceGenerator(self.rng(f"{task}-text"))

    def draws(self, task: str) -> TaskDraws:
        """``(size section, rng, sentences)`` of ``task`` (a field name of :class:`SizeConfig`)."""
        return TaskDraws(getattr(self.size, task), self.rng(task), self.sentences(task))

    def speaker_groups(self, task: str, counts: list[int], espeak_only: bool = False) -> list[list[Speaker]]:
        """Disjoint groups of ``counts[i]`` speakers drawn for ``task`` (deterministic per seed and task)."""
        pool = [s for s in self.speakers if s.engine == "espeak-ng" or not espeak_only]
        if sum(counts) > len(pool):
            raise ValueError(f"{task}: needs {sum(counts)} distinct speakers, the pool has {len(pool)}")
        pool = self.rng(f"{task}-speakers").sample(pool, sum(counts))
        groups, start = [], 0
        for n in counts:
            groups.append(sorted(pool[start:start + n], key=lambda s: s.name))
            start += n
        return groups

    def session(self, task: str, name: str) -> Session:
        """The recording session ``name`` of ``task`` (its channel and gain; see :class:`augment.Session`)."""
        return Session.of(self.seed, task, name)
