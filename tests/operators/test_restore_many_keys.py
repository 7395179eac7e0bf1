"""A restore of many keys sizes the key index once (``KeyIndex.reserve``): every key is
held, outputs are the uninterrupted run's bit for bit, and keys that arrive after the
restore (dense and hashed ids, past the restored sizes) go on as without the restart."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from reference import assert_same_outputs, readings_batch

from telepipe.markers import MAX_WATERMARK
from telepipe.operators.detectors.hysteresis_alarm import HysteresisAlarm
from telepipe.operators.windows.tumbling import TumblingWindow

MS = 1_000_000
OPERATORS = {
    "tumbling": TumblingWindow(size_ms=100),
    "hysteresis": HysteresisAlarm(enter=0.5, exit=0.1, consecutive=2),
}


def _ids(rng: np.random.Generator, n: int, salt: int) -> np.ndarray:
    """``n`` distinct ids: most in the dense range, some negative or beyond it."""
    dense = rng.permutation(np.arange(n, dtype=np.int64) * 7 + salt)
    wide = dense[: n // 10] * 1000 + 2**30
    dense[: n // 20] = -dense[: n // 20] - 1
    dense[n // 20 : n // 10] = wide[n // 20 :]
    return dense.astype(np.int32)


@pytest.mark.parametrize("name", list(OPERATORS))
def test_restore_of_many_keys_then_new_keys(name: str) -> None:
    rng = np.random.default_rng(3)
    first, later = _ids(rng, 20_000, 1), _ids(rng, 30_000, 3)
    # Phase 1: every first key, several windows each (out of order: older windows
    # stay open in the table beside each key's newest). Phase 2: half of them again
    # and all the later keys.
    batches = []
    for k in range(3):
        sid = rng.permutation(first)
        ts = (k * 100 + 250 - (rng.integers(0, 3, len(sid)) * 100)) * MS
        batches.append((sid, ts, rng.random(len(sid))))
    cut = len(batches)
    for k in range(3):
        sid = rng.permutation(np.concatenate([first[: len(first) // 2], later]))
        ts = np.full(len(sid), (400 + 100 * k) * MS) + rng.integers(0, 50, len(sid)) * MS
        batches.append((sid, ts, rng.random(len(sid))))

    def run(restart: bool) -> list:
        op = OPERATORS[name]
        logic = op.build()
        out = []
        for i, (sid, ts, value) in enumerate(batches):
            if restart and i == cut:
                snap = pickle.loads(pickle.dumps(logic.snapshot()))
                logic = op.build()
                logic.restore(snap)
                again = logic.snapshot()
                assert sorted(again) == sorted(snap)
                assert np.asarray(again["sensor_id"]).shape == np.asarray(snap["sensor_id"]).shape
                assert len(np.unique(again["sensor_id"])) > len(first) // 4
            out += logic.on_batch(readings_batch(sid, ts, value))
            out += logic.on_watermark(int(ts.min()))  # no later row is late
        return out + logic.on_watermark(MAX_WATERMARK)

    straight = run(False)
    assert sum(b.num_rows for b in straight) > len(first)
    assert_same_outputs(run(True), straight)
