"""SD: speaker diarization on Libri2Mix (see ``task.py``)."""
from .task import SpeakerDiarization

__all__ = ["SpeakerDiarization"]
