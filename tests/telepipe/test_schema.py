"""arrow_column: what pa.array gives, timestamps without the cast."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from telepipe.schema import TS_NS, arrow_column


@pytest.mark.parametrize(
    "values",
    [
        np.array([3, -1, 2**62, 0], np.int64),
        np.arange(12, dtype=np.int64).reshape(4, 3)[:, 1],  # a strided column
        np.array([5, 6], np.int32),  # widened to int64 ns
        np.empty(0, np.int64),
    ],
)
def test_timestamps_equal_what_pa_array_makes(values) -> None:
    got = arrow_column(values, TS_NS)
    assert got.type == TS_NS and got.null_count == 0
    assert got.equals(pa.array(values.astype(np.int64), TS_NS))


@pytest.mark.parametrize(
    "values, type_",
    [
        (np.array([1, 2], np.int32), pa.int32()),
        (np.array([0.5, -1.0]), pa.float64()),
        (np.array([1, 0], np.int8), pa.int8()),
    ],
)
def test_other_types_are_pa_array(values, type_) -> None:
    assert arrow_column(values, type_).equals(pa.array(values, type_))
