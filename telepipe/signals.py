"""SIGINT/SIGTERM/SIGUSR1 from the first line of ``main`` to the run's own handler.

SIGINT and SIGTERM stop a run with a savepoint; SIGUSR1 (``DRAIN``, what
``telepipe stop --drain`` sends) stops it drained, as Flink's ``stop --drain``.

``main`` calls ``install_early`` before any heavy import: a signal then ends a
command cleanly (exit 0, one line) instead of by the default action (-15) or a
``KeyboardInterrupt`` (130). A run or replay calls ``defer`` as it starts: from then
on a signal is kept, not raised in the middle of loading numba or starting a driver,
and the runner takes it (``pending``) when it installs its own handler, so the run
stops as it would have a moment later, with its stats and commits; a second signal
while one is kept (a start-up that hangs) stops at once.

A run's children (simulator, recorder; ``TELEPIPE_PARENT_PID`` in their env) block
SIGINT: a terminal's Ctrl-C reaches the whole process group, and the run stops its
children itself, in order (the recorder last, so it keeps all the run read).
``ignore_from_now`` is for the very end: Python restores the default actions while
it shuts down, and a signal then killed a finished run (-15) tearing down threads.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

_pending: list[str] = []
DRAIN = signal.SIGUSR1
STOPS = (signal.SIGINT, signal.SIGTERM, DRAIN)  # each ends a command cleanly


class StoppedEarly(BaseException):
    """A signal arrived before a command installed its own handler."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _raise(signum: int, _frame: object) -> None:
    raise StoppedEarly(signal.Signals(signum).name)


def _keep(signum: int, _frame: object) -> None:
    if _pending:
        raise StoppedEarly(signal.Signals(signum).name)
    _pending.append(signal.Signals(signum).name)


def install_early() -> None:
    for signum in STOPS:
        signal.signal(signum, _raise)
    if os.environ.get("TELEPIPE_PARENT_PID") and hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


@contextlib.contextmanager
def children_spared() -> Iterator[None]:
    """Start a run's children inside this: SIGINT stays blocked across their fork and
    exec, so a Ctrl-C at that very moment cannot reach a child before it is in its own
    process group (a vfork child resets the handlers, and a SIGINT held back then
    killed the recorder with -2). A SIGINT for the run waits and is taken after."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def ignore_from_now() -> None:
    for signum in STOPS:
        signal.signal(signum, signal.SIG_IGN)


def defer() -> None:
    for signum in STOPS:
        signal.signal(signum, _keep)


def pending() -> str | None:
    """The first signal kept since ``defer`` (None if none)."""
    return _pending[0] if _pending else None
