"""HuBERT-style pretraining of a (small) teacher: k-means labels, span masking, masked prediction.

    python run_pretrain.py --config configs/pretrain/hubert_mini.yaml --data data/mini_superb/unlabeled \
        --output results/demo/hubert_mini [--max-steps N] [--resume] [-o key=value]

Iteration 1 learns k-means clusters of MFCC+Δ+ΔΔ (100 Hz labels); with ``iteration2.enabled`` a fresh model learns
clusters of a middle layer of the iteration-1 model. With ``front_end_warmup.steps`` each iteration's CNN first
learns log-mel features (``OUTPUT/iter{1,2}_front_end``; see pretrain/front_end_warmup.py). The last iteration's
model is saved in our format in ``--output`` (``build_upstream(DIR)`` loads it); each iteration's logs and
checkpoints are in ``OUTPUT/iter{1,2}``.
Multi-process: ``torchrun --nproc_per_node N run_pretrain.py ...``.

Continued pretraining: ``--init CHECKPOINT`` (any HuBERT-family upstream ``build_upstream`` reads: our format, a HF
hubert/wav2vec2 dir, a fairseq HuBERT .pt) starts iteration 1 from its weights and architecture (``model.*`` of the
config is then unused), codewords included when it has ``labels.clusters`` of them; no front-end warm-up (the CNN is
already trained). Iteration 2, when enabled, trains a fresh model as usual.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from common.cli import resume_command, run_main
from training.cli import run_parser

if TYPE_CHECKING:
    import torch

    from common.distributed import DistEnv
    from pretrain.config import PretrainConfig
    from training.data import SkipReport
    from upstream.hubert import HubertModel

# torch and everything built on it are imported inside the functions, after the arguments are parsed: --help and
# argument errors are answered at once instead of after seconds of imports

log = logging.getLogger("run_pretrain")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = run_parser(__doc__, "configs/pretrain/<model>.yaml", "output directory (the pretrained teacher)",
                   "continue interrupted iterations")
    p.add_argument("--init", default=None, metavar="CHECKPOINT",
                   help="continue pretraining from a HuBERT-family checkpoint (weights; codewords when they fit)")
    return p.parse_args(argv)


def load_init(path: str) -> HubertModel:
    """The HuBERT-family model to continue from. Raises ValueError naming what was expected."""
    from upstream import build_upstream
    from upstream.hubert import HubertUpstream

    upstream = build_upstream(path)
    if not isinstance(upstream, HubertUpstream):
        raise ValueError(f"--init {path}: a {type(upstream).__name__} is not a HuBERT-family checkpoint (continued "
                         "pretraining needs HuBERT's encoder: our format, a HF hubert/wav2vec2 dir or a fairseq .pt)")
    return upstream.model


def init_config(init: HubertModel, cfg: PretrainConfig):
    """The iteration-1 model config when continuing from ``init``: its architecture, prediction heads dropped, a
    codeword head of ``labels.clusters`` (its own when the sizes fit)."""
    return dataclasses.replace(init.cfg, pred_layer_ids=(), num_codewords=cfg.labels.clusters,
                               final_dim=init.cfg.final_dim or cfg.model.final_dim or 256)


def copy_init(model: HubertModel, init: HubertModel) -> list[str]:
    """Load ``init``'s weights into ``model``; its codeword head only when the shapes fit. Returns what was left at
    random init (logged)."""
    own = model.state_dict()
    state = {k: v for k, v in init.state_dict().items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(state, strict=False)
    fresh = sorted(k for k in own if k not in state)
    log.info("--init: continuing from the checkpoint's weights%s", f"; new (random init): {', '.join(fresh)}"
             if fresh else ", codewords included")
    return fresh


def make_labels(work: Path, files: list[Path], extract, rate: int, cfg, env: DistEnv) -> list[torch.Tensor]:
    """k-means labels for ``files``, computed on rank 0 and cached in ``work/labels.pt`` (other ranks wait)."""
    import torch.distributed as dist

    from pretrain.labels import compute_features, fit_kmeans_labels, load_labels, save_labels
    path = work / "labels.pt"
    if env.is_main and load_labels(path, files) is None:
        started = time.time()
        labels, inertia = fit_kmeans_labels(compute_features(files, extract), cfg)
        save_labels(path, labels, files, rate)
        log.info("k-means (%d clusters) labels for %d files in %.1f s; inertia per frame %.3f",
                 cfg.clusters, len(files), time.time() - started, inertia)
    if env.world > 1:
        dist.barrier()
    return load_labels(path, files)[0]


def train_iteration(name: str, cfg: PretrainConfig, model_cfg, labels, rate: int, entries, out: Path,
                    report: SkipReport, env: DistEnv, resume: bool, max_steps: int,
                    init: HubertModel | None = None) -> HubertModel:
    import torch

    from common.config import to_dict
    from pretrain.front_end_warmup import FrontEndRegression
    from pretrain.objective import MaskedPrediction
    from training.loop import Trainer
    from upstream.base import count_parameters
    from upstream.hubert import HubertModel
    torch.manual_seed(cfg.run.seed)
    model = HubertModel(model_cfg)
    warm = cfg.front_end_warmup
    if init is not None and warm.steps > 0:
        log.info("--init: no front-end warm-up (front_end_warmup.steps=%d ignored): the CNN is already trained",
                 warm.steps)
        warm = dataclasses.replace(warm, steps=0)
    if warm.steps > max_steps:  # a short check (--max-steps 10) is short in every phase
        log.info("%s: front_end_warmup.steps=%d capped at the iteration's %d steps", name, warm.steps, max_steps)
        warm = dataclasses.replace(warm, steps=max_steps)
    started = time.time()
    if warm.steps > 0:
        # the front end first learns log-mel (pretrain/front_end_warmup.py); its run sits beside the iteration's
        if env.is_main:
            log.info("%s: front-end warm-up, %d steps: the CNN learns log-mel before masked prediction (not in "
                     "HuBERT's recipe; front_end_warmup.steps=0 turns it off; pretrain/front_end_warmup.py)", name,
                     warm.steps)
        warm_run = dataclasses.replace(cfg.run, max_steps=warm.steps,
                                       optim=dataclasses.replace(cfg.run.optim, lr=warm.lr))
        Trainer(FrontEndRegression(model, warm.mel_bins), warm_run, entries, out / f"{name}_front_end", report, env,
                {"config": to_dict(cfg)}, label=f"{name} front-end warm-up").fit(resume=resume)
    objective = MaskedPrediction(model, labels, rate, cfg.masking)
    if init is not None:  # after MaskedPrediction, whose mask_emb_init would overwrite the checkpoint's
        copy_init(model, init)
    run = dataclasses.replace(cfg.run, max_steps=max_steps)
    if run.max_minutes > 0 and warm.steps > 0:
        # run.max_minutes caps the whole iteration: the warm-up's minutes come out of masked prediction's
        spent = (time.time() - started) / 60
        run = dataclasses.replace(run, max_minutes=max(run.max_minutes - spent, 0.01))
    if env.is_main:
        log.info("%s: masked prediction, %.2fM params, %d steps", name, count_parameters(model) / 1e6, max_steps)
    Trainer(objective, run, entries, out / name, report, env, {"config": to_dict(cfg)},
            label=f"{name} masked prediction").fit(resume=resume)
    return model


def check_settings(cfg: PretrainConfig, model_cfg) -> None:
    """Settings that would otherwise fail deep inside training (or, for iteration 2, after iteration 1 has run):
    raises ConfigError naming the key."""
    from common.config import ConfigError
    if model_cfg.layers < 1:
        raise ConfigError(f"model.layers: expected at least 1 transformer layer, got {model_cfg.layers}")
    if model_cfg.heads < 1 or model_cfg.embed_dim % model_cfg.heads:
        raise ConfigError(f"model.heads={model_cfg.heads} must divide model.embed_dim={model_cfg.embed_dim}")
    if cfg.labels.clusters < 2:
        raise ConfigError(f"labels.clusters: expected at least 2 k-means clusters, got {cfg.labels.clusters}")
    if not 0.0 < cfg.masking.mask_prob <= 1.0:
        raise ConfigError(f"masking.mask_prob: expected a probability in (0, 1], got {cfg.masking.mask_prob}")
    it2 = cfg.iteration2
    if it2.enabled and not 1 <= it2.layer <= model_cfg.layers:
        raise ConfigError(f"iteration2.layer={it2.layer} outside the model's layers 1..{model_cfg.layers}")
    if it2.enabled and it2.clusters < 2:
        raise ConfigError(f"iteration2.clusters: expected at least 2 k-means clusters, got {it2.clusters}")


def main(argv: list[str] | None = None) -> int:
    """Exit code 0, or 2 with one ``error:`` line for bad input and unwritable output (common/cli.py)."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    # provenance for scripts/ship_teacher.py (under torchrun, each rank's own command line)
    command = shlex.join(["python", "run_pretrain.py", *argv])
    return run_main(lambda: _run(args, command), resume_hint="the output folder keeps each phase's last checkpoint "
                    f"(every run.checkpoint_every steps); continue with: {resume_command('run_pretrain.py', argv)}")


def _run(args: argparse.Namespace, command: str) -> int:
    import torch.distributed as dist
    import yaml

    from common.audio import SAMPLE_RATE
    from common.config import ConfigError, to_dict
    from common.io import atomic_write_text
    from common.machine import machine_summary
    from common.run_record import check_run_folder
    from pretrain.config import PretrainConfig
    from pretrain.labels import MFCC_RATE, layer_features, mfcc_features
    from training.cli import start_run
    from training.config import SAFE_ON_RESUME
    from training.data import SkipReport, collect_audio_files, scan_audio
    from upstream.base import count_parameters
    from upstream.checkpoints import WEIGHTS_FILE, save_upstream
    from upstream.hubert import HubertUpstream

    cfg, env = start_run(PretrainConfig, args)
    if cfg.iteration2.max_steps < 0:
        raise ConfigError(f"iteration2.max_steps must be >= 0 (0: run.max_steps), got {cfg.iteration2.max_steps}")
    out = Path(args.output)
    record = {"config": to_dict(cfg), "data": [str(d) for d in args.data], "init": args.init}
    # compared with the folder's run before anything is written: a refused command changes nothing there
    progress = any(out.glob("*/checkpoints/last.pt")) or (out / WEIGHTS_FILE).exists()
    changed = check_run_folder(out / "pretrain_config.yaml", record, args.resume, progress,
                               SAFE_ON_RESUME | {"config.iteration2.max_steps"}, "pretraining")
    if changed:
        log.info("resuming with changed settings (they apply from here on): %s", ", ".join(changed))
    started = time.time()
    report = SkipReport()
    entries = scan_audio(collect_audio_files(args.data), cfg.run.data, report)
    files = [path for path, _ in entries]
    init = load_init(args.init) if args.init else None  # before anything is written: a bad --init leaves nothing
    model_cfg = dataclasses.replace(cfg.model, num_codewords=cfg.labels.clusters,
                                    final_dim=cfg.model.final_dim or 256, pred_layer_ids=())
    if init is not None:
        model_cfg = init_config(init, cfg)
    check_settings(cfg, model_cfg)  # before anything is written or trained, not after iteration 1
    if env.is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "pretrain_config.yaml", yaml.safe_dump(record, sort_keys=False))

    labels = make_labels(out / "iter1", files, mfcc_features, MFCC_RATE, cfg.labels, env)
    model = train_iteration("iter1", cfg, model_cfg, labels, MFCC_RATE, entries, out, report, env, args.resume,
                            cfg.run.max_steps, init=init)
    if cfg.iteration2.enabled:
        it2 = cfg.iteration2
        frame_rate = SAMPLE_RATE // model.downsample_rate  # the iteration-1 model's frames: iteration-2 labels
        labels = make_labels(out / "iter2", files, layer_features(model, it2.layer), frame_rate,
                             dataclasses.replace(cfg.labels, clusters=it2.clusters), env)
        model = train_iteration("iter2", cfg, dataclasses.replace(model_cfg, num_codewords=it2.clusters), labels,
                                frame_rate, entries, out, report, env, args.resume,
                                it2.max_steps or cfg.run.max_steps)
    if env.is_main:
        save_upstream(HubertUpstream(model), out)
        from benchmark.results import git_commit

        summary = {"seconds": round(time.time() - started, 1), "params": count_parameters(model),
                   "iterations": 2 if cfg.iteration2.enabled else 1, "skipped_files": len(report.skipped),
                   "files": len(entries), "hours": round(sum(n for _, n in entries) / SAMPLE_RATE / 3600, 4),
                   "command": command, "commit": git_commit(), "machine": machine_summary(),
                   "world_size": env.world}
        atomic_write_text(out / "pretrain_summary.json", json.dumps(summary, indent=2) + "\n")
        log.info("teacher written to %s: %s", out, summary)
    if env.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
