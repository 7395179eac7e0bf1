"""FrameAssembler: messages from fragments, gaps counted, out-of-place frames undone."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from telepipe.sources.frames import (
    BEGIN_FLAG,
    END_FLAG,
    HEADER_LENGTH,
    UNFRAGMENTED,
    DataFrame,
    FrameAssembler,
    align,
)

STREAM, SESSION = 1001, 7


def frames_of(payloads: list[bytes], mtu: int = 96, start: int = 0) -> list[DataFrame]:
    """Each payload cut into <= ``mtu``-byte fragments, laid one after another."""
    out, position = [], start
    for payload in payloads:
        parts = [payload[i : i + mtu] for i in range(0, max(len(payload), 1), mtu)]
        for k, part in enumerate(parts):
            flags = (BEGIN_FLAG if k == 0 else 0) | (END_FLAG if k == len(parts) - 1 else 0)
            position += align(len(part) + HEADER_LENGTH)
            out.append(DataFrame(STREAM, SESSION, 0, 0, flags, position, 0, part))
    return out


def stray(at_position: int, flags: int = UNFRAGMENTED, size: int = 96) -> DataFrame:
    """A frame of the same stream and session claiming to end at ``at_position``."""
    return DataFrame(STREAM, SESSION, 0, 0, flags, at_position, 0, b"\xee" * size)


def payloads(n: int) -> list[bytes]:
    return [bytes([i % 251]) * (20 + 37 * i % 300) for i in range(n)]


def assemble(frames: list[DataFrame]) -> tuple[list[bytes], FrameAssembler]:
    assembler = FrameAssembler()
    return [m.payload for m in assembler.assemble(frames)], assembler


def test_a_stray_frame_far_ahead_costs_only_itself() -> None:
    sent = payloads(20)
    frames = frames_of(sent)
    frames.insert(9, stray(40_000 + 128))
    got, a = assemble(frames)
    assert [p for p in got if p[:1] != b"\xee"] == sent
    assert a.counters.out_of_place == 1
    assert a.counters.gaps == [] and a.counters.dropped_fragments == 0


def test_a_stray_frame_inside_a_fragmented_message_keeps_that_message() -> None:
    sent = payloads(6)
    frames = frames_of(sent, mtu=40)
    split = next(i for i, f in enumerate(frames) if f.flags == BEGIN_FLAG) + 1
    frames.insert(split, stray(1 << 20, flags=BEGIN_FLAG))  # ... and it begins a message
    got, a = assemble(frames)
    assert got == sent
    assert (a.counters.out_of_place, a.counters.dropped_fragments, a.counters.gaps) == (1, 0, [])


def test_real_loss_is_a_gap_and_a_late_frame_past_the_window_fills_it() -> None:
    sent = payloads(200)
    frames = frames_of(sent, mtu=1000)  # one frame a message
    lost = frames[10]
    kept = [*frames[:10], *frames[11:]]
    got, a = assemble(kept)
    assert got == sent[:10] + sent[11:]
    assert len(a.counters.gaps) == 1 and a.counters.out_of_place == 0
    # The lost frame turns up after more than REWIND_FRAMES frames: the jump stood, but
    # the frame goes exactly into its hole: delivered (late), the gap gone.
    cut = 11 + FrameAssembler.REWIND_FRAMES
    late = [*kept[:cut], lost, *kept[cut:]]
    got, a = assemble(late)
    assert got == sent[:10] + sent[11 : cut + 1] + [sent[10]] + sent[cut + 1 :]
    assert a.counters.gaps == [] and a.counters.dropped_fragments == 0
    assert a.counters.reordered == 1
    # Again (a retransmit): dropped, counted.
    got, a = assemble([*late[: cut + 1], lost, *late[cut + 1 :]])
    assert sorted(got) == sorted(sent) and a.counters.dropped_fragments == 1


@settings(max_examples=300, deadline=None)
@given(st.integers(2, 60), st.integers(16, 300), st.integers(1, 400), st.booleans(), st.data())
def test_a_frame_moved_any_distance_loses_no_message(n, mtu, distance, later, data) -> None:
    """Issue: a fragment of a 31-fragment message 24 datagrams late lost the next message
    (its first fragment taken as stale after the undo). A reordering, no byte changed,
    loses nothing, however far the frame moved (past REWIND_FRAMES too)."""
    sent = [bytes([i % 251]) * (1 + 97 * i % (4 * mtu)) for i in range(n)]
    frames = frames_of(sent, mtu=mtu)
    i = data.draw(st.integers(0, len(frames) - 1))
    j = min(i + distance, len(frames) - 1) if later else max(i - distance, 0)
    if min(i, j) == 0:  # a stream's first frame: within its first REWIND_FRAMES frames
        j = min(j, FrameAssembler.REWIND_FRAMES - 2)  # (else its start is where it starts)
    order = list(frames)
    order.insert(j, order.pop(i))
    got, a = assemble(order)
    assert sorted(got) == sorted(sent) and len(got) == len(sent)
    c = a.counters
    assert c.gaps == [] and c.dropped_fragments == 0


def test_a_message_cut_by_the_end_of_input_is_counted() -> None:
    frames = frames_of([*payloads(3), b"x" * 500], mtu=64)
    got, a = assemble(frames[:-1])
    assert len(got) == 3 and a.counters.dropped_fragments == 1


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.binary(min_size=0, max_size=300), min_size=1, max_size=30),
    st.integers(16, 200),
    st.data(),
)
def test_one_stray_frame_anywhere_loses_no_genuine_message(sent, mtu, data) -> None:
    """A stray frame (any flags, far ahead) before any frame of the stream but its last."""
    sent = [b"g" + p for p in sent]
    frames = frames_of(sent, mtu=mtu)
    if len(frames) < 2:
        frames = frames_of([*sent, b"g"], mtu=mtu)
        sent = [*sent, b"g"]
    at = data.draw(st.integers(0, len(frames) - 1))  # 0: the stream's first frame
    size = data.draw(st.integers(1, 200))
    # It starts past the stream's last frame, by any number of 32-byte steps.
    ahead = (
        frames[-1].position + align(size + HEADER_LENGTH) + 32 * data.draw(st.integers(0, 1 << 19))
    )
    flags = data.draw(st.sampled_from([UNFRAGMENTED, BEGIN_FLAG, END_FLAG, 0]))
    frames.insert(at, stray(ahead, flags=flags, size=size))
    got, a = assemble(frames)
    assert [p for p in got if p.startswith(b"g")] == sent
    assert len(got) == len(sent) + (flags == UNFRAGMENTED)
    assert a.counters.gaps == [] and a.counters.out_of_place == 1


def test_a_frame_that_came_early_and_again_is_delivered_once() -> None:
    """Reordering plus a retransmit: 0 1 2 4 3 4 5 ... gives each message once."""
    sent = payloads(10)
    frames = frames_of(sent, mtu=1000)  # one frame a message
    order = [*frames[:3], frames[4], frames[3], *frames[4:]]
    got, a = assemble(order)
    assert sorted(got) == sorted(sent) and len(got) == len(sent)
    assert a.counters.gaps == [] and a.counters.repeated == 1
    # Early without the retransmit: the stream goes on past it, nothing lost or repeated.
    got, a = assemble([*frames[:3], frames[4], frames[3], *frames[5:]])
    assert sorted(got) == sorted(sent) and a.counters.gaps == []
    assert a.counters.repeated == 0


def test_a_fragmented_message_that_came_early_and_again_is_delivered_once() -> None:
    sent = payloads(8)
    frames = frames_of(sent, mtu=40)
    firsts = [i for i, f in enumerate(frames) if f.flags & BEGIN_FLAG]
    a3, a4 = firsts[3], firsts[4]
    order = [*frames[:a3], *frames[a4 : firsts[5]], *frames[a3:]]  # message 4 early, then all
    got, a = assemble(order)
    assert sorted(got) == sorted(sent) and len(got) == len(sent)
    assert a.counters.gaps == [] and a.counters.repeated == firsts[5] - a4


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 40), st.data())
def test_any_frame_early_then_again_gives_every_message_once(n, data) -> None:
    sent = payloads(n)
    frames = frames_of(sent, mtu=1000)
    early = data.draw(st.integers(1, n - 1))
    at = data.draw(st.integers(max(0, early - FrameAssembler.REWIND_FRAMES + 2), early - 1))
    order = [*frames[:at], frames[early], *frames[at:]]
    got, a = assemble(order)
    assert sorted(got) == sorted(sent) and len(got) == len(sent)
    assert a.counters.gaps == []
