"""Arrow -> Kudu column mapping, explicit because Kudu lacks some Arrow types.

Kudu has no unsigned integers and stores timestamps in microseconds
(``unixtime_micros``, UTC). Column by column (the same choices as
``delta_types``, so both sinks hold the same values):

=====================  ===========================  ==================================
Arrow                  Kudu                         note
=====================  ===========================  ==================================
int8/16/32/64          int8/16/32/64                as is
uint8/16/32            int16/int32/int64            widened, lossless
uint64                 int64                        a value above 2**63-1 is refused
                                                    for that row (dead letter)
float16/float32        float                        float16 widened, lossless
float64                double
bool                   bool
string, large_string   string
binary, large_binary,  binary
fixed_size_binary
timestamp[s/ms/us]     unixtime_micros              lossless; a time zone is dropped
                                                    (Kudu stores the UTC instant)
timestamp[ns] ``c``    ``c`` unixtime_micros        truncated toward zero to us
                       + ``c_ns`` int64             exact ns since the epoch
date32, date64         date
decimal128/256(p<=38)  decimal(p, s)
dictionary<T>          as T                         decoded
anything else          refused: SchemaError
=====================  ===========================  ==================================

Primary key: the key columns must be the first columns of the Arrow schema, in
key order, and not float/double/bool. Kudu key columns are always NOT NULL; a
null in a key column is refused for that row. A ns timestamp in the key puts
both ``c`` and ``c_ns`` in the Kudu key, so two readings in the same
microsecond stay two rows instead of overwriting each other.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from telepipe.errors import SchemaError

INT64_MAX = 2**63 - 1
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_DIRECT = {
    pa.int8(): "int8",
    pa.int16(): "int16",
    pa.int32(): "int32",
    pa.int64(): "int64",
    pa.uint8(): "int16",
    pa.uint16(): "int32",
    pa.uint32(): "int64",
    pa.uint64(): "int64",
    pa.float16(): "float",
    pa.float32(): "float",
    pa.float64(): "double",
    pa.bool_(): "bool",
}
_ARROW_OF = {
    "int8": pa.int8(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "bool": pa.bool_(),
    "string": pa.string(),
    "binary": pa.binary(),
    "date": pa.date32(),
}
_NOT_KEY = {"float", "double", "bool"}


@dataclass(frozen=True)
class KuduColumn:
    """One Kudu column: its name, kudu-python type name and where its values come from."""

    name: str
    type: str  # int8..int64, float, double, bool, string, binary, unixtime_micros, date, decimal
    nullable: bool
    key: bool
    source: str  # the Arrow column it is computed from
    exact_ns: bool = False  # the int64 ``<c>_ns`` twin of a ns timestamp
    precision: int | None = None
    scale: int | None = None


@dataclass(frozen=True)
class RangeSpec:
    """Range partitions on a unixtime_micros key column: [lower, upper) in microseconds."""

    column: str
    bounds: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class TableSpec:
    """Everything ``create_table`` needs, as plain values (no kudu-python objects)."""

    name: str
    columns: tuple[KuduColumn, ...]
    primary_key: tuple[str, ...]
    hash_columns: tuple[str, ...]
    hash_buckets: int
    range: RangeSpec | None
    n_replicas: int


def _kudu_type(f: pa.Field) -> tuple[str, int | None, int | None]:
    t = f.type
    if pa.types.is_dictionary(t):
        return _kudu_type(pa.field(f.name, t.value_type))
    if t in _DIRECT:
        return _DIRECT[t], None, None
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string", None, None
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return "binary", None, None
    if pa.types.is_timestamp(t):
        return "unixtime_micros", None, None
    if pa.types.is_date(t):
        return "date", None, None
    if pa.types.is_decimal(t) and t.precision <= 38:
        return "decimal", t.precision, t.scale
    raise SchemaError(f"column {f.name!r}: Arrow type {t} has no Kudu mapping; cast it first")


def _is_ns(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_timestamp(t) and t.unit == "ns"


def kudu_columns(schema: pa.Schema, primary_key: list[str] | tuple[str, ...]) -> list[KuduColumn]:
    """The Kudu columns of an Arrow schema; raises SchemaError (one line) for a bad key or type."""
    if not primary_key:
        raise SchemaError("a Kudu table needs a primary key; none given")
    for name in primary_key:
        if name not in schema.names:
            raise SchemaError(f"column {name!r}: primary key column not in schema {schema.names}")
    head = schema.names[: len(primary_key)]
    for position, name in enumerate(primary_key):
        if head[position] != name:
            raise SchemaError(
                f"column {name!r}: primary key columns must come first in the schema, in key "
                f"order {list(primary_key)}; schema starts {head}"
            )
    columns: list[KuduColumn] = []
    for f in schema:
        key = f.name in primary_key
        kind, precision, scale = _kudu_type(f)
        if key and kind in _NOT_KEY:
            raise SchemaError(f"column {f.name!r}: Kudu key columns cannot be {kind}")
        nullable = f.nullable and not key
        columns.append(KuduColumn(f.name, kind, nullable, key, f.name, False, precision, scale))
        if _is_ns(f.type):
            twin = f"{f.name}_ns"
            if twin in schema.names:
                raise SchemaError(f"column {twin!r}: name taken by the exact-ns twin of {f.name!r}")
            columns.append(KuduColumn(twin, "int64", nullable, key, f.name, True))
    return columns


def parse_interval_us(text: str) -> int:
    """``"1d"``, ``"6h"``, ``"30m"``, ``"90s"`` -> microseconds."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", text or "")
    if not match or int(match.group(1)) == 0:
        raise SchemaError(
            f"range partition interval {text!r}: expected a count and s|m|h|d, e.g. 1d"
        )
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return int(match.group(1)) * unit * 1_000_000


def table_spec(
    name: str,
    columns: list[KuduColumn],
    *,
    hash_buckets: int,
    n_replicas: int,
    range_column: str | None = None,
    range_start_us: int | None = None,
    range_interval_us: int = 86_400_000_000,
    range_count: int = 0,
) -> TableSpec:
    """Hash partitions on the key (minus the range column), range partitions on time.

    With a range column (a unixtime_micros key column), the table is hash
    partitioned on the other key columns and gets ``range_count`` ranges of
    ``range_interval_us`` from ``range_start_us`` floored to the interval: the
    usual Kudu time-series layout (writes spread by sensor, scans pruned by
    time). Rows outside every range come back from Kudu as per-row errors.
    """
    key = tuple(c.name for c in columns if c.key)
    by_name = {c.name: c for c in columns}
    range_spec = None
    hash_columns = key
    if range_column is not None and range_column in key:
        if by_name[range_column].type != "unixtime_micros":
            raise SchemaError(f"column {range_column!r}: range partitions need a timestamp column")
        if range_count < 1 or range_start_us is None:
            raise SchemaError(f"table {name!r}: range partitions need a start and a count >= 1")
        start = range_start_us // range_interval_us * range_interval_us
        bounds = tuple(
            (start + i * range_interval_us, start + (i + 1) * range_interval_us)
            for i in range(range_count)
        )
        range_spec = RangeSpec(range_column, bounds)
        twin = f"{range_column}_ns"
        rest = tuple(c for c in key if c not in (range_column, twin))
        hash_columns = rest or key
    if hash_buckets < 2:
        raise SchemaError(f"table {name!r}: Kudu needs at least 2 hash buckets, got {hash_buckets}")
    return TableSpec(name, tuple(columns), key, hash_columns, hash_buckets, range_spec, n_replicas)


def micros_to_datetime(us: int) -> dt.datetime:
    """A range bound as kudu-python takes it (util.to_unixtime_micros wants a datetime)."""
    return _EPOCH + dt.timedelta(microseconds=us)


def _values(column: pa.Array, c: KuduColumn) -> list[object]:
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    t = column.type
    if c.exact_ns:
        return column.cast(pa.int64()).to_pylist()
    if c.type == "unixtime_micros":
        # kudu-python's PartialRow.set_loc takes a datetime for unixtime_micros
        # (util.to_unixtime_micros); a naive one is read as UTC.
        return column.cast(pa.timestamp("us", t.tz), safe=False).to_pylist()
    if c.type == "decimal":
        # set_loc scales by the Decimal's own exponent: Arrow keeps the column scale.
        return column.cast(pa.decimal128(c.precision, c.scale)).to_pylist()
    if t == pa.uint64():
        return column.cast(pa.int64(), safe=False).to_pylist()
    if c.type in _ARROW_OF and t != _ARROW_OF[c.type]:
        column = column.cast(_ARROW_OF[c.type])
    return column.to_pylist()


def to_kudu_rows(
    batch: pa.RecordBatch, columns: list[KuduColumn]
) -> tuple[list[tuple[object, ...] | None], dict[int, str]]:
    """Kudu row values in column order, built column-wise by Arrow.

    Returns one tuple per batch row, or None for a row Kudu cannot store, with
    the reason (a Kudu-style status line) in the dict by row index: a uint64
    above 2**63-1, or a null in a key column.
    """
    refused: dict[int, str] = {}
    for f, column in zip(batch.schema, batch.columns, strict=True):
        if f.type == pa.uint64() and len(column):
            too_big = pc.greater(column, pa.scalar(INT64_MAX, pa.uint64()))
            for index in pc.indices_nonzero(pc.fill_null(too_big, False)).to_pylist():
                refused.setdefault(
                    index,
                    f"Invalid argument: column {f.name!r}: uint64 value "
                    f"{column[index].as_py()} above 2**63-1 does not fit Kudu int64",
                )
    for c in columns:
        if c.key and not c.exact_ns:
            column = batch.column(c.source)
            if column.null_count:
                for index in pc.indices_nonzero(column.is_null()).to_pylist():
                    refused.setdefault(
                        index, f"Invalid argument: column not nullable: {c.name} (key column)"
                    )
    values = [_values(batch.column(c.source), c) for c in columns]
    rows: list[tuple[object, ...] | None] = list(zip(*values, strict=True))
    if not columns:
        rows = [() for _ in range(batch.num_rows)]
    for index in refused:
        rows[index] = None
    return rows, refused


def key_of(columns: list[KuduColumn], row: tuple[object, ...]) -> tuple[object, ...]:
    return tuple(v for c, v in zip(columns, row, strict=False) if c.key)


_CELL = re.compile(r'(?:^|, )(?:[A-Z_]+ )?(\w+) (\w+)=("(?:[^"\\]|\\.)*"|[^,]*)')


def parse_operation(text: str) -> dict[str, str]:
    """Column -> rendered value from a failed operation's debug string.

    Kudu renders a write as ``UPSERT int32 sensor_id=7, unixtime_micros
    ts=2024-01-01T00:00:00.000001Z, ...`` (C++ ``KuduPartialRow::ToString`` ->
    ``ColumnSchema::DebugCellAppend``: ``<type> <name>=<value>``, joined by ", ").
    """
    return {m.group(2): m.group(3) for m in _CELL.finditer(text)}


def render_value(c: KuduColumn, value: object) -> str:
    """A key value as Kudu's debug string shows it (ints, strings, timestamps)."""
    if value is None:
        return "NULL"
    if c.type == "string":
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
    if c.type == "unixtime_micros" and isinstance(value, dt.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return str(value)


class KuduStatusError(Exception):
    """A Kudu call failed; ``status`` reads as Kudu prints it ("Service unavailable: ...")."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


@dataclass(frozen=True)
class RowError:
    """One per-row error from ``get_pending_errors``: the failed write and its status."""

    operation: str  # KuduError.failed_op(): "UPSERT int32 sensor_id=7, ..."
    status: str  # "Timed out: ...", "Not found: No tablet covering ...", ...
    possibly_successful: bool = False


TRANSIENT = ("Service unavailable", "Timed out", "Network error")


def is_transient(status: str) -> bool:
    """Kudu statuses worth retrying: an overloaded, slow or unreachable server."""
    return any(word in status for word in TRANSIENT)


def one_line(text: str) -> str:
    return " ".join(text.split())


def render_row(columns: list[KuduColumn], row: tuple[object, ...]) -> str:
    return ", ".join(
        f"{c.type} {c.name}={render_value(c, v)}" for c, v in zip(columns, row, strict=True)
    )


def describe_arrow_row(batch: pa.RecordBatch, index: int) -> str:
    """A refused row as Arrow holds it, in Kudu's debug-string style."""
    values = batch.slice(index, 1).to_pylist()[0]
    return "UPSERT " + ", ".join(f"{f.type} {f.name}={values[f.name]!r}" for f in batch.schema)
