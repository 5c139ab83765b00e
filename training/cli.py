"""The common start of ``run_distill.py`` and ``run_pretrain.py``: their shared arguments, config and process group."""
from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from common.distributed import DistEnv

# torch is imported by start_run, not here: the entry points parse their arguments (and answer --help) first


def run_parser(doc: str, config_help: str, output_help: str, resume_help: str,
               epilog: str | None = None) -> argparse.ArgumentParser:
    """A parser with the arguments both entry points take: ``--config``, ``--data``, ``--output``, ``--max-steps``,
    ``--precision``, ``--resume`` and ``-o`` overrides (the caller adds its own). Abbreviated flags are errors."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False, epilog=epilog)
    p.add_argument("--config", required=True, help=config_help)
    p.add_argument("--data", required=True, nargs="+", help="audio directories, audio files or list files")
    p.add_argument("--output", required=True, help=output_help)
    p.add_argument("--max-steps", type=int, default=None, help="override run.max_steps")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default=None,
                   help="autocast dtype (sets run.precision): bf16 on CPU/GPU, fp16 on GPU only (GradScaler)")
    p.add_argument("--resume", action="store_true", help=resume_help)
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted config override, e.g. -o run.optim.lr=1e-4 (repeatable)")
    return p


def start_run(config_class: type, args) -> tuple[Any, DistEnv]:
    """Logging, the config (``--config`` + ``-o`` +
    ``--max-steps``), the process group and the CPU thread count. Returns ``(config, DistEnv)``."""
    import torch

    from common.config import ConfigError, load_config
    from common.distributed import check_device, setup_distributed, uses_cuda
    from common.precision import check_precision

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    overrides = list(args.override) + ([f"run.max_steps={args.max_steps}"] if args.max_steps is not None else [])
    if getattr(args, "precision", None):
        overrides.append(f"run.precision={args.precision}")
    cfg = load_config(config_class, args.config, overrides)
    if cfg.run.max_steps < 1:  # 0 once meant "the YAML's steps" and a negative value an untrained model
        raise ConfigError(f"run.max_steps (--max-steps) must be >= 1, got {cfg.run.max_steps}")
    check_device(cfg.run.device, "run.device")
    check_precision(cfg.run.precision, "cuda" if uses_cuda(cfg.run.device) else "cpu", "--precision (run.precision)")
    env = setup_distributed(cfg.run.device)
    if cfg.run.threads > 0:
        torch.set_num_threads(cfg.run.threads)
    return cfg, env
