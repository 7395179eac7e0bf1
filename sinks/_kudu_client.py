"""The only module that calls kudu-python; every call the Kudu sink makes is here.

Checked by eye against apache/kudu tag 1.18.1 (commit 3a9f8c31), the
kudu-python on PyPI; "client.pyx:391" etc. name the lines matched. It could
not be run: kudu-python needs the Kudu C++ client, not installable here.
``tests/sinks/fake_kudu.py`` implements this same interface for the tests.

kudu-python raises ``KuduNotFound`` / ``KuduInvalidArgument`` /
``KuduNotSupported`` with the bare message and ``KuduBadStatus`` with the full
``Status::ToString()`` (errors.pyx:49-62); ``_status`` puts the prefix back so
the sink classifies one kind of text: "Not found: ...", "Service unavailable: ...".
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from telepipe.errors import SinkError
from telepipe.sinks.kudu_types import KuduStatusError, RowError, TableSpec, micros_to_datetime

MISSING = "KuduSink needs kudu-python: pip install 'telepipe[kudu]' (needs the Kudu C++ client)"


def _kudu() -> Any:
    try:
        import kudu  # lazy: an optional extra
        import kudu.client
        import kudu.errors
    except ImportError:
        raise SinkError(MISSING) from None
    return kudu


@contextlib.contextmanager
def _status() -> Iterator[None]:
    kudu = _kudu()
    errors = kudu.errors
    try:
        yield
    except errors.KuduNotFound as error:
        raise KuduStatusError(f"Not found: {error}") from None
    except errors.KuduInvalidArgument as error:
        raise KuduStatusError(f"Invalid argument: {error}") from None
    except errors.KuduNotSupported as error:
        raise KuduStatusError(f"Not implemented: {error}") from None
    except errors.KuduException as error:  # KuduBadStatus: already "Code: message"
        raise KuduStatusError(str(error)) from None
    except (TypeError, ValueError, OverflowError) as error:  # Cython coercion in set_loc
        raise KuduStatusError(f"Invalid argument: {error}") from None


def connect(masters: list[str]) -> KuduClient:
    """``kudu.connect(host, port)`` with lists of equal length (__init__.py:63-115)."""
    kudu = _kudu()
    hosts, ports = [], []
    for master in masters:
        host, _, port = master.rpartition(":") if ":" in master else (master, "", "7051")
        hosts.append(host)
        ports.append(int(port))
    with _status():
        return KuduClient(kudu.connect(hosts, ports))


class KuduClient:
    """The calls the sink makes, each one or two kudu-python calls."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def table_exists(self, name: str) -> bool:
        with _status():
            return bool(self._client.table_exists(name))  # client.pyx:571

    def create_table(self, spec: TableSpec) -> None:
        kudu = _kudu()
        with _status():
            builder = kudu.schema_builder()  # __init__.py:137
            for c in spec.columns:
                # schema.pyx:576 add_column(name, type_, nullable, ..., precision, scale);
                # type_ by name goes through schema.pyx to_data_type.
                builder.add_column(
                    c.name, c.type, nullable=c.nullable, precision=c.precision, scale=c.scale
                )
            builder.set_primary_keys(list(spec.primary_key))  # schema.pyx:668
            schema = builder.build()  # schema.pyx:726
            # client.pyx:1403 Partitioning; :1413 add_hash_partitions(column_names, num_buckets)
            part = kudu.client.Partitioning().add_hash_partitions(
                list(spec.hash_columns), spec.hash_buckets
            )
            if spec.range is None:
                # client.pyx:1442: an empty list means no range partitioning (the
                # default would range-partition on the whole key).
                part.set_range_partition_columns([])
            else:
                column = spec.range.column
                part.set_range_partition_columns([column])
                for lower, upper in spec.range.bounds:
                    # client.pyx:1464 add_range_partition(lower, upper, lower_type, upper_type);
                    # bounds are dicts -> Schema.new_row -> set_loc -> to_unixtime_micros(datetime)
                    part.add_range_partition(
                        {column: micros_to_datetime(lower)},
                        {column: micros_to_datetime(upper)},
                        "inclusive",
                        "exclusive",
                    )
            # client.pyx:391 create_table(table_name, schema, partitioning, n_replicas=None, ...)
            self._client.create_table(spec.name, schema, part, n_replicas=spec.n_replicas)

    def open_table(self, name: str) -> Any:
        with _status():
            return self._client.table(name)  # client.pyx:606

    def new_session(
        self, *, timeout_ms: int, mutation_buffer_bytes: int, flush_interval_ms: int
    ) -> Any:
        # client.pyx:711 new_session(flush_mode, timeout_ms, **kwargs); kwargs read at :749-756.
        # mutation_buffer_max_num=1: more buffers in background mode can reorder
        # writes (KUDU-1767), and upsert is last-write-wins.
        with _status():
            return self._client.new_session(
                flush_mode="background",
                timeout_ms=timeout_ms,
                mutation_buffer_sz=mutation_buffer_bytes,
                mutation_buffer_flush_interval=flush_interval_ms,
                mutation_buffer_max_num=1,
            )

    def upsert(self, session: Any, table: Any, row: tuple[object, ...]) -> None:
        # client.pyx:1037 Table.new_upsert(record) -> PartialRow.from_record(tuple)
        # (:3045) -> set_loc per column (:3078-3136); client.pyx:1706 Session.apply(op).
        with _status():
            session.apply(table.new_upsert(row))

    def flush(self, session: Any) -> None:
        with _status():
            session.flush()  # client.pyx:1723

    def pending_errors(self, session: Any) -> tuple[list[RowError], bool]:
        with _status():
            errors, overflowed = session.get_pending_errors()  # client.pyx:1729 -> (list, bool)
            rows = []
            for error in errors:
                # KuduError (client.pyx:2977): failed_op() :2995, was_possibly_successful()
                # :3005; the status is only exposed through __repr__ :3020 "KuduError('%s')".
                text = repr(error)
                status = text[len("KuduError('") : -2] if text.startswith("KuduError('") else text
                rows.append(RowError(error.failed_op(), status, error.was_possibly_successful()))
            return rows, bool(overflowed)

    def close(self) -> None:
        with _status():
            self._client.close()  # client.pyx:368
