"""A pretraining checkpoint (``OUTPUT/iter{1,2}/checkpoints/last.pt``) as an upstream in our format.

``run_pretrain.py`` saves the finished model as an upstream; this turns any checkpoint written on the way into one
too, so a model at update N can be benchmarked like the final one (the compute-vs-quality curve of
``scripts/teacher_curve.py``). The checkpoint holds the run's config (``config.model``) and the
:class:`~pretrain.objective.MaskedPrediction` weights (``model.*``); the codeword head's size is read from the
weights, because iteration 2 uses ``iteration2.clusters`` codewords instead of ``labels.clusters``.

Raises :class:`ExportError` naming the file when it is not such a checkpoint (a
:class:`common.checkpoint.CheckpointError` when it cannot be read safely at all).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from common.checkpoint import load_checkpoint
from common.config import from_dict
from upstream.hubert import HubertConfig, HubertModel

_PREFIX = "model."  # MaskedPrediction keeps the HubertModel as its ``model`` attribute


class ExportError(ValueError):
    """The file is not a run_pretrain.py training checkpoint."""


def model_from_checkpoint(path: str | Path) -> tuple[HubertModel, int]:
    """The :class:`HubertModel` saved in a pretraining checkpoint, and the update it was saved at."""
    ckpt = load_checkpoint(path)
    try:
        model_dict = dict(ckpt["config"]["config"]["model"])
        weights = {k[len(_PREFIX):]: v for k, v in ckpt["model"].items() if k.startswith(_PREFIX)}
        step = int(ckpt["step"])
    except (KeyError, TypeError) as e:
        raise ExportError(f"{path}: not a run_pretrain.py checkpoint (missing {e}); expected "
                          "OUTPUT/iter*/checkpoints/last.pt of a pretraining run") from None
    if "codeword_emb" not in weights:
        raise ExportError(f"{path}: no model.codeword_emb; a front-end warm-up checkpoint (iter*_front_end) holds "
                          "no masked-prediction model: export OUTPUT/iter*/checkpoints/last.pt")
    num_codewords, final_dim = weights["codeword_emb"].shape
    cfg = dataclasses.replace(from_dict(HubertConfig, model_dict), num_codewords=int(num_codewords),
                              final_dim=int(final_dim), pred_layer_ids=())
    model = HubertModel(cfg)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ExportError(f"{path}: weights do not fit the recorded architecture (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]})")
    return model.eval(), step
