"""A checkpoint's files: one directory per (app id, table, checkpoint id).

Layout, every name made here (the app id and the table name only enter through a
digest, so no user string is ever a path component)::

    <data_dir>/_telepipe_state/<sha256(app_id NUL table)[:16]>/<checkpoint_id:012d>/
        manifest.json      format, versions, key groups, the decoder's dict, each
                           step's name, operator, format version, options, scalars,
                           arrays (dtype, shape, file) and every file's size and sha256
        sNNN-tMMM.arrow    Arrow IPC files: a step's arrays of one row count as columns
                           (an n x k array as a fixed-size list of k), or one
                           RecordBatch value

A directory is written under a temporary name and renamed whole; the commit naming
its manifest is the atomic point. Reading refuses, in one line naming the file: a
path that leaves ``data_dir`` (absolute, ``..``, a symlink out) or is not a name made
here, a manifest of another format, with an unknown or missing field, a size or
checksum that differs, an Arrow file whose columns are not the manifest's.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import stat
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from telepipe import __version__
from telepipe.errors import SnapshotError
from telepipe.markers import State, StateValue
from telepipe.operators.runtime.snapshot import KEY, JsonValue, Snapshot, layout, select
from telepipe.state.key_groups import DEFAULT_KEY_GROUPS, KEY_HASH, keeps

STATE_DIR = "_telepipe_state"
MANIFEST = "manifest.json"
FORMAT = "telepipe.checkpoint"
FORMAT_VERSION = 1
#: Checkpoint directories kept per (app id, table); older ones are deleted.
KEEP = 16
MAX_MANIFEST_BYTES = 64 << 20
MAX_FILE_BYTES = 1 << 40
DECODER = "decoder"
PAIRS = "$pairs"

_DTYPES = frozenset(
    {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
     "float32", "float64"}
)  # fmt: skip
# A checkpoint's directory: its id, then the token of the writer's hold on data_dir
# (none without one): two writers of one checkpoint id (a fenced one among them)
# never write into each other's committed directory.
_CHECKPOINT_DIR = re.compile(r"[0-9]{12}(-[0-9a-f]{1,32})?")
_OWNER_DIR = re.compile(r"[0-9a-f]{16}")
_DATA_FILE = re.compile(r"s[0-9]{3,6}-t[0-9]{3,6}\.arrow")


@dataclass(frozen=True)
class Checkpoint:
    """What ``read_checkpoint`` gives: the decoder's dict (None: none saved), each
    step's ``Snapshot`` (in chain order), the key groups and the manifest's path."""

    checkpoint_id: int
    decoder: dict[str, object] | None
    steps: dict[str, Snapshot]
    max_key_groups: int
    path: Path


# ------------------------------------------------------------------ writing


def owner_dir(app_id: str, table: str) -> str:
    """The directory name of one (app id, table): a digest, never the names themselves."""
    return hashlib.sha256(f"{app_id}\0{table}".encode()).hexdigest()[:16]


def checkpoint_of_dir(name: str) -> int | None:
    """The checkpoint id a state directory's name holds (``000000000007`` or
    ``000000000007-<writer token>``), or None for any other name."""
    return int(name[:12]) if _CHECKPOINT_DIR.fullmatch(name) else None


def write_checkpoint(
    root: str | Path,
    app_id: str,
    table: str,
    checkpoint_id: int,
    state: Mapping[str, object],
    key_groups: int = DEFAULT_KEY_GROUPS,
    keep: int = KEEP,
    writer: str | None = None,
) -> str:
    """Write a barrier's ``state`` (``"decoder"``: the decoder's JSON-able dict; every
    other name: a step's ``Snapshot``) and return the manifest's path relative to
    ``root``, for the commit metadata. A value that is neither, or a step state that
    does not follow the keyed layout, is a ``SnapshotError``."""
    root = Path(root)
    if isinstance(checkpoint_id, bool) or not 0 <= int(checkpoint_id) < 10**12:
        raise SnapshotError(f"checkpoint id must be in 0..10**12-1, got {checkpoint_id!r}")
    owner = root / STATE_DIR / owner_dir(app_id, table)
    owner.mkdir(parents=True, exist_ok=True)
    name = f"{int(checkpoint_id):012d}"
    if writer is not None:
        if not re.fullmatch(r"[0-9a-f]{1,32}", writer):
            raise SnapshotError(f"a writer token is 1-32 lowercase hex digits, got {writer!r}")
        name = f"{name}-{writer}"
    tmp = owner / f"{name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    files: list[dict[str, JsonValue]] = []
    steps: list[JsonValue] = []
    decoder: JsonValue = None
    for index, (step, value) in enumerate(state.items()):
        if step == DECODER:
            decoder = _plain(value, "the decoder's snapshot")
            continue
        if not isinstance(value, Snapshot):
            raise SnapshotError(
                f"step {step!r}: its state is a {type(value).__name__}, not a Snapshot"
            )
        steps.append(_write_step(tmp, index, step, value, files))
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "telepipe_version": __version__,
        "checkpoint_id": int(checkpoint_id),
        "key_groups": key_groups,
        "key_hash": KEY_HASH,
        "decoder": decoder,
        "steps": steps,
        "files": files,
    }
    text = json.dumps(manifest, sort_keys=True, allow_nan=False, separators=(",", ":"))
    _write_bytes(tmp / MANIFEST, text.encode())
    final = owner / name
    if final.exists():  # written before a crash that came before its commit
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(owner)
    made = [p for p in owner.iterdir() if _CHECKPOINT_DIR.fullmatch(p.name)]
    kept = sorted({p.name[:12] for p in made})[-keep:]  # the newest ``keep`` ids, any writer
    for old in made:
        if old.name[:12] not in kept:
            shutil.rmtree(old, ignore_errors=True)
    return f"{STATE_DIR}/{owner.name}/{name}/{MANIFEST}"


def _write_step(
    directory: Path, index: int, step: str, snapshot: Snapshot, files: list[dict[str, JsonValue]]
) -> JsonValue:
    layout(snapshot.state, step)  # refuse a state that cannot be cut by key, now
    scalars: dict[str, JsonValue] = {}
    arrays: list[JsonValue] = []
    batches: list[JsonValue] = []
    by_rows: dict[int, list[tuple[str, np.ndarray]]] = {}
    for name, value in snapshot.state.items():
        if isinstance(value, pa.RecordBatch):
            file = f"s{index:03d}-t{len(files):03d}.arrow"
            files.append(_write_table(directory / file, pa.Table.from_batches([value])))
            batches.append({"name": name, "file": file})
        elif isinstance(value, np.ndarray):
            by_rows.setdefault(len(value), []).append((name, value))
        else:
            scalars[name] = _scalar(value, step, name)
    for group in by_rows.values():
        file = f"s{index:03d}-t{len(files):03d}.arrow"
        columns, names = [], []
        for name, value in group:
            dtype = value.dtype.name
            if dtype not in _DTYPES:
                raise SnapshotError(f"step {step!r}: array {name!r} is {dtype}, not a number")
            width = int(np.prod(value.shape[1:], dtype=np.int64))
            arrays.append({"name": name, "dtype": dtype, "shape": list(value.shape), "file": file})
            if width == 0 and value.ndim > 1:
                continue  # nothing to store: the shape says it all
            flat = pa.array(np.ascontiguousarray(value).reshape(-1))
            columns.append(
                flat if value.ndim == 1 else pa.FixedSizeListArray.from_arrays(flat, width)
            )
            names.append(name)
        files.append(_write_table(directory / file, pa.Table.from_arrays(columns, names=names)))
    return {
        "name": step,
        "operator": snapshot.operator,
        "version": snapshot.version,
        "options": snapshot.options,
        "scalars": scalars,
        "arrays": arrays,
        "batches": batches,
    }


def _write_table(path: Path, table: pa.Table) -> dict[str, JsonValue]:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    data = sink.getvalue().to_pybytes()
    _write_bytes(path, data)
    return {"name": path.name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _write_bytes(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _scalar(value: object, step: str, name: str) -> JsonValue:
    if isinstance(value, bool | np.bool_):
        return {"int": int(value)}
    if isinstance(value, int | np.integer):
        return {"int": int(value)}
    if isinstance(value, float | np.floating):
        return {"float": float(value).hex()}
    if isinstance(value, str):
        return {"str": value}
    raise SnapshotError(f"step {step!r}: value {name!r} is a {type(value).__name__}")


def _plain(value: object, what: str) -> JsonValue:
    """``value`` as plain JSON values (numpy numbers as Python ones). A mapping with a
    key that is not a string (a ``(stream, session)`` tuple) is written as
    ``{"$pairs": [[key, value], ...]}``, tuples as lists, and read back as it was."""
    if isinstance(value, Mapping):
        if all(isinstance(k, str) for k in value) and list(value) != [PAIRS]:
            return {k: _plain(v, what) for k, v in value.items()}
        return {PAIRS: [[_plain(k, what), _plain(v, what)] for k, v in value.items()]}
    if isinstance(value, list | tuple):
        return [_plain(v, what) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise SnapshotError(f"{what} holds a {type(value).__name__}, not a JSON value")


def _unplain(value: object) -> object:
    """What ``_plain`` wrote, back (pairs as a mapping, list keys as tuples)."""
    if isinstance(value, dict):
        pairs = value.get(PAIRS) if len(value) == 1 else None
        if isinstance(pairs, list) and all(isinstance(p, list) and len(p) == 2 for p in pairs):
            return {_key(k): _unplain(v) for k, v in pairs}
        return {k: _unplain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unplain(v) for v in value]
    return value


def _key(value: object) -> object:
    if isinstance(value, list):
        return tuple(_key(v) for v in value)
    if isinstance(value, dict):
        raise SnapshotError(f"a mapping key cannot be a mapping: {value!r}")
    return value


# ------------------------------------------------------------------ reading


def read_checkpoint(
    root: str | Path,
    relative: str,
    key_groups: Collection[int] | None = None,
    *,
    checkpoint_id: int | None = None,
    owner: tuple[str, str] | None = None,
) -> Checkpoint:
    """The checkpoint whose manifest is ``root/relative`` (as commit metadata names it),
    checked; with ``key_groups``, each step's keyed rows of those groups only. With
    ``checkpoint_id`` and ``owner`` (app id, table), the commit's: a manifest of another
    checkpoint, or in another (app id, table)'s directory, is refused. Any refusal is a
    one-line ``SnapshotError`` naming the file."""
    manifest_path = _inside(Path(root), relative)
    parts = relative.split("/")
    if owner is not None and parts[1] != owner_dir(*owner):
        raise SnapshotError(
            f"{manifest_path}: refusing the state of another table or app id "
            f"(table {owner[1]!r} of app id {owner[0]!r} keeps its state in "
            f"{STATE_DIR}/{owner_dir(*owner)}/)"
        )
    if checkpoint_id is not None and parts[2].split("-")[0] != f"{checkpoint_id:012d}":
        raise SnapshotError(
            f"{manifest_path}: refusing the state of checkpoint "
            f"{int(parts[2].split('-')[0])} for checkpoint {checkpoint_id}"
        )
    data = _read_regular(manifest_path, MAX_MANIFEST_BYTES, relative)
    try:
        manifest = json.loads(data, parse_constant=_no_constant)
    except (ValueError, RecursionError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise SnapshotError(f"{manifest_path}: not a telepipe manifest ({reason})") from None
    checkpoint = _Reader(manifest_path).checkpoint(manifest, key_groups)
    if checkpoint_id is not None and checkpoint.checkpoint_id != checkpoint_id:
        raise SnapshotError(
            f"{manifest_path}: the manifest is checkpoint {checkpoint.checkpoint_id}'s, "
            f"its directory and commit say {checkpoint_id}"
        )
    return checkpoint


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _inside(root: Path, relative: str) -> Path:
    """``root/relative`` if it is a manifest path made here and stays inside ``root``."""
    if not isinstance(relative, str) or not relative:
        raise SnapshotError(
            f"data_dir={root}: a state path must be a non-empty string, got {relative!r}"
        )
    parts = relative.split("/")
    shape_ok = (
        len(parts) == 4
        and parts[0] == STATE_DIR
        and _OWNER_DIR.fullmatch(parts[1]) is not None
        and _CHECKPOINT_DIR.fullmatch(parts[2]) is not None
        and parts[3] == MANIFEST
    )
    if not shape_ok or os.path.isabs(relative) or "\\" in relative:
        raise SnapshotError(
            f"data_dir={root}: refusing state path {relative!r}: not a checkpoint manifest "
            f"telepipe writes ({STATE_DIR}/<digest>/<checkpoint id>/{MANIFEST})"
        )
    path = root / relative
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError) as error:
        raise SnapshotError(f"{path}: missing ({type(error).__name__})") from None
    base = root.resolve()
    if not real.is_relative_to(base) or real != base.joinpath(*parts):
        raise SnapshotError(f"{path}: refusing a state path that leads out of data_dir (to {real})")
    return path


def _read_regular(path: Path, limit: int, what: str, size: int | None = None) -> bytearray:
    """The bytes of a regular file (no symlink, FIFO or device) of at most ``limit``;
    with ``size`` (the manifest's count), of exactly that, checked with fstat before
    anything is read and never more than ``size`` + 1 bytes read. Read into one buffer
    (chunks joined were a second copy: 44 MB, 40-70 ms of a 1M-key restore)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as error:
        raise SnapshotError(f"{path}: missing or unreadable ({error.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SnapshotError(f"{path}: not a regular file")
        if info.st_size > limit:
            raise SnapshotError(
                f"{path}: {info.st_size} bytes, more than {what} may have ({limit})"
            )
        if size is not None and info.st_size != size:
            raise SnapshotError(
                f"{path}: {info.st_size} bytes, the manifest says {size} (damaged or cut short)"
            )
        expected = info.st_size if size is None else size
        data = bytearray(expected + 1)
        got = 0
        with memoryview(data) as view:
            while got < len(data):
                n = os.readv(fd, [view[got : got + (1 << 24)]])
                if n == 0:
                    break
                got += n
        del data[got:]
        if len(data) > expected:
            raise SnapshotError(f"{path}: grew while it was read")
        if size is not None and len(data) != size:
            raise SnapshotError(f"{path}: {len(data)} bytes, the manifest says {size} (cut short)")
        return data
    finally:
        os.close(fd)


_TOP = {
    "format": str,
    "format_version": int,
    "telepipe_version": str,
    "checkpoint_id": int,
    "key_groups": int,
    "key_hash": str,
    "decoder": (dict, type(None)),
    "steps": list,
    "files": list,
}
_STEP = {
    "name": str,
    "operator": str,
    "version": int,
    "options": dict,
    "scalars": dict,
    "arrays": list,
    "batches": list,
}
_FILE = {"name": str, "bytes": int, "sha256": str}
_ARRAY = {"name": str, "dtype": str, "shape": list, "file": str}
_BATCH = {"name": str, "file": str}


class _Reader:
    def __init__(self, manifest: Path) -> None:
        self.manifest = manifest
        self.directory = manifest.parent
        self.tables: dict[str, pa.Table] = {}
        self.files: dict[str, dict[str, Any]] = {}

    def fail(self, message: str, step: str | None = None) -> SnapshotError:
        where = f" step {step!r}:" if step is not None else ""
        return SnapshotError(f"{self.manifest}:{where} {message}")

    def fields(
        self, value: object, spec: Mapping[str, Any], what: str, step: str | None = None
    ) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(f"{what} must be an object, got {type(value).__name__}", step)
        unknown = sorted(set(value) - set(spec))
        missing = sorted(set(spec) - set(value))
        if unknown or missing:
            said = "unknown field(s) " + ", ".join(map(repr, unknown)) if unknown else ""
            said += ("; " if said else "") + (
                "missing field(s) " + ", ".join(map(repr, missing)) if missing else ""
            )
            raise self.fail(f"{what}: {said}", step)
        for key, kind in spec.items():
            got = value[key]
            if isinstance(got, bool) or not isinstance(got, kind):
                raise self.fail(f"{what}: {key!r} has the wrong type ({type(got).__name__})", step)
        return value

    def checkpoint(self, raw: object, key_groups: Collection[int] | None) -> Checkpoint:
        if isinstance(raw, dict) and raw.get("format") != FORMAT:
            raise self.fail(f"not a telepipe checkpoint manifest (format {raw.get('format')!r})")
        top = self.fields(raw, _TOP, "the manifest")
        if top["format_version"] != FORMAT_VERSION:
            raise self.fail(
                f"checkpoint format {top['format_version']} (telepipe {top['telepipe_version']}), "
                f"this telepipe reads format {FORMAT_VERSION}: start from an empty data_dir"
            )
        if top["key_hash"] != KEY_HASH:
            raise self.fail(f"key hash {top['key_hash']!r}, this telepipe uses {KEY_HASH!r}")
        max_groups = top["key_groups"]
        assert isinstance(max_groups, int)
        if not 1 <= max_groups <= 2**31 - 1:
            raise self.fail(f"key_groups must be in 1..2**31-1, got {max_groups}")
        for entry in top["files"]:
            f = self.fields(entry, _FILE, "a file entry")
            name = f["name"]
            if not _DATA_FILE.fullmatch(name) or name in self.files:
                raise self.fail(f"refusing file name {name!r}: not one telepipe makes, or twice")
            size = f["bytes"]
            if not 0 <= size <= MAX_FILE_BYTES:
                raise self.fail(f"file {name!r}: size {size} out of range")
            if not re.fullmatch(r"[0-9a-f]{64}", f["sha256"]):
                raise self.fail(f"file {name!r}: sha256 {f['sha256']!r} is not a digest")
            self.files[name] = f
        keep = None if key_groups is None else keeps(key_groups, max_groups)
        steps: dict[str, Snapshot] = {}
        for entry in top["steps"]:
            snapshot = self.step(entry)
            name = entry["name"]
            if name in steps or name == DECODER:
                raise self.fail(f"step {name!r} twice")
            if keep is not None:
                state = select(snapshot.state, keep, name)
                snapshot = Snapshot(
                    snapshot.operator, snapshot.version, snapshot.options, state, snapshot.origin
                )
            steps[name] = snapshot
        try:
            decoder = _unplain(top["decoder"])
        except SnapshotError as error:
            raise self.fail(f"the decoder's state: {error}") from None
        if decoder is not None and not isinstance(decoder, dict):
            raise self.fail("the decoder's state is not an object")
        return Checkpoint(top["checkpoint_id"], decoder, steps, max_groups, self.manifest)

    def step(self, raw: object) -> Snapshot:
        name = raw.get("name") if isinstance(raw, dict) else None
        step = name if isinstance(name, str) else "?"
        entry = self.fields(raw, _STEP, "a step", step)
        state: State = {}
        for key, tagged in entry["scalars"].items():
            state[key] = self.scalar(tagged, key, step)
        for raw_array in entry["arrays"]:
            a = self.fields(raw_array, _ARRAY, "an array", step)
            state[self.new_name(a["name"], state, step)] = self.array(a, step)
        for raw_batch in entry["batches"]:
            b = self.fields(raw_batch, _BATCH, "a batch", step)
            table = self.table(b["file"], step)
            _check_types(table, self, step)
            batch = table.combine_chunks().to_batches()
            state[self.new_name(b["name"], state, step)] = (
                batch[0] if batch else pa.RecordBatch.from_pylist([], schema=table.schema)
            )
        try:
            layout(state, step)
        except SnapshotError as error:
            raise self.fail(str(error)) from None
        options = entry["options"]
        return Snapshot(entry["operator"], entry["version"], options, state, str(self.manifest))

    def new_name(self, name: str, state: State, step: str) -> str:
        if name in state:
            raise self.fail(f"value {name!r} twice", step)
        return name

    def scalar(self, tagged: object, key: str, step: str) -> StateValue:
        if isinstance(tagged, dict) and len(tagged) == 1:
            ((kind, value),) = tagged.items()
            if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
                return value
            if kind == "str" and isinstance(value, str):
                return value
            if kind == "float" and isinstance(value, str):
                try:
                    return float.fromhex(value)
                except (ValueError, OverflowError):
                    pass
        raise self.fail(f"value {key!r}: {tagged!r} is not a tagged int, float or str", step)

    def array(self, a: dict[str, Any], step: str) -> np.ndarray:
        name, dtype, shape = a["name"], a["dtype"], a["shape"]
        if dtype not in _DTYPES:
            raise self.fail(f"array {name!r}: dtype {dtype!r} is not a number type", step)
        assert isinstance(shape, list)
        if (
            not shape
            or len(shape) > 8
            or any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in shape)
        ):
            raise self.fail(f"array {name!r}: shape {shape!r} is not a list of sizes", step)
        # the shape is bounded in Python ints against the file's real size before
        # anything is built from it (np.prod wraps, pa.list_ and np.zeros overflow)
        entry = self.files.get(a["file"])
        if entry is None:
            raise self.fail(f"file {a['file']!r} is not in the manifest's files", step)
        bits = 1 if dtype == "bool" else np.dtype(dtype).itemsize * 8
        width = math.prod(shape[1:])
        if (
            math.prod(shape) * bits > entry["bytes"] * 8
            or math.prod(max(n, 1) for n in shape) > MAX_FILE_BYTES
            or width > 2**31 - 1
        ):
            raise self.fail(
                f"array {name!r}: shape {shape!r} is more than its file {a['file']!r} "
                f"({entry['bytes']} bytes) can hold",
                step,
            )
        table = self.table(a["file"], step)
        if table.num_rows != shape[0]:
            raise self.fail(
                f"array {name!r}: {shape[0]} rows, its file {a['file']!r} holds {table.num_rows}",
                step,
            )
        if width == 0 and len(shape) > 1:
            return np.zeros(shape, dtype)
        if name not in table.column_names:
            raise self.fail(f"array {name!r}: no such column in {a['file']!r}", step)
        column = table.column(name)
        values = pa.from_numpy_dtype(np.dtype(dtype))
        wanted = values if len(shape) == 1 else pa.list_(values, width)
        if column.type != wanted:
            raise self.fail(
                f"array {name!r}: column type {column.type}, the manifest says {wanted}", step
            )
        flat = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
        if len(shape) > 1:
            flat = flat.flatten()
        if flat.null_count:
            raise self.fail(f"array {name!r}: holds nulls", step)
        out = np.array(flat.to_numpy(zero_copy_only=False), dtype=dtype, copy=True)
        return out.reshape(shape)

    def table(self, file: str, step: str) -> pa.Table:
        if file in self.tables:
            return self.tables[file]
        entry = self.files.get(file)
        if entry is None:
            raise self.fail(f"file {file!r} is not in the manifest's files", step)
        path = self.directory / file
        try:  # its size is checked (fstat) before it is read, and no more is read
            data = _read_regular(path, MAX_FILE_BYTES, "a state file", entry["bytes"])
        except SnapshotError as error:
            raise self.fail(f"file {file!r}: {error}", step) from None
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise self.fail(f"file {file!r}: sha256 differs from the manifest's (damaged)", step)
        try:
            table = pa.ipc.open_file(pa.py_buffer(data)).read_all()
        except (pa.ArrowException, ValueError, OSError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise self.fail(f"file {file!r} is not an Arrow IPC file ({reason})", step) from None
        self.tables[file] = table
        return table


def _check_types(table: pa.Table, reader: _Reader, step: str) -> None:
    """Only flat plain Arrow types in a rows file, as telepipe writes them: no extension
    type (nothing to resolve), no dictionary, no nested list, struct, map or union; a
    key column ``sensor_id`` of int32 without nulls."""
    for f in table.schema:
        t = f.type
        if (
            isinstance(t, pa.BaseExtensionType)
            or pa.types.is_dictionary(t)
            or pa.types.is_nested(t)
            or t.num_fields
        ):
            raise reader.fail(f"column {f.name!r} has type {t}, not a flat plain Arrow type", step)
    if KEY in table.schema.names:
        key = table.column(KEY)
        if key.type != pa.int32() or key.null_count:
            raise reader.fail(
                f"key column {KEY!r} must be int32 without nulls, got {key.type} "
                f"with {key.null_count} null(s)",
                step,
            )
