"""The dead-letter store: the ``dead_letters`` Delta table of a data dir, and its audit log.

Pipelines append dead letters to ``<data_dir>/dead_letters`` (the DeltaSink);
this module lists, reads, purges and replays them. Ids are the letters' stable
content ids (``telepipe.dead_letters``) and may be abbreviated, as in git, to a
unique prefix of at least ``MIN_PREFIX`` hex digits.

Every mutation is appended to ``<data_dir>/dead_letters/_audit.jsonl`` (Delta
ignores and never vacuums ``_`` files), one JSON line per entry, fsynced::

    {"seq", "time", "actor", "action", "ids", "detail", "prev", "hash"}

``hash``: SHA-256 of the canonical JSON (sorted keys, no spaces, ASCII) of the
entry without ``hash``; ``prev``: the previous entry's hash (64 zeros first). An
edited, deleted, reordered or truncated entry breaks the chain there
(``verify``); removing whole entries from the end needs the head hash kept
elsewhere. Changes are refused while the chain is broken and take a file lock.

Replay writes the letters' payloads as a telepipe capture (one unfragmented
frame each at its recorded stream, session and position), logs ``replay_start``
(its seq names the run's ``sink.app_id``, ``telepipe-dlq-<seq>``, apart from the
pipeline's own checkpoints), removes the letters and runs the pipeline over the
capture into the same data dir: what decodes now lands in the normal tables,
what fails again comes back with the same id. Then it logs ``replay``. Letters a
failed or stopped run did not read are put back.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import operator
import os
import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import polars as pl
import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import DeltaError

from telepipe.dead_letters import DeadLetter
from telepipe.errors import ConfigError, SinkError, TelepipeError
from telepipe.schema import DEAD_LETTERS
from telepipe.sinks import data_dir_lock
from telepipe.sources.frames import HEADER_LENGTH, UNFRAGMENTED, align

TABLE = "dead_letters"
AUDIT_NAME = "_audit.jsonl"
LOCK_NAME = "_audit.lock"
REPLAY_DIR = "_telepipe_dlq"  # under data_dir: replay captures until their run is done
GENESIS = "0" * 64
MIN_PREFIX = 4
FIELDS = ("seq", "time", "actor", "action", "ids", "detail", "prev", "hash")
LISTED = [n for n in DEAD_LETTERS.names if n != "payload"]
_HEX = re.compile(r"[0-9a-f]+")
_FRAME_ORDER = operator.itemgetter("stream_id", "session_id", "position")


class AuditError(TelepipeError):
    """The audit log's hash chain is broken, or another command holds its lock."""


def canonical(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":")).encode()


def entry_hash(entry: dict[str, Any]) -> str:
    return hashlib.sha256(canonical({k: v for k, v in entry.items() if k != "hash"})).hexdigest()


class AuditLog:
    """An append-only, hash-chained JSON-lines log."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def _walk(self) -> tuple[list[dict[str, Any]], str | None]:
        """The valid entries up to the first broken one, and what broke (None: intact)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return [], None
        except OSError as error:
            raise AuditError(f"cannot read audit log {self.path}: {error.strerror}") from None
        lines = raw.split(b"\n")
        complete, tail = lines[:-1], lines[-1]
        entries: list[dict[str, Any]] = []
        prev = GENESIS
        for n, line in enumerate([*complete, tail] if tail else complete, start=1):
            where = f"audit log {self.path}: entry {n}"
            if n > len(complete):
                return entries, f"{where}: truncated (the last line has no end)"
            try:
                entry = json.loads(line)
            except ValueError:
                return entries, f"{where}: not a JSON entry (edited or damaged)"
            if not isinstance(entry, dict) or set(entry) != set(FIELDS):
                return entries, f"{where}: not an audit entry (fields {FIELDS} expected)"
            if entry["seq"] != n:
                return entries, (
                    f"{where}: found seq {entry['seq']} (entries deleted, inserted or reordered)"
                )
            if entry["prev"] != prev:
                return entries, f"{where}: prev is not the hash of entry {n - 1} (chain broken)"
            if entry["hash"] != entry_hash(entry):
                return entries, f"{where}: hash does not match its content (entry edited)"
            entries.append(entry)
            prev = entry["hash"]
        return entries, None

    def entries(self) -> list[dict[str, Any]]:
        """Every entry; an AuditError if the chain is broken."""
        entries, problem = self._walk()
        if problem is not None:
            raise AuditError(problem)
        return entries

    def verify(self) -> tuple[bool, str | None]:
        """(True, None) if the chain is intact, else (False, the first broken entry and why)."""
        _, problem = self._walk()
        return problem is None, problem

    def head(self) -> tuple[int, str]:
        """(number of entries, hash of the last one) of an intact log."""
        entries = self.entries()
        return len(entries), entries[-1]["hash"] if entries else GENESIS

    def next_seq(self) -> int:
        return len(self.entries()) + 1

    def append(self, action: str, ids: Sequence[str], detail: dict[str, Any], actor: str) -> dict:
        """Append one entry (fsynced before return); refused if the chain is broken."""
        try:
            entries, problem = self._walk()
            if problem is not None:
                raise AuditError(f"{problem}; changes are refused until the log is repaired")
            entry: dict[str, Any] = {
                "seq": len(entries) + 1,
                "time": datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
                "actor": actor,
                "action": action,
                "ids": list(ids),
                "detail": detail,
                "prev": entries[-1]["hash"] if entries else GENESIS,
            }
            entry["hash"] = entry_hash(entry)
            created = not self.path.exists()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab") as f:
                f.write(canonical(entry) + b"\n")
                f.flush()
                os.fsync(f.fileno())
            if created:  # the new file's directory entry too
                fd = os.open(self.path.parent, os.O_RDONLY)
                os.fsync(fd)
                os.close(fd)
            return entry
        except OSError as error:
            raise AuditError(f"cannot append to audit log {self.path}: {error}") from None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive for one mutation; another command changing the store is refused."""
        lock_path = self.path.with_name(LOCK_NAME)
        with contextlib.ExitStack() as stack:
            try:
                data_dir_lock.flocked(lock_path, stack)
            except data_dir_lock.Busy:
                raise AuditError(
                    f"another dlq command is changing {self.path.parent}; try again later"
                ) from None
            except OSError as error:
                raise AuditError(f"cannot open {lock_path}: {error.strerror}") from None
            yield


def laid_out(
    rows: Sequence[dict[str, Any]], order: Callable[[dict[str, Any]], int]
) -> list[dict[str, Any]]:
    """The letters with a position each: those with none (position 0: rows an operator
    found late, which no longer have a wire origin) are laid one after another past
    the last real position of their (stream, session), by ``order`` (their event time,
    so the replay's source finds none of them late again), then id."""
    end: dict[tuple[int, int], int] = {}
    for row in rows:
        key = (row["stream_id"], row["session_id"])
        end[key] = max(end.get(key, 0), row["position"])
    out = []
    unplaced = sorted((r for r in rows if r["position"] == 0), key=lambda r: (order(r), r["id"]))
    for row in [*(r for r in rows if r["position"] != 0), *unplaced]:
        if row["position"] == 0:
            key = (row["stream_id"], row["session_id"])
            end[key] += align(len(row["payload"]) + HEADER_LENGTH)
            row = {**row, "position": end[key]}
        out.append(row)
    return out


def _first_ts(codec: Any) -> Callable[[dict[str, Any]], int]:
    """A letter's first reading's ts as ``codec`` decodes it (0 if it does not decode)."""

    def ts(row: dict[str, Any]) -> int:
        batch = codec.decode(row["payload"]).batch
        if not batch.num_rows or "ts" not in batch.schema.names:
            return 0
        return int(batch.column("ts").cast(pa.int64())[0].as_py())

    return ts


def check_overlaps(rows: Sequence[dict[str, Any]]) -> None:
    """A capture holds one frame per (stream, session, byte range): two letters whose frames
    would overlap cannot be replayed together (the frame assembler drops the second)."""
    last: dict[tuple[int, int], dict[str, Any]] = {}
    for row in sorted(rows, key=_FRAME_ORDER):
        key = (row["stream_id"], row["session_id"])
        start = row["position"] - align(len(row["payload"]) + HEADER_LENGTH)
        prev = last.get(key)
        if prev is not None and start < prev["position"]:
            raise ConfigError(
                f"dead letters {prev['id']} and {row['id']} overlap in stream {key[0]} "
                f"session {key[1]} (positions {prev['position']}, {row['position']}): "
                "replay them separately"
            )
        last[key] = row


def write_capture(directory: Path, rows: Sequence[dict[str, Any]]) -> None:
    """The letters' payloads as a telepipe capture, one unfragmented frame each."""
    from telepipe.sources.capture import CaptureWriter

    ordered = sorted(rows, key=_FRAME_ORDER)
    first = ordered[0]["stream_id"] if ordered else 0
    with CaptureWriter(directory, channel="telepipe-dlq", stream_id=first, fsync=True) as writer:
        for row in ordered:
            writer.append(
                row["payload"], received_ns=row["received_ns"], position=row["position"],
                flags=UNFRAGMENTED, session_id=row["session_id"], stream_id=row["stream_id"],
            )  # fmt: skip


def _quote(value: str) -> str:
    """A Hydra override value: quoted unless it is plainly safe (paths with spaces...)."""
    if re.fullmatch(r"[\w./:+-]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class DeadLetterStore:
    """The dead letters of one data dir: read, purge, replay; every change audited."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.data_dir = Path(data_dir)
        if not self.data_dir.is_dir():
            raise ConfigError(f"--data-dir {self.data_dir}: no such directory")
        self.path = self.data_dir / TABLE
        self.audit = AuditLog(self.path / AUDIT_NAME)
        if not DeltaTable.is_deltatable(str(self.path)) and any(self.path.glob("*.parquet")):
            raise SinkError(f"{self.path} holds data files but no Delta log (_delta_log)")

    # -- reading ---------------------------------------------------------------

    def _read(self, columns: Sequence[str] | None = None, where: Any = None) -> pl.DataFrame:
        # Read with polars' native Delta scan: reading through deltalake's pyarrow dataset
        # sometimes aborts the interpreter at exit (delta-rs issue #2184).
        names = list(columns or DEAD_LETTERS.names)
        if not DeltaTable.is_deltatable(str(self.path)):
            empty = pa.schema([DEAD_LETTERS.field(n) for n in names]).empty_table()
            return cast(pl.DataFrame, pl.from_arrow(empty))
        try:
            frame = pl.scan_delta(str(self.path)).select(names)
            return (frame.filter(where) if where is not None else frame).collect()
        except (DeltaError, OSError, pl.exceptions.PolarsError) as error:
            text = str(error).strip()
            first = text.splitlines()[0] if text else type(error).__name__
            raise SinkError(f"cannot read dead letters in {self.path}: {first}") from None

    def ids(self) -> list[str]:
        """Every distinct id in the store, sorted."""
        return sorted(set(self._read(["id"])["id"].to_list()))

    def resolve(self, ids: Iterable[str]) -> list[str]:
        """Full ids for ids or unique prefixes (in the order given, without repeats)."""
        given = list(ids)
        if not given:
            raise ConfigError("give at least one dead-letter id (see `telepipe dlq list`)")
        known = self.ids()
        resolved: list[str] = []
        for raw in given:
            text = raw.strip().lower()
            if not _HEX.fullmatch(text):
                raise ConfigError(f"{raw!r} is not a dead-letter id (ids are hex digits)")
            if len(text) < MIN_PREFIX:
                raise ConfigError(
                    f"id prefix {raw!r} is too short: give at least {MIN_PREFIX} hex digits"
                )
            matches = [k for k in known if k.startswith(text)]
            if not matches:
                raise ConfigError(f"no dead letter with id {raw} in {self.path}")
            if len(matches) > 1:
                shown = ", ".join(matches[:3]) + (", ..." if len(matches) > 3 else "")
                raise ConfigError(
                    f"id prefix {raw} is ambiguous: {len(matches)} dead letters match ({shown})"
                )
            if not _HEX.fullmatch(matches[0]):  # never build a predicate from anything else
                raise SinkError(f"{self.path}: stored id {matches[0]!r} is not hex")
            if matches[0] not in resolved:
                resolved.append(matches[0])
        return resolved

    def _rows(self, full_ids: Sequence[str]) -> list[dict[str, Any]]:
        """One row (all columns) per id, in the order given."""
        found: dict[str, dict[str, Any]] = {}
        for row in self._read(where=pl.col("id").is_in(list(full_ids))).to_dicts():
            found.setdefault(row["id"], row)
        return [found[i] for i in full_ids if i in found]

    def get(self, id: str) -> DeadLetter:
        """The dead letter with this id (or unique prefix); ConfigError if there is none."""
        full = self.resolve([id])
        rows = self._rows(full)
        if not rows:
            raise ConfigError(f"no dead letter with id {id} in {self.path}")
        row = rows[0]
        return DeadLetter(*(row[n] for n in DEAD_LETTERS.names if n != "id"))

    # -- changing --------------------------------------------------------------

    def _delete(self, full_ids: Sequence[str], action: str, seq: int) -> int:
        assert full_ids and all(_HEX.fullmatch(i) for i in full_ids)
        predicate = "id IN (" + ", ".join(f"'{i}'" for i in full_ids) + ")"
        properties = CommitProperties(
            custom_metadata={"telepipe.dlq.action": action, "telepipe.dlq.audit_seq": str(seq)}
        )
        try:
            metrics = DeltaTable(str(self.path)).delete(predicate, commit_properties=properties)
        except (DeltaError, OSError) as error:
            raise SinkError(f"cannot delete dead letters in {self.path}: {error}") from None
        return int(metrics.get("num_deleted_rows", 0))

    def _put_back(self, rows: Sequence[dict[str, Any]]) -> int:
        present = set(self.ids())
        missing = [r for r in rows if r["id"] not in present]
        if missing:
            table = pa.Table.from_pylist(missing, schema=DEAD_LETTERS)
            properties = CommitProperties(custom_metadata={"telepipe.dlq.action": "put_back"})
            write_deltalake(str(self.path), table, mode="append", commit_properties=properties)
        return len(missing)

    def _prepare(self, ids: Iterable[str], confirm: bool, verb: str) -> list[str]:
        if not confirm:
            raise ConfigError(f"{verb} changes the store: add --confirm")
        given = list(ids)
        self.resolve(given)  # unknown ids fail before anything is locked or written
        return given

    def purge(self, ids: Iterable[str], confirm: bool, actor: str) -> dict[str, Any]:
        """Delete these dead letters; returns the audit entry."""
        given = self._prepare(ids, confirm, "purge")
        with data_dir_lock.hold(self.data_dir, "dlq purge"), self.audit.locked():
            seq = self._next_seq()  # also refuses a broken chain
            full = self.resolve(given)
            reasons = Counter(r["reason"] for r in self._rows(full))
            deleted = self._delete(full, "purge", seq)
            return self.audit.append(
                "purge", full, {"rows": deleted, "reasons": dict(sorted(reasons.items()))}, actor
            )

    def replay(
        self,
        ids: Iterable[str],
        confirm: bool,
        pipeline: str,
        actor: str,
        extra_overrides: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Run these dead letters back through ``pipeline``; returns the final audit entry."""
        from telepipe.config import build, load
        from telepipe.pipelines.runner import run

        given = self._prepare(ids, confirm, "replay")
        with data_dir_lock.hold(self.data_dir, "dlq replay"), self.audit.locked():
            seq = self._next_seq()
            full = self.resolve(given)
            stored = self._rows(full)
            app_id = f"telepipe-dlq-{seq}"
            work = self.data_dir.resolve() / REPLAY_DIR / f"replay-{seq}"
            capture, stats_file = work / "capture", work / "stats.json"
            overrides = self._run_overrides(pipeline, capture, app_id, stats_file, extra_overrides)
            cfg = load(overrides)  # a bad pipeline or override fails before any change
            rows = laid_out(stored, _first_ts(build(cfg.schema, "schema")))
            check_overlaps(rows)
            shutil.rmtree(work, ignore_errors=True)  # left by a crash before replay_start
            write_capture(capture, rows)
            start = {"pipeline": pipeline, "app_id": app_id, "capture": str(capture)}
            self.audit.append("replay_start", full, start, actor)
            removed = self._delete(full, "replay", seq)
            try:
                run(cfg, overrides, input_path=str(capture))
            except BaseException as error:
                self._failed(error, stored, full, start, actor)
                raise  # _failed raises a one-line error for anything else
            stats = json.loads(stats_file.read_text()) if stats_file.is_file() else {}
            put_back = 0
            if stats.get("exit_reason") != "end of input":  # stopped early (signal, limit)
                unread = {r["id"] for r in self._unread(rows, capture)}
                put_back = self._put_back([r for r in stored if r["id"] in unread])
            present = set(self.ids())
            back = [i for i in full if i in present]
            detail = {
                "pipeline": pipeline,
                "app_id": app_id,
                "removed_rows": removed,
                "came_back": len(back),
                "came_back_ids": back,
                "put_back": put_back,
                "exit_reason": stats.get("exit_reason", ""),
                "readings_received": stats.get("received", 0),
                "readings_committed": stats.get("committed", 0),
                "rejected": stats.get("rejected", 0),
                "committed_by_table": stats.get("committed_by_table", {}),
            }
            entry = self.audit.append("replay", full, detail, actor)
            shutil.rmtree(work, ignore_errors=True)
            with contextlib.suppress(OSError):
                (self.data_dir / REPLAY_DIR).rmdir()  # only if no other replay left one
            return entry

    def _run_overrides(
        self, pipeline: str, capture: Path, app_id: str, stats_file: Path, extra: Sequence[str] = ()
    ) -> list[str]:
        """The config of a replay's run: the letters' capture into this data dir, under
        the replay's own app id."""
        return [
            f"pipeline={_quote(pipeline)}",
            f"data_dir={_quote(str(self.data_dir.resolve()))}",
            f"input={_quote(str(capture))}",
            f"sink.app_id={app_id}",
            "ui=never",
            f"stats_file={_quote(str(stats_file))}",
            *extra,
        ]

    def _next_seq(self) -> int:
        """The next entry's number; refused after a replay that never ended."""
        entries = self.audit.entries()
        if entries and entries[-1]["action"] == "replay_start":
            raise ConfigError(
                f"the dlq replay started at audit entry {len(entries)} did not end: finish it "
                f"first with `telepipe dlq resume --data-dir {self.data_dir}`"
            )
        return len(entries) + 1

    def resume(self, actor: str) -> dict[str, Any]:
        """Finish a replay that died after its start entry (killed, machine lost): its
        letters are in its capture; the run resumes from its own checkpoints."""
        from telepipe.config import load
        from telepipe.pipelines.runner import run

        with data_dir_lock.hold(self.data_dir, "dlq resume"), self.audit.locked():
            entries = self.audit.entries()
            if not entries or entries[-1]["action"] != "replay_start":
                raise ConfigError(f"no dlq replay to finish in {self.path}")
            seq, full, start = len(entries), entries[-1]["ids"], entries[-1]["detail"]
            capture = Path(start["capture"])
            if not capture.is_dir():
                raise SinkError(f"the replay's capture {capture} is gone: its letters are lost")
            stats_file = capture.parent / "stats.json"
            overrides = self._run_overrides(start["pipeline"], capture, start["app_id"], stats_file)
            cfg = load(overrides)
            removed = 0 if self._deleted_at(seq) else self._delete(full, "replay", seq)
            run(cfg, overrides, input_path=str(capture))
            stats = json.loads(stats_file.read_text()) if stats_file.is_file() else {}
            present = set(self.ids())
            detail = {
                **start, "resumed": True, "removed_rows": removed,
                "came_back_ids": [i for i in full if i in present],
                "readings_committed": stats.get("committed", 0),
                "committed_by_table": stats.get("committed_by_table", {}),
            }  # fmt: skip
            entry = self.audit.append("replay", full, detail, actor)
            shutil.rmtree(capture.parent, ignore_errors=True)
            return entry

    def _deleted_at(self, seq: int) -> bool:
        """The replay audited as entry ``seq`` already took its letters out of the table."""
        history = (
            DeltaTable(str(self.path)).history() if DeltaTable.is_deltatable(str(self.path)) else []
        )
        return any(c.get("telepipe.dlq.audit_seq") == str(seq) for c in history)

    def _failed(
        self, error: BaseException, rows: list[dict], full: list[str], start: dict, actor: str
    ) -> None:
        """After a failed run: put the letters back and log it; the caller re-raises."""
        message = (str(error).strip().splitlines() or [type(error).__name__])[0]
        detail = {**start, "error": message, "put_back": 0}
        try:
            detail["put_back"] = self._put_back(rows)
        except Exception as again:  # keep the capture: it is the only copy left
            self.audit.append("replay", full, detail, actor)
            raise SinkError(
                f"dlq replay failed ({message}) and putting the letters back failed ({again}); "
                f"they are in the capture {start['capture']}"
            ) from error
        self.audit.append("replay", full, detail, actor)
        shutil.rmtree(Path(start["capture"]).parent, ignore_errors=True)
        if isinstance(error, Exception) and not isinstance(error, TelepipeError):
            raise SinkError(f"dlq replay failed: {message}") from error

    def _unread(self, rows: Sequence[dict[str, Any]], capture: Path) -> list[dict[str, Any]]:
        """The letters a run stopped before reading: past the positions of its last commit."""
        origin = str(capture.resolve())
        consumed: dict[str, int] = {}
        try:
            for commit in DeltaTable(str(self.path)).history(limit=1000):
                if commit.get("telepipe.input") == origin and "telepipe.positions" in commit:
                    consumed = json.loads(commit["telepipe.positions"])
                    break
        except (DeltaError, OSError, ValueError) as error:
            raise SinkError(f"cannot read the history of {self.path}: {error}") from None
        key = "{stream_id}:{session_id}".format
        return [r for r in rows if r["position"] > consumed.get(key(**r), -1)]

    def verify(self) -> tuple[bool, str | None]:
        """The audit chain is intact, and no entry the table's history points at is
        missing (a hash chain alone cannot show that its last entries were cut off)."""
        ok, problem = self.audit.verify()
        if not ok:
            return ok, problem
        entries = self.audit.entries()
        n = len(entries)
        anchored = self._audited_seq()
        if anchored > n:
            return False, (
                f"audit log {self.audit.path}: {n} entries, but the table's history has a "
                f"change audited as entry {anchored}: entries were removed"
            )
        if entries and entries[-1]["action"] == "replay_start" and not self._replaying():
            return False, (
                f"audit log {self.audit.path}: the replay started at entry {n} has no end "
                f"entry and none is running: it died (finish it: `telepipe dlq resume "
                f"--data-dir {self.data_dir}`), or its end entry was removed"
            )
        return True, None

    def _replaying(self) -> bool:
        """Another dlq command holds the store's lock (a replay in progress)."""
        try:
            with self.audit.locked():
                return False
        except AuditError:
            return True

    def _audited_seq(self) -> int:
        """The newest audit entry a commit of the table names (0: none)."""
        if not DeltaTable.is_deltatable(str(self.path)):
            return 0
        try:
            history = DeltaTable(str(self.path)).history()
        except (DeltaError, OSError) as error:
            raise SinkError(f"cannot read the history of {self.path}: {error}") from None
        seqs = [int(c["telepipe.dlq.audit_seq"]) for c in history if "telepipe.dlq.audit_seq" in c]
        return max(seqs, default=0)

    def list(self, reason: str | None = None, limit: int | None = None) -> pl.DataFrame:
        """Dead letters (oldest first), without payloads but with ``payload_bytes``."""
        if limit is not None and limit < 0:
            raise ConfigError(f"--limit must be >= 0, got {limit}")
        frame = self._read([*LISTED, "payload"])
        frame = frame.with_columns(payload_bytes=pl.col("payload").bin.size()).drop("payload")
        if reason is not None:
            frame = frame.filter(pl.col("reason") == reason)
        frame = frame.sort(["received_ns", "stream_id", "session_id", "position", "id"])
        frame = frame.unique("id", keep="first", maintain_order=True)  # a row late at two steps
        return frame.head(limit) if limit is not None else frame
