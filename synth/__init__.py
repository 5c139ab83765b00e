"""Offline mini-SUPERB corpus synthesised with espeak-ng and flite, written in the real datasets' on-disk layouts.

Entry points: ``python -m synth --out DIR --size {tiny,small}`` and :func:`synth.build.build_corpus`.
"""

# Bumped when the corpus's content changes for the same size and seed, so a cached corpus is rebuilt (the demo's
# stage cache reads it). 2: PR phones in SUPERB's stress-marked set; SNIPS speakers named after SUPERB's voices.
CORPUS_FORMAT = 2
