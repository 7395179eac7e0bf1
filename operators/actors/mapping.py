"""Entity ids of input rows: the sensor id itself, or an id mapped from sensors.

A mapping is ``{sensor_id: entity id}`` (YAML: a dict), or the path of a CSV or
Parquet file with columns ``sensor_id`` and the entity key (``equipment_id``); a
relative path not found from the current directory is looked up in telepipe's conf
dir (``pipeline/equipment_machines.csv``, shipped). Rows
of a sensor the mapping does not name are dropped and counted (``unmapped_rows``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from telepipe.errors import ConfigError

_DENSE_LIMIT = 1 << 24
UNMAPPED = np.iinfo(np.int64).min


def load_mapping(value: Any, key: str, owner: str = "ActorStage") -> tuple[np.ndarray, np.ndarray]:
    """``(sensor ids, entity ids)`` as int32 arrays, checked (each sensor once)."""
    if isinstance(value, Mapping):
        try:
            sensors = np.array([int(k) for k in value], np.int64)
            entities = np.array([int(v) for v in value.values()], np.int64)
        except (TypeError, ValueError):
            raise ConfigError(f"{owner}.mapping must map sensor ids to {key} integers") from None
    elif isinstance(value, str | Path):
        sensors, entities = _read(mapping_path(value), key, owner)
    else:
        raise ConfigError(
            f"{owner}.mapping must be a dict or a CSV/Parquet path, got {type(value).__name__}"
        )
    for what, ids in (("sensor_id", sensors), (key, entities)):
        if len(ids) and (ids.min() < -(2**31) or ids.max() >= 2**31):
            raise ConfigError(f"{owner}.mapping: a {what} is outside int32")
    if len(np.unique(sensors)) != len(sensors):
        raise ConfigError(f"{owner}.mapping names a sensor_id twice")
    if not len(sensors):
        raise ConfigError(f"{owner}.mapping is empty")
    return sensors.astype(np.int32), entities.astype(np.int32)


def mapping_path(value: str | Path) -> Path:
    """A mapping file's path: as given, or a relative one not found from the current
    directory looked up in telepipe's conf dir (``pipeline/equipment_machines.csv``)."""
    path = Path(value)
    if path.is_absolute() or path.exists():
        return path
    from telepipe.config import conf_dir

    shipped = conf_dir() / path
    return shipped if shipped.exists() else path


def _read(path: Path, key: str, owner: str) -> tuple[np.ndarray, np.ndarray]:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if not path.is_file():
        raise ConfigError(f"{owner}.mapping: no such file {str(path)!r}")
    try:
        table = pacsv.read_csv(path) if path.suffix.lower() == ".csv" else pq.read_table(path)
    except Exception as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(f"{owner}.mapping: cannot read {str(path)!r}: {reason}") from None
    missing = [c for c in ("sensor_id", key) if c not in table.column_names]
    if missing:
        raise ConfigError(f"{owner}.mapping: {str(path)!r} has no column {missing[0]!r}")
    columns = []
    for c in ("sensor_id", key):
        column = table.column(c)
        if column.null_count or column.type.id not in {t.id for t in _int_types()}:
            raise ConfigError(f"{owner}.mapping: {str(path)!r} column {c!r} must be integers")
        columns.append(column.to_numpy().astype(np.int64))
    return columns[0], columns[1]


def _int_types() -> list[Any]:
    import pyarrow as pa

    return [pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32()]


class SensorMap:
    """Sensor id -> entity id, vectorised: a dense table when the sensor ids are small
    and not negative (one load a row), else a sorted search."""

    def __init__(self, sensors: np.ndarray, entities: np.ndarray) -> None:
        self.dense: np.ndarray | None = None
        if sensors.min() >= 0 and sensors.max() < _DENSE_LIMIT:
            self.dense = np.full(int(sensors.max()) + 1, UNMAPPED, np.int64)
            self.dense[sensors] = entities
        order = np.argsort(sensors)
        self.sensors = sensors[order]
        self.entities = entities[order].astype(np.int64)

    def __call__(self, sid: np.ndarray) -> np.ndarray:
        """Entity id (int64) of each sensor id; ``UNMAPPED`` for a sensor not named."""
        if self.dense is not None:
            inside = (sid >= 0) & (sid < len(self.dense))
            if inside.all():
                return self.dense[sid]
            out = np.full(len(sid), UNMAPPED, np.int64)
            out[inside] = self.dense[sid[inside]]
            return out
        at = np.searchsorted(self.sensors, sid)
        at[at == len(self.sensors)] = 0
        found = self.sensors[at] == sid
        return np.where(found, self.entities[at], UNMAPPED)
