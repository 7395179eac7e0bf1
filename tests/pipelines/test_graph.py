"""``connect`` and the routing at the end of a chain: the rows a step sets aside as late
travel in-band, named by their step, and land in ``late_readings`` and the dead letters
as ``table.step``, the same for a chain from YAML and one built in Python with ``.pipe``."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from helpers import SCHEMA_XML
from omegaconf import OmegaConf
from reactivex import Observable
from reactivex.subject import Subject

from telepipe.boundary import BoundaryOptions
from telepipe.errors import ConfigError
from telepipe.markers import CheckpointBarrier, Item, SideOutput, Watermark
from telepipe.operators import TumblingWindow
from telepipe.pipelines.graph import connect, outputs_from_config
from telepipe.pipelines.routing import Outputs, SideOutputs
from telepipe.sbe import SbeCodec
from telepipe.sinks.queued import QueuedSink

SEC = 1_000_000_000
SCHEMA = pa.schema(
    [("sensor_id", pa.int32()), ("ts", pa.timestamp("ns")), ("value", pa.float64()),
     ("quality", pa.uint8())]
)  # fmt: skip
YAML = {"outputs": {"windows": {"tumble": {"_target_": "telepipe.operators.TumblingWindow",
                                           "size_ms": 1000}}}}  # fmt: skip


def readings(ts_s: list[int]) -> pa.RecordBatch:
    n = len(ts_s)
    return pa.RecordBatch.from_arrays(
        [pa.array(np.arange(n, dtype=np.int32)), pa.array(np.array(ts_s) * SEC, pa.timestamp("ns")),
         pa.array(np.ones(n)), pa.array(np.zeros(n, np.uint8))],
        schema=SCHEMA,
    )  # fmt: skip


def push(subject: Subject[Item]) -> None:
    subject.on_next(readings([10, 10]))
    subject.on_next(Watermark(12 * SEC))
    subject.on_next(readings([3, 11, 12]))  # ts 3 s and 11 s are behind the watermark
    subject.on_next(CheckpointBarrier(1))
    subject.on_completed()


def test_late_rows_travel_in_band_named_by_their_step() -> None:
    (output,) = outputs_from_config(OmegaConf.create(YAML))
    subject: Subject[Item] = Subject()
    out: list[Item] = []
    connect(subject, output).subscribe(out.append)
    push(subject)
    (aside,) = [item for item in out if isinstance(item, SideOutput)]
    assert (aside.tag, aside.step) == ("late", "tumble")
    assert aside.batch.column("ts").cast(pa.int64()).to_pylist() == [3 * SEC, 11 * SEC]


class Recording(QueuedSink):
    """What reached a sink, in order, by table (no writer thread: written as put)."""

    def __init__(self) -> None:
        super().__init__(["windows", "late_readings", "dead_letters"], BoundaryOptions())
        self.got: dict[str, list[pa.RecordBatch | int]] = {t: [] for t in self.table_names}

    def write(self, table: str, batch: pa.RecordBatch) -> None:
        self.got[table].append(batch)

    def barrier(self, table: str, barrier: CheckpointBarrier) -> None:
        self.got[table].append(barrier.checkpoint_id)

    def close(self, table: str) -> None:
        """Nothing to end."""

    def on_rows(self, table: str, batch: pa.RecordBatch) -> None: ...

    def on_barrier(self, table: str, barrier: CheckpointBarrier) -> None: ...

    def on_end(self, table: str) -> None: ...

    def committed(self) -> dict[str, int]:
        return {}


def through_the_sink_path(chain: Observable[Item], subject: Subject[Item]) -> Recording:
    """``chain`` fed as a run feeds an output: counted, to the sink, side outputs routed."""
    sink = Recording()
    side = SideOutputs(sink, SbeCodec.from_xml(SCHEMA_XML), stream_id=1001)
    chain.subscribe(Outputs(side).feed("windows", [sink.observer("windows")]))
    push(subject)
    return sink


def test_a_chain_built_in_python_routes_late_rows_as_the_yaml_graph_does() -> None:
    (output,) = outputs_from_config(OmegaConf.create(YAML))
    yaml_subject: Subject[Item] = Subject()
    from_yaml = through_the_sink_path(connect(yaml_subject, output), yaml_subject)
    python_subject: Subject[Item] = Subject()
    chain = python_subject.pipe(TumblingWindow(size_ms=1000).named("tumble"))
    from_python = through_the_sink_path(chain, python_subject)

    def rows(sink: Recording, table: str) -> list[object]:
        return [b.to_pylist() if isinstance(b, pa.RecordBatch) else b for b in sink.got[table]]

    for table in ("windows", "late_readings"):
        assert rows(from_python, table) == rows(from_yaml, table)
    late = from_yaml.got["late_readings"]
    assert len(late) == 1 and isinstance(late[0], pa.RecordBatch) and late[0].num_rows == 2
    letters = [b for b in from_yaml.got["dead_letters"] if isinstance(b, pa.RecordBatch)]
    python_letters = [b for b in from_python.got["dead_letters"] if isinstance(b, pa.RecordBatch)]
    assert [b.column("id").to_pylist() for b in letters] == [
        b.column("id").to_pylist() for b in python_letters
    ]
    details = pa.concat_batches(letters).column("detail").to_pylist()
    assert len(details) == 2 and all(d.endswith("at step windows.tumble") for d in details)


def test_a_step_named_decoder_is_refused_in_one_line() -> None:
    """A checkpoint barrier holds the source's state under 'decoder': a step of that
    name failed at the first barrier (before: it overwrote the decoder's state)."""
    step = {"_target_": "telepipe.operators.TumblingWindow", "size_ms": 1000}
    pipeline = OmegaConf.create({"name": "p", "outputs": {"w": {"decoder": step}}})
    with pytest.raises(ConfigError, match=r"^pipeline\.outputs\.w\.decoder: the step name"):
        outputs_from_config(pipeline)


@pytest.mark.parametrize(
    "table",
    ["_telepipe_state", "_delta_log", "dead_letters", "late_readings", "actor_events", "a-b"],
)
def test_a_table_name_telepipe_or_delta_keeps_for_itself_is_refused(table: str) -> None:
    """``_telepipe_state`` made a Delta table inside the checkpoint state dir (review)."""
    pipeline = OmegaConf.create({"outputs": {"readings": {}, table: {}}})
    with pytest.raises(
        ConfigError, match=rf"^pipeline\.outputs\.{table}: not a usable table name$"
    ):
        outputs_from_config(pipeline)
