"""Checkpoint cost and restore time of keyed state, for 1k, 100k and 1M keys.

    python benchmarks/checkpoint.py                      # 1k, 100k, 1M keys
    python benchmarks/checkpoint.py --keys 1000 --repeat 9

For each operator (TumblingWindow: one open window per key; HysteresisAlarm: one
detector state per key) and each key count, the operator is fed one reading per key
(the watermark past the detector's, inside the window), then, ``--repeat`` times:

- checkpoint = ``Snapshot.take`` + ``telepipe.state.write_checkpoint`` (Arrow files,
  manifest, fsync, rename) into a temporary data_dir: ms and bytes on disk;
- restore = ``read_checkpoint`` (sizes, sha256, Arrow) + ``snapshot.restore`` into a
  fresh logic: ms and keys/s, and the read alone; also restore of half the key groups
  (a worker of two). The restore sizes the operator's ``KeyIndex`` once
  (``KeyIndex.reserve``) and adds the snapshot's ids in one pass.

One round before the ``--repeat`` timed ones is not counted: it loads the numba kernels
of the restore path (from numba's cache, or compiled on a first run), a once-per-process
cost, not the restore's.

Prints one line per (operator, keys) and, last, JSON with the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from telepipe.markers import BatchLogic  # noqa: E402
from telepipe.operators import HysteresisAlarm, TumblingWindow  # noqa: E402
from telepipe.operators.runtime.snapshot import Snapshot, restore  # noqa: E402
from telepipe.schema import READINGS  # noqa: E402
from telepipe.state import key_group_range, read_checkpoint, write_checkpoint  # noqa: E402

MS = 1_000_000
OPERATORS = {
    "TumblingWindow": TumblingWindow(size_ms=60_000),
    "HysteresisAlarm": HysteresisAlarm(enter=0.5, exit=0.1, consecutive=3),
}


def loaded(name: str, keys: int) -> BatchLogic:
    """The operator's logic holding state for ``keys`` sensors."""
    logic = OPERATORS[name].build()
    rng = np.random.default_rng(keys)
    sid = rng.permutation(np.arange(keys, dtype=np.int32) * 7 + 1)
    batch = pa.RecordBatch.from_arrays(
        [
            pa.array(sid),
            pa.array(np.arange(keys, dtype=np.int64) % 1000 * MS, pa.timestamp("ns")),
            pa.array(0.6 + 0.4 * rng.random(keys)),  # every detector sensor in a run
            pa.array(np.zeros(keys, np.uint8)),
        ],
        schema=READINGS,
    )
    logic.on_batch(batch)
    logic.on_watermark(2_000 * MS)  # releases the detector's buffer, keeps the windows open
    return logic


def disk_bytes(root: Path, relative: str) -> int:
    return sum(p.stat().st_size for p in (root / relative).parent.iterdir())


def measure(name: str, keys: int, repeat: int) -> dict[str, float]:
    logic = loaded(name, keys)
    taken, written, read, restored, half = [], [], [], [], []
    size = 0
    for k in range(-1, repeat):  # round -1: warm-up, not counted
        with tempfile.TemporaryDirectory(prefix="telepipe-ckpt-") as tmp:
            root = Path(tmp)
            t0 = time.perf_counter()
            snapshot = Snapshot.take(logic)
            t1 = time.perf_counter()
            path = write_checkpoint(root, "bench", "t", k + 2, {"decoder": {}, "step": snapshot})
            t2 = time.perf_counter()
            size = disk_bytes(root, path)
            fresh = OPERATORS[name].build()
            t3 = time.perf_counter()
            checkpoint = read_checkpoint(root, path)
            t4 = time.perf_counter()
            restore(fresh, checkpoint.steps["step"], "step")
            t5 = time.perf_counter()
            worker = OPERATORS[name].build()
            restore(
                worker, read_checkpoint(root, path, key_group_range(0, 2)).steps["step"], "step"
            )
            t6 = time.perf_counter()
        if k < 0:
            continue
        taken.append(t1 - t0)
        written.append(t2 - t1)
        read.append(t4 - t3)
        restored.append(t5 - t3)
        half.append(t6 - t5)
    check = Snapshot.take(fresh).state["sensor_id"]
    assert len(check) == keys, (name, len(check), keys)  # type: ignore[arg-type]
    ms = {
        "checkpoint_ms": 1e3
        * statistics.median(a + b for a, b in zip(taken, written, strict=True)),
        "snapshot_take_ms": 1e3 * statistics.median(taken),
        "write_ms": 1e3 * statistics.median(written),
        "bytes": size,
        "read_ms": 1e3 * statistics.median(read),
        "restore_ms": 1e3 * statistics.median(restored),
        "restore_half_ms": 1e3 * statistics.median(half),
    }
    ms["restore_keys_per_s"] = keys / (ms["restore_ms"] / 1e3)
    ms["read_keys_per_s"] = keys / (ms["read_ms"] / 1e3)
    return ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, nargs="+", default=[1_000, 100_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--operators", nargs="+", default=list(OPERATORS), choices=list(OPERATORS))
    args = parser.parse_args()
    results = []
    for name in args.operators:
        for keys in args.keys:
            m = measure(name, keys, args.repeat)
            results.append({"operator": name, "keys": keys, **m})
            print(
                f"{name:16s} {keys:>9,d} keys: checkpoint {m['checkpoint_ms']:8.1f} ms "
                f"({m['bytes'] / 1e6:7.2f} MB, {m['bytes'] / keys:5.1f} B/key), "
                f"restore {m['restore_ms']:8.1f} ms ({m['restore_keys_per_s'] / 1e6:5.2f} M keys/s;"
                f" of which read {m['read_ms']:.1f} ms, {m['read_keys_per_s'] / 1e6:.1f} M keys/s), "
                f"half the key groups {m['restore_half_ms']:.1f} ms",
                flush=True,
            )
    print(
        json.dumps(
            {
                "command": " ".join(["python", *sys.argv]),
                "machine": f"{platform.machine()} {os.cpu_count()} cpus, {platform.platform()}",
                "python": platform.python_version(),
                "repeat": args.repeat,
                "medians": results,
            }
        )
    )


if __name__ == "__main__":
    main()
