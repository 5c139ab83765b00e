"""Distillation step time: our DistilHuBERT recipe vs s3prl's own ``DistillerModel``, side by side in one run.

Both students have DistilHuBERT's shape (HuBERT-Base CNN + 2 layers x 768 + 3 heads predicting teacher layers
4/8/12; ours from ``configs/distill/distilhubert.yaml``, s3prl's from its published model config), take the same
padded waveform batch and the same teacher hidden states (computed once, ahead), and are timed doing one
training step's forward + loss + backward (L1 + −log σ(cos) as each defines it; s3prl's averages over padded
frames too, ours over valid frames only); the optimizer step is the same AdamW for both and is left out. The
teacher's forward (HuBERT-Base shape, what every step also pays unless its targets are cached) is timed in the
same rounds and printed separately. Contenders take turns; medians of ``--repeats``; the load average says how
busy the machine was.

    .venv/bin/python bench/distill_speed.py            # 8 utterances of 2-8 s
    .venv/bin/python bench/distill_speed.py --quick    # 4 utterances of 1-3 s
"""
from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.timing import add_batch_options, interleaved_times, load_average, random_batch  # noqa: E402
from common.config import load_config  # noqa: E402
from distill.config import DistillConfig  # noqa: E402
from distill.objectives import DistillObjective  # noqa: E402
from upstream.builtin import HUBERT_BASE, random_upstream  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# s3prl's pretrain/distiller/config_model.yaml (DistilHuBERT), the fields that shape the model
S3PRL_DISTILHUBERT = dict(
    extractor_mode="default", extractor_conv_feature_layers="[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2",
    feature_grad_mult=0.1, conv_pos=128, conv_pos_groups=16, encoder_layers=2, encoder_embed_dim=768,
    encoder_ffn_embed_dim=3072, encoder_attention_heads=12, activation_fn="gelu", layer_norm_first=False,
    dropout=0.1, attention_dropout=0.1, activation_dropout=0.1, final_dim=768, out_layer_type="expand-last",
    n_tasks=3, task_emb_type="expand-last", pred_layer_id=[4, 8, 12], loss_type="l1", cosine_loss=1.0)


def s3prl_student():
    from s3prl.upstream.distiller.model import DistillerConfig, DistillerModel

    with contextlib.redirect_stdout(io.StringIO()):  # it prints its config
        return DistillerModel(DistillerConfig(S3PRL_DISTILHUBERT)).train()


def s3prl_step(model, wav: torch.Tensor, pad_mask: torch.Tensor, targets: torch.Tensor) -> None:
    """s3prl pretrain/distiller/pretrain_expert.py: forward, L1 mean + cosine term mean, backward."""
    feat, _, pred, _ = model(wav, pad_mask)
    frames = min(pred.shape[2], targets.shape[2])
    pred, target = pred[:, :, :frames], targets[:, :, :frames]
    rec = F.l1_loss(pred, target, reduction="none").mean()
    sim = -F.logsigmoid(F.cosine_similarity(pred, target, dim=-1)).mean()
    (rec + sim).backward()
    model.zero_grad(set_to_none=True)


def ours_step(objective: DistillObjective, batch: dict, t_states: list[torch.Tensor], t_len: torch.Tensor) -> None:
    out = objective.forward_with_targets(batch, t_states, t_len)
    (out["loss_sum"] / out["frames"].clamp(min=1)).backward()
    objective.zero_grad(set_to_none=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    add_batch_options(parser, utterances=8, max_seconds=8.0, quick=(4, 1.0, 3.0, 3))
    args = parser.parse_args()
    _, wavs = random_batch(args)
    wav = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)
    lengths = torch.tensor([w.numel() for w in wavs])
    batch = {"wav": wav, "wav_lengths": lengths}

    teacher = random_upstream(HUBERT_BASE)
    cfg = load_config(DistillConfig, REPO / "configs" / "distill" / "distilhubert.yaml")
    objective = DistillObjective(cfg, teacher).train()
    s3prl = s3prl_student()
    with torch.no_grad():
        out = teacher(wavs)
    t_states, t_len = out.hidden_states, out.lengths
    targets = torch.stack([t_states[i] for i in objective.targets], dim=1)  # [batch, 3, frame, 768]
    pad_mask = (torch.arange(wav.shape[1])[None] < lengths[:, None]).long()

    def teacher_forward():
        with torch.no_grad():
            teacher(wavs)

    runs = {"teacher": teacher_forward,
            "ours": lambda: ours_step(objective, batch, t_states, t_len),
            "s3prl": lambda: s3prl_step(s3prl, wav, pad_mask, targets)}
    times = interleaved_times(runs, args.repeats, before_each=lambda: torch.manual_seed(0))
    t = {k: statistics.median(v) for k, v in times.items()}
    print(f"{'model':<14}{'s3prl step s':>14}{'ours step s':>13}{'speed-up':>10}{'teacher fwd s':>15}"
          f"{'teacher share (ours)':>22}")
    print(f"{'distilhubert':<14}{t['s3prl']:>14.2f}{t['ours']:>13.2f}{t['s3prl'] / t['ours']:>9.2f}x"
          f"{t['teacher']:>15.2f}{100 * t['teacher'] / (t['teacher'] + t['ours']):>21.0f}%")
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
