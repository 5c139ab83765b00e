"""Our HuBERT-family extraction vs transformers' HubertModel: same weights, same variable-length batch, same CPU,
and how close each comes to this machine's matrix-multiply throughput (roofline).

For HuBERT-Base and DistilHuBERT shapes (random weights, copied into transformers through ``export_hf``'s key
map) this times, side by side in one process, the contenders taking turns (median of ``--repeats``, so load from
other processes on a shared machine hits them alike):
  * transformers: one padded batch with an attention mask (its correct batched use), under inference_mode;
  * ours: ``HubertUpstream`` (packed: no work on padding; see docs/SPEED.md);
  * a large fp32 ``torch.mm`` (``--mm-size``³), the machine's matrix-multiply throughput in this same run, and
    the same product through oneDNN's GEMM (which our CPU linears use: MKL's sgemm behind torch.mm is ~2x slower
    on AMD CPUs);
  * with ``--levers``: ours with torch's default kernels (``DISTILSUPERB_ONEDNN=0``), to show what oneDNN buys.
It prints seconds, ours/transformers speed-up, real-time factors (compute seconds / audio seconds), the model's
multiply-accumulates per audio second (torch's FlopCounterMode on our run: the useful work, no padding) and the
achieved GMAC/s as a percentage of the ``torch.mm`` figure and of the faster GEMM. The demo pair (hubert_mini vs distilhubert_mini) is
timed too, for the "student ≥ 2x faster" target. The load average before and after says how busy the machine was.

    .venv/bin/python bench/upstream_speed.py            # 16 utterances of 2-15 s
    .venv/bin/python bench/upstream_speed.py --quick    # 6 utterances of 1-4 s
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.timing import add_batch_options, interleaved_times, load_average, random_batch  # noqa: E402
from upstream.builtin import DISTILHUBERT, DISTILHUBERT_MINI, HUBERT_BASE, HUBERT_MINI, random_upstream  # noqa: E402
from upstream.kernels import set_onednn  # noqa: E402
from upstream.convert import config_to_hf, state_to_hf  # noqa: E402
from upstream.hubert import HubertUpstream  # noqa: E402


def to_transformers(up: HubertUpstream):
    import transformers

    model = transformers.HubertModel(transformers.HubertConfig(**config_to_hf(up.cfg)))
    missing, unexpected = model.load_state_dict(state_to_hf(up.model.state_dict()), strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    return model.eval()


def interleaved_median(runs: dict, repeats: int) -> dict[str, float]:
    """Median wall time of each callable over ``repeats`` rounds, the callables taking turns within a round."""
    return {name: statistics.median(t) for name, t in interleaved_times(runs, repeats).items()}


def mm_runner(size: int, onednn: bool = False):
    """``size``³ fp32 multiply-accumulates: ``torch.mm`` (MKL sgemm here) or oneDNN's GEMM (what our linears use)."""
    a, b = torch.randn(size, size), torch.randn(size, size)

    def run():
        if onednn:
            torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")
        else:
            torch.mm(a, b)
    return run


def transformers_runner(model, wavs: list[torch.Tensor], result: dict):
    padded = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)
    mask = torch.nn.utils.rnn.pad_sequence([torch.ones(w.numel(), dtype=torch.long) for w in wavs], batch_first=True)

    def run():
        with torch.inference_mode():
            result["transformers"] = model(padded, attention_mask=mask).last_hidden_state
    return run


def ours_runner(up: HubertUpstream, wavs: list[torch.Tensor], result: dict, key: str, onednn: bool = True):
    def run():
        old = set_onednn(onednn)
        try:
            result[key] = up(wavs).hidden_states[-1]
        finally:
            set_onednn(old)
    return run


def count_macs(up: HubertUpstream, wavs: list[torch.Tensor]) -> float:
    """Multiply-accumulates of one extraction (torch's flop counter counts 2 flops per MAC). It has no formula for
    oneDNN's ops nor for the CPU flash-attention kernel, so the count runs with torch's default kernels (the same
    products) and borrows the SDPA formula it uses for the other attention kernels."""
    from torch.utils.flop_counter import sdpa_flop_count

    def cpu_sdpa(query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query, key, value)

    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_sdpa}
    old = set_onednn(False)
    try:
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
            up(wavs)
    finally:
        set_onednn(old)
    return counter.get_total_flops() / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    add_batch_options(parser, utterances=16, max_seconds=15.0, quick=(6, 1.0, 4.0, 3))
    parser.add_argument("--mm-size", type=int, default=2048, help="the roofline torch.mm is N x N times N x N")
    parser.add_argument("--skip-mini", action="store_true", help="leave out the demo pair")
    parser.add_argument("--levers", action="store_true",
                        help="also time ours with torch's default kernels (no oneDNN linears/epilogues)")
    args = parser.parse_args()
    seconds, wavs = random_batch(args)
    audio = float(seconds.sum())
    longest = int(torch.argmax(seconds))
    mm_macs = float(args.mm_size) ** 3
    onednn = torch.backends.mkldnn.is_available()
    print(f"roofline: {args.mm_size}x{args.mm_size} fp32 GEMMs timed with each model; '% of mm' is the model's "
          "GMAC/s over torch.mm's" + (", '% of best' over the faster of torch.mm and oneDNN's GEMM" if onednn else ""))
    print(f"{'model':<14}{'transformers s':>16}{'ours s':>9}{'speed-up':>10}{'RTF ours':>10}{'RTF HF':>8}"
          f"{'GMAC/audio s':>14}{'ours GMAC/s':>13}{'mm GMAC/s':>11}{'oneDNN mm':>11}{'% of mm':>9}"
          f"{'% of best':>11}{'max|diff|':>11}")
    ours_time = {}
    for name, cfg in (("hubert_base", HUBERT_BASE), ("distilhubert", DISTILHUBERT)):
        up = random_upstream(cfg)
        hf, out = to_transformers(up), {}
        ours = ours_runner(up, wavs, out, "ours")
        macs = count_macs(up, wavs)
        runs = {"transformers": transformers_runner(hf, wavs, out), "ours": ours, "mm": mm_runner(args.mm_size)}
        if onednn:
            runs["onednn_mm"] = mm_runner(args.mm_size, onednn=True)
        if args.levers:
            runs["ours_plain"] = ours_runner(up, wavs, out, "ours_plain", onednn=False)
        t = interleaved_median(runs, args.repeats)
        n = int(up.frames_for(torch.tensor(wavs[longest].numel())))
        # the longest utterance has no padding in transformers' batch, so its features must match
        diff = (out["ours"][longest, :n] - out["transformers"][longest, :n]).abs().max().item()
        ours_time[name] = t["ours"]
        achieved, peak = macs / t["ours"] / 1e9, mm_macs / t["mm"] / 1e9
        best = max(peak, mm_macs / t["onednn_mm"] / 1e9) if onednn else peak
        print(f"{name:<14}{t['transformers']:>16.2f}{t['ours']:>9.2f}{t['transformers'] / t['ours']:>9.2f}x"
              f"{t['ours'] / audio:>10.3f}{t['transformers'] / audio:>8.3f}{macs / audio / 1e9:>14.2f}"
              f"{achieved:>13.1f}{peak:>11.1f}{(best if onednn else float('nan')):>11.1f}"
              f"{100 * achieved / peak:>8.0f}%{100 * achieved / best:>10.0f}%{diff:>11.1e}")
        if args.levers:
            plain = (out["ours_plain"][longest, :n] - out["ours"][longest, :n]).abs().max().item()
            print(f"  {name}, ours with torch's default kernels: {t['ours_plain']:.2f} s "
                  f"(oneDNN path {t['ours_plain'] / t['ours']:.2f}x faster; max|diff| {plain:.1e})")
        del hf
    print(f"DistilHuBERT vs HuBERT-Base (ours): {ours_time['hubert_base'] / ours_time['distilhubert']:.2f}x faster")

    if not args.skip_mini:
        out: dict = {}
        mini = interleaved_median({name: ours_runner(random_upstream(cfg), wavs, out, name)
                                   for name, cfg in (("hubert_mini", HUBERT_MINI),
                                                     ("distilhubert_mini", DISTILHUBERT_MINI))}, args.repeats)
        for name, t in mini.items():
            print(f"{name:<18} ours {t:.2f} s, RTF {t / audio:.3f}")
        print(f"distilhubert_mini vs hubert_mini: {mini['hubert_mini'] / mini['distilhubert_mini']:.2f}x faster")
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
