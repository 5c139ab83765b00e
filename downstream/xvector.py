"""x-vector speaker-embedding head and the AM-Softmax loss, shaped as SUPERB's ASV downstream (s3prl sv_voxceleb1).

Projector Linear(D→512); five TDNN layers (context 5/3/3/1/1, dilation 1/2/3/1/1, ReLU; the last one widens to
1500); statistics pooling (mean and standard deviation over valid frames); two Linear+ReLU layers to the 512-dim
embedding used in training. At inference the embedding is taken after the first of those two layers, as s3prl does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common.tensors import frame_mask

# (context size, dilation) of the five TDNN layers
_TDNN_LAYERS = ((5, 1), (3, 2), (3, 3), (1, 1), (1, 1))
RECEPTIVE_FIELD = 1 + sum((k - 1) * d for k, d in _TDNN_LAYERS)  # frames the TDNN stack consumes (15)


class XVectorHead(nn.Module):
    """``[batch, frame, feature]`` features + ``[batch]`` lengths → ``[batch, embed_dim]`` utterance embeddings."""

    def __init__(self, input_dim: int, hidden_dim: int = 512, pooled_dim: int = 1500, embed_dim: int = 512):
        super().__init__()
        self.projector = nn.Linear(input_dim, hidden_dim)
        layers, dim = [], hidden_dim
        for i, (context, dilation) in enumerate(_TDNN_LAYERS):
            out = pooled_dim if i == len(_TDNN_LAYERS) - 1 else hidden_dim
            layers += [nn.Conv1d(dim, out, kernel_size=context, dilation=dilation), nn.ReLU()]
            dim = out
        self.tdnn = nn.Sequential(*layers)
        self.utterance1 = nn.Linear(2 * pooled_dim, embed_dim)
        self.utterance2 = nn.Linear(embed_dim, embed_dim)
        self.embed_dim = embed_dim

    def frame_level(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """TDNN outputs ``[batch, frame', pooled_dim]`` and their valid lengths (each shrinks by 14 frames)."""
        if features.dim() != 3:
            raise ValueError(f"expected features [batch, frame, feature], got shape {tuple(features.shape)}")
        x = self.projector(features)
        short = RECEPTIVE_FIELD - x.shape[1]
        if short > 0:  # too few frames for the TDNN context: pad on the right (the padding is masked below)
            x = F.pad(x, (0, 0, 0, short))
        lengths = lengths.to(x.device).clamp(min=1)
        x = self.tdnn(x.transpose(1, 2)).transpose(1, 2)  # Conv1d wants [batch, feature, frame]
        out_lengths = (lengths - (RECEPTIVE_FIELD - 1)).clamp(min=1)
        return x, out_lengths

    @staticmethod
    def statistics_pooling(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Mean and (unbiased) standard deviation over the first ``lengths[b]`` frames: ``[batch, 2·feature]``."""
        mask = frame_mask(lengths.to(x.device), x.shape[1]).unsqueeze(-1).to(x.dtype)
        count = mask.sum(1)
        mean = (x * mask).sum(1) / count
        var = (((x - mean.unsqueeze(1)) ** 2) * mask).sum(1) / (count - 1).clamp(min=1)
        return torch.cat([mean, var.clamp(min=1e-8).sqrt()], dim=-1)

    def embeddings(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(training embedding, verification embedding), both ``[batch, embed_dim]``.

        Training uses the output of both utterance-level layers; verification the output of the first (as s3prl).
        """
        x, out_lengths = self.frame_level(features, lengths)
        verify = F.relu(self.utterance1(self.statistics_pooling(x, out_lengths)))
        return F.relu(self.utterance2(verify)), verify

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Training embedding ``[batch, embed_dim]`` (fed to the AM-Softmax loss)."""
        return self.embeddings(features, lengths)[0]

    @torch.no_grad()
    def embed(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Verification embedding ``[batch, embed_dim]``."""
        return self.embeddings(features, lengths)[1]


class AMSoftmaxLoss(nn.Module):
    """Additive-margin softmax: cross-entropy over ``s · (cos θ_j − m·[j = y])``, weights and embeddings
    L2-normalised."""

    def __init__(self, embed_dim: int, num_speakers: int, scale: float = 30.0, margin: float = 0.4):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_speakers, embed_dim))
        nn.init.xavier_normal_(self.weight)
        self.scale, self.margin = scale, margin

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Cosine between each embedding and each speaker's weight vector: ``[batch, num_speakers]``."""
        return F.linear(F.normalize(embeddings, dim=-1), F.normalize(self.weight, dim=-1))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean loss for ``[batch, embed_dim]`` embeddings and ``[batch]`` speaker indices."""
        return am_softmax_loss(self.cosine(embeddings), labels, self.scale, self.margin)


def am_softmax_loss(cosine: torch.Tensor, labels: torch.Tensor, scale: float, margin: float) -> torch.Tensor:
    """AM-Softmax from cosines ``[batch, num_speakers]`` and labels ``[batch]``."""
    if labels.min() < 0 or labels.max() >= cosine.shape[1]:
        raise ValueError(f"speaker labels must be in [0, {cosine.shape[1]}), "
                         f"got range [{int(labels.min())}, {int(labels.max())}]")
    logits = scale * (cosine - margin * F.one_hot(labels, cosine.shape[1]).to(cosine.dtype))
    return F.cross_entropy(logits, labels)
