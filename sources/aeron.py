"""``AeronSource``: typed telemetry from a live Aeron subscription, pulled in batches.

The runner calls ``poll()`` only when downstream has taken the previous items,
so a slow consumer stops the polling, Aeron's flow control fills the publisher's
window and its ``offer`` returns BACK_PRESSURED: nothing is lost, memory is flat.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pyaeron
import pyarrow as pa
import pyarrow.compute as pc

from telepipe.aeron import AeronConnection
from telepipe.errors import ConfigError, SourceError
from telepipe.markers import CheckpointBarrier, Item, Watermark
from telepipe.sources.sbe import SbeCodec


@dataclass(frozen=True)
class AeronSourceOptions:
    """Where to subscribe and how to cut the stream into batches and checkpoints."""

    channel: str = "aeron:ipc"
    stream_id: int = 1001
    fragment_limit: int = 64
    out_of_orderness_ms: int = 50
    checkpoint_every_readings: int = 250_000
    checkpoint_every_ms: int = 1000

    def __post_init__(self) -> None:
        if not self.channel.startswith("aeron:"):
            raise ConfigError(
                f"source.channel must be an Aeron URI (aeron:ipc, aeron:udp?...), got {self.channel!r}"
            )
        for name in ("fragment_limit", "checkpoint_every_readings", "checkpoint_every_ms"):
            if getattr(self, name) < 1:
                raise ConfigError(f"source.{name} must be >= 1, got {getattr(self, name)}")
        if self.out_of_orderness_ms < 0:
            raise ConfigError(
                f"source.out_of_orderness_ms must be >= 0, got {self.out_of_orderness_ms}"
            )


@dataclass
class DeadLetter:
    """A message the source could not accept, kept with where and when it arrived."""

    reason: str
    detail: str
    stream_id: int
    session_id: int
    position: int
    received_ns: int
    payload: bytes


@dataclass
class SourceCounters:
    messages: int = 0
    readings: int = 0
    bytes: int = 0
    rejected: int = 0
    late: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)


def dead_letters_batch(letters: list[DeadLetter]) -> pa.RecordBatch:
    from telepipe.schema import DEAD_LETTERS

    columns = {name: [getattr(d, name) for d in letters] for name in DEAD_LETTERS.names}
    return pa.RecordBatch.from_pydict(columns, schema=DEAD_LETTERS)


class AeronSource:
    """Subscribes to one channel/stream and turns SBE messages into record batches.

    Each ``poll`` takes up to ``fragment_limit`` whole messages (Aeron reassembles
    fragments), decodes them in bulk into one RecordBatch, then emits a watermark
    (min over sessions of max event time minus the out-of-orderness bound) and,
    every N readings or T ms, a checkpoint barrier with per-session positions.
    """

    def __init__(
        self, options: AeronSourceOptions, codec: SbeCodec, connection: AeronConnection
    ) -> None:
        self.options = options
        self.codec = codec
        self.counters = SourceCounters()
        self.positions: dict[int, int] = {}
        self._max_ts: dict[int, int] = {}
        self._watermark = -(2**63)
        self._checkpoint_id = 0
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        self._dead: list[DeadLetter] = []
        self._late: list[pa.RecordBatch] = []
        self._buffer = bytearray()
        self._offsets: list[int] = []
        self._sessions: list[int] = []
        self._msg_positions: list[int] = []
        # pyaeron keeps a fragment assembler per handler object: pass the same
        # bound method every poll, or a message split across polls is lost.
        self._handler = self._on_message
        try:
            self.subscription = connection.client.add_subscription(
                options.channel, options.stream_id
            )
        except pyaeron.AeronError as error:
            raise SourceError(
                f"cannot subscribe to {options.channel} stream {options.stream_id}: {error}"
            ) from error

    def _on_message(self, buffer: pyaeron.BufferView, header: pyaeron.Header) -> None:
        self._offsets.append(len(self._buffer))
        self._buffer += buffer
        self._sessions.append(header.session_id)
        self._msg_positions.append(header.position)

    def poll(self) -> list[Item]:
        """Poll once; return the items it produced (possibly none). Never blocks."""
        if self.subscription.poll(self._handler, self.options.fragment_limit) == 0:
            return self._maybe_checkpoint([])
        return self._maybe_checkpoint(self._decode())

    def _decode(self) -> list[Item]:
        buffer = bytes(self._buffer)
        offsets = np.asarray(self._offsets, dtype=np.int64)
        lengths = np.diff(offsets, append=len(buffer))
        sessions = np.asarray(self._sessions, dtype=np.int64)
        positions = self._msg_positions
        self._buffer.clear()
        self._offsets, self._sessions, self._msg_positions = [], [], []
        self.counters.messages += len(offsets)
        self.counters.bytes += len(buffer)

        items: list[Item] = []
        # Decoded per session so each publisher's event-time progress is known:
        # the watermark is the minimum over sessions, as over partitions in Flink.
        for session in np.unique(sessions).tolist():
            mine = np.flatnonzero(sessions == session)
            self.positions[session] = positions[int(mine[-1])]
            result = self.codec.decode_many(buffer, offsets[mine], lengths[mine])
            for index, reason, detail in result.rejected:
                self._reject(
                    reason,
                    detail,
                    session,
                    positions[int(mine[index])],
                    buffer,
                    int(offsets[mine[index]]),
                    int(lengths[mine[index]]),
                )
            batch = result.batch
            if batch.num_rows:
                self.counters.readings += batch.num_rows
                self._since_checkpoint += batch.num_rows
                batch = self._split_late(session, batch)
                if batch.num_rows:
                    items.append(batch)
        if items:
            candidate = min(self._max_ts.values()) - self.options.out_of_orderness_ms * 1_000_000
            if candidate > self._watermark:
                self._watermark = candidate
                items.append(Watermark(candidate))
        return items

    def _split_late(self, session: int, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Keep on-time rows; set aside rows behind their session's bound.

        A row is late when its ts is below the running maximum of the rows before
        it in the same session minus the out-of-orderness bound. Deciding per row,
        not per poll, makes the cut independent of how polls batch the stream, so
        a replay sets aside exactly the same rows.
        """
        ts = batch.column("ts").to_numpy().view(np.int64)
        before = self._max_ts.get(session, int(ts[0]))
        running = np.maximum.accumulate(ts)
        np.maximum(running, before, out=running)
        self._max_ts[session] = int(running[-1])
        prior = np.empty_like(running)
        prior[0] = before
        prior[1:] = running[:-1]
        late = ts < prior - self.options.out_of_orderness_ms * 1_000_000
        if not late.any():
            return batch
        mask = pa.array(late)
        self._late.append(batch.filter(mask))
        self.counters.late += int(late.sum())
        return batch.filter(pc.invert(mask))

    def take_late(self) -> list[pa.RecordBatch]:
        """Rows set aside as late since the last call (a side output)."""
        late, self._late = self._late, []
        return late

    def _reject(
        self,
        reason: str,
        detail: str,
        session: int,
        position: int,
        buffer: bytes,
        start: int,
        length: int,
    ) -> None:
        counters = self.counters
        counters.rejected += 1
        counters.rejected_by_reason[reason] = counters.rejected_by_reason.get(reason, 0) + 1
        self._dead.append(
            DeadLetter(
                reason,
                detail,
                self.options.stream_id,
                session,
                position,
                time.time_ns(),
                buffer[start : start + length],
            )
        )

    def _maybe_checkpoint(self, items: list[Item]) -> list[Item]:
        now = time.monotonic()
        due_rows = self._since_checkpoint >= self.options.checkpoint_every_readings
        due_time = (
            self._since_checkpoint > 0
            and (now - self._last_checkpoint) * 1000 >= self.options.checkpoint_every_ms
        )
        if due_rows or due_time:
            items.append(self.checkpoint())
            self._last_checkpoint = now
        return items

    def checkpoint(self) -> CheckpointBarrier:
        """A barrier covering everything polled so far."""
        self._checkpoint_id += 1
        self._since_checkpoint = 0
        stream = self.options.stream_id
        positions = {f"{stream}:{s}": p for s, p in sorted(self.positions.items())}
        return CheckpointBarrier(self._checkpoint_id, positions)

    def take_dead_letters(self) -> list[DeadLetter]:
        dead, self._dead = self._dead, []
        return dead

    @property
    def is_connected(self) -> bool:
        return bool(self.subscription.is_connected)

    def close(self) -> None:
        if not self.subscription.is_closed:
            self.subscription.close()
