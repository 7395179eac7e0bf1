"""ThreadBoundary: the rest of the flow on another thread, order kept, errors surfaced."""

from __future__ import annotations

import threading

import pyarrow as pa
import pytest
import reactivex

from telepipe.errors import ConfigError
from telepipe.markers import Watermark
from telepipe.operators.runtime.thread_boundary import ThreadBoundary
from telepipe.operators.windows.tumbling import TumblingWindow


def batch(i: int) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {
            "sensor_id": pa.array([i % 3], pa.int32()),
            "ts": pa.array([i * 1_000_000], pa.timestamp("ns")),
            "value": pa.array([float(i)]),
            "quality": pa.array([192], pa.uint8()),
        }
    )


def test_items_cross_in_order_on_another_thread() -> None:
    items = [batch(i) for i in range(200)] + [Watermark(10**12)]
    seen, threads, done = [], set(), threading.Event()

    def on_next(item: object) -> None:
        seen.append(item)
        threads.add(threading.current_thread().name)

    reactivex.from_iterable(items).pipe(ThreadBoundary(capacity=4, name="tb")).subscribe(
        on_next, on_completed=done.set
    )
    assert done.is_set()  # on_completed returns only after the far side completed
    assert seen == items
    assert threads == {"tb"}


def test_a_boundary_before_an_operator_gives_the_same_output() -> None:
    items = [batch(i) for i in range(3000)]
    direct, crossed = [], []
    reactivex.from_iterable(items).pipe(TumblingWindow(size_ms=100)).subscribe(direct.append)
    reactivex.from_iterable(items).pipe(
        ThreadBoundary(capacity=2), TumblingWindow(size_ms=100)
    ).subscribe(crossed.append)
    assert pa.Table.from_batches(crossed).equals(pa.Table.from_batches(direct))


def test_a_downstream_error_reaches_the_upstream_caller() -> None:
    def boom(_item: object) -> None:
        raise RuntimeError("sink broke")

    with pytest.raises(RuntimeError, match="sink broke"):
        reactivex.from_iterable([batch(i) for i in range(50)]).pipe(
            ThreadBoundary(capacity=1)
        ).subscribe(boom)


def test_upstream_errors_go_to_on_error() -> None:
    errors = []
    reactivex.throw(ValueError("bad")).pipe(ThreadBoundary()).subscribe(on_error=errors.append)
    assert [str(e) for e in errors] == ["bad"]


def test_bad_options_name_the_operator() -> None:
    with pytest.raises(ConfigError, match="ThreadBoundary: boundary policy"):
        ThreadBoundary(policy="maybe")
