"""Key groups: a fixed number of buckets of keys (Flink's max parallelism).

A sensor id belongs to key group ``fmix32(id) % max_groups``: the finaliser of
MurmurHash3 over the id's 32 bits, a stable hash (not Python's ``hash``, which is
salted per process), vectorised over numpy arrays. A worker owns a set of key
groups; a snapshot records ``max_groups`` and can be loaded for any subset.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

#: Key groups of a snapshot unless told otherwise (Flink's default max parallelism).
DEFAULT_KEY_GROUPS = 128
#: The hash's name, as the manifest records it.
KEY_HASH = "murmur3-fmix32"


def key_group(sensor_id: np.ndarray, max_groups: int = DEFAULT_KEY_GROUPS) -> np.ndarray:
    """The key group (int32 in ``[0, max_groups)``) of each sensor id (int32)."""
    if not 1 <= max_groups <= 2**31 - 1:
        raise ValueError(f"max_groups must be in 1..2**31-1, got {max_groups}")
    h = np.asarray(sensor_id).astype(np.int32, copy=True).view(np.uint32)
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return (h % np.uint32(max_groups)).astype(np.int32)


def key_group_range(index: int, parallelism: int, max_groups: int = DEFAULT_KEY_GROUPS) -> range:
    """The key groups worker ``index`` of ``parallelism`` owns: a contiguous range, as
    Flink's ``computeKeyGroupRangeForOperatorIndex``."""
    if not 0 <= index < parallelism <= max_groups:
        raise ValueError(
            f"need 0 <= index < parallelism <= {max_groups}, got {index}, {parallelism}"
        )
    return range(index * max_groups // parallelism, (index + 1) * max_groups // parallelism)


def keeps(
    groups: Iterable[int], max_groups: int = DEFAULT_KEY_GROUPS
) -> Callable[[np.ndarray], np.ndarray]:
    """``sensor ids -> bool mask`` of those in ``groups``."""
    wanted = np.zeros(max_groups, bool)
    chosen = np.fromiter(groups, np.int64)
    if len(chosen) and (chosen.min() < 0 or chosen.max() >= max_groups):
        raise ValueError(
            f"key groups must be in 0..{max_groups - 1}, got {sorted(set(chosen.tolist()))}"
        )
    wanted[chosen] = True

    def keep(sensor_id: np.ndarray) -> np.ndarray:
        return wanted[key_group(sensor_id, max_groups)]

    return keep
