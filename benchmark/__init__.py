"""The benchmark engine: it calls the tasks (``tasks/``) with data and gets data back. The run (``engine.py``),
the one training loop of task heads (``trainer.py``), the feature cache and sources, seconds-sized batching, results
rows, the report and SUPERB score, and the ``run_benchmark.py`` command line (``cli.py``, ``workers.py``)."""
