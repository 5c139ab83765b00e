"""MFCC baseline: 40 MFCCs every 10 ms, no parameters. Also the README's example of a one-file upstream."""
import torch
import torchaudio

from upstream.base import Upstream, UpstreamOutput
from upstream.registry import register_upstream


class MfccUpstream(Upstream):
    """hidden_states: one entry ``[batch, frame, n_mfcc]``; 10 ms frames."""

    downsample_rate = 160

    def __init__(self, n_mfcc: int = 40):
        super().__init__()
        self.mfcc = torchaudio.transforms.MFCC(self.sample_rate, n_mfcc, melkwargs={"n_fft": 400, "hop_length": 160})

    def frames_for(self, num_samples):
        return num_samples // 160 + 1  # torchaudio's centred frames

    def extract(self, wavs):
        feats = [self.mfcc(w).T for w in wavs]  # [frame, n_mfcc] each
        lengths = torch.tensor([len(f) for f in feats])
        padded = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
        return UpstreamOutput(hidden_states=[padded], lengths=lengths)


@register_upstream("mfcc")
def mfcc(n_mfcc: int = 40) -> MfccUpstream:
    return MfccUpstream(n_mfcc)
