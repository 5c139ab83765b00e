"""The training machinery that distillation (``distill/``) and pretraining (``pretrain/``) share.

``loop.py`` (the :class:`~training.loop.Trainer`: objective contract, resume, LR schedule, time cap),
``config.py`` (the ``run:`` section), ``data.py`` (unlabelled audio discovery, health scan, seconds-sized
batches), ``cli.py`` (the start of ``run_distill.py`` and ``run_pretrain.py``: arguments, config, the torchrun
process group of ``common/distributed.py``), ``plots.py`` (loss curves).
"""
