"""telepipe: reactive dataflow pipelines over Aeron sensor telemetry."""

from typing import TYPE_CHECKING

from telepipe.errors import (
    BackpressureError,
    ConfigError,
    DecodeError,
    SchemaError,
    SinkError,
    SourceError,
    TelepipeError,
)

if TYPE_CHECKING:  # what the lazy names below are
    from telepipe.api import Pipeline, Result, load
    from telepipe.markers import CheckpointBarrier, Watermark

__version__ = "0.2.0.dev0"

# The markers import pyarrow: loaded on first use, so ``telepipe`` (and the CLI's
# signal handling, installed first thing) starts without it.
# The notebook API (``telepipe.load``) likewise.
_LAZY = {
    "CheckpointBarrier": "telepipe.markers",
    "Watermark": "telepipe.markers",
    "Pipeline": "telepipe.api",
    "Result": "telepipe.api",
    "load": "telepipe.api",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'telepipe' has no attribute {name!r}")


__all__ = [
    "BackpressureError",
    "CheckpointBarrier",
    "ConfigError",
    "DecodeError",
    "Pipeline",
    "Result",
    "SchemaError",
    "SinkError",
    "SourceError",
    "TelepipeError",
    "Watermark",
    "__version__",
    "load",
]
