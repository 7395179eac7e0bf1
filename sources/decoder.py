"""From raw messages to the items of a flow: batches, watermarks, barriers, side outputs.

Shared by every source (live Aeron, replayed captures), so that a replay cuts
late rows, advances watermarks and rejects bad messages exactly as the live run
did: everything here depends on the messages and their order, never on how
polls happened to group them (checkpoint barriers aside, which carry positions
and change no result).
"""

from __future__ import annotations

import time
from collections.abc import Buffer
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from telepipe.dead_letters import LATE_READING, DeadLetter
from telepipe.errors import ConfigError
from telepipe.markers import CheckpointBarrier, Item, Watermark
from telepipe.sbe import DecodeResult, SbeCodec
from telepipe.schema import TS_MAX

# No lateness bound reaches past the event-time range (``telepipe.schema.TS_MAX``).
_MAX_BOUND_MS = TS_MAX // 1_000_000


@dataclass(frozen=True)
class DecoderOptions:
    out_of_orderness_ms: int = 50
    checkpoint_every_readings: int = 1_000_000
    checkpoint_every_ms: int = 2000
    # A session whose newest message was received this long before the newest of any
    # session stops holding the watermark back (Flink's withIdleness); 0: never.
    idle_timeout_ms: int = 5000

    def __post_init__(self) -> None:
        if not 0 <= self.out_of_orderness_ms <= _MAX_BOUND_MS:
            raise ConfigError(
                f"source.out_of_orderness_ms must be in [0, {_MAX_BOUND_MS}], "
                f"got {self.out_of_orderness_ms}"
            )
        if isinstance(self.idle_timeout_ms, bool) or not 0 <= self.idle_timeout_ms <= _MAX_BOUND_MS:
            raise ConfigError(
                f"source.idle_timeout_ms must be in [0, {_MAX_BOUND_MS}], "
                f"got {self.idle_timeout_ms!r}"
            )
        for name in ("checkpoint_every_readings", "checkpoint_every_ms"):
            if getattr(self, name) < 1:
                raise ConfigError(f"source.{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class SourceCounters:
    messages: int = 0
    readings: int = 0
    bytes: int = 0
    rejected: int = 0
    late: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)


class MessageBuffer:
    """Messages of one poll, laid back to back in one buffer for bulk decoding, and the
    sessions that ended among them (``end``), in the order they came."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.offsets: list[int] = []
        self.streams: list[int] = []
        self.sessions: list[int] = []
        self.positions: list[int] = []
        self.received: list[int] = []
        self.ended: list[bool] = []  # an end-of-stream mark, not a message

    def add(
        self,
        payload: Buffer,
        stream_id: int,
        session_id: int,
        position: int,
        received_ns: int = 0,
    ) -> None:
        """One message; ``received_ns`` is its recorded receive time (``Message.stamp_ns``),
        what its dead letters carry: never the decoder's clock, so replays agree."""
        self.offsets.append(len(self.data))
        self.data += payload
        self.streams.append(stream_id)
        self.sessions.append(session_id)
        self.positions.append(position)
        self.received.append(received_ns)
        self.ended.append(False)

    def end(self, stream_id: int, session_id: int, position: int, received_ns: int = 0) -> None:
        """The session ended here (its image's end-of-stream, or the image went away):
        everything it sent came before. It stops holding the watermark back."""
        self.offsets.append(len(self.data))
        self.streams.append(stream_id)
        self.sessions.append(session_id)
        self.positions.append(position)
        self.received.append(received_ns)
        self.ended.append(True)

    def __len__(self) -> int:
        return len(self.offsets)

    def clear(self) -> None:
        self.data.clear()
        self.offsets.clear()
        self.streams.clear()
        self.sessions.clear()
        self.positions.clear()
        self.received.clear()
        self.ended.clear()


def position_key(key: tuple[int, int]) -> str:
    """``stream:session``, how positions are named in barriers and commits."""
    return f"{key[0]}:{key[1]}"


def parse_position_key(name: str) -> tuple[int, int]:
    stream, session = name.split(":")
    return int(stream), int(session)


class TelemetryDecoder:
    """Decodes polls of messages into flow items; keeps positions and side outputs.

    Watermark: the minimum over the *active* (stream, session)s of the highest ``ts``
    seen, minus the out-of-orderness bound, as over partitions in Flink, never going
    back. A session is active from its first message until it ends (an end-of-stream
    mark: ``MessageBuffer.end``) or goes quiet (its newest message received
    ``idle_timeout_ms`` before the newest message of any session), as Flink's
    ``withIdleness``; its next message makes it active again. Received times are the
    messages' recorded stamps (``Message.stamp_ns``), never this process's clock, and
    an end is a mark in the recorded order: a live run and every replay of its capture
    decide alike.

    A message of a session that was not active (new, ended or idle) is an *entry*: the
    watermark due before it is emitted before its rows, so the rows of a session that
    comes back behind the watermark are late at the operators whatever the polls (only
    an entry can lower the minimum, so between entries the watermark at the end of a
    poll is the highest one due; the watermark due before an end is emitted too, as
    the last active session ending leaves none to compute). A row below its session's
    running maximum (of the rows before it) minus the bound is late here and set
    aside, decided per row so any poll grouping gives the same cut.
    """

    def __init__(self, codec: SbeCodec, options: DecoderOptions) -> None:
        self.codec = codec
        self.options = options
        self.counters = SourceCounters()
        self.positions: dict[tuple[int, int], int] = {}
        self._bound_ns = options.out_of_orderness_ms * 1_000_000
        self._max_ts: dict[tuple[int, int], int] = {}
        self._idle_ns = options.idle_timeout_ms * 1_000_000
        self._last_received: dict[tuple[int, int], int] = {}  # per session: newest stamp
        self._received = 0  # the newest stamp of any session: the clock idleness reads
        self._ended: set[tuple[int, int]] = set()  # sessions whose end-of-stream came
        self._watermark = -(2**63)
        self._checkpoint_id = 0
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        self._dead: list[DeadLetter] = []
        self._late: list[pa.RecordBatch] = []
        # Off while a recovery re-injects the barriers of a previous run.
        self.auto_checkpoints = True

    def decode(self, messages: MessageBuffer) -> list[Item]:
        """Items for one poll's messages (then clears the buffer)."""
        items: list[Item] = []
        if len(messages):
            items = self._decode(messages)
            messages.clear()
        return self._maybe_checkpoint(items)

    def _decode(self, messages: MessageBuffer) -> list[Item]:
        buffer = bytes(messages.data)
        offsets = np.asarray(messages.offsets, dtype=np.int64)
        lengths = np.diff(offsets, append=len(buffer))
        items: list[Item] = []
        start = 0
        m = messages
        walk = zip(m.streams, m.sessions, m.received, m.ended, strict=True)
        for i, (stream, session, stamp, ended) in enumerate(walk):
            key = (stream, session)
            if ended:  # everything before it is decoded, and the watermark it allowed
                self._decode_range(messages, buffer, offsets, lengths, start, i, items)
                self._advance(items)  # (the last active session ending leaves none)
                start = i + 1
                if key in self._last_received:
                    self._ended.add(key)
                continue
            if not self._active(key):  # an entry: the watermark due before it goes first
                self._decode_range(messages, buffer, offsets, lengths, start, i, items)
                self._advance(items)
                start = i
                self._ended.discard(key)
            self._last_received[key] = max(stamp, self._last_received.get(key, 0))
            self._received = max(self._received, stamp)
        self._decode_range(messages, buffer, offsets, lengths, start, len(offsets), items)
        self._advance(items)
        return items

    def _decode_range(
        self,
        messages: MessageBuffer,
        buffer: bytes,
        offsets: np.ndarray,
        lengths: np.ndarray,
        start: int,
        stop: int,
        items: list[Item],
    ) -> None:
        """Decode messages ``[start, stop)`` (no end mark among them), in bulk per session."""
        if start >= stop:
            return
        streams = np.asarray(messages.streams[start:stop], dtype=np.int64)
        sessions = np.asarray(messages.sessions[start:stop], dtype=np.int64)
        keys = streams << 32 | (sessions & 0xFFFFFFFF)
        self.counters.messages += stop - start
        self.counters.bytes += int(lengths[start:stop].sum())
        # Per session in order of first appearance, so each publisher's event time is known.
        _, first = np.unique(keys, return_index=True)
        for packed in keys[np.sort(first)].tolist():
            mine = np.flatnonzero(keys == packed) + start
            last = int(mine[-1])
            key = (messages.streams[last], messages.sessions[last])
            self.positions[key] = messages.positions[last]
            result = self.codec.decode_many(buffer, offsets[mine], lengths[mine])
            letters = len(self._dead)
            for index, reason, detail in result.rejected:
                at = int(mine[index])
                begin, length = int(offsets[at]), int(lengths[at])
                self._reject(
                    reason,
                    detail,
                    key,
                    messages.positions[at],
                    messages.received[at],
                    buffer[begin : begin + length],
                )
            batch = result.batch
            if batch.num_rows:
                self.counters.readings += batch.num_rows
                self._since_checkpoint += batch.num_rows
                accepted = [int(mine[i]) for i in result.accepted]
                positions = [messages.positions[i] for i in accepted]
                received = [messages.received[i] for i in accepted]
                batch = self._split_late(key, batch, result, positions, received)
                if batch.num_rows:
                    items.append(batch)
            # Rejected and late letters of a session in position order, whatever the polls.
            self._dead[letters:] = sorted(self._dead[letters:], key=lambda d: d.position)

    def _advance(self, items: list[Item]) -> None:
        """Emit the watermark the active sessions allow, if it moved on."""
        holding = self._holding()
        if holding:
            candidate = min(holding) - self._bound_ns
            if candidate > self._watermark:
                self._watermark = candidate
                items.append(Watermark(candidate))

    def _active(self, key: tuple[int, int]) -> bool:
        """Whether ``key`` holds the watermark back now: seen, not ended, not idle by the
        recorded receive times (none is idle when stamps are unknown, 0)."""
        last = self._last_received.get(key)
        if last is None or key in self._ended:
            return False
        return not (self._idle_ns and self._received and last < self._received - self._idle_ns)

    def _holding(self) -> list[int]:
        """The newest ``ts`` of every active session: those that hold the watermark back
        (none: it stays where it is)."""
        return [ts for key, ts in self._max_ts.items() if self._active(key)]

    def _split_late(
        self,
        key: tuple[int, int],
        batch: pa.RecordBatch,
        result: DecodeResult,
        positions: list[int],
        received: list[int],
    ) -> pa.RecordBatch:
        ts = batch.column("ts").to_numpy().view(np.int64)
        before = self._max_ts.get(key, int(ts[0]))
        running = np.maximum.accumulate(ts)
        np.maximum(running, before, out=running)
        self._max_ts[key] = int(running[-1])
        prior = np.empty_like(running)
        prior[0] = before
        prior[1:] = running[:-1]
        late = ts < prior - self._bound_ns
        if not late.any():
            return batch
        mask = pa.array(late)
        self._late.append(batch.filter(mask))
        self.counters.late += int(late.sum())
        rows = np.flatnonzero(late)
        self._late_letters(key, batch, rows, (prior - ts)[rows], result, positions, received)
        return batch.filter(pc.invert(mask))

    def _late_letters(
        self,
        key: tuple[int, int],
        batch: pa.RecordBatch,
        rows: np.ndarray,
        behind_ns: np.ndarray,
        result: DecodeResult,
        positions: list[int],
        received: list[int],
    ) -> None:
        """One ``late_reading`` dead letter per message with late rows, at the message's
        position, its payload the message re-encoded with only those rows: the same ids
        whatever the polls, and a replay of the letter feeds exactly the late rows."""
        # The message of each late row (rows are the messages' readings back to back).
        message = np.searchsorted(np.cumsum(result.counts), rows, side="right")
        columns = {f.name: batch.column(f.name).to_numpy()[rows] for f in batch.schema}
        bound_ms = self.options.out_of_orderness_ms
        cuts = np.flatnonzero(np.diff(message)) + 1
        firsts = np.concatenate([[0], cuts])
        counts = np.diff(np.concatenate([firsts, [len(rows)]]))
        messages = message[firsts]
        payloads = self.codec.encode_groups(columns, result.root[messages], counts)
        worst = np.maximum.reduceat(behind_ns, firsts) / 1e6
        for m, k, most, payload in zip(
            messages.tolist(), counts.tolist(), worst.tolist(), payloads, strict=True
        ):
            detail = (
                f"{k} of {int(result.counts[m])} readings more than {bound_ms} ms "
                f"behind their session's newest ts (up to {most:.3f} ms)"
            )
            self._dead.append(
                DeadLetter(LATE_READING, detail, key[0], key[1], positions[m], received[m], payload)
            )

    def _reject(
        self,
        reason: str,
        detail: str,
        key: tuple[int, int],
        position: int,
        received_ns: int,
        payload: bytes,
    ) -> None:
        c = self.counters
        c.rejected += 1
        c.rejected_by_reason[reason] = c.rejected_by_reason.get(reason, 0) + 1
        self._dead.append(
            DeadLetter(reason, detail, key[0], key[1], position, received_ns, payload)
        )

    def _maybe_checkpoint(self, items: list[Item]) -> list[Item]:
        if not self.auto_checkpoints:
            return items
        now = time.monotonic()
        o = self.options
        due = self._since_checkpoint >= o.checkpoint_every_readings or (
            self._since_checkpoint > 0
            and (now - self._last_checkpoint) * 1000 >= o.checkpoint_every_ms
        )
        if due:
            items.append(self.checkpoint())
        return items

    def checkpoint(self, checkpoint_id: int | None = None) -> CheckpointBarrier:
        """A barrier covering everything decoded so far, carrying the decoder's state."""
        self._checkpoint_id = (
            checkpoint_id if checkpoint_id is not None else self._checkpoint_id + 1
        )
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        positions = {position_key(k): p for k, p in sorted(self.positions.items())}
        return CheckpointBarrier(self._checkpoint_id, positions, {"decoder": self.snapshot()})

    @property
    def checkpoint_id(self) -> int:
        return self._checkpoint_id

    def snapshot(self) -> dict[str, object]:
        return {
            # Keys named stream:session: the snapshot is plain JSON values.
            "positions": {position_key(k): p for k, p in sorted(self.positions.items())},
            "max_ts": {position_key(k): t for k, t in sorted(self._max_ts.items())},
            "watermark": self._watermark,
            "checkpoint_id": self._checkpoint_id,
            "last_received": {position_key(k): t for k, t in sorted(self._last_received.items())},
            "received": self._received,
            "ended": [position_key(k) for k in sorted(self._ended)],
        }

    def restore(self, snapshot: dict[str, object]) -> None:
        self.positions = _by_key(snapshot["positions"])
        self._max_ts = _by_key(snapshot["max_ts"])
        self._watermark = int(snapshot["watermark"])  # type: ignore[call-overload]
        self._last_received = _by_key(snapshot.get("last_received", {}))
        self._received = int(snapshot.get("received", 0))  # type: ignore[call-overload]
        ended = snapshot.get("ended", [])
        assert isinstance(ended, list)
        self._ended = set(_by_key(dict.fromkeys(ended, 0)))
        self._checkpoint_id = int(snapshot["checkpoint_id"])  # type: ignore[call-overload]

    def take_dead_letters(self) -> list[DeadLetter]:
        dead, self._dead = self._dead, []
        return dead

    def take_late(self) -> list[pa.RecordBatch]:
        late, self._late = self._late, []
        return late


def _by_key(values: object) -> dict[tuple[int, int], int]:
    """Per (stream, session), from a snapshot: keys as tuples, or named ``stream:session``
    (as a snapshot stored as JSON or Arrow gives them back)."""
    assert isinstance(values, dict)
    out = {}
    for k, v in values.items():
        if isinstance(k, str):  # "stream:session", or "(stream, session)" from an older one
            k = parse_position_key(k.strip("()").replace(", ", ":"))
        out[(int(k[0]), int(k[1]))] = int(v)
    return out


class DecodingSource:
    """What every pulled source shares: a ``TelemetryDecoder`` and its side outputs, and
    the neutral answers of the capabilities only some sources have (the runner's
    ``PulledSource`` protocol declares them all)."""

    decoder: TelemetryDecoder
    exhausted: bool = False
    live: bool = False  # a live stream: it never ends and a restart cannot replay it

    @property
    def counters(self) -> SourceCounters:
        return self.decoder.counters

    @property
    def gaps(self) -> int:
        return 0

    @property
    def damage(self) -> dict[str, int]:
        return {}

    @property
    def recovering(self) -> bool:
        return not self.decoder.auto_checkpoints

    def stop(self) -> None:
        """Stop waiting for more input: nothing to do unless the source waits."""

    def checkpoint(self) -> CheckpointBarrier:
        return self.decoder.checkpoint()

    def take_dead_letters(self) -> list[DeadLetter]:
        return self.decoder.take_dead_letters()

    def take_late(self) -> list[pa.RecordBatch]:
        return self.decoder.take_late()


def late_row_letters(
    codec: SbeCodec, rows: pa.RecordBatch, where: str, stream_id: int
) -> list[DeadLetter]:
    """One ``late_reading`` dead letter per row an operator found behind its watermark.

    Such rows have no wire position left (they passed the source), so each letter is
    the row alone as a message (root fields 0) at session 0, position 0: its id is the
    row's content, the same however batches were cut, and a row late at two steps is
    one letter. ``dlq replay`` lays these out one after another.
    """
    if rows.num_rows == 0:
        return []
    columns = {f.name: rows.column(f.name).to_numpy(zero_copy_only=False) for f in rows.schema}
    root = dict.fromkeys(codec.root_dtype.names or (), 0)
    payloads = codec.encode_each(columns, **root)
    sensors = rows.column("sensor_id").to_pylist() if "sensor_id" in columns else None
    ts = columns["ts"].view(np.int64) if "ts" in columns else None
    letters = []
    for i, payload in enumerate(payloads):
        what = f"sensor {sensors[i]} " if sensors is not None else ""
        what += f"ts {int(ts[i])} " if ts is not None else ""
        detail = f"{what}behind the watermark minus allowed lateness at step {where}"
        stamp = int(ts[i]) if ts is not None else 0
        letters.append(DeadLetter(LATE_READING, detail, stream_id, 0, 0, stamp, payload))
    return letters
