"""telepipe: reactive dataflow pipelines over Aeron sensor telemetry."""

from telepipe.errors import (
    BackpressureError,
    ConfigError,
    DecodeError,
    SchemaError,
    SinkError,
    SourceError,
    TelepipeError,
)
from telepipe.markers import CheckpointBarrier, Watermark

__version__ = "0.2.0.dev0"

__all__ = [
    "BackpressureError",
    "CheckpointBarrier",
    "ConfigError",
    "DecodeError",
    "SchemaError",
    "SinkError",
    "SourceError",
    "TelepipeError",
    "Watermark",
    "__version__",
]
