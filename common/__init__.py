"""The ground floor, imported by every other package and importing none of them: the ``Utterance`` record and audio
reading (``utterance.py``, ``audio.py``), dataset folder names and the phone set (``datasets.py``), typed YAML
configs, atomic I/O, run checkpoints, command-line error lines, the registry helper and tensor helpers."""
