"""Exactly-once from every kind of recorded input, not only a capture
(test_replay_faults.py): a pcap of Aeron UDP that tcpdump wrote across two publisher
sessions, reordered and with frames sent again; an Aeron Archive with one recording per
session; and a capture tailed (``replay.follow=true``) while two writers, one after
the other, append to it. Each replay is killed at a commit boundary
(``TELEPIPE_FAULT_KILL``), during the end-of-input flush's checkpoint, or by a SIGKILL
from outside when a seeded table reaches a seeded number of commits; after the
restarts every table, every column, equals an uninterrupted replay.
"""

from __future__ import annotations

import itertools
import json
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from archive_builder import archive_of
from deltalake import DeltaTable
from helpers import ROOT, Watched, free_udp_port
from pcap_builder import aeron_data, read_packets, tcpdump_udp, write_pcap
from replay_faults_common import (
    EVERY,
    PIPELINES,
    TABLES,
    assert_same,
    checkpoints,
    commits,
    fault_env,
    live_run,
    replay,
    replay_args,
    replay_killed_at_commit,
    tables,
    two_session_capture,
)

from telepipe.sources.capture import CaptureReader
from telepipe.sources.frames import UNFRAGMENTED, FrameAssembler, Message
from telepipe.sources.pcap import PcapReader


def kill_and_recover(
    pipeline: str, source: Path, reference: Path, kill: str, data_dir: Path
) -> None:
    killed = replay(pipeline, source, data_dir, kill)
    assert killed.returncode == -9, f"{kill}: not killed ({killed.returncode}): {killed.stderr}"
    done = replay(pipeline, source, data_dir)
    assert done.returncode == 0, done.stderr
    assert_same(tables(reference), data_dir)


def random_kills(
    pipeline: str, source: Path, reference: Path, seed: int, data_dir: Path, kills: int = 1
) -> None:
    """``kills`` SIGKILLs from outside, each when a table the seed picks reaches a number
    of commits it picks (past what it holds, short of its last two), then a replay to
    the end."""
    rng = random.Random(seed)
    for attempt in range(kills):
        table = rng.choice(TABLES[pipeline])
        total = commits(reference, table)
        held = commits(data_dir, table)
        if held + 1 > total - 2:
            break
        n = rng.randint(held + 1, total - 2)
        code = replay_killed_at_commit(pipeline, source, data_dir, table, n)
        assert code == -9 or attempt > 0, f"seed {seed}: {table} at {n} commits: exit {code}"
    done = replay(pipeline, source, data_dir)
    assert done.returncode == 0, done.stderr
    assert_same(tables(reference), data_dir)


def references(base: Path, source: Path, pipelines: tuple[str, ...] = PIPELINES) -> dict[str, Path]:
    out = {}
    for pipeline in pipelines:
        done = replay(pipeline, source, base / f"reference-{pipeline}")
        assert done.returncode == 0, done.stderr
        out[pipeline] = base / f"reference-{pipeline}"
    return out


def messages(source: Path) -> list[Message]:
    reader = PcapReader(source) if source.is_file() else CaptureReader(source)
    return list(FrameAssembler().assemble(reader.frames()))


def barrier_ends(reference: Path, delivered: list[Message]) -> list[int]:
    """Per checkpoint of ``reference``'s readings, the index in ``delivered`` of the last
    message before its barrier."""
    index = {(m.stream_id, m.session_id, m.position): i for i, m in enumerate(delivered)}
    out = []
    for entry in DeltaTable(str(reference / "readings")).history():
        if "telepipe.positions" not in entry:
            continue
        k = int(entry["telepipe.checkpoint_id"])
        at = [
            index[(*map(int, key.split(":")), p)]
            for key, p in json.loads(entry["telepipe.positions"]).items()
        ]
        out.append((k, max(at)))
    return [i for _, i in sorted(out)]


# -- a pcap of two publisher sessions, reordered and re-sent ------------------------------


def tcpdump_two_sessions(base: Path) -> Path:
    """tcpdump on loopback across two ``telepipe run source=aeron_udp`` runs on one port:
    two publisher sessions, one after the other; 40 readings a message, so each message
    is one frame in one datagram."""
    port = free_udp_port()
    pcap = base / "two.pcap"
    with tcpdump_udp(pcap, port):
        for run in (1, 2):
            live_run(
                base / f"live{run}", run, "source=aeron_udp",
                f"source.channel=aeron:udp?endpoint=127.0.0.1:{port}",
                "simulator.options.readings_per_message=40",
            )  # fmt: skip
    return pcap


def disorder(source: Path, target: Path, plan: dict[int, str]) -> None:
    """``source`` rewritten: at message (data packet) ``i`` of ``plan`` and the next one
    (A, B) the packets go ``swap``: B, A, B (B early, then re-sent as after a NAK);
    ``bare``: B, A; ``resend``: A, B, A (A again after the stream went past it)."""
    linktype, packets = read_packets(source)
    out: list[tuple[int, bytes]] = []
    i, seen = 0, -1
    while i < len(packets):
        a = packets[i]
        if aeron_data(a[1]):
            seen += 1
            if seen in plan:
                j = next(j for j in range(i + 1, len(packets)) if aeron_data(packets[j][1]))
                b = packets[j]
                out += packets[i + 1 : j]
                out += {"swap": [b, a, b], "bare": [b, a], "resend": [a, b, a]}[plan[seen]]
                seen += 1
                i = j + 1
                continue
        out.append(a)
        i += 1
    write_pcap(target, out, linktype)


def straddles(data_dir: Path, delivered: list[Message]) -> tuple[list[int], list[int]]:
    """Checkpoints of ``data_dir`` whose barrier falls inside a reordering: (those right
    after a message that came early, its predecessor after the barrier: a resume there
    must still deliver that one; those right after a message whose successor came before
    it: a resume there must not deliver the early one again)."""
    ends = barrier_ends(data_dir, delivered)
    at = [(m.session_id, m.position) for m in delivered]
    early, late = [], []
    for k, i in enumerate(ends, start=1):
        if i + 1 < len(at) and at[i + 1][0] == at[i][0] and at[i + 1][1] < at[i][1]:
            early.append(k)
        if i > 0 and at[i - 1][0] == at[i][0] and at[i - 1][1] > at[i][1]:
            late.append(k)
    return early, late


@pytest.fixture(scope="module")
def pcap(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tcpdump capture, the uninterrupted replays of it (the references) and the
    capture disordered around its checkpoint barriers, with the checkpoints of that one
    whose barrier falls inside a reordering (``straddles``)."""
    base = tmp_path_factory.mktemp("pcap-faults")
    clean = tcpdump_two_sessions(base)
    delivered = messages(clean)
    assert len({m.session_id for m in delivered}) == 2
    frames = list(PcapReader(clean).frames())
    assert all(f.flags & UNFRAGMENTED == UNFRAGMENTED for f in frames)  # a frame a message
    out: dict[str, Any] = dict(references(base, clean))
    reference = out["demo"]
    assert isinstance(reference, Path)
    ends = barrier_ends(reference, delivered)
    assert len(ends) >= 6, ends
    # Around the barriers: B early then A (and B again, or not) at the barrier, or just
    # before it; A re-sent after B.
    plan = {ends[0]: "swap", ends[1] - 1: "resend", ends[2] - 1: "bare", ends[3]: "bare"}
    plan |= {ends[4] - 1: "swap", ends[5] - 1: "bare"}
    disordered = base / "disordered.pcap"
    disorder(clean, disordered, plan)
    done = replay("demo", disordered, base / "disordered")
    assert done.returncode == 0, done.stderr
    early, late = straddles(base / "disordered", messages(disordered))
    assert early and late, (early, late)
    return {**out, "clean": clean, "disordered": disordered, "early": early[0], "late": late[0]}


def test_a_reordered_and_resent_pcap_is_delivered_once(pcap: dict[str, Any]) -> None:
    """The disordered pcap (messages early, re-sent, a frame again after the stream went
    past it) replays to the clean one's tables: every message once."""
    clean, disordered, reference = pcap["clean"], pcap["disordered"], pcap["demo"]
    assert isinstance(clean, Path) and isinstance(disordered, Path)
    assert isinstance(reference, Path)
    assert_same(tables(reference), disordered.parent / "disordered")
    delivered = messages(disordered)
    assert sorted(m.payload for m in delivered) == sorted(m.payload for m in messages(clean))
    assert any(
        a.session_id == b.session_id and b.position < a.position
        for a, b in itertools.pairwise(delivered)
    )


# Resumes from a checkpoint whose barrier fell inside a reordering (after an early
# message, or after its predecessor: {early}, {late} are the next ones), and a kill
# during the flush's checkpoint.
PCAP_KILLS = [
    ("demo", "before:readings:{early}"),
    ("demo", "after:windows:{late}"),
    ("press_line", "after:stats_10s:end"),
]


@pytest.mark.parametrize(("pipeline", "kill"), PCAP_KILLS)
def test_a_disordered_pcap_killed_at_a_commit_boundary_then_restarted_equals_the_reference(
    pcap: dict[str, Any], tmp_path: Path, pipeline: str, kill: str
) -> None:
    source, reference = pcap["disordered"], pcap[pipeline]
    assert isinstance(source, Path) and isinstance(reference, Path)
    # At the commit of k + 1 (readings' first): the oldest checkpoint every table holds is k.
    early, late = pcap["early"], pcap["late"]
    assert isinstance(early, int) and isinstance(late, int)
    kill = kill.format(early=early + 1, late=late + 1)
    kill_and_recover(pipeline, source, reference, kill, tmp_path / "killed")


@pytest.mark.parametrize("seed", [1])
def test_a_disordered_pcap_sigkilled_at_random_moments_equals_the_reference(
    pcap: dict[str, Any], tmp_path: Path, seed: int
) -> None:
    random_kills("demo", pcap["disordered"], pcap["demo"], seed, tmp_path / "killed")


# -- an Aeron Archive, one recording per session -------------------------------------------


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An Archive made of a two-session capture's messages (a recording per session, with
    the publisher's stamps in the reserved values), and its uninterrupted replays."""
    base = tmp_path_factory.mktemp("archive-faults")
    capture = two_session_capture(base)
    by_session: dict[tuple[int, int], list[tuple[bytes, int]]] = {}
    for m in messages(capture):
        by_session.setdefault((m.stream_id, m.session_id), []).append((m.payload, m.reserved_value))
    assert len(by_session) == 2
    archive_of(base / "archive", [(st, se, ms) for (st, se), ms in by_session.items()])
    out = references(base, base / "archive")
    done = replay("demo", capture, base / "from-capture")
    assert done.returncode == 0, done.stderr
    for name in ("readings", "windows", "alarms", "late_readings"):  # same rows as the capture
        assert tables(base / "from-capture")[name].equals(tables(out["demo"])[name]), name
    return {**out, "archive": base / "archive"}


ARCHIVE_KILLS = [
    pytest.param("demo", "before:alarms:end", marks=pytest.mark.slow),  # the suite's time
    ("press_line", "before:silent:5"),  # the first recording done, the second under way
]


@pytest.mark.parametrize(("pipeline", "kill"), ARCHIVE_KILLS)
def test_an_archive_killed_at_a_commit_boundary_then_restarted_equals_the_reference(
    archive: dict[str, Path], tmp_path: Path, pipeline: str, kill: str
) -> None:
    kill_and_recover(pipeline, archive["archive"], archive[pipeline], kill, tmp_path / "killed")


@pytest.mark.slow  # the suite's time: the pcap's random kills run by default
@pytest.mark.parametrize("seed", [2])
def test_an_archive_sigkilled_at_random_moments_equals_the_reference(
    archive: dict[str, Path], tmp_path: Path, seed: int
) -> None:
    random_kills("press_line", archive["archive"], archive["press_line"], seed, tmp_path / "k")


# -- a capture tailed while two writers append to it ----------------------------------------


def test_a_tailed_capture_killed_restarted_stopped_then_drained_equals_a_replay(
    tmp_path: Path,
) -> None:
    """A follower of a capture two runs write one after the other is killed at its
    checkpoint 2's commit; a second follower resumes it while the second writer appends,
    and is stopped by SIGINT once both are done (a savepoint: nothing flushed); a replay
    of the whole capture then resumes from that savepoint and drains, killed once
    during the end-of-input flush's checkpoint and restarted. The tables equal an
    uninterrupted replay of the finished capture: what a follower committed is neither
    lost nor repeated, and where it stopped the drain goes on."""
    capture, data_dir = tmp_path / "capture", tmp_path / "tailed"
    follow = [sys.executable, "-m", "telepipe.cli"]
    follow += replay_args("demo", capture, data_dir, "replay.follow=true")
    slow = "simulator.options.rate=20000"  # ~1 s a writer: the follower keeps up with it
    writer = Watched(
        [sys.executable, "-m", "telepipe.cli", "run", "limit.readings=20000",
         f"data_dir={tmp_path / 'live1'}", f"capture_dir={capture}",
         "simulator.options.start_ns=1767225600300000000", slow,
         "simulator.options.late_fraction=0.002"],
        cwd=ROOT,
    )  # fmt: skip
    first = second = None
    try:
        deadline = time.monotonic() + 120
        while not any(capture.glob("*.tpcap")):  # the capture exists: a follower can open it
            assert writer.process.poll() is None, "".join(writer.lines["stderr"])
            assert time.monotonic() < deadline, "no capture segment"
            time.sleep(0.01)
        first = Watched(follow, cwd=ROOT, env=fault_env("after:readings:2"))
        _, err = writer.finish()
        assert writer.process.returncode == 0, err
        assert first.process.wait(timeout=120) == -9, "".join(first.lines["stderr"])
        assert checkpoints(data_dir, "readings")[-1] == 2
        second = Watched(follow, cwd=ROOT, env=fault_env())
        second.wait_for("telepipe: running:")  # resumed (the rest of session 1 is there)
        live_run(tmp_path / "live2", 2, f"capture_dir={capture}")
        # Signal once the second follower committed past what it resumed from.
        deadline = time.monotonic() + 120
        while checkpoints(data_dir, "readings")[-1] < 4:
            assert second.process.poll() is None, "".join(second.lines["stderr"])
            assert time.monotonic() < deadline, "the follower does not go on"
            time.sleep(0.01)
        second.process.send_signal(signal.SIGINT)
        out, err = second.finish()
        assert second.process.returncode == 0, err
        assert "savepoint" in out, out
    finally:
        for watched in (writer, first, second):
            if watched is not None and watched.process.poll() is None:
                watched.process.kill()
    reference = references(tmp_path, capture, ("demo",))["demo"]
    kill_and_recover("demo", capture, reference, "after:windows:end", data_dir)


# -- every boundary (slow) ----------------------------------------------------------------


def every(reference: Path, kill: str) -> None:
    _, table, k = kill.split(":")
    if k != "end" and int(k) not in checkpoints(reference, table):
        pytest.skip(f"{table} committed no checkpoint {k}")


@pytest.mark.slow
@pytest.mark.parametrize(("pipeline", "kill"), EVERY)
def test_a_disordered_pcap_killed_at_every_commit_boundary(
    pcap: dict[str, Any], tmp_path: Path, pipeline: str, kill: str
) -> None:
    every(pcap[pipeline], kill)
    kill_and_recover(pipeline, pcap["disordered"], pcap[pipeline], kill, tmp_path / "killed")


@pytest.mark.slow
@pytest.mark.parametrize(("pipeline", "kill"), EVERY)
def test_an_archive_killed_at_every_commit_boundary(
    archive: dict[str, Path], tmp_path: Path, pipeline: str, kill: str
) -> None:
    every(archive[pipeline], kill)
    kill_and_recover(pipeline, archive["archive"], archive[pipeline], kill, tmp_path / "killed")


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3, 13))
@pytest.mark.parametrize("pipeline", PIPELINES)
def test_random_sigkills_on_a_pcap_and_an_archive(
    pcap: dict[str, Any], archive: dict[str, Path], tmp_path: Path, pipeline: str, seed: int
) -> None:
    random_kills(pipeline, pcap["disordered"], pcap[pipeline], seed, tmp_path / "pcap", kills=3)
    random_kills(pipeline, archive["archive"], archive[pipeline], seed, tmp_path / "archive", 3)
