"""A bidirectional LSTM over zero-padded batches that never reads padding, without packed sequences.

Why not ``nn.LSTM(bidirectional=True)`` on a ``PackedSequence``: on CPU, packed input falls off the oneDNN kernel
and runs step by step; forward + backward of SUPERB's demo-sized ASR head was ~12x slower packed than padded
(``bench/lstm_heads.py`` prints the ratio). Padded input on the other hand lets the backward direction start on
the padding of shorter sequences. So each layer runs two unidirectional LSTMs on padded input: the forward one
reads the valid frames before any padding (exact as it is), the backward one reads every sequence reversed
*within its own length* (padding stays at the end), and its output is reversed back. The result equals the packed
bidirectional LSTM on every valid frame (``tests/test_downstream_rnn.py`` checks it against ``nn.LSTM`` with the same
weights); padded frames hold values that callers mask.
"""
from __future__ import annotations

import torch
from torch import nn


def reverse_within_lengths(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``x [batch, frame, dim]`` with frames ``0..length-1`` of each row reversed; padded frames stay where they are.

    Applying it twice gives ``x`` back.
    """
    frames = torch.arange(x.shape[1], device=x.device).unsqueeze(0)     # [1, frame]
    lengths = lengths.to(x.device).unsqueeze(1)                          # [batch, 1]
    index = torch.where(frames < lengths, lengths - 1 - frames, frames)  # [batch, frame]
    return x.gather(1, index.unsqueeze(-1).expand_as(x))


class MaskedBiLSTM(nn.Module):
    """``num_layers`` bidirectional LSTM layers, ``[batch, frame, input_size] -> [batch, frame, 2 * hidden_size]``.

    Same maths as ``nn.LSTM(..., bidirectional=True, batch_first=True)`` fed a packed sequence: dropout between
    layers, the two directions' outputs concatenated (forward first). ``dropout_after_last=True`` also drops out the
    last layer's output, as s3prl's ``RNNLayer`` stack does (dropout after every layer: s3prl
    ``downstream/asr/model.py:45-46,64-65``).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0,
                 dropout_after_last: bool = False):
        super().__init__()
        self.dropout_after_last = dropout_after_last
        self.forward_layers = nn.ModuleList()
        self.backward_layers = nn.ModuleList()
        for i in range(num_layers):
            size = input_size if i == 0 else 2 * hidden_size
            self.forward_layers.append(nn.LSTM(size, hidden_size, batch_first=True))
            self.backward_layers.append(nn.LSTM(size, hidden_size, batch_first=True))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        lengths = lengths.clamp(min=1, max=x.shape[1])
        for i, (fwd, bwd) in enumerate(zip(self.forward_layers, self.backward_layers)):
            if i > 0:
                x = self.dropout(x)
            ahead, _ = fwd(x)
            behind, _ = bwd(reverse_within_lengths(x, lengths))
            x = torch.cat([ahead, reverse_within_lengths(behind, lengths)], dim=-1)
        return self.dropout(x) if self.dropout_after_last else x

    @torch.no_grad()
    def load_from_lstm(self, lstm: nn.LSTM) -> "MaskedBiLSTM":
        """Copy the weights of a bidirectional ``nn.LSTM`` of the same sizes (layer ``i``'s ``_reverse`` weights
        go to the backward LSTM of layer ``i``)."""
        if not lstm.bidirectional or lstm.num_layers != len(self.forward_layers):
            raise ValueError(f"need a bidirectional nn.LSTM with {len(self.forward_layers)} layers, got "
                             f"bidirectional={lstm.bidirectional}, num_layers={lstm.num_layers}")
        for i, (fwd, bwd) in enumerate(zip(self.forward_layers, self.backward_layers)):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(fwd, f"{name}_l0").copy_(getattr(lstm, f"{name}_l{i}"))
                getattr(bwd, f"{name}_l0").copy_(getattr(lstm, f"{name}_l{i}_reverse"))
        return self
