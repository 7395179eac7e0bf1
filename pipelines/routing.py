"""Where a run's rows go at the end of the flow: each output to its sinks, counted, and
the rows set aside to the two tables every pipeline has.

- ``late_readings``: rows behind a watermark, the source's own (its out-of-orderness
  bound) and those an operator set aside (its allowed lateness);
- ``dead_letters``: what could not be accepted: messages that do not decode, late
  rows again (one letter each, ``where`` naming the step), rows the store refused,
  input rows that kept failing an actor (``actor_failure``), start readings whose
  partial matches a pattern's limit dropped (``pattern_partial_match_dropped``).

Both commit at every barrier with the rows that preceded it. An operator's late
rows reach the end of its output's chain in-band, as ``SideOutput("late", step,
rows)`` items (a chain built from YAML or in Python with ``.pipe``, the same), and
are routed here with ``where`` = ``table.step``; an actor stage's failing rows as
``SideOutput("actor_failure", ...)``; a pattern's dropped partial matches as
``SideOutput("pattern_dropped", ...)``.

A pipeline with a journaled actor stage has the event store's tables too
(``actor_events``, ``actor_snapshots``: ``telepipe.operators.actors.journal``): the
stage sends their rows in-band before each barrier, and their barrier goes to the
sink once every output's chain delivered it (so after every stage's rows), in the
same checkpoint as every other table.
"""

from __future__ import annotations

import threading

import pyarrow as pa
from reactivex import Observer

from telepipe.dead_letters import actor_failure_letters, dead_letters_batch
from telepipe.errors import SinkError, TelepipeError
from telepipe.markers import CheckpointBarrier, Item, SideOutput
from telepipe.operators.actors.journal import STORE_TABLES, conform
from telepipe.operators.actors.stage import ACTOR_FAILURE
from telepipe.operators.patterns.logic import PATTERN_DROPPED, pattern_dropped_letters
from telepipe.operators.runtime.stage import LATE, step_of
from telepipe.pipelines.graph import RESERVED_TABLES
from telepipe.pipelines.protocols import PulledSource, Sink
from telepipe.sbe import SbeCodec
from telepipe.sources.decoder import late_row_letters

LATE_TABLE, DEAD_LETTER_TABLE = RESERVED_TABLES


class SideOutputs:
    """The ``late_readings`` and ``dead_letters`` tables of one run's sink."""

    def __init__(
        self,
        sink: Sink,
        codec: SbeCodec,
        stream_id: int,
        store: dict[str, pa.Schema] | None = None,
    ) -> None:
        """``store``: the event store's tables and their schemas (none: no journaled
        actor stage)."""
        self.sink = sink
        self.codec = codec
        self.stream_id = stream_id
        self.store = dict(store or {})
        self.late_at_steps = 0  # rows operators set aside (the source counts its own)
        self.actor_failures = 0  # input rows that kept failing an actor
        self.pattern_dropped = 0  # start readings whose partial matches a pattern dropped
        self._barriers: dict[int, tuple[CheckpointBarrier, int]] = {}  # k -> (it, chains)
        self._lock = threading.Lock()  # chains behind a thread boundary deliver there

    def late(self, where: str, rows: pa.RecordBatch) -> None:
        """Rows the step ``where`` (``table.step``) found too late for it."""
        self.sink.write(LATE_TABLE, rows)
        self.late_at_steps += rows.num_rows
        letters = late_row_letters(self.codec, rows, where, self.stream_id)
        self.sink.write(DEAD_LETTER_TABLE, dead_letters_batch(letters))

    def route(self, table: str, item: SideOutput) -> None:
        """A side output that reached the end of ``table``'s chain."""
        where = f"{table}.{item.step}"
        if item.tag == LATE:
            self.late(where, item.batch)
        elif item.tag == ACTOR_FAILURE:
            letters = actor_failure_letters(self.codec, item.batch, where, self.stream_id)
            self.actor_failures += len(letters)
            self.sink.write(DEAD_LETTER_TABLE, dead_letters_batch(letters))
        elif item.tag == PATTERN_DROPPED:
            letters = pattern_dropped_letters(self.codec, item.batch, where, self.stream_id)
            self.pattern_dropped += len(letters)
            self.sink.write(DEAD_LETTER_TABLE, dead_letters_batch(letters))
        elif item.tag in self.store:
            self.sink.write(item.tag, conform(item.batch, self.store[item.tag], where))
        else:
            raise SinkError(
                f"step {where} set rows aside as {item.tag!r}: no table takes those"
                + (" (an actor stage's journal needs journal: true)" if item.tag in STORE_TABLES
                   else "")
            )  # fmt: skip

    def chain_barrier(self, barrier: CheckpointBarrier, chains: int) -> None:
        """Barrier ``k`` reached the end of one of the ``chains`` outputs' chains: at the
        last, the event store's tables commit ``k`` (every stage's rows are in)."""
        if not self.store:
            return
        with self._lock:
            k = barrier.checkpoint_id
            source, seen = self._barriers.get(k, (barrier, 0))
            if seen + 1 < chains:
                self._barriers[k] = (source, seen + 1)
                return
            self._barriers.pop(k, None)
        for table in self.store:
            self.sink.barrier(table, source)

    def take(self, source: PulledSource) -> None:
        """The source's late rows and dead letters, and the rows the store refused."""
        for batch in source.take_late():
            self.sink.write(LATE_TABLE, batch)
        dead = source.take_dead_letters() + self.sink.take_dead_letters()
        if dead:
            self.sink.write(DEAD_LETTER_TABLE, dead_letters_batch(dead))

    def barrier(self, barrier: CheckpointBarrier) -> None:
        for table in RESERVED_TABLES:
            self.sink.barrier(table, barrier)
        if self.store:  # the event store commits it once the chains delivered it
            with self._lock:
                self._barriers.setdefault(barrier.checkpoint_id, (barrier, 0))

    def close(self) -> None:
        for table in (*RESERVED_TABLES, *self.store):
            self.sink.close(table)


class ChainError(TelepipeError):
    """An output's chain failed: the run stops, in one line naming the output."""


class Outputs:
    """The end of every output's chain: rows counted per table, then to its sinks; side
    outputs to ``side``."""

    def __init__(self, side: SideOutputs) -> None:
        self.side = side
        self.rows: dict[str, int] = {}  # rows out of each output's chain, in pipeline order

    def feed(self, table: str, observers: list[Observer[Item]]) -> Observer[Item]:
        """One subscription feeding every sink of ``table`` (the chain runs once)."""
        self.rows[table] = 0

        def on_next(item: Item) -> None:
            if isinstance(item, SideOutput):
                self.side.route(table, item)
                return
            if isinstance(item, pa.RecordBatch):
                self.rows[table] += item.num_rows
            for observer in observers:
                observer.on_next(item)
            if isinstance(item, CheckpointBarrier):
                self.side.chain_barrier(item, len(self.rows))

        def on_error(error: Exception) -> None:
            # The run ends here, in the caller's push (or the chain's subscribe, for a
            # restore that fails): a sink that only closed the table let a run with a
            # failing output commit nothing to it and exit 0.
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            if not isinstance(error, TelepipeError):
                reason = f"{type(error).__name__}: {reason}"
            step = step_of(error)
            where = f"{table}.{step}" if step else table
            raise ChainError(f"pipeline.outputs.{where}: {reason}") from error

        def on_completed() -> None:
            for observer in observers:
                observer.on_completed()

        return Observer(on_next, on_error, on_completed)
