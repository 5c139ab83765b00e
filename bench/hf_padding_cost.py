"""What keeping padding out of a group-norm WavLM costs: TransformersUpstream (first conv layer per utterance, the
rest batched) vs transformers' own forward on the padded batch (which leaks padding), side by side.

    python bench/hf_padding_cost.py [--layers 2] [--repeats 5]

A random WavLM Base-sized CNN (7 x 512 channels, group norm) and ``--layers`` transformer layers of 768; a batch of
8 utterances of 2-6 s in one padded batch (``bucket_fill=0``, so both sides compute the same padded frames).
Reports the fastest of ``--repeats`` interleaved runs and the max difference of each side from per-utterance runs.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.timing import add_timing_options, interleaved_times, set_threads  # noqa: E402
from common.audio import SAMPLE_RATE  # noqa: E402
from upstream.hf_families import TransformersUpstream  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    import transformers

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,

                                allow_abbrev=False)
    p.add_argument("--layers", type=int, default=2)
    add_timing_options(p, repeats=5, threads=1)
    args = p.parse_args(argv)
    set_threads(args.threads)
    torch.manual_seed(0)
    model = transformers.WavLMModel(transformers.WavLMConfig(num_hidden_layers=args.layers)).eval()
    ours = TransformersUpstream(model, bucket_fill=0.0)
    g = torch.Generator().manual_seed(0)
    wavs = [torch.randn(int(SAMPLE_RATE * s), generator=g) * 0.1 for s in (2, 2.5, 3, 3.5, 4, 4.5, 5, 6)]
    padded = torch.zeros(len(wavs), max(w.numel() for w in wavs))
    for i, w in enumerate(wavs):
        padded[i, : w.numel()] = w
    mask = (torch.arange(padded.shape[1])[None] < torch.tensor([w.numel() for w in wavs])[:, None]).long()

    def theirs():
        return model(padded, attention_mask=mask).last_hidden_state

    with torch.inference_mode():
        out_ours, out_theirs = ours(wavs), theirs()
        times = interleaved_times({"ours": lambda: ours(wavs), "transformers": theirs}, args.repeats)
        alone = [model(w[None]).last_hidden_state[0] for w in wavs]
    err_ours = max((out_ours.hidden_states[-1][i, : a.shape[0]] - a).abs().max().item() for i, a in enumerate(alone))
    err_theirs = max((out_theirs[i, : a.shape[0]] - a).abs().max().item() for i, a in enumerate(alone))
    best = {k: min(v) for k, v in times.items()}
    print(f"WavLM, CNN 7 x 512 (group norm) + {args.layers} layers x 768, 8 utterances 2-6 s, "
          f"{torch.get_num_threads()} thread(s), fastest of {args.repeats}")
    print(f"  transformers, padded batch : {best['transformers']:.3f} s   max diff from alone {err_theirs:.2e}")
    print(f"  ours (padding kept out)    : {best['ours']:.3f} s   max diff from alone {err_ours:.2e}")
    print(f"  cost of batch invariance   : {best['ours'] / best['transformers']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
