"""AeronSink: alarms out as SBE over real Aeron, BACK_PRESSURED honoured per policy."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from helpers import ROOT, free_udp_port

from telepipe.aeron import AeronConnection
from telepipe.boundary import BoundaryOptions
from telepipe.markers import CheckpointBarrier
from telepipe.schema import ALARMS
from telepipe.sinks.aeron import AeronSink, AeronSinkOptions

CODEC = AeronSinkOptions().codec()


def alarms(n: int, start: int = 0) -> pa.RecordBatch:
    i = np.arange(start, start + n)
    return pa.RecordBatch.from_arrays(
        [
            pa.array(i % 97, pa.int32()),
            pa.array(i * 1_000_000, pa.timestamp("ns")),
            pa.array(i * 1_000_000 - 3, pa.timestamp("ns")),
            pa.array(i * 0.5),
            pa.array(np.full(n, 80.0)),
            pa.array(np.full(n, 3, np.int32)),
        ],
        schema=ALARMS,
    )


class Subscriber:
    def __init__(self, connection: AeronConnection, channel: str, stream: int) -> None:
        self.sub = connection.client.add_subscription(channel, stream)
        self.payloads: list[bytes] = []
        self._handler = self._on

    def _on(self, buffer, header) -> None:
        self.payloads.append(buffer.tobytes())

    def poll_until(self, rows: int, timeout: float = 20) -> pa.Table:
        deadline = time.monotonic() + timeout
        while self.table().num_rows < rows:
            assert time.monotonic() < deadline, f"got {self.table().num_rows} of {rows} rows"
            if not self.sub.poll(self._handler, 64):
                time.sleep(0.001)
        return self.table()

    def table(self) -> pa.Table:
        batches = [CODEC.decode(p).batch for p in self.payloads]
        return pa.Table.from_batches(batches, schema=ALARMS)


def test_published_alarms_decode_to_the_same_rows() -> None:
    with AeronConnection() as connection:
        sub = Subscriber(connection, "aeron:ipc", 2001)
        sink = AeronSink(
            AeronSinkOptions(rows_per_message=100, wait_for_subscriber=True), "alarms", connection
        )
        sink.start()
        sent = [alarms(250, 0), alarms(1, 250), alarms(0, 251), alarms(700, 251)]
        for batch in sent:
            sink.write("alarms", batch)
        sink.barrier("alarms", CheckpointBarrier(1))
        sink.close("alarms")
        sink.join()
        got = sub.poll_until(951)
    assert got.equals(pa.Table.from_batches(sent))
    assert sink.counters.messages == 3 + 1 + 7 and sink.counters.rows == 951


@pytest.mark.parametrize("policy", ["block", "drop_newest"])
def test_back_pressure_reaches_the_queue_policy(policy: str) -> None:
    channel = "aeron:ipc?term-length=65536"
    options = AeronSinkOptions(
        channel=channel, rows_per_message=1000, wait_for_subscriber=True,
        queue=BoundaryOptions(capacity=2, policy=policy),
    )  # fmt: skip
    with AeronConnection() as connection:
        sub = Subscriber(connection, channel, 2001)
        sink = AeronSink(options, "alarms", connection).start()
        done = threading.Event()

        def produce() -> None:
            for k in range(40):  # 40 x 40 KB: far past the 32 KB publication window
                sink.write("alarms", alarms(1000, k * 1000))
            done.set()

        threading.Thread(target=produce, daemon=True).start()
        time.sleep(1.0)  # nobody polls: Aeron back-pressures the writer
        assert sink.counters.backpressured_offers > 0
        if policy == "block":
            assert not done.is_set()  # the producer is held by the full queue
        else:
            assert done.wait(5) and sink.dropped()["alarms"] > 0
        stop = threading.Event()

        def consume() -> None:
            while not stop.is_set():
                if not sub.sub.poll(sub._handler, 64):
                    time.sleep(0.001)

        consumer = threading.Thread(target=consume, daemon=True)
        consumer.start()  # now the subscriber drains: the writer and the producer go on
        assert done.wait(30)
        sink.close("alarms")
        sink.join()
        deadline = time.monotonic() + 20
        while len(sub.payloads) < sink.counters.messages:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        stop.set()
        consumer.join()
        got = sub.table()
    assert got.num_rows == sink.counters.rows
    assert got.num_rows + sink.dropped()["alarms"] == 40_000


def test_without_a_subscriber_messages_are_dropped_and_counted() -> None:
    with AeronConnection() as connection:
        sink = AeronSink(AeronSinkOptions(stream_id=2999), "alarms", connection).start()
        sink.write("alarms", alarms(10))
        sink.close("alarms")
        sink.join()
    assert sink.counters.not_connected_drops == 1 and sink.counters.rows == 0


def test_the_demo_publishes_its_alarms(tmp_path: Path) -> None:
    port = free_udp_port()
    channel = f"aeron:udp?endpoint=127.0.0.1:{port}"
    with AeronConnection() as connection:
        sub = Subscriber(connection, channel, 2001)
        process = subprocess.Popen(
            [sys.executable, "-m", "telepipe.cli", "run", "pipeline=demo_publish", "limit.readings=200000",
             f"data_dir={tmp_path}", f"pipeline.publish.alarms.channel={channel}",
             "pipeline.publish.alarms.wait_for_subscriber=true"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        while process.poll() is None:
            if not sub.sub.poll(sub._handler, 64):
                time.sleep(0.001)
        assert process.returncode == 0, process.stderr.read() if process.stderr else ""
        table = pl.read_delta(str(tmp_path / "alarms"))
        got = sub.poll_until(table.height, timeout=10)
    assert table.height > 0
    assert sorted(got.column("ts").cast(pa.int64()).to_pylist()) == sorted(table["ts_ns"].to_list())
