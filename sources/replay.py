"""``ReplaySource``: a recorded Aeron log through the same decoding as a live stream.

The input kind is detected from what the path is: a telepipe capture directory,
a pcap/pcapng file of Aeron UDP traffic, or an Aeron Archive directory. Frames
are reassembled into messages by the shared ``FrameAssembler`` and decoded by
the same ``TelemetryDecoder`` as the live source, so a replay yields the same
rows, late rows, watermarks and rejections as the live run it recorded.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from telepipe.errors import ConfigError, SourceError
from telepipe.markers import CheckpointBarrier, Item
from telepipe.sbe import SbeCodec
from telepipe.sources.capture import CaptureReader
from telepipe.sources.decoder import (
    DecoderOptions,
    DecodingSource,
    MessageBuffer,
    TelemetryDecoder,
    parse_position_key,
)
from telepipe.sources.frames import DataFrame, FrameAssembler, Message

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1",
    b"\xa1\xb2\xc3\xd4",
    b"\x4d\x3c\xb2\xa1",
    b"\xa1\xb2\x3c\x4d",
    b"\x0a\x0d\x0d\x0a",
}


class RecordedInput(Protocol):
    """A capture, pcap/pcapng file or Aeron Archive recording, read as frames."""

    notes: list[str]

    @property
    def malformed(self) -> Mapping[str, int]:
        """Damaged records skipped so far, by reason."""
        ...

    def frames(self) -> Iterator[DataFrame]: ...

    def describe(self) -> dict[str, object]: ...

    def unreadable(self) -> dict[str, int]:
        """What else could not be read so far, named as a replay reports it."""
        ...

    def stop(self) -> None:
        """Stop waiting for more (a followed capture); nothing for a finished input."""
        ...


def input_kind(path: str | Path) -> str:
    """``capture``, ``pcap`` or ``archive``; a one-line SourceError for anything else."""
    p = Path(path)
    if p.is_dir():
        if (p / "archive.catalog").is_file():
            return "archive"
        if any(p.glob("*.tpcap")):
            return "capture"
        raise SourceError(
            f"{p}: a directory that is neither a telepipe capture (*.tpcap) "
            "nor an Aeron Archive (archive.catalog)"
        )
    if p.is_file():
        with p.open("rb") as f:
            magic = f.read(4)
        if magic in PCAP_MAGICS:
            return "pcap"
        raise SourceError(f"{p}: not a pcap/pcapng file, telepipe capture or Aeron Archive")
    if p.exists():
        raise SourceError(f"{p}: not a regular file or a directory")
    raise SourceError(f"{p}: no such file or directory")


def open_input(path: str | Path, follow: bool = False) -> RecordedInput:
    kind = input_kind(path)
    if kind == "capture":
        return _Following(CaptureReader(path)) if follow else CaptureReader(path)
    if follow:
        raise ConfigError(f"replay.follow=true needs a telepipe capture, {path} is a {kind}")
    if kind == "pcap":
        from telepipe.sources.pcap import PcapReader

        return PcapReader(path)
    from telepipe.sources.archive import ArchiveReader

    return ArchiveReader(path)


class _Following:
    """A capture read as it grows, until stopped (the runner's stop flag ends it)."""

    def __init__(self, reader: CaptureReader) -> None:
        self.reader = reader
        self.notes = reader.notes
        self._stop = threading.Event()

    @property
    def malformed(self) -> Mapping[str, int]:
        return self.reader.malformed

    def frames(self) -> Iterator[DataFrame]:
        return self.reader.frames(follow=True, stop=self._stop)

    def describe(self) -> dict[str, object]:
        return self.reader.describe()

    def unreadable(self) -> dict[str, int]:
        """Nothing: the last record of a capture still being written is not torn."""
        return {}

    def stop(self) -> None:
        self._stop.set()


def parse_bound(value: object, key: str) -> tuple[str, int] | None:
    """``replay.from``/``to``: an int is a stream position, an ISO-8601 string a capture time."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a position (int) or a time (ISO-8601), got {value!r}")
    if isinstance(value, int):
        return ("position", value)
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        raise ConfigError(
            f"{key}: expected a position (int) or a time like 2026-11-23T10:00:00, got {value!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    since_epoch = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return ("time", since_epoch // timedelta(microseconds=1) * 1000)  # exact, no float


@dataclass(frozen=True)
class Resume:
    """Where a restarted replay picks up: after ``positions``, re-cutting ``barriers``."""

    positions: dict[str, int]
    decoder_state: dict[str, object] | None
    barriers: dict[int, dict[str, int]]
    # The checkpoint that ended the input (taken after the end-of-input flush), if one
    # of ``barriers``: not re-cut where its positions are reached but taken again as
    # the final barrier, after the flush, so the flushed rows fall before it again.
    final: int | None = None


# Set in the decoder's state of the barrier taken at the end of the input, after the
# flush (``ReplaySource.checkpoint``); the sink records it in that commit.
END_OF_INPUT = "end_of_input"


@dataclass(frozen=True)
class ReplayOptions:
    speed: float | None = None  # None: as fast as possible; else a real-time factor
    start: tuple[str, int] | None = None
    stop: tuple[str, int] | None = None
    stream_id: int | None = None
    batch_messages: int = 64
    follow: bool = False

    @classmethod
    def from_config(cls, node: Mapping[str, Any]) -> ReplayOptions:
        get = node.get
        speed = get("speed", "max")
        if speed in (None, "max"):
            factor = None
        else:
            try:
                factor = float(speed)
            except (TypeError, ValueError):
                factor = -1.0
            if not factor > 0:
                raise ConfigError(f"replay.speed: 'max' or a factor > 0, got {speed!r}")
        batch = get("batch_messages", 64)
        if not isinstance(batch, int) or batch < 1:
            raise ConfigError(f"replay.batch_messages must be an integer >= 1, got {batch!r}")
        stream = get("stream", None)
        if stream is not None and not isinstance(stream, int):
            raise ConfigError(f"replay.stream must be an integer stream id, got {stream!r}")
        return cls(
            factor,
            parse_bound(get("from", None), "replay.from"),
            parse_bound(get("to", None), "replay.to"),
            stream,
            batch,
            bool(get("follow", False)),
        )


class ReplaySource(DecodingSource):
    """Pulls messages from a recorded input, ``batch_messages`` per poll."""

    def __init__(
        self,
        path: str | Path,
        options: ReplayOptions,
        codec: SbeCodec,
        decoder_options: DecoderOptions,
        resume: Resume | None = None,
    ) -> None:
        self.path = Path(path)
        self.options = options
        self.input = open_input(path, options.follow)
        _check_times(self.path, self.input, options)
        self.assembler = FrameAssembler()
        self.decoder = TelemetryDecoder(codec, decoder_options)
        self.exhausted = False
        self.total_bytes = _total_bytes(self.path)
        self._messages = MessageBuffer()
        self._iterator = self._selected()
        self._queue: queue.Queue[Message | None] = queue.Queue(maxsize=1024)
        self._reader: threading.Thread | None = None
        self._pace_origin: tuple[int, float] | None = None
        self._pending: Message | None = None
        self._consumed: dict[tuple[int, int], int] = {}
        self._final: int | None = None
        self._skip_through: dict[tuple[int, int], int] = {}
        self._inject: list[tuple[int, dict[tuple[int, int], int]]] = []
        self._bounded_out = _Excluded()
        if resume is not None:
            self._resume(resume)

    def _resume(self, resume: Resume) -> None:
        """Continue after a checkpoint: skip what it covers, re-cut the later ones."""
        if resume.decoder_state is not None:
            self.decoder.restore(resume.decoder_state)
        self._skip_through = {parse_position_key(k): p for k, p in resume.positions.items()}
        # A session is consumed up to where the resume point left it: one with nothing
        # after it still reaches every barrier that recorded it there.
        self._consumed = dict(self._skip_through)
        self._final = resume.final if resume.final in resume.barriers else None
        self._inject = [
            (k, {parse_position_key(name): p for name, p in positions.items()})
            for k, positions in sorted(resume.barriers.items())
            if k != self._final
        ]
        self._auto()

    def _auto(self) -> None:
        """Checkpoints of its own only once every re-cut barrier is out (their ids are
        taken), and not while the final one waits for the end of the input."""
        self.decoder.auto_checkpoints = not self._inject and self._final is None

    def _selected(self) -> Iterator[Message]:
        o = self.options
        for message in self.assembler.assemble(self.input.frames(), ends=True):
            if o.stream_id is not None and message.stream_id != o.stream_id:
                continue
            if message.end_of_stream:  # a session's end, in its place (the decoder: once)
                if o.stop is None or _value(message, o.stop[0]) <= o.stop[1]:
                    yield message
                continue
            key = (message.stream_id, message.session_id)
            done = self._skip_through.get(key)
            if done is not None:
                # Resuming: this session's messages up to and including the one the
                # checkpoint ended at, found again by its position. Not every position
                # <= it: a frame that came early (a pcap's reordering) is delivered
                # ahead of those before it, so a session's positions need not grow.
                if message.position == done:
                    del self._skip_through[key]
                continue
            # from=P: messages that start at or after stream position P (a message's
            # position is where it ends); from=T: received at or after T. to: the mirror.
            if o.start is not None and (
                message.position <= o.start[1]
                if o.start[0] == "position"
                else message.received_ns < o.start[1]
            ):
                self._bounded_out.seen(message)
                continue
            if o.stop is not None and _value(message, o.stop[0]) > o.stop[1]:
                self._bounded_out.seen(message)
                if o.stop[0] == "time":
                    return
                continue
            self._bounded_out.selected += 1
            yield message

    def poll(self) -> list[Item]:
        if self.exhausted:
            return []
        for _ in range(self.options.batch_messages):
            if self._inject and self._barrier_due():
                break  # (due before this poll's first message: at the resume point)
            taken, self._pending = self._pending or self._next(), None
            if not isinstance(taken, Message) and taken is not None:
                break  # (_NOTHING_YET) a followed capture with nothing new: poll later
            message = taken
            if message is None:
                self.exhausted = True
                self._note_nothing_selected()
                break
            if self.options.speed is not None and not self._due(message):
                self._pending = message
                break
            if message.end_of_stream:
                self._messages.end(
                    message.stream_id, message.session_id, message.position, message.stamp_ns
                )
                continue
            self._messages.add(
                message.payload,
                message.stream_id,
                message.session_id,
                message.position,
                message.stamp_ns,
            )
            if self._inject:
                self._consumed[(message.stream_id, message.session_id)] = message.position
                if self._barrier_due():
                    break
        items = self.decoder.decode(self._messages)
        # Every barrier due here (several may share positions), all of them at the end.
        while self._inject and (self._barrier_due() or self.exhausted):
            checkpoint_id, _ = self._inject.pop(0)
            items.append(self.decoder.checkpoint(checkpoint_id))
            self._auto()
        return items

    def _note_nothing_selected(self) -> None:
        """A time or position bound that selected no message says so, in one line (the
        replay still ends normally: its tables are empty, not an error)."""
        excluded, o = self._bounded_out, self.options
        if excluded.selected or not excluded.count or self._skip_through:
            return
        bounds = [f"replay.{k}={_shown(b)}" for k, b in (("from", o.start), ("to", o.stop)) if b]
        print(
            f"telepipe: note: {' and '.join(bounds)} selects no message of {self.path}: "
            f"the {excluded.count:,} it looked at were received "
            f"{_shown(('time', excluded.first_ns))} to {_shown(('time', excluded.last_ns))}, "
            f"positions up to {excluded.last_position}",
            file=sys.stderr,
            flush=True,
        )

    def checkpoint(self) -> CheckpointBarrier:
        """The runner's last barrier. At the end of the input it comes after the flush:
        marked so (``END_OF_INPUT``), and a restart takes it again at the same place,
        with the same id, rather than where its positions are reached."""
        if not self.exhausted or self.options.follow:  # (a followed capture only stops)
            return self.decoder.checkpoint()
        final, self._final = self._final, None
        barrier = self.decoder.checkpoint(final)
        decoder = barrier.state.get("decoder")
        if isinstance(decoder, dict):
            barrier = barrier.with_state("decoder", {**decoder, END_OF_INPUT: True})
        return barrier

    def _next(self) -> Message | object | None:
        """The next message (None: the input ended). A followed capture is read by a
        thread of its own, so a poll never waits for the writer: with nothing new it
        returns ``_NOTHING_YET`` and the runner goes on (checkpoints, watermarks,
        stops) while it follows."""
        if not self.options.follow:
            return next(self._iterator, None)
        if self._reader is None:
            self._reader = threading.Thread(target=self._follow, daemon=True)
            self._reader.start()
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            return _NOTHING_YET

    def _follow(self) -> None:
        try:
            for message in self._iterator:
                self._queue.put(message)  # bounded: the reader waits for the polls
        finally:
            self._queue.put(None)

    def _barrier_due(self) -> bool:
        """The next re-cut barrier is due: every session it recorded is at the message
        it recorded, by position (reached again, not passed: positions need not grow)."""
        _, positions = self._inject[0]
        return all(self._consumed.get(key, -1) == p for key, p in positions.items())

    def _due(self, message: Message) -> bool:
        """Whether ``message`` is due at ``speed`` x real time (naps briefly if not)."""
        if not message.received_ns:
            return True
        now = time.monotonic()
        if self._pace_origin is None:
            self._pace_origin = (message.received_ns, now)
        origin_ns, origin_s = self._pace_origin
        due = origin_s + (message.received_ns - origin_ns) / 1e9 / (self.options.speed or 1.0)
        if due <= now:
            return True
        time.sleep(min(due - now, 0.05))
        return False

    def progress(self) -> tuple[int, int | None]:
        c = self.assembler.counters
        return c.bytes + 32 * c.frames, self.total_bytes

    @property
    def gaps(self) -> int:
        return len(self.assembler.counters.gaps)

    @property
    def damage(self) -> dict[str, int]:
        """What of the input could not be read so far, by kind (none: empty): a torn
        tail's bytes, malformed records by reason, fragments dropped, gaps.
        ``telepipe inspect`` says where."""
        c = self.assembler.counters
        found = {f"malformed_{k}": int(v) for k, v in sorted(self.input.malformed.items()) if v}
        found |= self.input.unreadable()
        counts = (
            ("dropped_fragments", c.dropped_fragments),
            ("gaps", len(c.gaps)),
            ("out_of_place_frames", c.out_of_place),
        )
        return found | {k: v for k, v in counts if v}

    def stop(self) -> None:
        self.input.stop()

    def close(self) -> None:
        self.stop()


_NOTHING_YET = object()  # a followed capture has no new message now


def _check_times(path: Path, recorded: RecordedInput, options: ReplayOptions) -> None:
    """Time bounds and pacing need receive times: an Aeron Archive's frames carry none
    and its catalog may not say when a recording started. Refused in one line rather
    than replaying nothing (``from``) or everything (``to``) at any speed."""
    from telepipe.sources.archive import ArchiveReader

    if not isinstance(recorded, ArchiveReader) or recorded.times_known():
        return
    for key, bound in (("replay.from", options.start), ("replay.to", options.stop)):
        if bound is not None and bound[0] == "time":
            raise ConfigError(
                f"{key}: {path} is an Aeron Archive whose catalog gives no start time "
                "for its recordings, so its messages have no time: bound it by position"
            )
    if options.speed is not None:
        raise ConfigError(
            f"replay.speed: {path} is an Aeron Archive whose catalog gives no start time "
            "for its recordings: it replays only at speed=max"
        )


@dataclass
class _Excluded:
    """Messages a replay's time/position bounds left out (for the note when all were)."""

    count: int = 0
    selected: int = 0
    first_ns: int = 0
    last_ns: int = 0
    last_position: int = 0

    def seen(self, message: Message) -> None:
        self.count += 1
        if not self.first_ns or message.received_ns < self.first_ns:
            self.first_ns = message.received_ns
        self.last_ns = max(self.last_ns, message.received_ns)
        self.last_position = max(self.last_position, message.position)


def _shown(bound: tuple[str, int]) -> str:
    kind, value = bound
    if kind == "position":
        return str(value)
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=value // 1000)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _value(message: Message, kind: str) -> int:
    return message.position if kind == "position" else message.received_ns


def _total_bytes(path: Path) -> int | None:
    if path.is_file():
        return path.stat().st_size
    if (path / "archive.catalog").is_file():
        return None  # segments are pre-sized; the catalog's positions say more
    return sum(f.stat().st_size for f in path.glob("*.tpcap")) or None
