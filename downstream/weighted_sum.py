"""SUPERB's learnable softmax-weighted sum over an upstream's hidden states (or one fixed layer)."""
from __future__ import annotations

import torch
from torch import nn


class WeightedSum(nn.Module):
    """Combine ``[layer, batch, frame, feature]`` into ``[batch, frame, feature]``.

    The weights start at zero, i.e. a uniform average after the softmax (as in SUPERB). With ``layer=K`` the module
    has no weights and returns hidden state K (negative K counts from the end).
    """

    def __init__(self, num_layers: int, layer: int | None = None):
        super().__init__()
        self.num_layers = num_layers
        if layer is not None and not -num_layers <= layer < num_layers:
            raise ValueError(f"--layer {layer} is out of range: this upstream has {num_layers} hidden states "
                             f"(valid: 0..{num_layers - 1})")
        self.layer = None if layer is None else layer % num_layers
        self.weights = nn.Parameter(torch.zeros(num_layers)) if layer is None else None

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if hidden.dim() != 4:
            raise ValueError(f"expected hidden states [layer, batch, frame, feature], got shape {tuple(hidden.shape)}")
        if self.layer is not None:
            # Inputs may already hold only the chosen layer (the cache loads just that one).
            return hidden[0] if hidden.shape[0] == 1 else hidden[self.layer]
        if hidden.shape[0] != self.num_layers:
            raise ValueError(f"expected {self.num_layers} hidden states, got {hidden.shape[0]}")
        w = torch.softmax(self.weights, dim=0).to(hidden.dtype)
        return torch.einsum("l,lbtd->btd", w, hidden)

    def layer_weights(self) -> list[float]:
        """Softmax weights per layer (one-hot for a fixed layer) — logged and plotted in the report."""
        if self.weights is None:
            return [1.0 if i == self.layer else 0.0 for i in range(self.num_layers)]
        return torch.softmax(self.weights.detach().float(), dim=0).tolist()
