"""``pipeline=equipment`` publishes its machines' state changes over Aeron: a subscriber
receives ``MachineStateBatch`` SBE messages (conf/schema/machine_states.xml) that decode
to exactly the rows of the ``machine_states`` table, every column they carry."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pyarrow as pa
from helpers import ROOT, free_udp_port

from telepipe.aeron import AeronConnection
from telepipe.sinks.aeron import AeronSinkOptions

CODEC = AeronSinkOptions(schema="machine_states.xml", message="MachineStateBatch").codec()


def test_a_subscriber_receives_the_machine_states(tmp_path: Path) -> None:
    port = free_udp_port()
    channel = f"aeron:udp?endpoint=127.0.0.1:{port}"
    payloads: list[bytes] = []

    def on(buffer, header) -> None:  # type: ignore[no-untyped-def]
        payloads.append(buffer.tobytes())

    with AeronConnection() as connection:
        sub = connection.client.add_subscription(channel, 2002)
        process = subprocess.Popen(
            [sys.executable, "-m", "telepipe.cli", "run", "pipeline=equipment",
             "limit.readings=100000", f"data_dir={tmp_path}",
             f"pipeline.publish.machine_states.channel={channel}",
             "pipeline.publish.machine_states.wait_for_subscriber=true"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        while process.poll() is None:
            if not sub.poll(on, 64):
                time.sleep(0.001)
        assert process.returncode == 0, process.stderr.read() if process.stderr else ""
        table = pl.read_delta(str(tmp_path / "machine_states"))
        deadline = time.monotonic() + 10
        while sum(CODEC.decode(p).batch.num_rows for p in payloads) < table.height:
            assert time.monotonic() < deadline, "not every row arrived"
            if not sub.poll(on, 64):
                time.sleep(0.001)
    assert table.height > 0
    got = pl.from_arrow(pa.Table.from_batches([CODEC.decode(p).batch for p in payloads]))
    assert isinstance(got, pl.DataFrame) and got.height == table.height
    key = ["equipment_id", "seq"]
    common = [c for c in got.columns if c in table.columns]
    assert set(key) <= set(common) and common == got.columns, (common, got.columns)
    want = table.select(common).sort(key)
    mine = got.select(common).sort(key)
    for column in common:
        a, b = mine[column], want[column]
        if a.dtype != b.dtype:
            a = a.cast(b.dtype)
        assert a.to_list() == b.to_list(), column
