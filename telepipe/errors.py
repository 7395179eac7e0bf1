"""One root error type, a few precise subclasses.

Every error a user can cause carries a message that reads as one line; the CLI
prints ``str(error)`` and exits 2, never a traceback.
"""

from __future__ import annotations


class TelepipeError(Exception):
    """Root of every error telepipe raises on purpose."""


class ConfigError(TelepipeError):
    """A configuration value or override is missing, unknown or invalid."""


class SchemaError(TelepipeError):
    """A wire or table schema is invalid, or data does not match it."""


class DecodeError(SchemaError):
    """A message on the wire does not match the schema; ``reason`` is a short slug."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class SnapshotError(TelepipeError):
    """A saved snapshot does not fit the step restoring it (other operator, format or
    options), or two steps of one chain claim the same name."""


class SourceError(TelepipeError):
    """A source cannot be opened or read."""


class SinkError(TelepipeError):
    """A sink cannot write or commit."""


class BackpressureError(TelepipeError):
    """A bounded queue with policy ``fail`` was full."""
