"""The model API the distillation and pretraining code uses: encode (with frame masks), heads, student init."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from upstream.hubert import HubertModel, HubertUpstream, init_student_from_teacher, student_config_from_teacher
from tests.fixtures.upstreams import perturb_, random_wavs, tiny_config


def teacher_model(**changes) -> HubertModel:
    torch.manual_seed(0)
    return perturb_(HubertModel(tiny_config(layers=4, num_codewords=10, final_dim=16, **changes)), seed=8).eval()


def batch(lengths):
    wavs = random_wavs(lengths, seed=9)
    padded = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)
    return padded, torch.tensor(lengths)


def test_encode_shapes_masks_and_gradients():
    model = teacher_model()
    wav, lengths = batch([16000, 8000])
    states, frames = model.encode(wav, lengths)
    assert len(states) == 5 and frames.tolist() == [49, 24] and states[0].shape == (2, 49, 64)
    assert torch.equal(frames, model.frame_lengths(lengths))
    features, feature_frames = model.front_end_features(wav, lengths)
    assert features.shape == (2, 49, 32) and torch.equal(feature_frames, frames)
    # a frame mask of all False changes nothing; masking frames changes the output there
    none_masked = torch.zeros(2, 49, dtype=torch.bool)
    assert torch.allclose(model.encode(wav, lengths, none_masked)[0][-1], states[-1], atol=1e-6)
    mask = none_masked.clone()
    mask[:, 10:20] = True
    masked = model.encode(wav, lengths, mask)[0][-1]
    assert (masked[:, 10:20] - states[-1][:, 10:20]).abs().max() > 1e-2
    # differentiable: the codeword loss reaches the CNN
    logits = model.codeword_logits(masked)
    assert logits.shape == (2, 49, 10)
    F.cross_entropy(logits[mask], torch.zeros(int(mask.sum()), dtype=torch.long)).backward()
    assert model.front_end.conv_layers[0].conv.weight.grad.abs().sum() > 0
    assert model.mask_emb.grad.abs().sum() > 0


def test_student_copies_teacher_and_predicts():
    teacher = teacher_model()
    cfg = student_config_from_teacher(teacher.cfg, layers=2, pred_layer_ids=(2, 4))
    assert cfg.layers == 2 and cfg.pred_dim == 64 and cfg.num_codewords == 0
    student = HubertModel(cfg).eval()
    copied = init_student_from_teacher(student, teacher)
    assert copied[:4] == ["front_end", "feature_projection", "encoder.pos_conv", "encoder.layer_norm"]
    assert "encoder.layers.1" in copied and "mask_emb" in copied
    wav, lengths = batch([12000, 6000])
    with torch.no_grad():
        t_states, _ = teacher.encode(wav, lengths)
        s_states, _ = student.encode(wav, lengths)
    for k in range(3):  # post-LN: the student's first two layers are the teacher's
        assert (s_states[k] - t_states[k]).abs().max() < 1e-5
    predicted = student.predict(s_states[-1])
    assert predicted.shape == (2, 2, 37, 64)
    up = HubertUpstream(student, include_pred_heads=True)
    out = up([wav[0, :12000], wav[1, :6000]])
    assert len(out.hidden_states) == 3 + 2
    assert (out.hidden_states[3][1, :18] - predicted[1, 0, :18]).abs().max() < 1e-5


def test_fbank_student_and_width_change():
    teacher = teacher_model()
    fbank = HubertModel(student_config_from_teacher(teacher.cfg, layers=2, pred_layer_ids=(4,), front_end="fbank"))
    copied = init_student_from_teacher(fbank, teacher)
    assert "front_end" not in copied and "feature_projection" in copied and "encoder.layers.1" in copied
    assert fbank.frame_lengths(torch.tensor([16000])).item() == 49  # 20 ms frames like the CNN
    assert HubertUpstream(fbank).downsample_rate == 320 and HubertUpstream(fbank).min_samples() == 560
    narrow = HubertModel(student_config_from_teacher(teacher.cfg, 2, (1, 2, 4), width=32))
    copied = init_student_from_teacher(narrow, teacher)
    assert copied == ["front_end"]  # everything after the CNN has another width
    assert narrow.predict(torch.zeros(1, 5, 32)).shape == (1, 3, 5, 64)  # heads map back to the teacher's width
