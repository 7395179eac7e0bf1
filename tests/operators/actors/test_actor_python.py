"""ActorStage, Python-class path: handle/apply equal the vectorised Counter; exceptions are
supervised; event-time timers fire by the watermark and survive a snapshot; messages
arrive in a deterministic order; bounded mailboxes follow their policy and are counted."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from actor_reference import drive, frame, random_rows
from hypothesis import given, settings
from hypothesis import strategies as st

from telepipe.errors import BackpressureError
from telepipe.operators import ActorStage, Counter
from telepipe.operators.actors import Event, PythonActor
from telepipe.operators.runtime import snapshot as snapshots


@dataclass(frozen=True)
class PyCounter(PythonActor):
    every: int = 2
    state = {"count": np.int64, "last_ts": np.int64}
    events = {"tick": {"count": np.int64}, "reached": {"count": np.int64}}
    internal = frozenset({"tick"})

    def handle(self, entity, rows, ctx):
        count, out = ctx.state["count"], []
        for ts, value in zip(rows["ts"].tolist(), rows["value"].tolist(), strict=True):
            if value < 0:
                raise ValueError(f"negative reading {value}")
            count += 1
            kind = "reached" if count % self.every == 0 else "tick"
            out.append(Event(kind, ts, {"count": count}))
        return out

    def apply(self, state, event):
        return {**state, "count": event.data["count"], "last_ts": event.ts}


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), cuts=st.lists(st.integers(0, 200), max_size=8),
       marks=st.lists(st.booleans(), min_size=1, max_size=4))  # fmt: skip
def test_the_python_path_equals_the_vectorised_counter(seed, cuts, marks) -> None:
    rows = random_rows(np.random.default_rng(seed), 200, 10, alarms=False)
    py = ActorStage(PyCounter(every=3), max_active=4).build()
    vec = ActorStage(Counter(every=3)).build()
    assert frame(drive(py, rows, cuts, marks)).equals(frame(drive(vec, rows, [], [True])))
    a, b = py.snapshot(), vec.snapshot()
    assert a["state_count"].tolist() == b["state_count"].tolist()


def test_an_exception_is_supervised_and_its_rows_go_out_as_dead_letters() -> None:
    failures: list[str] = []

    @dataclass(frozen=True)
    class Noted(PyCounter):
        def on_failure(self, entity, error, ctx):
            failures.append(f"{entity}: {error}")

    rows = [(1, 1, 1.0, 0, 0), (2, 2, 1.0, 0, 0), (1, 3, -1.0, 0, 0), (1, 20, 1.0, 0, 0)]
    logic = ActorStage(Noted(), max_attempts=2).build()
    drive(logic, rows, [3], [True])
    dead = [b for tag, b in logic.take_side() if tag == "actor_failure"]
    assert dead[0].column("error").to_pylist() == ["ValueError: negative reading -1.0"]
    assert failures == ["1: negative reading -1.0"] * 4  # the call twice, then its row twice
    assert logic.snapshot()["state_count"].tolist() == [2, 1]  # 1 went on after the failure


@dataclass(frozen=True)
class Relay(PythonActor):
    """Each row: a timer 10 ns later and a message to the next entity."""

    state = {"got": np.int64}
    events = {"timer": {"tag": np.int64}, "got": {"sender": np.int64}}

    def handle(self, entity, rows, ctx):
        for ts in rows["ts"].tolist():
            ctx.set_timer(ts + 10, tag=entity)
            ctx.send((entity + 1) % 4, entity, ts=ts)
        return []

    def on_timer(self, entity, ts, tag, ctx):
        return [Event("timer", ts, {"tag": tag})]

    def on_message(self, entity, message: Any, ctx):
        return [Event("got", ctx.ts, {"sender": message})]

    def apply(self, state, event):
        return {"got": state["got"] + (event.type == "got")}


def _relay_rows() -> list:
    rng = np.random.default_rng(4)
    return [(int(rng.integers(0, 4)), t, 0.0, 0, 0) for t in range(0, 300, 3)]


def test_timers_and_messages_are_deterministic_across_cuts_and_a_restore() -> None:
    """The same rows and watermarks give the same events however the batches are cut, and
    through a snapshot with timers pending; other watermarks, the same events (their
    per-entity order, seq, may differ: timers fire after a release's rows)."""
    rows = _relay_rows()
    want = frame(drive(ActorStage(Relay()).build(), rows, [], [True]))
    assert set(want["event"].to_list()) == {"timer", "got"}
    cut = frame(drive(ActorStage(Relay()).build(), rows, [10, 11, 40], [False]))
    assert cut.equals(want)
    marked = frame(drive(ActorStage(Relay()).build(), rows, [10, 11, 40], [True]))
    columns = ["sensor_id", "ts", "event", "tag", "sender"]
    assert marked.select(columns).sort(columns).equals(want.select(columns).sort(columns))
    # Stop mid-way (timers pending), restore, go on: the run with that watermark.
    at_50 = frame(drive(ActorStage(Relay()).build(), rows, [50], [True]))
    first = ActorStage(Relay()).build()
    out = drive_until(first, rows[:50], rows[50][1])
    taken = snapshots.Snapshot.take(first)
    assert len(taken.state["timer_ts"]) > 0
    second = ActorStage(Relay()).build()
    snapshots.restore(second, taken, "relay")
    out += drive(second, rows[50:], [], [True])
    assert frame(out).equals(at_50)


def drive_until(logic, rows, watermark):
    from actor_reference import batches_of

    out = []
    for batch in batches_of(rows):
        out += logic.on_batch(batch)
    return out + logic.on_watermark(watermark)


@pytest.mark.parametrize(
    ("policy", "delivered", "dropped"),
    [("block", 40, 0), ("drop_newest", 4, 36), ("drop_oldest", 4, 36)],
)
def test_bounded_mailboxes_by_policy(policy, delivered, dropped) -> None:
    rows = [(0, t, 0.0, 0, 0) for t in range(40)]  # entity 0 sends 40 messages to 1

    @dataclass(frozen=True)
    class Sender(Relay):
        def handle(self, entity, rows, ctx):
            for _ in rows["ts"].tolist():
                ctx.send(1, entity)
            return []

    logic = ActorStage(Sender(), mailbox_size=4, mailbox_policy=policy).build()
    drive(logic, rows, [], [True])
    c = logic.counters()
    assert (c["mailbox_delivered"], c["mailbox_dropped"]) == (delivered, dropped)
    if policy == "block":
        assert c["mailbox_blocked"] > 0
    fail = ActorStage(Sender(), mailbox_size=4, mailbox_policy="fail").build()
    with pytest.raises(BackpressureError, match="mailbox of entity sensor_id=1 is full"):
        drive(fail, rows, [], [True])
