"""Aeron data frames from recorded inputs, and their reassembly into messages.

Every recorded input (telepipe captures, pcap files of Aeron UDP, Aeron Archive
recordings) yields the same thing: ``DataFrame``s in stream order, each one
fragment of a message with the fields of its 32-byte Aeron data header
(aeron_udp_protocol.h) and the position at its end. ``FrameAssembler`` turns
them into whole ``Message``s per (stream, session) using the BEGIN/END flags,
and reports gaps (a frame that does not start where the previous one ended)
instead of failing: a message cut by a gap is dropped and counted.
"""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

HEADER_LENGTH = 32
FRAME_ALIGNMENT = 32
BEGIN_FLAG = 0x80
END_FLAG = 0x40
EOS_FLAG = 0x20
UNFRAGMENTED = BEGIN_FLAG | END_FLAG

TYPE_PAD = 0
TYPE_DATA = 1
TYPE_NAK = 2
TYPE_SM = 3
TYPE_ERR = 4
TYPE_SETUP = 5
TYPE_RTTM = 6

# The data frame header, little-endian (DataHeaderFlyweight).
DATA_HEADER = np.dtype(
    [
        ("frame_length", "<i4"),
        ("version", "u1"),
        ("flags", "u1"),
        ("type", "<i2"),
        ("term_offset", "<i4"),
        ("session_id", "<i4"),
        ("stream_id", "<i4"),
        ("term_id", "<i4"),
        ("reserved_value", "<i8"),
    ]
)
assert DATA_HEADER.itemsize == HEADER_LENGTH

# SETUP frame (SetupFlyweight), 40 bytes.
SETUP_HEADER = np.dtype(
    [
        ("frame_length", "<i4"),
        ("version", "u1"),
        ("flags", "u1"),
        ("type", "<i2"),
        ("term_offset", "<i4"),
        ("session_id", "<i4"),
        ("stream_id", "<i4"),
        ("initial_term_id", "<i4"),
        ("active_term_id", "<i4"),
        ("term_length", "<i4"),
        ("mtu", "<i4"),
        ("ttl", "<i4"),
    ]
)


def align(length: int, alignment: int = FRAME_ALIGNMENT) -> int:
    return (length + alignment - 1) & ~(alignment - 1)


def position_of(term_id: int, term_offset: int, initial_term_id: int, term_length: int) -> int:
    """Stream position of ``term_offset`` in ``term_id`` (Aeron's computePosition)."""
    shift = term_length.bit_length() - 1
    return ((term_id - initial_term_id) << shift) + term_offset


@dataclass(frozen=True, slots=True)
class DataFrame:
    """One Aeron data frame (a message fragment) as recorded."""

    stream_id: int
    session_id: int
    term_id: int
    term_offset: int
    flags: int
    position: int  # stream position just past this frame (aligned), as Header.position
    received_ns: int  # when it was captured/received; 0 if the input does not say
    payload: bytes
    reserved_value: int = 0
    # A PAD frame (the rest of a term no message fitted in) has no payload and
    # covers this many bytes; it moves the position on without a message.
    padding: int = 0

    @property
    def start_position(self) -> int:
        if self.padding:
            return self.position - self.padding
        return self.position - align(len(self.payload) + HEADER_LENGTH)


@dataclass(frozen=True, slots=True)
class Message:
    """A whole message (fragments reassembled), with the position just past it."""

    stream_id: int
    session_id: int
    position: int
    received_ns: int
    payload: bytes
    reserved_value: int = 0  # the last fragment's (a telepipe publisher's send time)
    # Not a message: the session's end-of-stream (an EOS heartbeat frame, flags 0x20),
    # after everything it sent.
    end_of_stream: bool = False

    @property
    def stamp_ns(self) -> int:
        """The message's receive time as every reader of it sees it: the publisher's
        stamp in the frame's reserved value (telepipe publishers put their send time
        there), else the time the input recorded. Never the reader's clock, so a live
        run and every replay of its capture agree."""
        return stamp_ns(self.reserved_value, self.received_ns)


def stamp_ns(reserved_value: int, received_ns: int) -> int:
    """``reserved_value`` when a publisher stamped it (> 0), else ``received_ns``."""
    return reserved_value if reserved_value > 0 else received_ns


@dataclass(frozen=True, slots=True)
class Gap:
    stream_id: int
    session_id: int
    expected_position: int
    position: int

    def __str__(self) -> str:
        lost = self.position - self.expected_position
        kind = f"{lost} bytes missing" if lost > 0 else f"{-lost} bytes repeated/out of order"
        return (
            f"stream {self.stream_id} session {self.session_id}: expected position "
            f"{self.expected_position}, got {self.position} ({kind})"
        )


@dataclass
class AssemblerCounters:
    frames: int = 0
    messages: int = 0
    bytes: int = 0
    dropped_fragments: int = 0
    gaps: list[Gap] = field(default_factory=list)
    out_of_place: int = 0  # frames ahead of their stream that the stream then went around
    repeated: int = 0  # frames taken ahead of their stream that then came again in order
    reordered: int = 0  # frames that came before their predecessors, put back in their place


@dataclass
class _Hole:
    """Bytes of a stream that never came by the time its jump over them stood: the frames
    that come late into it (exactly at ``cursor``, within ``end``) are put back in place."""

    cursor: int  # the next byte missing
    end: int  # where the stream went on
    gap: Gap  # its gap in the counters (shrunk as frames come)
    partial: tuple[bytearray, int] | None  # the message in progress at ``cursor``
    counted: bool  # ``partial`` is counted as a dropped fragment
    after: list[DataFrame]  # the orphan fragments (counted) from ``end`` on
    open: bool  # orphans of the stream may still join ``after``


class FrameAssembler:
    """Reassembles frames into messages per (stream, session); tracks positions and gaps.

    A frame that starts before the expected position is a duplicate or out of order
    (UDP retransmits, pcap reordering) and is dropped; one that starts after it
    means bytes were lost: the partial message in progress is dropped and the gap
    recorded. Either way reading goes on.

    Unless the stream then goes on exactly where it was before that jump, within
    ``REWIND_FRAMES`` frames: then the frame that jumped was out of place (a stray
    or corrupt frame, or one that came early), not a sign of loss. The jump is
    undone (its gap and the drop of the partial message too), the stream continues
    from before it, and the frame counts in ``out_of_place``; had it completed a
    message, that message was already delivered, and when the same frames (same
    position, same bytes) come again in order they are dropped (``repeated``): a frame
    that came early and again is delivered once; if it does not come again, the
    stream goes on past it. Likewise a stream's first frame:
    a frame that starts before it, within its first ``REWIND_FRAMES`` frames,
    starts the stream again (the frames behind it until then are lost, counted).

    The stream may also go on from a point between where it was and where the jump
    took it: the frame that jumped was overwritten in place (a corrupt term offset or
    id) or came early after a loss. The jump is undone as well, and only the bytes
    between where the stream was and where it goes on are a gap: a damaged frame costs
    only the message it carried. Frames taken after a jump that were not delivered
    (fragments of a message whose earlier fragments were still to come: fragments out
    of order) are kept and fed again once the stream reaches them (``reordered``).
    ``feed`` may so complete more than one message: it returns the first, ``assemble``
    yields them all.

    A jump that stood (no frame before it within ``REWIND_FRAMES``, or another jump came)
    leaves a hole: the missing bytes, the message they cut and the orphan fragments after
    them. A frame that comes later exactly where the hole's bytes go is put there (counted
    in ``reordered``); once the hole is full its gap is gone and a message it completes is
    delivered, late: a reordering loses no message, however far a frame moved. The last
    ``HOLES`` holes of a stream are kept.
    """

    REWIND_FRAMES = 64
    HOLES = 64

    def __init__(self) -> None:
        self.counters = AssemblerCounters()
        self._expected: dict[tuple[int, int], int] = {}
        self._partial: dict[tuple[int, int], tuple[bytearray, int]] = {}
        # Per stream, the last jump ahead: (position before it, its gap, the partial
        # message it dropped, frames since).
        self._jump: dict[tuple[int, int], tuple[int, Gap, tuple[bytearray, int] | None, int]] = {}
        # Per stream, for its first REWIND_FRAMES frames: (start of the first, frames since).
        self._opening: dict[tuple[int, int], tuple[int, int]] = {}
        # Per stream, while its opening stands: the frames taken, with whether each was
        # counted as an orphan (as _ahead): kept once it starts again before them.
        self._early: dict[tuple[int, int], list[tuple[DataFrame, bool]]] = {}
        # Per stream, the frames of messages delivered while a jump stood (start ->
        # (end, crc of the payload)): once the stream went around the jump (or restarted
        # before its first frame) and reaches
        # them again, the same frames are not delivered twice (reordering + retransmit).
        self._taken: dict[tuple[int, int], dict[int, tuple[int, int]]] = {}
        # Per stream, while a jump or its opening stands: the frames of the message
        # in progress.
        self._taking: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
        # Per stream, the frames taken since its last jump, each with whether it was
        # counted as an orphan fragment (dropped); once the jump is undone, those not
        # delivered wait in _stash (start -> frame, counted) until the stream is there.
        self._ahead: dict[tuple[int, int], list[tuple[DataFrame, bool]]] = {}
        self._stash: dict[tuple[int, int], dict[int, tuple[DataFrame, bool]]] = {}
        self._ready: deque[Message] = deque()
        self._ended: dict[tuple[int, int], int] = {}  # the position each end was told at
        self._pending_end: dict[tuple[int, int], DataFrame] = {}  # ends the stream is short of
        self._holes: dict[tuple[int, int], list[_Hole]] = {}  # per stream, oldest first

    def positions(self) -> dict[tuple[int, int], int]:
        """(stream, session) -> position just past the last frame taken."""
        return dict(self._expected)

    def feed(self, frame: DataFrame) -> Message | None:
        """Take one frame; the first message it completes (``ready()``: the others)."""
        self.counters.frames += 1
        key = (frame.stream_id, frame.session_id)
        first = self._feed(key, frame)
        stash = self._stash.get(key)
        while stash:
            expected = self._expected.get(key)
            for stale in [s for s in stash if expected is None or s < expected]:
                del stash[stale]  # (out of place, counted so, or an orphan, counted)
            if expected is None:
                break
            if expected not in stash and not self._past_taken(key, expected, stash):
                break
            expected = self._expected[key]
            again, counted = stash.pop(expected)
            self.counters.reordered += 1
            if counted:
                self.counters.dropped_fragments -= 1
            message = self._feed(key, again)
            if message is not None:
                self._ready.append(message)
        if stash is not None and not stash:
            del self._stash[key]
        pending = self._pending_end.get(key)
        if pending is not None and pending is not frame:
            expected = self._expected.get(key)
            if expected is not None and expected >= pending.position:
                end = self._end(key, pending)
                if end is not None:
                    self._ready.append(end)
        if first is None and self._ready:
            return self._ready.popleft()
        return first

    def _past_taken(
        self, key: tuple[int, int], expected: int, stash: dict[int, tuple[DataFrame, bool]]
    ) -> bool:
        """Whether the stream, past frames it delivered while the jump stood (``_taken``),
        reaches a frame it kept (``stash``): those came before it, so the stream goes on
        past them to it (before: the kept frame was dropped as stale once the next frame
        came, and its message lost)."""
        taken = self._taken.get(key)
        at = expected
        while taken and at in taken and at not in stash:
            at = taken[at][0]
        if at == expected or at not in stash or taken is None:
            return False
        while expected != at:
            expected = taken.pop(expected)[0]
        self._expected[key] = at
        if not taken:
            del self._taken[key]
        return True

    def ready(self) -> list[Message]:
        """Messages completed by the last ``feed`` beyond the one it returned."""
        out = list(self._ready)
        self._ready.clear()
        return out

    def _feed(self, key: tuple[int, int], frame: DataFrame) -> Message | None:
        c = self.counters
        if frame.flags & EOS_FLAG and not frame.payload and not frame.padding:
            return self._end(key, frame)
        self._ended.pop(key, None)  # (data after an end: a later end is told again)
        start = frame.start_position
        expected = self._expected.get(key)
        if key in self._taken and expected is not None:
            expected = self._skip_taken(key, frame, start, expected)
            if expected is None:
                return None
        opening = self._opening.get(key)
        if expected is None:
            self._opening[key] = (start, 0)
        elif opening is not None:
            if start < opening[0]:  # before the stream's first frame: that one was astray
                self._restart(key)
                expected = None
                self._opening[key] = (start, 0)
            elif opening[1] + 1 < self.REWIND_FRAMES:
                self._opening[key] = (opening[0], opening[1] + 1)
            else:
                del self._opening[key]
                self._early.pop(key, None)
        jump = self._jump.pop(key, None)
        ahead = self._ahead.pop(key, None)
        if (
            jump is not None
            and expected is not None
            and jump[0] <= start < expected
            and not self._seen(key, frame, start, ahead)
        ):
            # The stream goes on from before where the jump took it: undo the jump; a
            # frame after where it was (not at it) leaves a gap of only what is between.
            self._undo(key, jump, ahead)
            expected = jump[0]
            jump = None
        if jump is not None and ahead is not None and start >= jump[0]:
            self._ahead[key] = ahead
        if expected is not None and start < expected and key in self._holes:
            hole = self._hole_at(key, start, frame.position)
            if hole is not None:
                self._count(key, jump)
                return self._fill(key, hole, frame)
        if expected is not None and start != expected:
            gap = Gap(frame.stream_id, frame.session_id, expected, start)
            c.gaps.append(gap)
            if start < expected:
                c.dropped_fragments += 1
                self._count(key, jump)
                return None
            dropped = self._partial.pop(key, None)
            if dropped is not None:
                c.dropped_fragments += 1
            if jump is not None:  # the jump before stands
                self._stand(key, jump, ahead)
            self._jump[key] = (expected, gap, dropped, 0)
            self._ahead[key] = []
        else:
            self._count(key, jump)
        if key not in self._jump:
            self._ahead.pop(key, None)
        self._expected[key] = frame.position
        orphan = not frame.padding and not frame.flags & BEGIN_FLAG and key not in self._partial
        if key in self._holes:
            self._after_hole(key, frame, orphan)
        message = self._take(key, frame)
        if key in self._ahead:
            self._ahead[key].append((frame, orphan))
        if key in self._opening:
            self._early.setdefault(key, []).append((frame, orphan))
        if (key in self._jump or key in self._opening) and not frame.padding:
            self._record(key, frame, start, message is not None)
        return message

    def _seen(
        self,
        key: tuple[int, int],
        frame: DataFrame,
        start: int,
        ahead: list[tuple[DataFrame, bool]] | None,
    ) -> bool:
        """``frame`` is one taken since the jump, come again (a retransmit): not a sign
        that the stream goes on from before the jump."""
        return any(f.start_position == start for f, _ in ahead or ()) or (
            start in self._taken.get(key, {})
        )

    def _skip_taken(
        self, key: tuple[int, int], frame: DataFrame, start: int, expected: int
    ) -> int | None:
        """``expected`` past the frames already delivered ahead of the stream; ``None``
        when ``frame`` is one of them, come again (dropped, counted in ``repeated``)."""
        taken = self._taken[key]
        if start == expected and start in taken:
            end, crc = taken.pop(start)
            if frame.position == end and zlib.crc32(frame.payload) == crc:
                self.counters.repeated += 1
                self._expected[key] = end
                if not taken:
                    del self._taken[key]
                return None
        # The early frame does not come again: the stream goes on past it.
        while start != expected and expected in taken:
            expected = taken.pop(expected)[0]
            self._expected[key] = expected
        if key not in self._jump and key not in self._opening:  # (either may be undone)
            for stale in [s for s in taken if s < expected]:
                del taken[stale]
        if not taken:
            del self._taken[key]
        return expected

    def _record(self, key: tuple[int, int], frame: DataFrame, start: int, done: bool) -> None:
        """Note a frame taken while a jump stands; once its message is delivered, its
        frames are ``_taken``."""
        if frame.flags & BEGIN_FLAG:
            self._taking[key] = []
        taking = self._taking.setdefault(key, [])
        taking.append((start, frame.position, zlib.crc32(frame.payload)))
        if done:
            taken = self._taken.setdefault(key, {})
            if len(taken) < 4 * self.REWIND_FRAMES:
                taken.update({s: (e, crc) for s, e, crc in taking})
            del self._taking[key]
        elif frame.flags & END_FLAG:
            del self._taking[key]

    def _take(self, key: tuple[int, int], frame: DataFrame) -> Message | None:
        c = self.counters
        if frame.padding:
            if key in self._partial:  # a message never spans a pad: it was cut
                del self._partial[key]
                c.dropped_fragments += 1
            return None
        flags = frame.flags & UNFRAGMENTED
        if flags == UNFRAGMENTED:
            if key in self._partial:  # a BEGIN without its END: the writer died mid-message
                del self._partial[key]
                c.dropped_fragments += 1
            return self._message(key, frame, frame.payload)
        if flags == BEGIN_FLAG:
            if key in self._partial:
                c.dropped_fragments += 1
            self._partial[key] = (bytearray(frame.payload), frame.received_ns)
            return None
        partial = self._partial.get(key)
        if partial is None:  # a middle or END fragment whose BEGIN we never saw
            c.dropped_fragments += 1
            return None
        partial[0].extend(frame.payload)
        if flags == END_FLAG:
            del self._partial[key]
            return self._message(key, frame, bytes(partial[0]))
        return None

    def _count(self, key: tuple[int, int], jump: tuple | None) -> None:
        """One more frame since the stream's last jump; past ``REWIND_FRAMES`` it stands."""
        if jump is not None and jump[3] + 1 < self.REWIND_FRAMES:
            self._jump[key] = (*jump[:3], jump[3] + 1)
        elif jump is not None:
            self._stand(key, jump, self._ahead.get(key))

    def _stand(
        self,
        key: tuple[int, int],
        jump: tuple[int, Gap, tuple[bytearray, int] | None, int],
        ahead: list[tuple[DataFrame, bool]] | None,
    ) -> None:
        """The jump stands: its bytes become a hole that late frames may still fill."""
        before, gap, dropped, _ = jump
        if before >= gap.position or gap not in self.counters.gaps:
            return
        after: list[DataFrame] = []
        at = gap.position
        for f, counted in ahead or ():
            if not counted or f.start_position != at:
                break
            after.append(f)
            at = f.position
        is_open = ahead is not None and len(after) == len(ahead)
        holes = self._holes.setdefault(key, [])
        for hole in holes:
            hole.open = False
        holes.append(_Hole(before, gap.position, gap, dropped, dropped is not None, after, is_open))
        if len(holes) > self.HOLES:
            self._forget(holes.pop(0))

    def _forget(self, hole: _Hole) -> None:
        if hole.partial is not None and not hole.counted:
            self.counters.dropped_fragments += 1

    def _after_hole(self, key: tuple[int, int], frame: DataFrame, orphan: bool) -> None:
        """An orphan fragment right after the last hole (or after those) joins it."""
        hole = self._holes[key][-1]
        if not hole.open:
            return
        at = hole.after[-1].position if hole.after else hole.end
        if orphan and frame.start_position == at:
            hole.after.append(frame)
        else:
            hole.open = False

    def _hole_at(self, key: tuple[int, int], start: int, end: int) -> _Hole | None:
        for hole in self._holes[key]:
            if hole.cursor == start and end <= hole.end:
                return hole
        return None

    def _fill(self, key: tuple[int, int], hole: _Hole, frame: DataFrame) -> Message | None:
        """``frame`` came late into ``hole``: put it in its place."""
        c = self.counters
        c.reordered += 1
        message = self._take_into(key, hole, frame)
        hole.cursor = frame.position
        at = next(i for i, g in enumerate(c.gaps) if g is hole.gap)
        if hole.cursor < hole.end:
            hole.gap = Gap(key[0], key[1], hole.cursor, hole.end)
            c.gaps[at] = hole.gap
            return message
        del c.gaps[at]
        holes = self._holes[key]
        holes.remove(hole)
        if not holes:
            del self._holes[key]
        # The orphans after it (counted dropped until now) end the message it began.
        ends = [i for i, f in enumerate(hole.after) if f.flags & END_FLAG]
        if hole.partial is not None and ends:
            for f in hole.after[: ends[0] + 1]:
                c.dropped_fragments -= 1
                c.reordered += 1
                done = self._take_into(key, hole, f)
            if done is not None and message is None:
                message = done
            elif done is not None:
                self._ready.append(done)
        self._forget(hole)
        return message

    def _take_into(self, key: tuple[int, int], hole: _Hole, frame: DataFrame) -> Message | None:
        """``_take`` for a hole's message."""
        c = self.counters
        flags = frame.flags & UNFRAGMENTED
        if frame.padding or flags & BEGIN_FLAG:
            self._forget(hole)  # (a message never spans a pad; a BEGIN: the one before cut)
            hole.partial, hole.counted = None, False
            if frame.padding:
                return None
            if flags == BEGIN_FLAG:
                hole.partial = (bytearray(frame.payload), frame.received_ns)
                return None
            return self._message(key, frame, frame.payload)
        if hole.partial is None:
            c.dropped_fragments += 1
            return None
        hole.partial[0].extend(frame.payload)
        if flags != END_FLAG:
            return None
        payload = bytes(hole.partial[0])
        if hole.counted:
            c.dropped_fragments -= 1
        hole.partial, hole.counted = None, False
        return self._message(key, frame, payload)

    def _restart(self, key: tuple[int, int]) -> None:
        """A frame before the stream's first one, early on: the first was out of place (a
        stray far ahead, taken as the start); the stream starts again from this frame."""
        c = self.counters
        c.out_of_place += 1
        c.gaps = [g for g in c.gaps if (g.stream_id, g.session_id) != key]
        self._partial.pop(key, None)
        self._jump.pop(key, None)
        for hole in self._holes.pop(key, ()):
            self._forget(hole)
        self._expected.pop(key, None)
        self._taking.pop(key, None)  # (what it delivered stays _taken)
        self._keep(key, -1, self._early.pop(key, None))

    def _undo(
        self,
        key: tuple[int, int],
        jump: tuple[int, Gap, tuple[bytearray, int] | None, int],
        ahead: list[tuple[DataFrame, bool]] | None,
    ) -> None:
        """The stream went on from before its last jump: undo the jump. The frames taken
        since that were not delivered wait until the stream reaches them."""
        c = self.counters
        before, gap, dropped, _ = jump
        c.out_of_place += 1
        c.gaps.remove(gap)
        self._partial.pop(key, None)  # begun by a frame after the jump: kept in _stash
        self._taking.pop(key, None)
        if dropped is not None:
            self._partial[key] = dropped
            c.dropped_fragments -= 1
        self._expected[key] = before
        self._keep(key, before, ahead)

    def _keep(
        self, key: tuple[int, int], before: int, frames: list[tuple[DataFrame, bool]] | None
    ) -> None:
        """The frames taken past ``before`` that were not delivered wait in the stash
        until the stream reaches them."""
        taken = self._taken.get(key, {})
        stash = self._stash.setdefault(key, {})
        for f, counted in frames or ():
            at = f.start_position
            if not f.padding and at > before and at not in taken and at not in stash:
                stash[at] = (f, counted)
        if not stash:
            del self._stash[key]

    def finish(self) -> None:
        """The input ended: a message still missing its END fragment is dropped (counted).
        A session's end the stream never reached is told now (``ready()``), after a gap
        for the bytes before it that never came."""
        for key, taken in self._taken.items():  # delivered ahead: the stream went past
            expected = self._expected.get(key)
            while expected is not None and expected in taken:
                expected = self._expected[key] = taken.pop(expected)[0]
        for key, frame in list(self._pending_end.items()):
            expected = self._expected.get(key, frame.position)
            if frame.position > expected:
                self.counters.gaps.append(Gap(key[0], key[1], expected, frame.position))
                self._expected[key] = frame.position
            end = self._end(key, frame)
            if end is not None:
                self._ready.append(end)
        self.counters.dropped_fragments += len(self._partial)
        self._partial.clear()
        for holes in self._holes.values():
            for hole in holes:
                self._forget(hole)
        self._holes.clear()
        self._taking.clear()
        self._stash.clear()
        self._ahead.clear()
        self._early.clear()

    def _end(self, key: tuple[int, int], frame: DataFrame) -> Message | None:
        """An end-of-stream heartbeat (no payload, EOS flag): the session's end mark. It
        moves no position; a message still missing its END fragment was cut. As a live
        image's end-of-stream, it is told once, and only once the stream has reached it
        (Aeron repeats the heartbeat while the publication lingers: a frame before it
        may still be re-sent after one of them)."""
        expected = self._expected.get(key)
        if self._ended.get(key) == frame.position:
            return None  # told already, nothing of the session since
        if expected is not None and frame.position > expected:
            self._pending_end[key] = frame  # told once the stream is there (or at the end)
            return None
        self._pending_end.pop(key, None)
        self._ended[key] = frame.position
        if self._partial.pop(key, None) is not None:
            self.counters.dropped_fragments += 1
        return Message(
            key[0], key[1], frame.position, frame.received_ns, b"", frame.reserved_value, True
        )

    def _message(self, key: tuple[int, int], frame: DataFrame, payload: bytes) -> Message:
        self.counters.messages += 1
        self.counters.bytes += len(payload)
        return Message(
            key[0], key[1], frame.position, frame.received_ns, payload, frame.reserved_value
        )

    def assemble(self, frames: Iterable[DataFrame], ends: bool = False) -> Iterator[Message]:
        """The messages of ``frames``; ``finish()`` once they are exhausted. ``ends``: the
        sessions' end-of-stream marks too, in their place (``Message.end_of_stream``)."""
        for frame in frames:
            message = self.feed(frame)
            if message is not None and (ends or not message.end_of_stream):
                yield message
            while self._ready:
                message = self._ready.popleft()
                if ends or not message.end_of_stream:
                    yield message
        self.finish()
        while self._ready:
            message = self._ready.popleft()
            if ends:
                yield message
