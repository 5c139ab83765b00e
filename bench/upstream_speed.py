"""Our HuBERT-family extraction vs transformers' HubertModel: same weights, same variable-length batch, same CPU.

For HuBERT-Base and DistilHuBERT shapes (random weights, copied into transformers through ``export_hf``'s key
map) this times, side by side in one process (best of ``--repeats``):
  * transformers: one padded batch with an attention mask (its correct batched use), under inference_mode;
  * ours, one padded batch (``bucket_fill=0``);
  * ours, default extraction (sorted by length, similar lengths batched together).
the three taking turns, and prints seconds, ours/transformers speed-up and real-time factors (compute seconds /
audio seconds). The demo pair (hubert_mini vs distilhubert_mini) is timed too, for the "student ≥ 2x faster" target.

    .venv/bin/python bench/upstream_speed.py            # 16 utterances of 2-15 s
    .venv/bin/python bench/upstream_speed.py --quick    # 6 utterances of 1-4 s
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.audio import SAMPLE_RATE  # noqa: E402
from upstream.builtin import DISTILHUBERT, DISTILHUBERT_MINI, HUBERT_BASE, HUBERT_MINI, random_upstream  # noqa: E402
from upstream.convert import config_to_hf, state_to_hf  # noqa: E402
from upstream.hubert import HubertUpstream  # noqa: E402


def to_transformers(up: HubertUpstream):
    import transformers

    model = transformers.HubertModel(transformers.HubertConfig(**config_to_hf(up.cfg)))
    missing, unexpected = model.load_state_dict(state_to_hf(up.model.state_dict()), strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    return model.eval()


def interleaved_best(runs: dict, repeats: int) -> dict[str, float]:
    """Best wall time of each callable; the callables take turns so that load from other processes on a shared
    machine hits them alike."""
    best = {name: float("inf") for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def transformers_runner(model, wavs: list[torch.Tensor], result: dict):
    padded = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)
    mask = torch.nn.utils.rnn.pad_sequence([torch.ones(w.numel(), dtype=torch.long) for w in wavs], batch_first=True)

    def run():
        with torch.inference_mode():
            result["transformers"] = model(padded, attention_mask=mask).last_hidden_state
    return run


def ours_runner(up: HubertUpstream, wavs: list[torch.Tensor], bucket_fill: float, result: dict,
                key: str):
    def run():
        up.bucket_fill = bucket_fill
        result[key] = up(wavs).hidden_states[-1]
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="6 utterances of 1-4 s, 2 repeats")
    parser.add_argument("--utterances", type=int, default=16)
    parser.add_argument("--min-seconds", type=float, default=2.0)
    parser.add_argument("--max-seconds", type=float, default=15.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.quick:
        args.utterances, args.min_seconds, args.max_seconds, args.repeats = 6, 1.0, 4.0, 2
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    seconds = torch.linspace(args.min_seconds, args.max_seconds, args.utterances)
    seconds = seconds[torch.randperm(args.utterances, generator=gen)]
    wavs = [torch.randn(int(s * SAMPLE_RATE), generator=gen) * 0.1 for s in seconds]
    audio = float(seconds.sum())
    print(f"batch: {len(wavs)} utterances, {args.min_seconds:g}-{args.max_seconds:g} s, {audio:.1f} s of audio; "
          f"{args.threads} threads; best of {args.repeats}; torch {torch.__version__}")
    longest = int(torch.argmax(seconds))

    print(f"{'model':<14}{'transformers s':>16}{'ours 1-batch s':>16}{'ours bucketed s':>17}"
          f"{'speed-up':>10}{'RTF ours':>10}{'RTF HF':>8}{'max|diff|':>11}")
    ours_time = {}
    for name, cfg in (("hubert_base", HUBERT_BASE), ("distilhubert", DISTILHUBERT)):
        up = random_upstream(cfg)
        hf, out = to_transformers(up), {}
        t = interleaved_best({"transformers": transformers_runner(hf, wavs, out),
                              "one_batch": ours_runner(up, wavs, 0.0, out, "one_batch"),
                              "bucketed": ours_runner(up, wavs, 0.7, out, "bucketed")}, args.repeats)
        n = int(up.frames_for(torch.tensor(wavs[longest].numel())))
        diff = max((out[k][longest, :n] - out["transformers"][longest, :n]).abs().max().item()
                   for k in ("one_batch", "bucketed"))  # the longest utterance has no padding in either
        ours_time[name] = t["bucketed"]
        print(f"{name:<14}{t['transformers']:>16.2f}{t['one_batch']:>16.2f}{t['bucketed']:>17.2f}"
              f"{t['transformers'] / t['bucketed']:>9.2f}x{t['bucketed'] / audio:>10.3f}"
              f"{t['transformers'] / audio:>8.3f}{diff:>11.1e}")
        del hf
    print(f"DistilHuBERT vs HuBERT-Base (ours): {ours_time['hubert_base'] / ours_time['distilhubert']:.2f}x faster")

    out: dict = {}
    mini = interleaved_best({name: ours_runner(random_upstream(cfg), wavs, 0.7, out, name)
                             for name, cfg in (("hubert_mini", HUBERT_MINI), ("distilhubert_mini", DISTILHUBERT_MINI))},
                            args.repeats)
    for name, t in mini.items():
        print(f"{name:<18} ours {t:.2f} s, RTF {t / audio:.3f}")
    print(f"distilhubert_mini vs hubert_mini: {mini['hubert_mini'] / mini['distilhubert_mini']:.2f}x faster")

if __name__ == "__main__":
    main()
