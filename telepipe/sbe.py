"""SBE (FIX Simple Binary Encoding) messages <-> Arrow record batches, in bulk.

The one codec of telepipe's wire format: sources decode with it, the simulator
and the Aeron sink encode with it, the dead-letter tools re-encode late rows.

The XML message schema is read with the PyPI ``sbe`` package (kizzx2/sbe-python);
from it we build numpy structured dtypes for the message header, the root block,
the group size header and one group entry. ``decode_many`` validates the few
header bytes of all messages at once (numpy gathers), then takes each group with
``np.frombuffer`` (few large groups) or one fancy-index gather (many small ones),
and copies each field once into an Arrow column. No Python runs per reading.

Supported: one message with a fixed root block of numeric fields followed by
exactly one repeating group of numeric fields (no nested groups, no var data).

Version policy: a message whose version is older than the schema's is rejected
(``unsupported_version``): the package does not read ``sinceVersion``, so we
cannot tell which fields an older encoder wrote. A newer version is accepted if
its blocks are at least as long as ours (SBE extension rules); the extra bytes
are skipped by striding with the block lengths on the wire.

Decoded arrays never alias the input buffer, which the caller may reuse.
"""

from __future__ import annotations

import io
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import sbe as sbe_pkg

from telepipe.errors import DecodeError, SchemaError
from telepipe.schema import TS_MAX, TS_MIN

__all__ = ["REASONS", "DecodeResult", "SbeCodec"]

REASONS: tuple[str, ...] = (
    "truncated_header",
    "wrong_schema_id",
    "wrong_template_id",
    "unsupported_version",
    "bad_block_length",
    "truncated_block",
    "truncated_group",
    "bad_group_block_length",
    "trailing_bytes",
    "ts_out_of_range",
)
_CODE = {slug: i + 1 for i, slug in enumerate(REASONS)}

_P = sbe_pkg.PrimitiveType
_NP: dict[sbe_pkg.PrimitiveType, str] = {
    _P.UINT8: "u1", _P.UINT16: "u2", _P.UINT32: "u4", _P.UINT64: "u8",
    _P.INT8: "i1", _P.INT16: "i2", _P.INT32: "i4", _P.INT64: "i8",
    _P.FLOAT: "f4", _P.DOUBLE: "f8",
}  # fmt: skip


@dataclass(frozen=True)
class DecodeResult:
    batch: pa.RecordBatch  # all accepted readings, columns per group field
    root: np.ndarray  # one row per accepted message, root block fields (snake_case)
    accepted: np.ndarray  # int64 indices of accepted messages in the input
    counts: np.ndarray  # int64 readings of each accepted message (the batch's rows, in order)
    rejected: list[tuple[int, str, str]]  # (message index, reason slug, one-line detail)


def snake_case(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def _primitive(t: Any, where: str) -> tuple[str, str | None] | None:
    """(numpy code, semanticType) of a field type; None for a constant (no wire bytes)."""
    if isinstance(t, sbe_pkg.PrimitiveType):
        prim, semantic = t, None
    elif isinstance(t, sbe_pkg.Type):
        if t.presence == sbe_pkg.Presence.CONSTANT:
            return None
        if t.length != 1:
            raise SchemaError(f"{where}: arrays (length={t.length}) are not supported")
        # Type uses __slots__ and only sets semanticType when the XML has it.
        prim, semantic = t.primitiveType, getattr(t, "semanticType", None)
    elif isinstance(t, sbe_pkg.Enum | sbe_pkg.Set):
        enc, semantic = t.encodingType, None
        prim = (
            enc.primitiveType if isinstance(enc, sbe_pkg.Type) else sbe_pkg.PrimitiveType(enc.value)
        )
    else:
        raise SchemaError(f"{where}: type {t!r} is not supported (numeric fields only)")
    if prim not in _NP:
        raise SchemaError(f"{where}: primitive type {prim.value} is not supported")
    return _NP[prim], semantic


def _struct(members: list[tuple[str, str, int]], itemsize: int, order: str, where: str) -> np.dtype:
    names = [m[0] for m in members]
    if len(set(names)) != len(names):
        raise SchemaError(f"{where}: duplicate field names {names}")
    formats, offsets = [order + m[1] for m in members], [m[2] for m in members]
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": itemsize})


def _composite_dtype(comp: Any, required: tuple[str, ...], order: str, where: str) -> np.dtype:
    members: list[tuple[str, str, int]] = []
    cursor = packed = 0
    for t in comp.types:
        spec = _primitive(t, f"{where}.{getattr(t, 'name', '?')}")
        if spec is None:
            continue
        size = np.dtype(spec[0]).itemsize
        # The package stores an explicit offset as padding relative to the sum of the
        # preceding member sizes (ignoring their padding); undo that to get the offset.
        offset = t.padding + packed if t.padding > 0 else cursor
        members.append((t.name, spec[0], offset))
        cursor, packed = offset + size, packed + size
    missing = [r for r in required if r not in {m[0] for m in members}]
    if missing:
        raise SchemaError(f"{where}: composite {comp.name!r} lacks {', '.join(missing)}")
    return _struct(members, cursor, order, where)


def _block_dtype(
    fields: list[Any], declared: int | None, order: str, where: str
) -> tuple[np.dtype, dict[str, str | None]]:
    members: list[tuple[str, str, int]] = []
    semantics: dict[str, str | None] = {}
    cursor = 0
    for f in fields:
        spec = _primitive(f.type, f"{where}.{f.name}")
        if spec is None:
            continue
        name = snake_case(f.name)
        members.append((name, spec[0], cursor))
        semantics[name] = spec[1]
        cursor += np.dtype(spec[0]).itemsize
    if declared is not None and declared < cursor:
        raise SchemaError(f"{where}: blockLength={declared} < {cursor} bytes of fields")
    return _struct(members, declared or cursor, order, where), semantics


@dataclass(eq=False)
class SbeCodec:
    """Encoder and bulk decoder for one SBE message with one repeating group."""

    message_name: str
    schema_id: int
    version: int
    template_id: int
    header_dtype: np.dtype
    root_dtype: np.dtype
    group_name: str
    group_header_dtype: np.dtype
    entry_dtype: np.dtype
    arrow_schema: pa.Schema
    max_in_group: int = field(init=False)
    _strided: dict[int, np.dtype] = field(init=False, repr=False)
    _ts_fields: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.max_in_group = int(np.iinfo(self.group_header_dtype["numInGroup"]).max)
        self._strided = {self.entry_dtype.itemsize: self.entry_dtype}
        self._ts_fields = tuple(f.name for f in self.arrow_schema if pa.types.is_timestamp(f.type))

    @classmethod
    def from_xml(cls, path: str | os.PathLike[str], message: str = "TelemetryBatch") -> SbeCodec:
        where = os.fspath(path)
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise SchemaError(f"SBE schema {where}: cannot read ({exc.strerror})") from None
        try:
            order = {"littleEndian": "<", "bigEndian": ">"}[
                ET.fromstring(data).get("byteOrder", "littleEndian")
            ]
        except ET.ParseError as exc:
            raise SchemaError(f"SBE schema {where}: not XML ({exc})") from None
        except KeyError as exc:
            raise SchemaError(f"SBE schema {where}: unknown byteOrder {exc}") from None
        try:
            schema = sbe_pkg.Schema.parse(io.BytesIO(data))
        except Exception as exc:  # the package reports bad schemas with assert/KeyError
            detail = f"{type(exc).__name__}: {exc}".splitlines()[0]
            raise SchemaError(f"SBE schema {where}: invalid ({detail})") from None
        msg = next((m for m in schema.messages.values() if m.name == message), None)
        if msg is None:
            names = sorted(m.name for m in schema.messages.values())
            raise SchemaError(f"SBE schema {where}: no message {message!r} (has {names})")
        w = f"{where}:{message}"
        header_type = schema.types.get(schema.header_type_name)
        if not isinstance(header_type, sbe_pkg.Composite):
            raise SchemaError(f"{w}: no header composite {schema.header_type_name!r}")
        header_dtype = _composite_dtype(
            header_type, ("blockLength", "templateId", "schemaId", "version"), order, w
        )
        groups = [i for i, f in enumerate(msg.fields) if isinstance(f, sbe_pkg.Group)]
        if len(groups) != 1 or groups[0] != len(msg.fields) - 1:
            raise SchemaError(f"{w}: expected root fields followed by exactly one group")
        group = msg.fields[-1]
        if any(isinstance(f, sbe_pkg.Group) for f in group.fields):
            raise SchemaError(f"{w}: nested groups are not supported")
        root_dtype, _ = _block_dtype(msg.fields[:-1], msg.blockLength, order, w)
        entry_dtype, semantics = _block_dtype(
            group.fields, group.blockLength, order, f"{w}.{group.name}"
        )
        group_header_dtype = _composite_dtype(
            group.dimensionType, ("blockLength", "numInGroup"), order, f"{w}.{group.name}"
        )
        arrow_fields = []
        for name in entry_dtype.names or ():
            typ = pa.from_numpy_dtype(entry_dtype[name].newbyteorder("="))
            if semantics[name] == "UTCTimestamp":
                if typ != pa.int64():
                    raise SchemaError(f"{w}: UTCTimestamp field {name!r} must be int64 ns")
                typ = pa.timestamp("ns")
            arrow_fields.append(pa.field(name, typ, nullable=False))
        return cls(
            message_name=message,
            schema_id=int(schema.id),
            version=int(schema.version),
            template_id=int(msg.id),
            header_dtype=header_dtype,
            root_dtype=root_dtype,
            group_name=group.name,
            group_header_dtype=group_header_dtype,
            entry_dtype=entry_dtype,
            arrow_schema=pa.schema(arrow_fields),
        )

    # -- encoding ---------------------------------------------------------------

    def encode(self, columns: Mapping[str, np.ndarray], **root: int) -> bytes:
        cols, n = self._entry_columns(columns)
        if n > self.max_in_group:
            raise SchemaError(
                f"{self.message_name}: {n} readings exceed the group's max numInGroup "
                f"{self.max_in_group}; split the batch"
            )
        block = self._root_block(root)
        hsize, rsize = self.header_dtype.itemsize, self.root_dtype.itemsize
        gsize, esize = self.group_header_dtype.itemsize, self.entry_dtype.itemsize
        out = np.zeros(hsize + rsize + gsize + n * esize, np.uint8)
        header = out[:hsize].view(self.header_dtype)
        header["blockLength"], header["templateId"] = rsize, self.template_id
        header["schemaId"], header["version"] = self.schema_id, self.version
        out[hsize : hsize + rsize] = block.view(np.uint8)
        group_header = out[hsize + rsize : hsize + rsize + gsize].view(self.group_header_dtype)
        group_header["blockLength"], group_header["numInGroup"] = esize, n
        entries = out[hsize + rsize + gsize :].view(self.entry_dtype)
        for name, col in cols.items():
            entries[name] = col
        return out.tobytes()

    def _entry_columns(
        self, columns: Mapping[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], int]:
        """One checked, converted array per group field, and their common length."""
        names = tuple(self.entry_dtype.names or ())
        missing = [c for c in names if c not in columns]
        unknown = [c for c in columns if c not in names]
        if missing or unknown:
            raise SchemaError(
                f"{self.message_name}: columns missing {missing}, unknown {unknown}; "
                f"expected {list(names)}"
            )
        cols = {c: _as_column(c, columns[c], self.entry_dtype[c]) for c in names}
        lengths = {len(v) for v in cols.values()}
        if len(lengths) > 1:
            raise SchemaError(f"{self.message_name}: columns differ in length {sorted(lengths)}")
        return cols, lengths.pop() if lengths else 0

    def encode_each(self, columns: Mapping[str, np.ndarray], **root: int) -> list[bytes]:
        """One message per row, all with the same root block."""
        n = len(np.asarray(next(iter(columns.values())))) if columns else 0
        return self.encode_groups(
            columns, np.repeat(self._root_block(root), n), np.ones(n, np.int64)
        )

    def _root_block(self, root: Mapping[str, int]) -> np.ndarray:
        """One root block (a 1-element structured array) from its fields' values."""
        root_names = tuple(self.root_dtype.names or ())
        if set(root) != set(root_names):
            given, expected = sorted(root), list(root_names)
            raise SchemaError(f"{self.message_name}: root fields {given}, expected {expected}")
        block = np.zeros(1, self.root_dtype)
        for name in root_names:
            block[name] = _as_column(name, np.array([root[name]]), self.root_dtype[name])
        return block

    def encode_groups(
        self, columns: Mapping[str, np.ndarray], roots: np.ndarray, counts: np.ndarray
    ) -> list[bytes]:
        """Many messages at once: message ``i`` has root block ``roots[i]`` (a structured
        array of the root's fields) and the next ``counts[i]`` rows of ``columns``."""
        counts = np.asarray(counts, np.int64)
        cols, n = self._entry_columns(columns)
        entries = np.zeros(n, self.entry_dtype)
        for name, col in cols.items():
            entries[name] = col
        if n != int(counts.sum()):
            raise SchemaError(
                f"{self.message_name}: the columns have {n} rows, the messages {int(counts.sum())}"
            )
        if len(counts) and (counts.min() < 0 or counts.max() > self.max_in_group):
            raise SchemaError(
                f"{self.message_name}: readings per message must be in [0, "
                f"{self.max_in_group}], got up to {int(counts.max())}"
            )
        hsize, rsize = self.header_dtype.itemsize, self.root_dtype.itemsize
        gsize, esize = self.group_header_dtype.itemsize, self.entry_dtype.itemsize
        m = len(counts)
        head = np.zeros(m, np.dtype([("h", self.header_dtype), ("r", self.root_dtype),
                                     ("g", self.group_header_dtype)]))  # fmt: skip
        head["h"]["blockLength"], head["h"]["templateId"] = rsize, self.template_id
        head["h"]["schemaId"], head["h"]["version"] = self.schema_id, self.version
        head["r"] = np.asarray(roots).astype(self.root_dtype)
        head["g"]["blockLength"], head["g"]["numInGroup"] = esize, counts
        fixed = hsize + rsize + gsize
        sizes = fixed + counts * esize
        ends = np.cumsum(sizes)
        starts = ends - sizes
        out = np.empty(int(ends[-1]) if m else 0, np.uint8)
        out[starts[:, None] + np.arange(fixed)] = head.view(np.uint8).reshape(m, fixed)
        within = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)
        at = np.repeat(starts + fixed, counts) + within * esize
        out[at[:, None] + np.arange(esize)] = entries.view(np.uint8).reshape(n, esize)
        return [out[a:b].tobytes() for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]

    # -- decoding ---------------------------------------------------------------

    def decode(self, payload: bytes | bytearray | memoryview) -> DecodeResult:
        n = memoryview(payload).nbytes
        return self.decode_many(payload, np.zeros(1, np.int64), np.array([n], np.int64))

    def decode_one(self, payload: bytes | bytearray | memoryview) -> DecodeResult:
        """Like :meth:`decode` but raises :class:`DecodeError` if the message is rejected."""
        result = self.decode(payload)
        if result.rejected:
            _, reason, detail = result.rejected[0]
            raise DecodeError(reason, detail)
        return result

    def decode_many(
        self,
        buffer: bytes | bytearray | memoryview,
        offsets: np.ndarray,
        lengths: np.ndarray,
    ) -> DecodeResult:
        buf = np.frombuffer(memoryview(buffer).cast("B"), np.uint8)
        off = np.asarray(offsets, np.int64).reshape(-1)
        ln = np.asarray(lengths, np.int64).reshape(-1)
        if off.shape != ln.shape:
            raise ValueError(f"offsets ({off.size}) and lengths ({ln.size}) differ in size")
        if off.size and (off.min() < 0 or ln.min() < 0 or (off + ln).max() > buf.size):
            raise ValueError(f"offsets/lengths reach outside the {buf.size}-byte buffer")

        # Validation is vectorised over messages: gather the few header bytes of each.
        hsize, rsize = self.header_dtype.itemsize, self.root_dtype.itemsize
        gsize, esize = self.group_header_dtype.itemsize, self.entry_dtype.itemsize
        code = np.zeros(off.size, np.int8)
        code[ln < hsize] = _CODE["truncated_header"]
        hdr = _gather(buf, off, code == 0, self.header_dtype)
        bl = hdr["blockLength"].astype(np.int64)
        schema_id, template_id = hdr["schemaId"], hdr["templateId"]
        version = hdr["version"].astype(np.int64)

        def flag(reason: str, bad: np.ndarray) -> None:
            code[(code == 0) & bad] = _CODE[reason]

        flag("wrong_schema_id", schema_id != self.schema_id)
        flag("wrong_template_id", template_id != self.template_id)
        flag("unsupported_version", version < self.version)
        flag("bad_block_length", bl < rsize)
        flag("truncated_block", ln < hsize + bl)
        flag("truncated_group", ln < hsize + bl + gsize)
        gpos = off + hsize + bl
        gh = _gather(buf, gpos, code == 0, self.group_header_dtype)
        gbl = gh["blockLength"].astype(np.int64)
        num = gh["numInGroup"].astype(np.int64)
        flag("bad_group_block_length", gbl < esize)
        end = hsize + bl + gsize + num * gbl
        flag("truncated_group", ln < end)
        flag("trailing_bytes", ln > end)

        accepted = np.flatnonzero(code == 0).astype(np.int64)
        nonempty = accepted[num[accepted] > 0]
        counts, starts, strides = num[nonempty], gpos[nonempty] + gsize, gbl[nonempty]
        if nonempty.size > 1 and counts.sum() < 128 * nonempty.size:
            entries = self._gather_entries(buf, starts, counts, strides)
        else:
            parts = []
            for start, count, stride in zip(
                starts.tolist(), counts.tolist(), strides.tolist(), strict=True
            ):
                dtype = self._strided_dtype(stride)
                part = np.frombuffer(buf, dtype, count=count, offset=start)
                parts.append(part if dtype is self.entry_dtype else part.astype(self.entry_dtype))
            entries = np.concatenate(parts) if parts else np.zeros(0, self.entry_dtype)
        ts_details: dict[int, str] = {}
        outside = self._outside_ts_range(entries)
        if outside.size:  # whole messages go, as for the other reasons
            owner = np.repeat(nonempty, counts)
            for entry in outside[::-1].tolist():  # each message's first such entry last
                ts_details[int(owner[entry])] = self._ts_detail(entries[entry])
            bad = np.fromiter(ts_details, np.int64)
            code[bad] = _CODE["ts_out_of_range"]
            entries = entries[~np.isin(owner, bad)]
            accepted = np.flatnonzero(code == 0).astype(np.int64)
        root = _gather(buf, off[accepted] + hsize, np.ones(accepted.size, bool), self.root_dtype)
        batch = pa.RecordBatch.from_arrays(
            [_arrow_column(entries[f.name], f.type) for f in self.arrow_schema],
            schema=self.arrow_schema,
        )
        rejected = [
            self._reject(int(i), int(code[i]), int(ln[i]), hdr[i], int(gbl[i]), int(num[i]))
            for i in np.flatnonzero(code).tolist()
        ]
        rejected = [(i, r, ts_details.get(i, d)) for i, r, d in rejected]
        return DecodeResult(
            batch=batch, root=root, accepted=accepted, counts=num[accepted], rejected=rejected
        )

    def _outside_ts_range(self, entries: np.ndarray) -> np.ndarray:
        """Indices of the entries with a timestamp field outside ``TS_MIN..TS_MAX``."""
        bad = np.zeros(entries.size, bool)
        for name in self._ts_fields:
            ts = entries[name]
            bad |= (ts < TS_MIN) | (ts >= TS_MAX)
        return np.flatnonzero(bad)

    def _ts_detail(self, entry: np.void) -> str:
        name = next(n for n in self._ts_fields if not TS_MIN <= int(entry[n]) < TS_MAX)
        return f"{name} {int(entry[name])} ns, expected in [{TS_MIN}, {TS_MAX}) ns"

    def _gather_entries(
        self, buf: np.ndarray, starts: np.ndarray, counts: np.ndarray, strides: np.ndarray
    ) -> np.ndarray:
        # Many small groups: per-message frombuffer would cost ~2 us each, so index a view
        # with one record starting at every byte with the start of each entry instead.
        every_byte = np.ndarray(
            (buf.size - self.entry_dtype.itemsize + 1,), self.entry_dtype, buffer=buf, strides=(1,)
        )
        index_in_group = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        return every_byte[np.repeat(starts, counts) + index_in_group * np.repeat(strides, counts)]

    def _strided_dtype(self, stride: int) -> np.dtype:
        if stride not in self._strided:
            fields = (self.entry_dtype.fields or {}).items()
            names, formats, offsets = zip(*((k, v[0], v[1]) for k, v in fields), strict=True)
            self._strided[stride] = np.dtype(
                {"names": names, "formats": formats, "offsets": offsets, "itemsize": stride}
            )
        return self._strided[stride]

    def _reject(
        self, index: int, code: int, length: int, hdr: np.void, gbl: int, num: int
    ) -> tuple[int, str, str]:
        reason = REASONS[code - 1]
        hsize, rsize = self.header_dtype.itemsize, self.root_dtype.itemsize
        gsize, esize = self.group_header_dtype.itemsize, self.entry_dtype.itemsize
        bl = int(hdr["blockLength"])
        need, group = hsize + bl + gsize + num * gbl, repr(self.group_name)
        detail = {
            "truncated_header": f"{length} bytes, expected >= {hsize} (message header)",
            "wrong_schema_id": f"schemaId {int(hdr['schemaId'])}, expected {self.schema_id}",
            "wrong_template_id": (
                f"templateId {int(hdr['templateId'])}, expected {self.template_id} "
                f"({self.message_name})"
            ),
            "unsupported_version": (f"version {int(hdr['version'])}, expected >= {self.version}"),
            "bad_block_length": f"root blockLength {bl}, expected >= {rsize}",
            "truncated_block": f"{length} bytes, expected >= {hsize + bl} (root blockLength {bl})",
            "truncated_group": (
                f"{length} bytes, expected {need} ({group}: {num} x {gbl} bytes)"
                if length >= hsize + bl + gsize
                else f"{length} bytes, expected >= {hsize + bl + gsize} ({group} header)"
            ),
            "bad_group_block_length": (f"group {group} blockLength {gbl}, expected >= {esize}"),
            "trailing_bytes": f"{length} bytes, expected {need} ({length - need} trailing)",
            "ts_out_of_range": f"a timestamp expected in [{TS_MIN}, {TS_MAX}) ns",
        }[reason]
        return index, reason, detail


def _gather(buf: np.ndarray, starts: np.ndarray, ok: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """One ``dtype`` record per start; zeros where ``ok`` is false (bytes may not exist)."""
    raw = np.zeros((starts.size, dtype.itemsize), np.uint8)
    rows = np.flatnonzero(ok)
    if rows.size:
        raw[rows] = buf[starts[rows, None] + np.arange(dtype.itemsize)]
    return raw.view(dtype).reshape(starts.size)


def _arrow_column(values: np.ndarray, typ: pa.DataType) -> pa.Array:
    # astype to native order makes a contiguous copy that does not alias the input.
    native = np.asarray(values).astype(values.dtype.newbyteorder("="))
    return pa.Array.from_buffers(typ, native.size, [None, pa.py_buffer(native)])


def _as_column(name: str, values: Any, dtype: np.dtype) -> np.ndarray:
    col = np.asarray(values)
    if col.dtype.kind == "M":
        col = col.astype("datetime64[ns]").view(np.int64)
    if col.ndim != 1:
        raise SchemaError(f"column {name!r}: expected 1-D, got shape {col.shape}")
    if dtype.kind in "iu":
        if col.dtype.kind not in "iub":
            raise SchemaError(f"column {name!r}: {col.dtype} values for integer {dtype.name}")
        info = np.iinfo(dtype)
        if col.size and not np.can_cast(col.dtype, dtype):
            lo, hi = int(col.min()), int(col.max())
            if lo < info.min or hi > info.max:
                raise SchemaError(
                    f"column {name!r}: values [{lo}, {hi}] outside {dtype.name} "
                    f"[{info.min}, {info.max}]"
                )
    elif col.dtype.kind not in "iubf":
        raise SchemaError(f"column {name!r}: {col.dtype} values for float {dtype.name}")
    return col.astype(dtype, copy=False)
