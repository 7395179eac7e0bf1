"""Keyed event-time windows: tumbling, sliding (hopping) and session."""

from telepipe.operators.windows.session import SessionWindow
from telepipe.operators.windows.sliding import SlidingWindow
from telepipe.operators.windows.tumbling import TumblingWindow

__all__ = ["SessionWindow", "SlidingWindow", "TumblingWindow"]
