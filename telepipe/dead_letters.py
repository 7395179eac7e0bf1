"""Dead letters: what a pipeline could not accept, kept with the reason and where it came from.

Each dead letter has a stable ``id`` derived from its content and origin, so a
replay of the same input produces the same ids and the store can deduplicate.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pyarrow as pa

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
