"""``CepPatternLogic``: the event-time buffer, per-sensor NFA state and limits of a
``CepPattern`` (``pattern.py`` holds the options and the Python API)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np
import pyarrow as pa

from telepipe.dead_letters import DeadLetter
from telepipe.markers import MAX_WATERMARK, State
from telepipe.operators.detectors.base import DetectorLogic
from telepipe.operators.patterns import _compiler as pc
from telepipe.operators.patterns import _nfa_kernels as pk
from telepipe.operators.patterns import _slot_kernels as sk
from telepipe.operators.patterns import _store_kernels as ps
from telepipe.operators.runtime.key_index import KeyIndex, grown_state
from telepipe.operators.runtime.snapshot import as_array, as_int
from telepipe.sbe import SbeCodec
from telepipe.schema import TS_NS, arrow_column

if TYPE_CHECKING:
    from telepipe.operators.patterns.pattern import CepPattern

SKIPS = ("skip_past_last_event", "skip_to_next", "skip_to_first", "skip_to_last", "no_skip")
PATTERN_MATCHES = pa.schema(
    [
        pa.field("pattern", pa.string(), nullable=False),
        pa.field("sensor_id", pa.int32(), nullable=False),
        pa.field("start_ts", TS_NS, nullable=False),
        pa.field("end_ts", TS_NS, nullable=False),
        pa.field("n_events", pa.int32(), nullable=False),
        pa.field("values", pa.list_(pa.float64()), nullable=False),
        pa.field("event_ts", pa.list_(TS_NS), nullable=False),
        pa.field("steps", pa.list_(pa.string()), nullable=False),
    ]
)
# A partial match dropped at a limit (one row per start reading): ``take_dead_letters``,
# and in a pipeline the stage's side output ``PATTERN_DROPPED`` (``take_side``), which
# ``pipelines.routing`` writes to ``dead_letters``.
PATTERN_DROPPED = "pattern_dropped"
DEAD_LETTER_REASONS = ("pattern_max_partial_matches", "pattern_max_match_events")
PATTERN_DEAD_LETTERS = pa.schema(
    [
        pa.field("reason", pa.string(), nullable=False),
        pa.field("pattern", pa.string(), nullable=False),
        pa.field("sensor_id", pa.int32(), nullable=False),
        pa.field("start_ts", TS_NS, nullable=False),  # the first reading of the match
        pa.field("start_value", pa.float64(), nullable=False),
        pa.field("partial_matches", pa.int64(), nullable=False),  # dropped with it
        pa.field("detail", pa.string(), nullable=False),
    ]
)

_MIN_NODES = 4096
_FIRST_BLOCK = 64  # slots a key starts with (the old fixed cap); x2 up to max_partial_matches


class CepPatternLogic(DetectorLogic):
    """Event-time buffer (``DetectorLogic``) + per-sensor NFA state (``_nfa_kernels``).

    Each key's partial matches live in its own block of ``block``, ``_FIRST_BLOCK``
    slots at first, twice as large when full, up to ``max_partial_matches`` (the
    bound of memory per key: that many 56-byte slots, and their events' nodes).
    """

    snapshot_version: ClassVar[int] = 2  # 2: blocks by key, dead letters, aggregates, counters[6]

    def __init__(self, op: CepPattern) -> None:
        super().__init__(op, 0, 0, with_quality=True)
        compiled: pc.Compiled = op._compiled  # type: ignore[attr-defined]
        self.pattern = op.name
        self.trees = compiled.trees
        self.step_names = pa.array(compiled.names, pa.string())
        self.tab = compiled.nfa.table
        conditions = compiled.conditions
        assert conditions is not None
        self._cx = conditions.kernel_args()
        self._n_aggs = len(conditions.spec)
        self._match_conditions = conditions.any  # some condition refers to the match
        self._ts_ms = "ts_ms" in compiled.uses
        self._skip_idle = pc.idle_rows_do_nothing(self.tab)
        self._idle_fixed = pk._idle_fixed_kernel(self.tab, self._cx)
        self._skip_fixed = True  # walk only the partial matches a row changes (tests: off)
        self.within = op.within_span_ns
        self.within_unit = 1_000_000 if op.within_clock == "ms" else 1
        kind = SKIPS.index(op.after_match)
        target = compiled.names.index(op.after_match_step) if op.after_match_step else -1
        self.skip = np.array([kind, target], np.int64)
        self.end = pk.FLUSH_FLINK if op.end_of_input == "flink" else pk.FLUSH_ALL
        self.maxcap = op.max_partial_matches
        self.max_match_events = op.max_match_events
        self.L = pc.max_events(compiled.nfa.elements, op.max_match_events)
        self.chain = len(self.tab)
        self.pos = 0
        self.counters = np.zeros(sk.N_COUNTERS, np.int64)
        self._dead: list[pa.RecordBatch] = []
        self._size_scratch(min(_FIRST_BLOCK, self.maxcap))
        self._tmp = (np.empty(self.L, np.int64), np.empty(self.L, np.int64))
        self._set_slots(np.empty(0, np.int32), np.empty((0, 7), np.int64), *_no_events())

    def _size_scratch(self, cap: int) -> None:
        """Scratch slots for a key of ``cap`` slots: what one row's walks can write."""
        n_states = len(self.tab)
        rows = cap + (cap + 1) * (2 * n_states + 1)
        self._scratch_cap = cap
        self._scratch = np.empty((rows, 7), np.int64)
        self._o_meta = np.empty((2 * (cap + rows) + 1024, 5), np.int64)
        self._dl = np.empty((2 * rows + 64, 5), np.int64)
        self._dl_val = np.empty(len(self._dl), np.float64)
        self._work = pk.run_work(n_states, self._n_aggs, rows)

    # -- counters

    @property
    def dropped_partial_matches(self) -> int:
        """Partial matches dropped at ``max_partial_matches`` (each also a dead letter's count)."""
        return int(self.counters[sk.C_DROPPED])

    @property
    def overflow_matches(self) -> int:
        """Start readings whose matches were dropped at ``max_match_events``."""
        return int(self.counters[sk.C_OVERFLOW])

    @property
    def held_at_end(self) -> int:
        """Complete matches not reported at the end of input (``end_of_input: flink``)."""
        return int(self.counters[sk.C_HELD_AT_END])

    @property
    def dead_letters(self) -> int:
        """Dead letters so far: start readings whose partial matches a limit dropped."""
        return int(self.counters[sk.C_DROPPED_STARTS] + self.counters[sk.C_OVERFLOW])

    def stats(self) -> dict[str, int]:
        """What the operator counted: late rows, partial matches and dead letters."""
        return {
            "late_rows": self.late_rows,
            "partial_matches": int(self.nslot.sum()),
            "dropped_partial_matches": self.dropped_partial_matches,
            "dead_letters": self.dead_letters,
            "dead_letters_max_partial_matches": int(self.counters[sk.C_DROPPED_STARTS]),
            "dead_letters_max_match_events": self.overflow_matches,
            "held_at_end": self.held_at_end,
        }

    def take_dead_letters(self) -> list[pa.RecordBatch]:
        """The dead letters (``PATTERN_DEAD_LETTERS``) since the last call, in order."""
        dead, self._dead = self._dead, []
        return dead

    def take_side(self) -> list[tuple[str, pa.RecordBatch]]:
        """``SideLogic``: the dead letters since the last call, tagged ``PATTERN_DROPPED``."""
        return [(PATTERN_DROPPED, batch) for batch in self.take_dead_letters()]

    def on_barrier(self, checkpoint_id: int) -> None:
        """``SideLogic``: nothing is due at a barrier (dead letters go as they are found)."""

    # -- state

    def _set_slots(self, sids, meta, offsets, pos, ts, step, value, agg) -> None:
        """Load entries (``meta`` rows without heads) and their events, keyed by ``sids``."""
        self._keys = KeyIndex()
        self.nslot = np.zeros(0, np.int64)
        # (known, until, earliest deadline, deadline known, then the fixed prefix:
        # known, bits, slots, deadline, flags): see the kernel.
        self._idle = np.zeros((0, pk.IDLE_COLS), np.int64)
        self._blk = np.zeros(0, np.int64)  # by key: offset of its block in ``block`` (-1: none)
        self._kcap = np.zeros(0, np.int64)  # by key: its block's slots
        self.block = np.zeros((1024, 7), np.int64)
        self._used = np.zeros(1, np.int64)  # rows of ``block`` handed out (see _compact)
        keys = self._add_keys(sids)
        uniq, counts = np.unique(keys, return_counts=True)
        for k, c in zip(uniq.tolist(), counts.tolist(), strict=True):
            size = _FIRST_BLOCK
            while size < c:
                size *= 2
            self._alloc(np.array([k]), min(size, self.maxcap))
        if len(uniq) and self._kcap.max() > self._scratch_cap:
            self._size_scratch(int(self._kcap.max()))
        n_ev = len(pos)
        pool = _MIN_NODES
        while pool < 2 * n_ev:
            pool *= 2
        self.nd = np.zeros((pool, 4), np.int64)
        self.nd_val = np.zeros(pool, np.float64)
        self.nd_agg = np.zeros((pool, self._n_aggs), np.float64)
        if self._n_aggs:
            self.nd_agg[:n_ev] = np.asarray(agg).reshape(n_ev, self._n_aggs)
        lens = np.diff(offsets)
        self.nd[:n_ev, sk.N_POS] = pos
        self.nd[:n_ev, sk.N_TS] = ts
        self.nd[:n_ev, sk.N_STEP] = step
        self.nd[:n_ev, sk.N_PREV] = np.arange(-1, n_ev - 1)
        self.nd_val[:n_ev] = value
        if n_ev:
            self.nd[offsets[:-1][lens > 0], sk.N_PREV] = -1
        self.n_nodes = n_ev
        for r, k in enumerate(keys.tolist()):
            q = self._blk[k] + self.nslot[k]
            self.block[q, :6] = meta[r, :6]
            self.block[q, sk.S_HEAD] = offsets[r + 1] - 1 if lens[r] else -1
            self.nslot[k] += 1

    def _add_keys(self, sids: np.ndarray) -> np.ndarray:
        """The ``KeyIndex`` slots of ``sids``, with per-key state to match."""
        slots = self._keys.slots(sids)
        n = self._keys.n
        self.nslot = grown_state(self.nslot, n, 0)
        self._idle = grown_state(self._idle, n, 0)
        self._blk = grown_state(self._blk, n, -1)
        self._kcap = grown_state(self._kcap, n, 0)
        return slots

    def _add_blocks(self, slots: np.ndarray) -> None:
        """A first block for each of ``slots`` without one."""
        need = np.unique(slots[self._blk[slots] < 0])
        if len(need):
            self._alloc(need, min(_FIRST_BLOCK, self.maxcap))

    def _alloc(self, keys: np.ndarray, size: int) -> None:
        """New blocks of ``size`` slots for ``keys`` (their slots in use moved over)."""
        need = len(keys) * size
        if self._used[0] + need > len(self.block):
            self._compact(need)
        new = self._used[0] + np.arange(len(keys)) * size
        for k, b in zip(keys.tolist(), new.tolist(), strict=True):
            n = int(self.nslot[k])
            if n:
                old = int(self._blk[k])
                self.block[b : b + n] = self.block[old : old + n]
        self._blk[keys] = new
        self._kcap[keys] = size
        self._used[0] += need

    def _compact(self, extra: int) -> None:
        """Lay the blocks out again without the freed ones, with room for ``extra`` more."""
        has = np.flatnonzero(self._blk[: self._keys.n] >= 0)
        n = self.nslot[has]
        # A block 4x larger than twice what it holds shrinks to that (a power of 2, at
        # least the first size): a sensor's peak would otherwise keep its block large
        # for good, spreading the live slots (x5.7 on the benchmark) over more memory.
        fit = np.maximum(min(_FIRST_BLOCK, self.maxcap), _pow2(2 * n))
        sizes = np.where(self._kcap[has] > 4 * fit, fit, self._kcap[has])
        self._kcap[has] = sizes
        live = int(sizes.sum())
        rows = max(1024, 2 * (live + extra))
        block = np.empty((rows, 7), np.int64)  # rows are written before they are read
        new = np.zeros(len(has), np.int64)
        np.cumsum(sizes[:-1], out=new[1:])
        src = np.repeat(self._blk[has], n) + _ranks(n)
        dst = np.repeat(new, n) + _ranks(n)
        block[dst] = self.block[src]
        self.block = block
        self._blk[has] = new
        self._used[0] = live

    def _grow(self, key: int) -> None:
        """Room for the kernel to grow ``key``'s block (or, ``key`` -1, a scratch for
        the largest block)."""
        if key < 0:
            self._size_scratch(int(self._kcap[: self._keys.n].max()))
            return
        # room for its next block (x2, or more: the kernel asks again if short);
        # _compact doubles what is live, so room grows geometrically
        self._compact(min(self.maxcap, 16 * int(self._kcap[key])))

    def _grow_nodes(self, need: int) -> None:
        self.n_nodes = ps._pattern_gc_kernel(
            self.nd,
            self.nd_val,
            self.nd_agg,
            self.n_nodes,
            self._keys.n,
            self.nslot,
            self._blk,
            self.block,
        )
        pool = len(self.nd)
        while self.n_nodes * 2 > pool or self.n_nodes + need > pool:
            pool *= 2
        if pool != len(self.nd):
            self.nd = np.concatenate([self.nd, np.zeros((pool - len(self.nd), 4), np.int64)])
            self.nd_val = np.concatenate([self.nd_val, np.zeros(pool - len(self.nd_val))])
            self.nd_agg = grown_state(self.nd_agg, pool, 0.0)

    def _events(self, heads: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, ...]:
        """The events of chains ``heads``: offsets, pos, ts, step, value, aggregates."""
        offsets, nodes = ps._pattern_chain_nodes_kernel(heads, lens, self.nd)
        nd = self.nd[nodes]
        pos, ts, step = nd[:, sk.N_POS], nd[:, sk.N_TS], nd[:, sk.N_STEP]
        return offsets, pos, ts, step, self.nd_val[nodes], self.nd_agg[nodes]

    def _collect(self, n_out: int, into: list) -> None:
        n_dl = int(self.counters[sk.C_NDL])
        if n_dl:
            self._dead.append(self._dead_batch(self._dl[:n_dl].copy(), self._dl_val[:n_dl].copy()))
            self.counters[sk.C_NDL] = 0
        if n_out == 0:
            return
        meta = self._o_meta[:n_out].copy()
        into.append((meta, self._events(meta[:, sk.O_HEAD], meta[:, sk.O_N])))

    def _dead_batch(self, dl: np.ndarray, value: np.ndarray) -> pa.RecordBatch:
        reasons = [DEAD_LETTER_REASONS[r] for r in dl[:, sk.D_REASON].tolist()]
        limits = (self.maxcap, self.max_match_events)
        detail = [
            f"pattern {self.pattern!r}, sensor {s}: {c} partial match(es) started at "
            f"position {p} dropped ({why.removeprefix('pattern_')}={limits[r]})"
            for why, r, s, p, c in zip(
                reasons,
                dl[:, sk.D_REASON].tolist(),
                dl[:, sk.D_SID].tolist(),
                dl[:, sk.D_START_POS].tolist(),
                dl[:, sk.D_COUNT].tolist(),
                strict=True,
            )
        ]
        return pa.RecordBatch.from_arrays(
            [
                pa.array(reasons, pa.string()),
                pa.array([self.pattern] * len(dl), pa.string()),
                pa.array(dl[:, sk.D_SID].astype(np.int32)),
                arrow_column(dl[:, sk.D_START_TS], TS_NS),
                pa.array(value, pa.float64()),
                pa.array(dl[:, sk.D_COUNT]),
                pa.array(detail, pa.string()),
            ],
            schema=PATTERN_DEAD_LETTERS,
        )

    # -- processing

    def _advance(self, sid, ts, val, q, watermark: int) -> list[pa.RecordBatch]:
        pieces: list = []
        n_out = 0
        n = len(ts)
        if n:
            cols = {"value": val, "quality": q, "sensor_id": sid}
            if self._ts_ms or self._match_conditions:
                cols["ts_ms"] = (ts // 1_000_000).astype(np.float64)  # floor, as Flink's rowtime
            bits = pc.condition_bits(self.trees, cols, n)
            rowf = _NO_ROWF
            if self._match_conditions:
                rowf = np.stack([q.astype(np.float64), sid.astype(np.float64), cols["ts_ms"]], 1)
            row = 0
            while True:
                row, self.n_nodes, n_out, status = pk._pattern_run_kernel(
                    self._skip_idle,
                    self._idle_fixed,
                    self._idle,
                    self._skip_fixed,
                    row,
                    sid,
                    ts,
                    val,
                    bits,
                    self.pos,
                    self.tab,
                    self.within,
                    self.within_unit,
                    self.skip,
                    self._kcap,
                    self.maxcap,
                    self.L,
                    self.chain,
                    self._keys.lookup,
                    self.nslot,
                    self._blk,
                    self.block,
                    self._used,
                    self._scratch,
                    self.nd,
                    self.nd_val,
                    self.nd_agg,
                    self.n_nodes,
                    self._o_meta,
                    n_out,
                    self.counters,
                    self._dl,
                    self._dl_val,
                    *self._tmp,
                    self._cx,
                    rowf,
                    self._work,
                )
                if status == pk.ST_DONE:
                    break
                self._collect(n_out, pieces)
                n_out = 0
                if status == pk.ST_KEYS:
                    self._add_keys(sid[row:])
                elif status == pk.ST_BLOCK:
                    # Blocks for the sensors of the rows that may need one (with idle
                    # rows skipped, those meeting a condition).
                    rest = sid[row:] if not self._skip_idle else sid[row:][bits[row:] != 0]
                    self._add_blocks(self._keys.slots(rest))
                elif status == pk.ST_GROW:
                    self._grow(int(self.counters[sk.C_GROW_KEY]))
                elif status == pk.ST_NODES:
                    self._grow_nodes((self._scratch_cap + 1) * self.chain)
            self.pos += n
        flush = self.end if watermark >= MAX_WATERMARK else 0
        if self.within > 0 or flush:
            key = 0
            while key < self._keys.n:
                key, n_out = pk._pattern_advance_kernel(
                    key,
                    watermark,
                    flush,
                    self.tab,
                    self.within,
                    self.within_unit,
                    self.skip,
                    self._kcap,
                    self._keys.keys,
                    self._keys.n,
                    self.nslot,
                    self._blk,
                    self.block,
                    self.nd,
                    self._o_meta,
                    n_out,
                    self.counters,
                    *self._tmp,
                )
                self._collect(n_out, pieces)
                n_out = 0
            self._idle[:] = 0  # timeouts and emissions changed slots
        self._collect(n_out, pieces)
        return self._batch(pieces)

    def _batch(self, pieces: list) -> list[pa.RecordBatch]:
        if not pieces:
            return []
        meta = np.concatenate([m for m, _ in pieces])
        lens = meta[:, sk.O_N]
        offsets = np.zeros(len(meta) + 1, np.int32)
        np.cumsum(lens, out=offsets[1:])
        flat = [np.concatenate([e[k] for _, e in pieces]) for k in (2, 3, 4)]
        ev_ts, ev_step, ev_val = flat
        n = len(meta)
        off = pa.array(offsets, pa.int32())
        batch = pa.RecordBatch.from_arrays(
            [
                pa.array([self.pattern] * n, pa.string()),
                pa.array(meta[:, sk.O_SID].astype(np.int32)),
                arrow_column(meta[:, sk.O_START_TS], TS_NS),
                arrow_column(meta[:, sk.O_END_TS], TS_NS),
                pa.array(lens.astype(np.int32)),
                pa.ListArray.from_arrays(off, pa.array(ev_val, pa.float64())),
                pa.ListArray.from_arrays(off, arrow_column(ev_ts, TS_NS)),
                pa.ListArray.from_arrays(off, self.step_names.take(pa.array(ev_step))),
            ],
            schema=PATTERN_MATCHES,
        )
        by = np.lexsort(
            (np.arange(n), meta[:, sk.O_START_TS], meta[:, sk.O_SID], meta[:, sk.O_END_TS])
        )
        if not np.array_equal(by, np.arange(n)):
            batch = batch.take(pa.array(by))
        return [batch]

    # -- snapshot

    def _extra_snapshot(self) -> State:
        n_keys = self._keys.n
        starts = self._blk[:n_keys]
        rows = [np.arange(b, b + n) for b, n in zip(starts, self.nslot[:n_keys], strict=True)]
        idx = np.concatenate(rows) if rows else np.empty(0, np.int64)
        meta = self.block[idx]
        sids = np.repeat(self._keys.keys, self.nslot[:n_keys])
        offsets, pos, ts, step, value, agg = self._events(
            meta[:, sk.S_HEAD].copy(), meta[:, sk.S_N].copy()
        )
        return {
            "position": self.pos,
            "counters": self.counters.copy(),
            "slot_sensor_id": sids.astype(np.int32),
            "slot_meta": meta[:, :6].copy(),
            "event_offsets": offsets,
            "event_pos": pos,
            "event_ts": ts,
            "event_step": step,
            "event_value": value,
            "event_agg": agg,
        }

    def _restore_extra(self, snapshot: State) -> None:
        self.pos = as_int(snapshot["position"])
        self.counters = as_array(snapshot["counters"], np.int64).copy()
        self._set_slots(
            as_array(snapshot["slot_sensor_id"], np.int32),
            as_array(snapshot["slot_meta"], np.int64),
            as_array(snapshot["event_offsets"], np.int64),
            as_array(snapshot["event_pos"], np.int64),
            as_array(snapshot["event_ts"], np.int64),
            as_array(snapshot["event_step"], np.int64),
            as_array(snapshot["event_value"], np.float64),
            as_array(snapshot["event_agg"], np.float64),
        )


PATTERN_PARTIAL_MATCH_DROPPED = "pattern_partial_match_dropped"  # its dead letters' reason


def pattern_dropped_letters(
    codec: SbeCodec, rows: pa.RecordBatch, where: str, stream_id: int
) -> list[DeadLetter]:
    """One ``pattern_partial_match_dropped`` dead letter per row of ``PATTERN_DEAD_LETTERS``
    (a start reading whose partial matches a limit dropped), for ``dead_letters``.

    As a late row's letter (``sources.decoder.late_row_letters``): the first reading
    alone as a message (the codec's reading columns, root fields 0; its quality, which
    the NFA does not keep, 0) at session 0, position 0, ``received_ns`` its event time,
    so the letter's id is the same whenever and however often it is found (a replay
    after a restart writes it once). ``detail``: the limit, the count, the step."""
    if rows.num_rows == 0:
        return []
    ts = rows.column("start_ts").cast(pa.int64()).to_numpy()
    given = {
        "sensor_id": rows.column("sensor_id"),
        "ts": rows.column("start_ts"),
        "value": rows.column("start_value"),
    }
    columns = {}
    for f in codec.arrow_schema:
        column = given.get(f.name, pa.array(np.zeros(rows.num_rows, np.int64)))
        columns[f.name] = column.cast(f.type).to_numpy(zero_copy_only=False)
    root = dict.fromkeys(codec.root_dtype.names or (), 0)
    payloads = codec.encode_each(columns, **root)
    details = rows.column("detail").to_pylist()
    return [
        DeadLetter(
            PATTERN_PARTIAL_MATCH_DROPPED,
            f"{detail}, first reading ts {int(t)}, at step {where}",
            stream_id,
            0,
            0,
            int(t),
            payload,
        )
        for detail, t, payload in zip(details, ts.tolist(), payloads, strict=True)
    ]


def _pow2(n: np.ndarray) -> np.ndarray:
    """The smallest power of 2 >= each of ``n`` (1 for 0)."""
    return np.left_shift(1, np.ceil(np.log2(np.maximum(n, 1))).astype(np.int64))


def _ranks(counts: np.ndarray) -> np.ndarray:
    """``0..c-1`` for each ``c`` of ``counts``, concatenated."""
    total = int(counts.sum())
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(total) - starts


_NO_ROWF = np.zeros((1, 3))  # the run kernel's rowf when no condition reads it


def _no_events() -> tuple[np.ndarray, ...]:
    e = np.empty(0, np.int64)
    return np.zeros(1, np.int64), e, e, e, np.empty(0, np.float64), np.empty(0)
