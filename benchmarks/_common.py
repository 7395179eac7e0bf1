"""Helpers shared by the benchmark scripts: timing, medians, machine description."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """``(seconds, result)`` of one call, by ``time.perf_counter``."""
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def versions(*distributions: str) -> dict[str, str]:
    found = {}
    for name in distributions:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "-"
    return found


def machine() -> dict[str, object]:
    """Cores, CPU model, RAM and Python of this machine (for the report)."""
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gb = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gb = round(int(line.split()[1]) / 2**20, 1)
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "ram_gb": ram_gb,
        "python": platform.python_version(),
        **versions("numba", "numpy", "pyarrow", "polars", "deltalake", "reactivex"),
    }


def rate(rows: int, seconds: float) -> float:
    return rows / seconds if seconds > 0 else float("nan")


def medians(results: list[dict[str, float]]) -> dict[str, float]:
    """The median of every key over the repeats."""
    return {key: median([r[key] for r in results]) for key in results[0]}


def emit(summary: dict[str, object], results: list[dict[str, float]], out: Path | None) -> int:
    """Add the rounded medians and runs to ``summary``; print it as the last line (and to ``out``)."""
    summary["median"] = {k: round(v, 4) for k, v in medians(results).items()}
    summary["runs"] = [{k: round(v, 4) for k, v in r.items()} for r in results]
    return write_json(summary, out)


def write_json(summary: dict[str, object], out: Path | None) -> int:
    """Print ``summary`` as one JSON line, the script's last (and write it to ``out``)."""
    line = json.dumps(summary, sort_keys=True, default=str)
    if out is not None:
        out.write_text(line + "\n")
    print(line)
    return 0
