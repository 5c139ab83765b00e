"""Resume and label extraction on a device that is not the CPU, without a GPU: ``meta`` stands in for cuda.

On a GPU a checkpoint mapped to ``cuda:N`` put the RNG states there and ``torch.set_rng_state`` raised ``TypeError``
(scale review, risk 1); the iteration-1 model on cuda got CPU audio and its CUDA features met ``.numpy()`` (risk 2).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from common import checkpoint
from common.distributed import DistEnv
from training.config import RunConfig
from training.data import DataConfig, SkipReport
from training.loop import Trainer


class _Regression(nn.Module):
    """The smallest objective of the loop's contract (training/loop.py): a linear map of the waveform's mean."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(1, 3)

    def forward(self, batch: dict) -> dict:
        x = batch["wav"].mean(dim=1, keepdim=True)
        loss = (self.proj(x) ** 2).sum()
        return {"loss_sum": loss, "frames": torch.tensor(float(x.shape[0]), device=x.device), "parts": {}}


def _trainer(out: Path, device: str) -> Trainer:
    cfg = RunConfig(max_steps=3, data=DataConfig(max_batch_seconds=4.0, max_item_seconds=1.0))
    entries = [(Path(f"a{i}.wav"), 16000) for i in range(4)]  # the sampler reads lengths only
    return Trainer(_Regression(), cfg, entries, out, SkipReport(), DistEnv(0, 1, torch.device(device)))


@pytest.mark.filterwarnings("ignore:for proj")  # a copy into meta parameters is a no-op
def test_a_checkpoint_resumes_on_another_device_with_its_rng_state(tmp_path):
    cpu = _trainer(tmp_path, "cpu")
    batch = {"wav": torch.randn(2, 800), "wav_lengths": torch.tensor([800, 800]), "failed": []}
    cpu._train_step(batch, None)  # optimizer state (Adam moments) to carry over
    torch.manual_seed(1234)
    expected = torch.get_rng_state()
    cpu.save_checkpoint()
    torch.manual_seed(99)

    moved = _trainer(tmp_path, "meta")  # parameters on a non-CPU device, as on cuda:N
    assert moved.load_checkpoint()
    assert torch.equal(torch.get_rng_state(), expected)
    assert moved.step == 1
    moment = moved.optimizer.state_dict()["state"][0]["exp_avg"]
    assert moment.device.type == "meta"  # optimizer state follows its parameters


def test_cuda_rng_states_are_saved_and_restored_on_the_cpu(monkeypatch):
    saved_cuda = [torch.full((16,), 7, dtype=torch.uint8), torch.full((16,), 9, dtype=torch.uint8)]
    restored = {}
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: saved_cuda)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, i: restored.__setitem__(i, s))
    state = checkpoint.rng_state()
    assert [torch.equal(a, b) for a, b in zip(state["cuda"], saved_cuda)] == [True, True]
    checkpoint.set_rng_state(state)
    assert list(restored) == [0] and restored[0].device.type == "cpu"  # only the GPUs this machine has
    assert torch.equal(restored[0], saved_cuda[0])
