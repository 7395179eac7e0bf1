"""BoundedQueue: each overflow policy, control items never dropped, blocked producers released."""

from __future__ import annotations

import threading
import time

import pytest

from telepipe.boundary import BoundaryOptions, BoundedQueue
from telepipe.errors import BackpressureError, ConfigError


def fill(policy: str, capacity: int = 3, n: int = 6) -> tuple[BoundedQueue[int], list]:
    dropped: list = []
    q: BoundedQueue[int] = BoundedQueue(
        BoundaryOptions(capacity, policy), on_drop=lambda item, rows: dropped.append((item, rows))
    )
    for i in range(n):
        q.put(i, 10)
    return q, dropped


def drain(q: BoundedQueue[int]) -> list[int]:
    out = []
    while (item := q.get(timeout=0.01)) is not None:
        out.append(item)
    return out


def test_drop_newest_keeps_the_first_items() -> None:
    q, dropped = fill("drop_newest")
    assert drain(q) == [0, 1, 2]
    assert dropped == [(3, 10), (4, 10), (5, 10)]
    assert q.counters.dropped_rows == 30 and q.counters.dropped_items == 3


def test_drop_oldest_keeps_the_last_items() -> None:
    q, dropped = fill("drop_oldest")
    assert drain(q) == [3, 4, 5]
    assert [item for item, _ in dropped] == [0, 1, 2]


def test_control_items_always_enter_and_are_never_evicted() -> None:
    q, _ = fill("drop_oldest", capacity=2, n=2)
    q.put(100, None)  # a marker, over capacity
    q.put(7, 10)  # evicts 0, not the marker
    assert drain(q) == [1, 100, 7]


def test_fail_raises_a_one_line_error() -> None:
    q, _ = fill("fail", capacity=2, n=2)
    with pytest.raises(BackpressureError, match="full \\(2 batches\\) and its policy is 'fail'"):
        q.put(3, 1)


def test_block_waits_for_room_and_counts_the_time() -> None:
    q, _ = fill("block", capacity=2, n=2)
    done = threading.Event()

    def producer() -> None:
        q.put(2, 10)
        done.set()

    threading.Thread(target=producer, daemon=True).start()
    time.sleep(0.2)
    assert not done.is_set()
    assert q.get() == 0
    assert done.wait(2)
    assert q.counters.blocked_s >= 0.15
    assert q.counters.peak_depth == 2
    assert drain(q) == [1, 2]


def test_close_releases_a_blocked_producer() -> None:
    q, _ = fill("block", capacity=1, n=1)
    t = threading.Thread(target=q.put, args=(1, 1), daemon=True)
    t.start()
    q.close()
    t.join(2)
    assert not t.is_alive()


@pytest.mark.parametrize(("capacity", "policy"), [(0, "block"), (4, "sometimes")])
def test_bad_options(capacity: int, policy: str) -> None:
    with pytest.raises(ConfigError):
        BoundaryOptions(capacity, policy)


def test_drop_oldest_evicts_within_the_arriving_items_group() -> None:
    q: BoundedQueue[tuple[str, int]] = BoundedQueue(
        BoundaryOptions(3, "drop_oldest"), key=lambda item: item[0]
    )
    for item in [("readings", 1), ("readings", 2), ("windows", 1)]:
        q.put(item, 10)
    q.put(("windows", 2), 10)  # evicts windows 1, not readings 1
    q.put(("alarms", 1), 10)  # no alarms queued: it enters over capacity, evicting nothing
    assert drain(q) == [("readings", 1), ("readings", 2), ("windows", 2), ("alarms", 1)]
