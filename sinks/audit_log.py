"""An append-only, hash-chained audit log: one JSON line per entry, fsynced::

    {"seq", "time", "actor", "action", "ids", "detail", "prev", "hash"}

``hash``: SHA-256 of the canonical JSON (sorted keys, no spaces, ASCII) of the
entry without ``hash``; ``prev``: the previous entry's hash (64 zeros first). An
edited, deleted, reordered or truncated entry breaks the chain there
(``verify``); removing whole entries from the end needs the head hash kept
elsewhere (the dead-letter store anchors it in its table's commits). Appends are
refused while the chain is broken; ``locked()`` makes one change exclusive.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from telepipe.errors import TelepipeError
from telepipe.sinks import data_dir_lock

LOCK_NAME = "_audit.lock"  # beside the log
GENESIS = "0" * 64
FIELDS = ("seq", "time", "actor", "action", "ids", "detail", "prev", "hash")


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
