"""Per-sensor detectors: threshold and hysteresis alarms, rate of change, flatline,
heartbeat timeout, EWMA z-score, dedup and resample."""

from telepipe.operators.detectors.dedup import Dedup
from telepipe.operators.detectors.ewma_zscore import EwmaZScore
from telepipe.operators.detectors.flatline import Flatline
from telepipe.operators.detectors.heartbeat_timeout import HeartbeatTimeout
from telepipe.operators.detectors.hysteresis_alarm import HysteresisAlarm
from telepipe.operators.detectors.rate_of_change import RateOfChange
from telepipe.operators.detectors.resample import Resample
from telepipe.operators.detectors.threshold_alarm import ThresholdAlarm

__all__ = [
    "Dedup",
    "EwmaZScore",
    "Flatline",
    "HeartbeatTimeout",
    "HysteresisAlarm",
    "RateOfChange",
    "Resample",
    "ThresholdAlarm",
]
