"""SF: slot filling on Audio SNIPS (see ``task.py``)."""
from .task import SlotFilling

__all__ = ["SlotFilling"]
