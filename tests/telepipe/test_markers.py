"""Markers refuse what is not an event time."""

from __future__ import annotations

import numpy as np
import pytest

from telepipe.markers import MAX_WATERMARK, Watermark


def test_a_watermark_takes_int64_ns_including_numpy_ints() -> None:
    assert Watermark(np.int64(5)).ts_ns == 5
    assert type(Watermark(np.int64(5)).ts_ns) is int
    assert Watermark(MAX_WATERMARK).ts_ns == MAX_WATERMARK
    assert Watermark(-(2**63)).ts_ns == -(2**63)


@pytest.mark.parametrize("bad", [float("nan"), 1.5, 2**63, -(2**63) - 1, 2**70, True, "3", None])
def test_a_watermark_refuses_anything_else_in_one_line(bad: object) -> None:
    with pytest.raises(TypeError, match=r"^Watermark.ts_ns must be an int64 ns, got .*$"):
        Watermark(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [float("nan"), 2**70, 1.5])
def test_every_operator_refuses_a_bad_watermark_given_directly(bad: object) -> None:
    """``on_watermark`` called on a logic (not through a ``Watermark``): a NaN made
    SessionWindow and SlidingWindow drop accepted rows, 2**70 raised OverflowError."""
    from telepipe.operators.detectors.flatline import Flatline
    from telepipe.operators.detectors.threshold_alarm.alarm import ThresholdAlarm
    from telepipe.operators.windows.session import SessionWindow
    from telepipe.operators.windows.sliding import SlidingWindow
    from telepipe.operators.windows.tumbling import TumblingWindow

    ops = [TumblingWindow(1000), SlidingWindow(2000, 1000), SessionWindow(1000)]
    ops += [ThresholdAlarm(1.0), Flatline(min_readings=3)]
    for op in ops:
        with pytest.raises(TypeError, match=r"^a watermark must be an int64 ns, got "):
            op.build().on_watermark(bad)  # type: ignore[arg-type]
