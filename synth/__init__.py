"""Offline mini-SUPERB corpus synthesised with espeak-ng and flite, written in the real datasets' on-disk layouts.

Entry points: ``python -m synth --out DIR --size {tiny,small}`` and :func:`synth.build.build_corpus`.
"""
