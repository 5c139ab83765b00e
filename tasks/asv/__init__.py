"""ASV: speaker verification on VoxCeleb1 (see ``task.py``)."""
from .task import SpeakerVerification

__all__ = ["SpeakerVerification"]
