"""The padded-input LSTM heads give the packed-sequence results on valid frames."""
import torch
from torch import nn

from downstream.ctc_heads import BiLSTMCTCHead
from downstream.diarization import DiarizationHead
from downstream.rnn import MaskedBiLSTM, reverse_within_lengths


def _packed(lstm: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, _ = lstm(packed)
    return nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0]


def test_reverse_within_lengths_keeps_padding_in_place_and_undoes_itself():
    x = torch.arange(8.0).view(2, 4, 1)
    lengths = torch.tensor([4, 2])
    rev = reverse_within_lengths(x, lengths)
    assert rev[:, :, 0].tolist() == [[3, 2, 1, 0], [5, 4, 6, 7]]
    assert torch.equal(reverse_within_lengths(rev, lengths), x)


def test_masked_bilstm_matches_packed_nn_lstm_outputs_and_gradients():
    torch.manual_seed(0)
    ref = nn.LSTM(6, 5, num_layers=2, bidirectional=True, batch_first=True)
    ours = MaskedBiLSTM(6, 5, num_layers=2).load_from_lstm(ref)
    x = torch.randn(3, 9, 6)
    lengths = torch.tensor([9, 4, 1])
    valid = torch.arange(9)[None] < lengths[:, None]
    x_ref, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_ref, out_ours = _packed(ref, x_ref, lengths), ours(x_ours, lengths)
    assert torch.allclose(out_ref[valid], out_ours[valid], atol=1e-6)
    weight = torch.randn_like(out_ref) * valid.unsqueeze(-1)  # a loss that only reads valid frames
    (out_ref * weight).sum().backward()
    (out_ours * weight).sum().backward()
    assert torch.allclose(x_ref.grad, x_ours.grad, atol=1e-6)
    assert torch.allclose(ref.weight_hh_l1_reverse.grad, ours.backward_layers[1].weight_hh_l0.grad, atol=1e-6)


def test_heads_ignore_what_the_padding_holds():
    torch.manual_seed(0)
    lengths = torch.tensor([7, 3])
    x = torch.randn(2, 7, 4)
    junk = x.clone()
    junk[1, 3:] = 100.0
    valid = torch.arange(7)[None] < lengths[:, None]
    for head in (BiLSTMCTCHead(4, 5, proj_dim=6, hidden_size=3, num_layers=2, dropout=0.0).eval(),
                 DiarizationHead(4, hidden_size=3)):
        assert torch.allclose(head(x, lengths)[valid], head(junk, lengths)[valid], atol=1e-6), type(head).__name__
