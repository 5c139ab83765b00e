"""The training loop's step arithmetic (training/loop.py): gradient accumulation and stand-in shares."""
from __future__ import annotations

from pathlib import Path

import torch

from common.distributed import DistEnv
from tests.test_device_resume import _Regression
from training.config import RunConfig
from training.data import DataConfig, SkipReport
from training.loop import Trainer


def _grads(batches: list[dict], accum: int) -> torch.Tensor:
    """The gradient the optimizer step sees (captured between backward and the step) after ``batches``."""
    torch.manual_seed(0)
    cfg = RunConfig(max_steps=2, grad_accum=accum, data=DataConfig(max_batch_seconds=4.0, max_item_seconds=1.0))
    trainer = Trainer(_Regression(), cfg, [(Path(f"a{i}.wav"), 16000) for i in range(4)], Path("unused"),
                      SkipReport(), DistEnv(0, 1, torch.device("cpu")))
    seen = []
    hook = lambda step: seen.append(torch.cat([p.grad.flatten() for p in trainer.objective.parameters()]))
    records = [trainer._train_step(b, hook) for b in batches]
    assert [r is None for r in records] == [True] * (accum - 1) + [False]  # one optimizer step, at the end
    return seen[0]


def _batch(n: int, seed: int, weight: float = 1.0) -> dict:
    wav = torch.randn(n, 400, generator=torch.Generator().manual_seed(seed))
    return {"wav": wav, "wav_lengths": torch.full((n,), 400), "failed": [], "weight": weight}


def test_accumulated_gradient_is_the_mean_of_the_batches_gradients():
    b1, b2 = _batch(2, 1), _batch(3, 2)
    torch.testing.assert_close(_grads([b1, b2], accum=2), (_grads([b1], 1) + _grads([b2], 1)) / 2)


def test_a_stand_in_share_adds_no_gradient():
    assert torch.count_nonzero(_grads([_batch(2, 1, weight=0.0)], 1)) == 0
