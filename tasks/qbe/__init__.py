"""QbE: query-by-example spoken term detection on QUESST 2014 (see ``task.py``)."""
from .task import QueryByExample

__all__ = ["QueryByExample"]
