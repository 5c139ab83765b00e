"""--upstream-trainable: the upstream trains in train mode with its own lr/warm-up, its CNN front end frozen unless
asked; the fine-tuned upstream is saved in our format and, for ASR with a linear head on the last layer, exported
as a transformers HubertForCTC dir that decodes like the run."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import transformers

from benchmark.engine import RunOptions, run_task
from common.audio import load_audio
from common.checkpoint import load_checkpoint
from tasks.asr import chars_to_words
from tests.fixtures.datasets import write_librispeech
from tests.fixtures.upstreams import perturb_, tiny_config
from upstream import build_upstream
from upstream.checkpoints import save_upstream
from upstream.hubert import HubertModel, HubertUpstream


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("finetune")
    write_librispeech(root / "data")
    torch.manual_seed(0)
    cfg = dataclasses.replace(tiny_config(), dropout=0.1, attention_dropout=0.1)
    save_upstream(HubertUpstream(perturb_(HubertModel(cfg))), root / "upstream")
    return root


def fine_tune(setup: Path, out: str, *overrides: str, layer: int | None = 2, steps: int = 3) -> Path:
    opts = RunOptions(upstream=str(setup / "upstream"), task="asr", data_root=setup / "data",
                      results_dir=setup / out, max_steps=steps, device="cpu", upstream_trainable=True, layer=layer,
                      overrides=["head.kind=linear", "optimizer.lr=1e-2", "upstream_optimizer.lr=1e-3",
                                 "upstream_optimizer.warmup_steps=2", f"train.eval_every={steps}",
                                 # SUPERB's masks (up to 40 frames) would blank these 15-frame tones entirely
                                 "specaug.enabled=false", *overrides])
    return Path(run_task(opts)["run_dir"])


def test_fine_tuning_trains_the_upstream_in_train_mode_with_its_own_lr(setup, monkeypatch):
    modes = []
    original = HubertUpstream._run

    def recording_run(self, wavs):
        modes.append((self.model.training, torch.is_grad_enabled()))
        return original(self, wavs)

    monkeypatch.setattr(HubertUpstream, "_run", recording_run)
    run_dir = fine_tune(setup, "frozen_cnn")
    assert (True, True) in modes  # training steps: dropout on, gradients flowing
    assert (False, False) in modes  # dev/test: eval mode, no gradients
    before, after = build_upstream(setup / "upstream"), build_upstream(run_dir / "upstream")
    b, a = before.model.state_dict(), after.model.state_dict()
    assert all(torch.equal(b[k], a[k]) for k in b if k.startswith("front_end."))  # frozen by default
    assert any(not torch.equal(b[k], a[k]) for k in b if k.startswith("encoder.layers."))
    groups = load_checkpoint(run_dir / "checkpoints" / "last.pt")["optimizer"]["param_groups"]
    assert len(groups) == 2
    assert groups[1]["lr"] == pytest.approx(1e-3) and groups[0]["lr"] == pytest.approx(1e-2)  # after warm-up


def test_unfreeze_front_end_trains_the_cnn(setup):
    run_dir = fine_tune(setup, "open_cnn", "upstream_optimizer.freeze_front_end=false", steps=2)
    b = build_upstream(setup / "upstream").model.state_dict()
    a = build_upstream(run_dir / "upstream").model.state_dict()
    assert any(not torch.equal(b[k], a[k]) for k in b if k.startswith("front_end."))


def test_asr_export_is_a_hubert_for_ctc_that_decodes_like_the_run(setup):
    run_dir = fine_tune(setup, "export")
    export = run_dir / "transformers_ctc"
    model = transformers.HubertForCTC.from_pretrained(export).eval()
    tokenizer = transformers.Wav2Vec2CTCTokenizer.from_pretrained(export)
    extractor = transformers.Wav2Vec2FeatureExtractor.from_pretrained(export)
    ours = [json.loads(line) for line in (run_dir / "predictions" / "test.jsonl").read_text().splitlines()]
    assert ours
    ids = {p.stem: p for p in (setup / "data" / "LibriSpeech" / "test-clean").rglob("*.flac")}
    # the run's own log-probabilities, to compare per frame (predictions may be empty strings for a tiny model)
    up = build_upstream(run_dir / "upstream")
    for row in ours:
        wav = load_audio(ids[row["id"]])
        inputs = extractor(wav.numpy(), sampling_rate=16000, return_tensors="pt")
        with torch.no_grad():
            logits = model(inputs.input_values).logits[0]
            hidden = up([wav]).hidden_states[-1][0]
        assert (logits - model.lm_head(hidden)).abs().max().item() < 1e-4
        text = tokenizer.decode(logits.argmax(-1))
        assert text == " ".join(chars_to_words(row["prediction"].split()))


def test_no_export_without_a_linear_head_on_the_last_layer(setup):
    run_dir = fine_tune(setup, "weighted", layer=None, steps=1)
    assert (run_dir / "upstream" / "model.safetensors").is_file()
    assert not (run_dir / "transformers_ctc").exists()


def test_unfreeze_front_end_needs_upstream_trainable(setup, capsys):
    import run_benchmark

    rc = run_benchmark.main(["--upstream", str(setup / "upstream"), "--task", "asr", "--data-root",
                             str(setup / "data"), "--unfreeze-front-end", "--results-dir", str(setup / "x")])
    assert rc == 2 and "--unfreeze-front-end only applies with --upstream-trainable" in capsys.readouterr().err
