"""Arrow -> Delta column mapping, explicit because Delta lacks some Arrow types.

Delta has no unsigned integers and stores timestamps in microseconds. So:
- ``timestamp[ns]`` column ``c`` -> ``c`` as ``timestamp[us]`` (truncated, for
  queries and plots) plus ``c_ns`` as ``int64`` (exact, for replay comparisons);
- uint8 -> int16, uint16 -> int32, uint32 -> int64 (all lossless);
- uint64 -> int64, refused when a value exceeds 2**63 - 1.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from telepipe.errors import SchemaError

_WIDEN = {pa.uint8(): pa.int16(), pa.uint16(): pa.int32(), pa.uint32(): pa.int64()}


def delta_schema(schema: pa.Schema) -> pa.Schema:
    fields: list[pa.Field] = []
    for f in schema:
        if pa.types.is_timestamp(f.type) and f.type.unit == "ns":
            fields.append(pa.field(f.name, pa.timestamp("us", f.type.tz), f.nullable))
            fields.append(pa.field(f"{f.name}_ns", pa.int64(), f.nullable))
        elif f.type in _WIDEN:
            fields.append(pa.field(f.name, _WIDEN[f.type], f.nullable))
        elif f.type == pa.uint64():
            fields.append(pa.field(f.name, pa.int64(), f.nullable))
        else:
            fields.append(f)
    return pa.schema(fields)


def to_delta_table(table: pa.Table | pa.RecordBatch) -> pa.Table:
    """``table`` with the columns Delta cannot store mapped as the module says."""
    arrays: list[pa.Array | pa.ChunkedArray] = []
    for f, column in zip(table.schema, table.columns, strict=True):
        if pa.types.is_timestamp(f.type) and f.type.unit == "ns":
            arrays.append(column.cast(pa.timestamp("us", f.type.tz), safe=False))
            arrays.append(column.cast(pa.int64()))
        elif f.type in _WIDEN:
            arrays.append(column.cast(_WIDEN[f.type]))
        elif f.type == pa.uint64():
            if len(column) and pc.max(column).as_py() > 2**63 - 1:
                raise SchemaError(
                    f"column {f.name!r}: uint64 value above 2**63-1 cannot be stored in Delta"
                )
            arrays.append(column.cast(pa.int64()))
        else:
            arrays.append(column)
    return pa.Table.from_arrays(arrays, schema=delta_schema(table.schema))
