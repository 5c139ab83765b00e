"""The common start of ``run_distill.py`` and ``run_pretrain.py``."""
from __future__ import annotations

import logging
from typing import Any

import torch

from common.config import load_config

from .distributed import DistEnv, setup_distributed


def start_run(config_class: type, args) -> tuple[Any, DistEnv]:
    """Logging, the config (``--config`` + ``-o`` +
    ``--max-steps``), the process group and the CPU thread count. Returns ``(config, DistEnv)``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    overrides = list(args.override) + ([f"run.max_steps={args.max_steps}"] if args.max_steps else [])
    cfg = load_config(config_class, args.config, overrides)
    env = setup_distributed(cfg.run.device)
    if cfg.run.threads > 0:
        torch.set_num_threads(cfg.run.threads)
    return cfg, env
