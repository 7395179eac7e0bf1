"""AeronSource on the real embedded media driver: IPC and UDP, bad frames, execution modes."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pytest
from helpers import ROOT, SCHEMA_XML, free_udp_port

from telepipe.aeron import AeronConnection, AeronOptions
from telepipe.markers import CheckpointBarrier, Watermark
from telepipe.sbe import SbeCodec
from telepipe.sources.aeron import AeronSource, AeronSourceOptions
from telepipe.sources.simulator import Simulator, SimulatorOptions, TelemetryGenerator

CODEC = SbeCodec.from_xml(SCHEMA_XML)
START = 1_767_225_600_000_000_000
SIM = SimulatorOptions(
    sensors=50, readings_per_message=500, seed=3, late_fraction=0.0, start_ns=START
)


def drain(
    source: AeronSource,
    until: Callable[[], bool],
    timeout: float = 30.0,
    child: subprocess.Popen[str] | None = None,
) -> list:
    items: list = []
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, f"timed out with {source.counters}"
        if child is not None and child.poll() not in (None, 0):
            pytest.fail(
                f"simulator exited {child.returncode}: {child.stderr.read() if child.stderr else ''}"
            )
        got = source.poll()
        items.extend(got)
        if not got:
            time.sleep(0.0005)
    return items


def batches(items: list) -> pa.Table:
    return pa.Table.from_batches([i for i in items if isinstance(i, pa.RecordBatch)])


def expected_readings(n: int) -> dict[str, np.ndarray]:
    chunks = list(TelemetryGenerator(SIM).chunks(n))
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


def channel_for(transport: str) -> str:
    return "aeron:ipc" if transport == "ipc" else f"aeron:udp?endpoint=127.0.0.1:{free_udp_port()}"


def check_same(table: pa.Table, n: int) -> None:
    want = expected_readings(n)
    assert table.num_rows == n
    assert np.array_equal(table.column("sensor_id").to_numpy(), want["sensor_id"])
    assert np.array_equal(table.column("ts").to_numpy().view(np.int64), want["ts"])
    assert np.array_equal(table.column("value").to_numpy(), want["value"])


@pytest.mark.parametrize("transport", ["ipc", "udp"])
@pytest.mark.parametrize("mode", ["single_thread", "thread_boundary", "separate_process"])
def test_every_published_reading_arrives_in_order(transport: str, mode: str) -> None:
    n = 60_000
    channel = channel_for(transport)
    options = AeronSourceOptions(channel=channel, stream_id=77, checkpoint_every_readings=10_000)
    with AeronConnection() as connection:
        source = AeronSource(options, CODEC, connection)
        if mode == "single_thread":
            sim = Simulator(SIM, CODEC, connection, channel, 77)
            deadline = time.monotonic() + 10
            while not sim.publication.is_connected:
                assert time.monotonic() < deadline
                source.poll()
            items = []
            for seq, chunk in enumerate(sim.generator.chunks(n)):
                payload = CODEC.encode(chunk, source_id=1, batch_seq=seq)
                while sim.publication.offer(payload) is not True:
                    items.extend(source.poll())
            items += drain(source, lambda: source.counters.readings >= n)
        elif mode == "thread_boundary":
            sim = Simulator(SIM, CODEC, connection, channel, 77)
            thread = threading.Thread(target=sim.run, args=(n,))
            thread.start()
            items = drain(source, lambda: source.counters.readings >= n)
            thread.join()
        else:
            child = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "telepipe.cli",
                    "simulate",
                    f"aeron.dir={connection.dir}",
                    f"source.channel={channel}",
                    "source.stream_id=77",
                    f"limit.readings={n}",
                    "simulator.options.sensors=50",
                    "simulator.options.readings_per_message=500",
                    "simulator.options.seed=3",
                    f"simulator.options.start_ns={START}",
                    "simulator.options.late_fraction=0",
                    "simulator.linger_s=30",
                ],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                items = drain(
                    source, lambda: source.counters.readings >= n, timeout=60, child=child
                )
            finally:
                child.terminate()
                out, err = child.communicate(timeout=30)
            assert child.returncode == 0, err
            assert json.loads(out.strip().splitlines()[-1])["published"] == n
        source.close()
    check_same(batches(items), n)
    marks = [i for i in items if isinstance(i, Watermark)]
    assert marks and all(a.ts_ns < b.ts_ns for a, b in itertools.pairwise(marks))
    barriers = [i for i in items if isinstance(i, CheckpointBarrier)]
    assert [b.checkpoint_id for b in barriers] == list(range(1, len(barriers) + 1))
    assert barriers and all(len(b.positions) == 1 for b in barriers)


def test_malformed_messages_are_counted_dead_letters_and_good_ones_kept() -> None:
    good = {k: v[:100] for k, v in expected_readings(100).items()}
    payload = CODEC.encode(good, source_id=1, batch_seq=0)
    wrong_schema = bytearray(payload)
    wrong_schema[4:6] = (999).to_bytes(2, "little")
    wrong_template = bytearray(payload)
    wrong_template[2:4] = (42).to_bytes(2, "little")
    bad = {
        "truncated_header": payload[:5],
        "wrong_schema_id": bytes(wrong_schema),
        "wrong_template_id": bytes(wrong_template),
        "truncated_group": payload[:-7],
        "trailing_bytes": payload + b"\x00" * 3,
    }
    sent = [payload]
    for frame in bad.values():
        sent += [frame, payload]
    with AeronConnection(AeronOptions()) as connection:
        source = AeronSource(AeronSourceOptions(stream_id=5), CODEC, connection)
        pub = connection.client.add_exclusive_publication("aeron:ipc", 5)
        pub.await_connected(timeout=5)
        for frame in sent:
            while pub.offer(frame) is not True:
                time.sleep(0.001)
        items = drain(source, lambda: source.counters.messages >= len(sent))
        dead = source.take_dead_letters()
        source.close()
    assert source.counters.readings == 100 * (len(bad) + 1)
    assert batches(items).num_rows == 100 * (len(bad) + 1)
    assert source.counters.rejected == len(bad)
    assert source.counters.rejected_by_reason == dict.fromkeys(bad, 1)
    assert {d.reason: d.payload for d in dead} == bad
    assert all(d.position > 0 and d.stream_id == 5 for d in dead)


def test_late_rows_are_set_aside_deterministically() -> None:
    ts = np.array([100, 200, 300, 90, 250, 400, 100], dtype=np.int64) * 1_000_000
    cols = {
        "sensor_id": np.ones(7, np.int32),
        "ts": ts,
        "value": np.arange(7.0),
        "quality": np.zeros(7, np.uint8),
    }
    with AeronConnection() as connection:
        source = AeronSource(
            AeronSourceOptions(stream_id=9, out_of_orderness_ms=100), CODEC, connection
        )
        pub = connection.client.add_exclusive_publication("aeron:ipc", 9)
        pub.await_connected(timeout=5)
        # One row per message: however polls cut them, the same rows are late.
        for i in range(7):
            one = {k: v[i : i + 1] for k, v in cols.items()}
            while pub.offer(CODEC.encode(one, source_id=1, batch_seq=i)) is not True:
                time.sleep(0.001)
        items = drain(source, lambda: source.counters.readings >= 7)
        late = pa.Table.from_batches(source.take_late())
        source.close()
    # late: ts < running max before it - 100 ms  -> 90 (max 300) and 100 (max 400)
    assert late.column("value").to_pylist() == [3.0, 6.0]
    assert batches(items).column("value").to_pylist() == [0.0, 1.0, 2.0, 4.0, 5.0]
    assert source.counters.late == 2


def test_messages_split_across_polls_are_reassembled() -> None:
    # fragment_limit=1: every multi-fragment message spans several polls.
    chunk = {k: v[:2000] for k, v in expected_readings(2000).items()}
    payload = CODEC.encode(chunk, source_id=1, batch_seq=0)
    with AeronConnection() as connection:
        source = AeronSource(AeronSourceOptions(stream_id=11, fragment_limit=1), CODEC, connection)
        pub = connection.client.add_exclusive_publication("aeron:ipc", 11)
        pub.await_connected(timeout=5)
        assert len(payload) > 10 * 1376
        for _ in range(5):
            while pub.offer(payload) is not True:
                time.sleep(0.001)
        items = drain(source, lambda: source.counters.messages >= 5)
        source.close()
    assert batches(items).num_rows == 5 * 2000
