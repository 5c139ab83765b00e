"""The benchmark engine: feature cache, batching, the one training loop, results rows and the report."""
