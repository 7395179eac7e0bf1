"""SIGINT/SIGTERM from the first line of ``main`` to the run's own handler.

``main`` calls ``install_early`` before any heavy import: a signal then ends a
command cleanly (exit 0, one line) instead of by the default action (-15) or a
``KeyboardInterrupt`` (130). A run or replay calls ``defer`` as it starts: from then
on a signal is kept, not raised in the middle of loading numba or starting a driver,
and the runner takes it (``pending``) when it installs its own handler, so the run
stops as it would have a moment later, with its stats and commits.
"""

from __future__ import annotations

import signal

_pending: list[str] = []


class StoppedEarly(BaseException):
    """A signal arrived before a command installed its own handler."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _raise(signum: int, _frame: object) -> None:
    raise StoppedEarly(signal.Signals(signum).name)


def _keep(signum: int, _frame: object) -> None:
    _pending.append(signal.Signals(signum).name)


def install_early() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _raise)


def defer() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _keep)


def pending() -> str | None:
    """The first signal kept since ``defer`` (None if none)."""
    return _pending[0] if _pending else None
