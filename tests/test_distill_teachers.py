"""run_distill.py --teacher <HF dir> for every supported family (tiny random teachers saved with save_pretrained):
the student is initialised from the parts whose architecture matches (said in the log), trains and loads; a teacher
whose layers cannot feed the recipe stops before the first step naming the config key."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

import run_distill
from tests.fixtures.datasets import write_tone_corpus
from tests.fixtures.upstreams import tiny_family_model
from upstream import build_upstream

TINY = ["run.data.max_batch_seconds=4.0", "run.data.max_item_seconds=1.5", "run.threads=1", "run.log_every=1",
        "run.optim.lr=2e-3"]
# the tiny teachers have 2 layers: the DistilHuBERT heads predict layers 6/12 of a 12-layer reference, i.e. 1 and 2
TWO_LAYER_TARGETS = "objective.target_layers=[6,12]"
# what the student takes from each family's teacher (the rest starts from scratch)
COPIED = {"wav2vec2": ["front_end", "feature_projection", "encoder.pos_conv", "encoder.layer_norm",
                       "encoder.layers.0", "encoder.layers.1"],
          "wavlm": ["front_end", "feature_projection", "encoder.layer_norm", "encoder.pos_conv"],
          "data2vec-audio": ["front_end", "feature_projection", "encoder.layer_norm", "encoder.layers.0",
                             "encoder.layers.1"]}


@pytest.fixture(scope="module")
def audio(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("teachers")
    write_tone_corpus(root / "audio", count=4)
    return root / "audio"


def distil(teacher: Path, audio: Path, out: Path, *extra: str, config: str = "distilhubert") -> int:
    args = ["--config", f"configs/distill/{config}.yaml", "--teacher", str(teacher), "--data", str(audio),
            "--output", str(out), "--max-steps", "2"]
    for o in TINY + list(extra):
        args += ["-o", o]
    return run_distill.main(args)


@pytest.mark.parametrize("family", sorted(COPIED))
def test_every_family_teaches_a_student(family, audio, tmp_path, caplog):
    teacher_model = tiny_family_model(family)
    teacher_model.save_pretrained(tmp_path / "teacher")
    with caplog.at_level(logging.INFO, logger="distill.objectives"):
        assert distil(tmp_path / "teacher", audio, tmp_path / "out", TWO_LAYER_TARGETS) == 0
    line = next(r.getMessage() for r in caplog.records if "initialised from the teacher" in r.getMessage())
    copied = line.split("initialised from the teacher: ")[1].split(";")[0].split(", ")
    assert sorted(p for p in copied if p != "mask_emb") == sorted(COPIED[family]), line
    student = build_upstream(tmp_path / "out")
    teacher = build_upstream(tmp_path / "teacher")
    wav = [torch.randn(12000) * 0.1]
    assert student(wav).hidden_states[-1].shape[1] == teacher(wav).hidden_states[-1].shape[1]
    assert len(student(wav).hidden_states) == 3  # 2 student layers + the projected input


def test_copied_parts_hold_the_teachers_weights_before_training(tmp_path):
    """data2vec-audio's post-LN layers are HuBERT's: the student starts with the teacher's layer 0 exactly."""
    from distill.config import DistillConfig
    from distill.objectives import build_student
    from common.config import load_config

    teacher_model = tiny_family_model("data2vec-audio")
    teacher_model.save_pretrained(tmp_path / "teacher")
    teacher = build_upstream(tmp_path / "teacher")
    cfg = load_config(DistillConfig, "configs/distill/distilhubert.yaml", [TWO_LAYER_TARGETS])
    student, targets, _ = build_student(cfg, teacher)
    assert targets == [1, 2]
    ours = student.encoder.layers[0].feed_forward.output_dense.weight
    assert torch.equal(ours, teacher_model.encoder.layers[0].feed_forward.output_dense.weight)
    assert torch.equal(student.front_end.conv_layers[0].conv.weight,
                       teacher_model.feature_extractor.conv_layers[0].conv.weight)


def test_teacher_too_shallow_for_the_recipe_stops_naming_the_key(audio, tmp_path, capsys):
    tiny_family_model("wavlm").save_pretrained(tmp_path / "teacher")
    rc = distil(tmp_path / "teacher", audio, tmp_path / "out")  # heads for layers 4/8/12 of 12 -> 1, 1, 2 of 2
    err = capsys.readouterr().err
    assert rc == 2 and "objective.target_layers=[4, 8, 12]" in err and "2-layer teacher" in err
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_discriminative_loss_needs_codewords_a_wavlm_teacher_lacks(audio, tmp_path, capsys):
    tiny_family_model("wavlm").save_pretrained(tmp_path / "teacher")
    rc = distil(tmp_path / "teacher", audio, tmp_path / "out", TWO_LAYER_TARGETS,
                "objective.discriminative_weight=1.0")
    assert rc == 2 and "objective.discriminative_weight > 0 needs a teacher with HuBERT codeword" in \
        capsys.readouterr().err
