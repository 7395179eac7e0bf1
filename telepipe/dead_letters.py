"""Dead letters: what a pipeline could not accept, kept with the reason and where it came from.

Each dead letter has a stable ``id`` derived from its content and origin, so a
replay of the same input produces the same ids and the store can deduplicate.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pyarrow as pa

from telepipe.sbe import SbeCodec
from telepipe.schema import DEAD_LETTERS

LATE_READING = "late_reading"  # readings behind the watermark bound (also in ``late_readings``)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str  # a short slug: wrong_schema_id, truncated_group, kudu_row_error, ...
    detail: str  # one line: expected vs actual
    stream_id: int
    session_id: int
    position: int  # source position just past the message
    received_ns: int
    payload: bytes

    @property
    def id(self) -> str:
        h = hashlib.sha256()
        h.update(f"{self.reason}|{self.stream_id}|{self.session_id}|{self.position}|".encode())
        h.update(self.payload)
        return h.hexdigest()[:20]


def dead_letters_batch(letters: list[DeadLetter]) -> pa.RecordBatch:
    columns = {
        name: [d.id if name == "id" else getattr(d, name) for d in letters]
        for name in DEAD_LETTERS.names
    }
    return pa.RecordBatch.from_pydict(columns, schema=DEAD_LETTERS)


ACTOR_FAILURE = "actor_failure"  # an input row that kept failing an actor (its supervisor gave up)


def actor_failure_letters(
    codec: SbeCodec, rows: pa.RecordBatch, where: str, stream_id: int
) -> list[DeadLetter]:
    """One ``actor_failure`` dead letter per input row an actor stage gave up on (rows of
    ``ACTOR_FAILURES``: the row, its ``kind``, ``entity`` and ``error``).

    As a late row's letter (``sources.decoder.late_row_letters``): the row alone as a
    message (the codec's reading columns, root fields 0) at session 0, position 0,
    ``received_ns`` its event time, so its id is its content, however batches were
    cut. An alarm row (kind 1) is encoded as a reading with its state as the quality;
    ``detail`` names the entity, the row, the step and the error."""
    if rows.num_rows == 0:
        return []
    ts = rows.column("ts").cast(pa.int64()).to_numpy()
    columns = {}
    for f in codec.arrow_schema:
        column = rows.column(f.name) if f.name in rows.schema.names else pa.nulls(rows.num_rows)
        columns[f.name] = column.fill_null(0).cast(f.type).to_numpy(zero_copy_only=False)
    root = dict.fromkeys(codec.root_dtype.names or (), 0)
    payloads = codec.encode_each(columns, **root)
    sensors = rows.column("sensor_id").to_pylist()
    entities = rows.column("entity").to_pylist()
    kinds = rows.column("kind").to_pylist()
    errors = rows.column("error").to_pylist()
    letters = []
    for i, payload in enumerate(payloads):
        what = "alarm row" if kinds[i] else "reading"
        detail = (
            f"entity {entities[i]}: {what} of sensor {sensors[i]} ts {int(ts[i])} failed "
            f"at step {where}: {errors[i]}"
        )
        letters.append(DeadLetter(ACTOR_FAILURE, detail, stream_id, 0, 0, int(ts[i]), payload))
    return letters
