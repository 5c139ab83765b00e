"""Alias kept for scripts and users: ``python -m tasks.synth`` runs ``python -m synth`` (the offline corpus builder,
now the top-level package ``synth/``)."""
