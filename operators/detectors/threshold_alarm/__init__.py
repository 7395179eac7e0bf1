"""``ThresholdAlarm`` in one place: the options and the buffered logic (``alarm``), the
eager logic (``eager``), the runs both share (``runs``) and their kernels (``_kernels``)."""

from telepipe.operators.detectors.threshold_alarm.alarm import ThresholdAlarm

__all__ = ["ThresholdAlarm"]
