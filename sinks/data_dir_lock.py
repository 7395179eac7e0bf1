"""One writer per data dir: ``hold(data_dir)`` takes an exclusive lock for a run, a
replay or a dlq change, and refuses (one line) while another process holds it.

Two replays into one data dir each see the same checkpoints at start and then
commit the same rows twice; Delta's conflict check does not catch blind appends.
The lock is ``flock`` on ``<data_dir>/.telepipe.lock``: released when its holder exits,
however it exits, so a killed run never leaves the directory locked. It is
re-entrant within a process (a ``dlq replay`` runs the pipeline under its own hold).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from telepipe.errors import ConfigError

LOCK_NAME = ".telepipe.lock"

_held: dict[str, int] = {}  # resolved data dir -> holds in this process


class Busy(Exception):
    """Another process holds the lock."""


def flocked(path: Path, stack: contextlib.ExitStack) -> None:
    """Take an exclusive ``flock`` on ``path`` (created if missing) until ``stack``
    closes; ``Busy`` if another process holds it, ``OSError`` if it cannot be opened."""
    lock = stack.enter_context(open(path, "ab"))  # noqa: SIM115 (closed by the stack)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise Busy(str(path)) from None


@contextlib.contextmanager
def hold(data_dir: str | os.PathLike[str], what: str = "this command") -> Iterator[None]:
    root = Path(data_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"data_dir={root}: cannot create it ({error.strerror})") from None
    key = str(root.resolve())
    if _held.get(key):
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    with contextlib.ExitStack() as stack:
        try:
            flocked(root / LOCK_NAME, stack)
        except Busy:
            raise ConfigError(
                f"data_dir={root}: another telepipe process is writing it; {what} waits for "
                "it to end (one writer per data dir)"
            ) from None
        except OSError as error:
            raise ConfigError(f"data_dir={root}: cannot open its lock ({error.strerror})") from None
        _held[key] = 1
        try:
            yield
        finally:
            del _held[key]
