"""The GPU check: one command that exercises what a GPU run depends on and prints one table (and writes JSON).

    python bench/gpu_check.py                 # on a CUDA GPU: paper-scale shapes, at most ~8 min on one H100
    python bench/gpu_check.py --tiny          # the same steps on the CPU with tiny models (< 2 min; tested in CI)

Steps (random weights throughout; nothing is downloaded):
  1. extraction throughput, ours (``HubertUpstream``, packed) vs transformers' ``HubertModel`` (padded batch with
     an attention mask), HuBERT Base and Large architectures, at fp32 (TF32 off), TF32 and bf16 autocast: audio
     seconds per second and the largest feature difference from ours at fp32;
  2. one distillation step at the paper's scale (HuBERT-Base-size teacher, 24 utterances of up to 15 s; s3prl
     ``pretrain/distiller/config_runner.yaml``): teacher forward + student forward/backward + AdamW step, ours
     (``DistillObjective``, configs/distill/distilhubert.yaml) vs s3prl 0.4.18's ``DistillerModel`` fed the same
     teacher (ours) — at TF32 and bf16;
  3. an ASR head step (weighted sum + SUPERB's BiLSTM CTC head + AdamW) from cached features (fp16 on the host, as
     the feature cache holds them, copied and converted on the device) vs live features (the upstream in the loop);
  4. resume of a short distillation on the device (``run_distill.py``: 2 steps, then ``--resume`` to 4, against 4
     straight): the largest weight difference;
  5. peak device memory of each step (``torch.cuda.max_memory_allocated``; "n/a" on the CPU).
Each time is the median of ``--repeats`` after one warm-up, the device synchronised around every timed call.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.audio import SAMPLE_RATE  # noqa: E402
from common.precision import autocast, set_tf32  # noqa: E402
from upstream.builtin import HUBERT_BASE, HUBERT_LARGE, random_upstream  # noqa: E402
from upstream.hubert import HubertConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY_CONV = ((32, 10, 5),) + ((32, 3, 2),) * 4 + ((32, 2, 2),) * 2
TINY_BASE = HubertConfig(conv_layers=TINY_CONV, embed_dim=32, ffn_dim=64, heads=2, layers=6, conv_pos=8,
                         conv_pos_groups=4)
TINY_LARGE = dataclasses.replace(TINY_BASE, extractor_mode="layer_norm", conv_bias=True, embed_dim=48, ffn_dim=96,
                                 heads=3, layer_norm_first=True)
# precision name -> (TF32 on, autocast precision)
PRECISIONS = {"fp32": (False, "fp32"), "tf32": (True, "fp32"), "bf16": (True, "bf16")}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls after one warm-up, synchronised around each."""
    fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def batch(n: int, lo: float, hi: float, seed: int = 0) -> list[torch.Tensor]:
    """``n`` white-noise waveforms (amplitude 0.1) with lengths spread over ``lo``..``hi`` seconds."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(int(s * SAMPLE_RATE), generator=gen) * 0.1 for s in torch.linspace(lo, hi, n).tolist()]


def row(step: str, setting: str, ours: float | None, ref: float | None, unit: str, peak: float | None,
        note: str = "") -> dict:
    ratio = ours / ref if ours and ref and unit.endswith("/s") else (ref / ours if ours and ref else None)
    return {"step": step, "setting": setting, "ours": ours, "reference": ref, "unit": unit,
            "ours_vs_reference": ratio, "peak_mb": peak, "note": note}


# ------------------------------------------------------------------------------------------------ 1. extraction
def check_extraction(device: torch.device, archs: dict, wavs: list[torch.Tensor], repeats: int) -> list[dict]:
    sys.path.insert(0, str(REPO / "bench"))
    from upstream_speed import to_transformers

    rows, audio = [], sum(w.numel() for w in wavs) / SAMPLE_RATE
    on_device = [w.to(device) for w in wavs]
    padded = torch.nn.utils.rnn.pad_sequence(on_device, batch_first=True)
    mask = torch.nn.utils.rnn.pad_sequence([torch.ones(w.numel(), dtype=torch.long, device=device)
                                            for w in wavs], batch_first=True)
    longest = max(range(len(wavs)), key=lambda i: wavs[i].numel())
    for name, cfg in archs.items():
        ours_up = random_upstream(cfg).to(device).eval()
        hf = to_transformers(ours_up.cpu()).to(device)
        ours_up.to(device)
        reference = None
        for precision, (tf32, amp) in PRECISIONS.items():
            set_tf32(tf32)
            out = {}

            def ours():
                with torch.inference_mode(), autocast(amp, device):
                    out["ours"] = ours_up(on_device).hidden_states[-1][longest]

            def theirs():
                with torch.inference_mode(), autocast(amp, device):
                    out["hf"] = hf(padded, attention_mask=mask).last_hidden_state[longest]

            reset_peak(device)
            t_ours = timed(ours, device, repeats)
            peak = peak_mb(device)
            t_hf = timed(theirs, device, repeats)
            feats = out["ours"].float()
            if reference is None:
                reference = feats
            diff = (feats - reference).abs().max().item()
            n = min(len(feats), len(out["hf"]))
            vs_hf = (feats[:n] - out["hf"][:n].float()).abs().max().item()
            rows.append(row("extraction", f"{name} {precision}", audio / t_ours, audio / t_hf, "audio s/s", peak,
                            f"max|Δ| vs our fp32 {diff:.1e}, vs transformers {vs_hf:.1e}"))
        del hf, ours_up
    set_tf32(True)
    return rows


# ------------------------------------------------------------------------------------------------ 2. distillation
def check_distillation(device: torch.device, teacher_cfg: HubertConfig, wavs: list[torch.Tensor], repeats: int,
                       tiny: bool) -> list[dict]:
    from common.config import load_config
    from distill.config import DistillConfig
    from distill.objectives import DistillObjective
    from s3prl.upstream.distiller.model import DistillerConfig, DistillerModel

    sys.path.insert(0, str(REPO / "bench"))
    from distill_speed import S3PRL_DISTILHUBERT

    teacher = random_upstream(teacher_cfg).to(device).eval()
    cfg = load_config(DistillConfig, REPO / "configs" / "distill" / "distilhubert.yaml")
    objective = DistillObjective(cfg, teacher).to(device).train()
    s3prl_cfg = dict(S3PRL_DISTILHUBERT)
    if tiny:  # s3prl's model config at the tiny teacher's width and depth
        s3prl_cfg.update(extractor_conv_feature_layers=str(list(TINY_CONV)), encoder_embed_dim=teacher_cfg.embed_dim,
                         encoder_ffn_embed_dim=teacher_cfg.ffn_dim, encoder_attention_heads=teacher_cfg.heads,
                         final_dim=teacher_cfg.embed_dim, pred_layer_id=[2, 4, 6], conv_pos=teacher_cfg.conv_pos,
                         conv_pos_groups=teacher_cfg.conv_pos_groups)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its config
        s3prl = DistillerModel(DistillerConfig(s3prl_cfg)).to(device).train()
    ours_opt = torch.optim.AdamW([p for p in objective.parameters() if p.requires_grad], lr=2e-4)
    s3prl_opt = torch.optim.AdamW(s3prl.parameters(), lr=2e-4)
    wav = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True).to(device)
    lengths = torch.tensor([w.numel() for w in wavs])
    data = {"wav": wav, "wav_lengths": lengths.to(device)}
    pad_mask = (torch.arange(wav.shape[1])[None] < lengths[:, None]).long().to(device)
    layers = [2, 4, 6] if tiny else [4, 8, 12]
    rows = []
    for precision in ("tf32", "bf16"):
        tf32, amp = PRECISIONS[precision]
        set_tf32(tf32)

        def ours():
            with autocast(amp, device):
                out = objective(data)
            (out["loss_sum"].float() / out["frames"].clamp(min=1)).backward()
            ours_opt.step()
            ours_opt.zero_grad(set_to_none=True)

        def theirs():  # s3prl pretrain/distiller/pretrain_expert.py: teacher under no_grad, L1 + cosine, step
            with autocast(amp, device):
                with torch.no_grad():
                    states = teacher.model.encode(wav, lengths)[0]
                    targets = torch.stack([states[i] for i in layers], dim=1)
                _, _, pred, _ = s3prl(wav, pad_mask)
            frames = min(pred.shape[2], targets.shape[2])
            pred, target = pred[:, :, :frames].float(), targets[:, :, :frames].float()
            loss = F.l1_loss(pred, target) - F.logsigmoid(F.cosine_similarity(pred, target, dim=-1)).mean()
            loss.backward()
            s3prl_opt.step()
            s3prl_opt.zero_grad(set_to_none=True)

        reset_peak(device)
        t_ours = timed(ours, device, repeats)
        peak = peak_mb(device)
        note = "reference: s3prl DistillerModel"
        try:
            t_s3prl = timed(theirs, device, repeats)
        except RuntimeError as e:  # s3prl's in-place padding fill breaks under CPU bf16 autocast
            t_s3prl, note = None, f"s3prl failed: {str(e).splitlines()[0][:60]}"
            s3prl_opt.zero_grad(set_to_none=True)
        rows.append(row("distillation step", f"{len(wavs)} utts ≤ {max(w.numel() for w in wavs) / SAMPLE_RATE:.0f} s "
                        f"{precision}", t_ours, t_s3prl, "s/step", peak, note))
    set_tf32(True)
    return rows


# ------------------------------------------------------------------------------------------------ 3. ASR head
def check_asr_head(device: torch.device, cfg: HubertConfig, wavs: list[torch.Tensor], repeats: int,
                   tiny: bool) -> list[dict]:
    from downstream.ctc_heads import BiLSTMCTCHead, ctc_loss
    from downstream.weighted_sum import WeightedSum

    upstream = random_upstream(cfg).to(device).eval()
    on_device = [w.to(device) for w in wavs]
    with torch.inference_mode():
        out = upstream(on_device)
    cached = torch.stack(out.hidden_states).to(torch.float16).cpu()  # [layer, batch, frame, dim], as the cache
    if device.type == "cuda":
        cached = cached.pin_memory()
    lengths = out.lengths.cpu()
    size = 32 if tiny else 1024
    wsum = WeightedSum(len(out.hidden_states)).to(device)
    head = BiLSTMCTCHead(cfg.embed_dim, 32, proj_dim=size, hidden_size=size).to(device)
    opt = torch.optim.AdamW(list(wsum.parameters()) + list(head.parameters()), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    targets = [torch.randint(1, 32, (max(1, int(n) // 4),), generator=gen).tolist() for n in lengths]

    def step(features: torch.Tensor) -> None:
        loss = ctc_loss(head(wsum(features), lengths.to(device)), lengths, targets)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def from_cache():
        step(cached.to(device, non_blocking=True).float())

    def live():
        with torch.no_grad():
            states = upstream(on_device).hidden_states
        step(torch.stack(states))

    reset_peak(device)
    t_cached = timed(from_cache, device, repeats)
    peak = peak_mb(device)
    t_live = timed(live, device, repeats)
    return [row("ASR head step", f"{len(wavs)} utts, cached vs live", t_cached, t_live, "s/step", peak,
                "reference: live features (upstream in the loop)")]


# ------------------------------------------------------------------------------------------------ 4. resume
def check_resume(device: torch.device) -> list[dict]:
    import safetensors.torch
    import soundfile as sf

    import run_distill
    from upstream.checkpoints import save_upstream

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "audio").mkdir()
        for i, w in enumerate(batch(6, 1.0, 1.5, seed=1)):
            sf.write(root / "audio" / f"utt{i}.wav", w.numpy(), SAMPLE_RATE)
        save_upstream(random_upstream(dataclasses.replace(TINY_BASE, dropout=0.0, attention_dropout=0.0,
                                                          feat_proj_dropout=0.0)), root / "teacher")

        def distil(out: str, steps: int, *extra: str) -> None:
            args = ["--config", "configs/distill/distilhubert.yaml", "--teacher", str(root / "teacher"),
                    "--data", str(root / "audio"), "--output", str(root / out), "--max-steps", str(steps),
                    "-o", f"run.device={device}", "-o", "run.data.max_batch_seconds=4.0",
                    "-o", "run.data.max_item_seconds=1.5", "-o", "run.checkpoint_every=1", *extra]
            with contextlib.redirect_stderr(io.StringIO()):
                code = run_distill.main(args)
            if code != 0:
                raise RuntimeError(f"run_distill.py {' '.join(args)} exited {code}")

        reset_peak(device)
        start = time.perf_counter()
        distil("straight", 4)
        distil("resumed", 2)
        distil("resumed", 4, "--resume")
        seconds = time.perf_counter() - start
        a = safetensors.torch.load_file(root / "straight" / "model.safetensors")
        b = safetensors.torch.load_file(root / "resumed" / "model.safetensors")
        diff = max((a[k] - b[k]).abs().max().item() for k in a)
    return [row("resume", "distil 2 + resume to 4 vs 4 straight", seconds, None, "s (3 runs)", peak_mb(device),
                f"max|Δweight| {diff:.1e}" + (" OK" if diff < 1e-4 else " MISMATCH"))]


def print_table(rows: list[dict], header: str) -> None:
    print(header)
    print(f"| {'step':<18} | {'setting':<34} | {'ours':>10} | {'reference':>10} | {'unit':<10} | {'ours vs ref':>11} "
          f"| {'peak MB':>8} | note")
    print("|" + "|".join("-" * w for w in (20, 36, 12, 12, 12, 13, 10, 6)) + "|")
    for r in rows:
        fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else "n/a"
        ratio = f"{r['ours_vs_reference']:.2f}x" if r["ours_vs_reference"] else "n/a"
        print(f"| {r['step']:<18} | {r['setting']:<34} | {fmt(r['ours']):>10} | {fmt(r['reference']):>10} | "
              f"{r['unit']:<10} | {ratio:>11} | {fmt(r['peak_mb']):>8} | {r['note']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--tiny", action="store_true", help="tiny models on the CPU (a dry run of every step)")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu (--tiny: cpu)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per contender (default 5; tiny 2)")
    parser.add_argument("--json", type=Path, default=Path("results/gpu_check.json"), help="where the rows go")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cpu" if args.tiny or not torch.cuda.is_available() else "cuda"))
    repeats = args.repeats or (2 if args.tiny else 5)
    if args.tiny:
        torch.set_num_threads(1)
        archs = {"base(tiny)": TINY_BASE, "large(tiny)": TINY_LARGE}
        extract_wavs, distill_wavs, asr_wavs, teacher = batch(3, 0.5, 1.5), batch(4, 0.5, 1.5), batch(3, 0.5, 1.5), \
            TINY_BASE
    else:
        archs = {"hubert_base": HUBERT_BASE, "hubert_large": HUBERT_LARGE}
        extract_wavs, distill_wavs, asr_wavs, teacher = batch(16, 2, 15), batch(24, 2, 15), batch(8, 2, 15), \
            HUBERT_BASE
    started = time.time()
    rows = check_extraction(device, archs, extract_wavs, repeats)
    rows += check_distillation(device, teacher, distill_wavs, repeats, args.tiny)
    rows += check_asr_head(device, teacher, asr_wavs, repeats, args.tiny)
    rows += check_resume(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    scale = "tiny models" if args.tiny else "paper scale"
    header = (f"gpu_check on {name} ({device}), torch {torch.__version__}, {scale}, median of {repeats}, "
              f"{time.time() - started:.0f} s")
    print_table(rows, header)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"header": header, "device": name, "tiny": args.tiny, "rows": rows}, indent=2)
                         + "\n")
    print(f"written: {args.json}")
    return 0 if all("MISMATCH" not in r["note"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
