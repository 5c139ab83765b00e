"""The report's cost columns: MACs counted from op shapes, the same on every device (the CPU's oneDNN kernels are
invisible to torch's FlopCounterMode: HuBERT Base showed 0.24 GMAC/s instead of about 6.9)."""
from __future__ import annotations

import torch

from benchmark.upstream_stats import count_macs_per_second
from upstream import build_upstream
from upstream.kernels import onednn_applies


def analytic_hubert_macs(cfg, samples: int = 16000) -> float:
    """MACs of a HuBERT forward pass on ``samples`` samples, from its config alone: the CNN's convolutions
    (C_in·k·C_out per output frame), the feature projection, the grouped positional conv, and per transformer layer
    q/k/v/out (4·D²) and the FFN (2·D·F) per frame plus the attention's two T²·D products."""
    macs, length, channels = 0.0, samples, 1
    for out_channels, kernel, stride in cfg.conv_layers:
        length = (length - kernel) // stride + 1
        macs += channels * kernel * out_channels * length
        channels = out_channels
    d, t = cfg.embed_dim, length
    macs += t * channels * d                                          # feature projection
    macs += t * d * (d // cfg.conv_pos_groups) * cfg.conv_pos         # positional conv
    macs += cfg.layers * (t * (4 * d * d + 2 * d * cfg.ffn_dim) + 2 * t * t * d)
    return macs


def test_hubert_base_macs_match_the_analytic_count_on_cpu():
    with torch.device("meta"):  # the architecture without its slow random init (the count needs shapes only)
        upstream = build_upstream("hubert_base", random_init=True)
    upstream = upstream.to_empty(device="cpu").eval()
    with torch.no_grad():
        for p in upstream.parameters():
            p.normal_(0, 0.02)
    assert onednn_applies(torch.zeros(1, 4), torch.zeros(4, 4))  # the CPU path whose kernels were not counted
    counted = count_macs_per_second(upstream)
    expected = analytic_hubert_macs(upstream.model.cfg)
    assert 6.0e9 < expected < 7.5e9  # the review's ~6.9 GMAC per audio-second
    assert abs(counted - expected) / expected < 0.05, (counted, expected)
    assert onednn_applies(torch.zeros(1, 4), torch.zeros(4, 4))  # switched back on after counting
