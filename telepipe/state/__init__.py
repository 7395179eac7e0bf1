"""Checkpoint state on disk: Arrow IPC files and a JSON manifest, cut by key group.

``write_checkpoint`` writes the state a barrier carries (the decoder's dict and each
step's ``Snapshot``) under ``<data_dir>/_telepipe_state/``, under names telepipe makes;
``read_checkpoint`` reads it back, checked (inside ``data_dir``, sizes and checksums,
format versions, no unknown field), optionally for a subset of key groups. Nothing
read can run code: JSON and Arrow only, never an object serialiser.
"""

from telepipe.state.files import (
    FORMAT_VERSION,
    MANIFEST,
    STATE_DIR,
    Checkpoint,
    read_checkpoint,
    write_checkpoint,
)
from telepipe.state.key_groups import (
    DEFAULT_KEY_GROUPS,
    KEY_HASH,
    keeps,
    key_group,
    key_group_range,
)

__all__ = [
    "DEFAULT_KEY_GROUPS",
    "FORMAT_VERSION",
    "KEY_HASH",
    "MANIFEST",
    "STATE_DIR",
    "Checkpoint",
    "keeps",
    "key_group",
    "key_group_range",
    "read_checkpoint",
    "write_checkpoint",
]
