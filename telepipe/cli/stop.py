"""``telepipe stop``: stop the run or replay writing a data dir, as Flink's ``stop``.

    telepipe stop [--data-dir DIR] [--drain] [--timeout SECONDS]

It signals the process that holds the data dir's lock (its lock file names it):
SIGTERM, a stop with a savepoint (no flush: open windows and detector state are
committed with the last checkpoint and a restart goes on from them), or with
``--drain`` SIGUSR1, a stop that flushes every operator first (``stop --drain``).
Then it waits for the lock to be released, and says which checkpoint the tables
hold. A supervisor (systemd, Kubernetes) sends those signals itself to the same end.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path
from typing import Any

from telepipe import signals
from telepipe.errors import ConfigError, TelepipeError

DEFAULT_DATA_DIR = "data/demo"


def add_parser(subparsers: Any) -> None:
    text = "stop the run writing a data dir with a savepoint (--drain: flush first)"
    p = subparsers.add_parser("stop", help=text, description=text)
    p.add_argument(
        "--data-dir", default=DEFAULT_DATA_DIR, help=f"its data_dir ({DEFAULT_DATA_DIR})"
    )
    p.add_argument(
        "--drain", action="store_true", help="flush every operator first (end-of-stream)"
    )
    p.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for it to end (300)"
    )


def main(args: argparse.Namespace) -> int:
    from telepipe.sinks import data_dir_lock

    root = Path(args.data_dir)
    if not args.timeout > 0:
        raise ConfigError(f"--timeout must be > 0 seconds, got {args.timeout}")
    if not root.is_dir():
        raise ConfigError(f"data_dir={root}: no such directory")
    try:
        pid = data_dir_lock.holder_pid(root)
    except OSError as error:
        raise ConfigError(
            f"data_dir={root}: cannot read its lock file {data_dir_lock.LOCK_NAME} "
            f"({error.strerror or error})"
        ) from None
    if pid is None:
        raise ConfigError(f"data_dir={root}: no telepipe process is writing it")
    if pid <= 0 or pid == os.getpid():
        raise ConfigError(f"data_dir={root}: its lock file does not name the process holding it")
    how = "drained" if args.drain else "with a savepoint"
    try:
        os.kill(pid, signals.DRAIN if args.drain else signal.SIGTERM)
    except ProcessLookupError:
        pass  # it ended since: the wait below sees the lock free
    except PermissionError:
        raise TelepipeError(
            f"data_dir={root}: not allowed to signal its writer (pid {pid})"
        ) from None
    deadline = time.monotonic() + args.timeout
    while _held_by(root):
        if time.monotonic() > deadline:
            raise TelepipeError(
                f"data_dir={root}: pid {pid} still runs {args.timeout:g} s after it was "
                f"asked to stop {how}"
            )
        time.sleep(0.05)  # a poll of the lock until the writer lets it go
    print(f"telepipe: pid {pid} ended, asked to stop {how}; data_dir={root}{_held(root)}")
    return 0


def _held_by(root: Path) -> bool:
    from telepipe.sinks import data_dir_lock

    try:
        return data_dir_lock.holder_pid(root) is not None
    except OSError:
        return False  # the lock file went: nobody can hold it


def _held(root: Path) -> str:
    """What its tables hold now: ``; its tables hold checkpoint K`` (or a range when a
    stop left them apart: the run said why, a restart recovers)."""
    from telepipe.sinks.delta import last_checkpoint

    held = {
        last_checkpoint(path, "telepipe") or 0
        for path in root.iterdir()
        if path.is_dir() and (path / "_delta_log").is_dir()
    }
    if not held:
        return ""
    low, high = min(held), max(held)
    return (
        f"; its tables hold checkpoint {high}"
        if low == high
        else (f"; its tables hold checkpoints {low} to {high} (a restart recovers)")
    )
