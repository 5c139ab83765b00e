"""``python -m tasks.synth ...`` = ``python -m synth ...`` (the corpus builder moved to the top-level ``synth/``)."""
import sys

from synth.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
