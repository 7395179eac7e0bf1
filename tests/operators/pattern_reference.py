"""A plain explicit-state matcher for ``CepPattern``: pure Python, no NFA tables, no numba.

It reads the steps itself (not the compiled tables), sees the whole stream at
once (no watermarks: time advances only at each sensor's readings and at the end)
and keeps each sensor's partial matches as Python objects. The semantics are those
written in ``docs/operators/patterns.md``.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field

from telepipe.operators.patterns._compiler import INF, parse_condition, parse_quantifier
from telepipe.operators.patterns._conditions import resolve
from telepipe.operators.patterns.pattern import CepPattern

FINAL = ("final",)
_OPS = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


def holds(node: tuple, row: dict, events: Sequence = ()) -> bool | float:
    """A resolved condition tree on ``row`` for a partial match whose events are
    ``events`` ((pos, ts, value, step, quality), first to last): aggregates over them
    computed from scratch, in exact integers for timestamps."""
    tag = node[0]
    if tag == "num":
        return node[1]
    if tag == "col":
        return row[node[1]]
    if tag == "ts":
        return row["ts"]
    if tag == "const":
        return node[1]
    if tag == "agg":
        return _aggregate(node, row, events)
    if tag == "abs":
        return float(holds(node[1], row, events))
    if tag == "neg":
        return -holds(node[1], row, events)
    if tag == "arith":
        a, b = holds(node[2], row, events), holds(node[3], row, events)
        if node[1] == "/":
            return _divide(a, b)
        return {"+": operator.add, "-": operator.sub, "*": operator.mul}[node[1]](a, b)
    if tag == "cmp":
        return _OPS[node[1]](holds(node[2], row, events), holds(node[3], row, events))
    if tag == "not":
        return not holds(node[1], row, events)
    if tag == "and":
        return bool(holds(node[1], row, events)) and bool(holds(node[2], row, events))
    return bool(holds(node[1], row, events)) or bool(holds(node[2], row, events))


def _divide(a: float, b: float) -> float:
    if b != 0:
        return a / b
    if a == 0 or math.isnan(a):
        return math.nan
    return math.copysign(math.inf, a) * math.copysign(1.0, b)


_EV_FIELD = {"ts": 1, "value": 2, "quality": 4}


def _aggregate(node: tuple, row: dict, events: Sequence) -> float:
    _, kind, step, fld, with_row = node
    evs = [e for e in events if step == -1 or e[3] == step]
    if fld is None:
        xs = []
    elif fld == "ts_ms":
        xs = [e[1] // 1_000_000 for e in evs]
    else:
        xs = [e[_EV_FIELD[fld]] for e in evs]
    if with_row:
        evs.append(None)
        if fld is not None:
            xs.append(row["ts_ms"] if fld == "ts_ms" else row[fld])
    if kind == "count":
        return float(len(evs))
    if kind == "sum":
        return float(sum(xs))
    if kind == "last1":
        return xs[-2] if len(xs) >= 2 else math.nan
    if not xs:
        return math.nan
    if kind == "first":
        return xs[0]
    if kind == "last":
        return xs[-1]
    m = xs[0]
    for x in xs[1:]:  # as the kernel: a NaN is never taken after the first
        m = x if (x < m if kind == "min" else x > m) else m
    return m


@dataclass
class El:
    step: int
    cond: tuple
    lo: int
    hi: int
    strict_before: bool
    strict_inner: bool
    guard: str = ""
    guard_cond: tuple | None = None
    greedy: bool = False  # a loop / times(n, m) with n < m, written greedy
    any_before: bool = False  # followed_by_any


@dataclass
class Pm:
    """A partial match at ``loc`` (or a complete one, ``done``)."""

    loc: tuple
    noproceed: bool
    events: list  # (pos, ts, value, step, quality)
    start_ts: int
    start_pos: int
    done: bool = False

    def key(self) -> tuple:
        return (self.start_pos, tuple(e[0] for e in self.events))


@dataclass
class Reference:
    op: CepPattern
    els: list[El] = field(default_factory=list)
    trailing: str = ""
    trailing_cond: tuple | None = None
    dropped: int = 0
    overflow: int = 0  # start readings dropped at max_match_events
    poison: set = field(default_factory=set)
    held_at_end: int = 0

    def __post_init__(self) -> None:
        guard = None
        seen: dict[str, int] = {}
        positive: set[int] = set()
        for i, st in enumerate(self.op.steps):
            seen[st.name] = i
            if st.contiguity not in ("not_next", "not_followed_by"):
                positive.add(i)
            cond = resolve(parse_condition(st.condition), i, seen, positive)
            if st.contiguity in ("not_next", "not_followed_by"):
                guard = (st.contiguity, cond)
                continue
            lo, hi = parse_quantifier(st.quantifier)
            greedy = st.greedy and lo != hi
            lo = 0 if st.optional else lo
            g = guard or ("", None)
            self.els.append(
                El(
                    i,
                    cond,
                    lo,
                    hi,
                    st.contiguity == "next",
                    st.consecutive,
                    g[0],
                    g[1],
                    greedy,
                    st.contiguity == "followed_by_any",
                )
            )
            guard = None
        if guard:
            self.trailing, self.trailing_cond = guard
        self.within = self.op.within_span_ns
        self.unit = 1_000_000 if self.op.within_clock == "ms" else 1
        bound = sum(e.hi for e in self.els) if all(e.hi != INF for e in self.els) else None
        cap = self.op.max_match_events
        self.L = cap if bound is None else min(bound, cap)

    # -- the decision graph of one partial match on one event

    def entry(self, j: int) -> tuple:
        if j == len(self.els):
            return ("trail",) if self.trailing else FINAL
        return ("notnext", j) if self.els[j].guard == "not_next" else ("elem", j, 0)

    def reaches_final(self, loc: tuple) -> bool:
        if loc == FINAL:
            return True
        if loc[0] != "elem":
            return False
        return loc[2] >= self.els[loc[1]].lo and self.reaches_final(self.entry(loc[1] + 1))

    def branches(self, pm: Pm, ev: tuple, row: dict, from_start: bool) -> list[Pm]:
        """``pm``'s branches on one event; a take past ``L`` events adds its start to
        ``self.poison`` (the caller drops every match of that start)."""
        out: list[Pm] = []
        loc, noproceed = pm.loc, pm.noproceed
        while loc != FINAL:
            if loc[0] == "notnext":
                if holds(self.els[loc[1]].guard_cond, row, pm.events):
                    return []
                loc, noproceed = ("elem", loc[1], 0), False
                continue
            if loc[0] == "trail":
                if holds(self.trailing_cond, row, pm.events):
                    return []
                if self.trailing == "not_next":
                    out.append(Pm(FINAL, False, pm.events, pm.start_ts, pm.start_pos, True))
                else:
                    out.append(Pm(loc, False, pm.events, pm.start_ts, pm.start_pos))
                return out
            j, c = loc[1], loc[2]
            el = self.els[j]
            if c == 0 and el.guard == "not_followed_by" and holds(el.guard_cond, row, pm.events):
                return []
            can_proceed = c >= el.lo and not noproceed
            # after a greedy step (FlinkCEP): its readings are neither this step's first
            # event nor skipped while waiting for it
            prev = self.els[j - 1] if j > 0 else None
            held = c == 0 and prev is not None and prev.greedy and holds(prev.cond, row, pm.events)
            took = bool(holds(el.cond, row, pm.events)) and not held
            if took:
                if len(pm.events) + 1 > self.L:
                    self.poison.add(pm.start_pos)
                else:
                    events = [*pm.events, (*ev, el.step, row["quality"])]
                    if el.hi != INF and c + 1 == el.hi:
                        nxt = self.entry(j + 1)
                    else:
                        nxt = ("elem", j, c + 1 if el.hi != INF else min(c + 1, max(el.lo, 1)))
                    if nxt == FINAL:
                        out.append(Pm(FINAL, False, events, pm.start_ts, pm.start_pos, True))
                    else:
                        out.append(Pm(nxt, False, events, pm.start_ts, pm.start_pos))
                        if self.reaches_final(nxt):
                            out.append(Pm(FINAL, False, events, pm.start_ts, pm.start_pos, True))
            # skipped: not taken, or (followed_by_any) taken and skipped as well
            if (
                (not took or (c == 0 and el.any_before))
                and not (el.strict_before if c == 0 else el.strict_inner)
                and not from_start
                and not held
            ):
                out.append(Pm(loc, noproceed or can_proceed, pm.events, pm.start_ts, pm.start_pos))
            if not can_proceed:
                break
            loc, noproceed = self.entry(j + 1), False
        return out

    # -- after-match skip, caps, time

    def emit(self, sid: int, pms: list[Pm], out: list) -> list[Pm]:
        while True:
            done = [p for p in pms if p.done]
            if not done:
                return pms
            best = min(done, key=Pm.key)
            how = self.op.after_match
            if how != "no_skip" and any(p.start_pos < best.start_pos for p in pms if not p.done):
                return pms
            out.append(
                (
                    sid,
                    best.start_ts,
                    best.events[-1][1],
                    len(best.events),
                    tuple(e[2] for e in best.events),
                    tuple(e[1] for e in best.events),
                    tuple(self.op.steps[e[3]].name for e in best.events),
                )
            )
            if how == "skip_past_last_event":  # after the match's last event
                pms = [p for p in pms if p.start_pos > best.events[-1][0]]
            elif how == "no_skip":  # every match, each once
                pms = [p for p in pms if p is not best]
            elif how == "skip_to_next":  # after the match's first event
                pms = [p for p in pms if p.start_pos > best.start_pos]
            else:  # at the first / last event of a step (after the match's start)
                step = [st.name for st in self.op.steps].index(self.op.after_match_step)
                at = [e[0] for e in best.events if e[3] == step]
                to = (at[0] if how == "skip_to_first" else at[-1]) if at else best.start_pos + 1
                pms = [p for p in pms if p.start_pos > best.start_pos and p.start_pos >= to]

    def timeout(self, pms: list[Pm], t: int | None) -> list[Pm]:
        """Time reaches ``t`` (None: the end of the stream)."""
        kept = []
        for p in pms:
            u = self.unit  # "ms" clock: both times floored to whole ms, as Flink's rowtime
            span = (t // u - p.start_ts // u) * u if t is not None else 0
            if not p.done and (t is None or (self.within and span >= self.within)):
                if self.within and p.loc == ("trail",) and self.trailing == "not_followed_by":
                    kept.append(Pm(FINAL, False, p.events, p.start_ts, p.start_pos, True))
                continue
            kept.append(p)
        return kept

    def run(self, sensor_id, ts, value, quality=None) -> list[tuple]:
        quality = quality if quality is not None else [0] * len(ts)
        order = sorted(range(len(ts)), key=lambda i: ts[i])  # stable: ties in arrival order
        state: dict[int, list[Pm]] = {}
        out: list[tuple] = []
        cap = self.op.max_partial_matches
        for pos, i in enumerate(order):
            sid, t, v = sensor_id[i], ts[i], value[i]
            row = {"value": v, "quality": quality[i], "sensor_id": sid, "ts": t}
            row["ts_ms"] = t // 1_000_000
            pms = state.get(sid, [])
            if self.within:
                pms = self.emit(sid, self.timeout(pms, t), out)
            new: list[Pm] = []
            for p in pms:
                new += [p] if p.done else self.branches(p, (pos, t, v), row, False)
            start = Pm(("elem", 0, 0), False, [], t, pos)
            new += self.branches(start, (pos, t, v), row, True)
            if self.poison:  # a limit never changes a match: the whole start goes
                self.overflow += len(self.poison)
                new = [p for p in new if p.start_pos not in self.poison]
                self.poison = set()
            new = self.emit(sid, new, out)
            while len(new) > cap and any(not p.done for p in new):
                oldest = min(p.start_pos for p in new if not p.done)
                self.dropped += sum(1 for p in new if not p.done and p.start_pos == oldest)
                new = [p for p in new if p.done or p.start_pos != oldest]
                new = self.emit(sid, new, out)
            state[sid] = new
        for sid, pms in state.items():
            if self.op.end_of_input == "flink" and not self.within:
                # time moves to the end: nothing expires; held matches behind a
                # partial match are never reported
                self.held_at_end += sum(p.done for p in self.emit(sid, pms, out))
            else:
                self.emit(sid, self.timeout(pms, None), out)
        return out


def pattern_reference(op: CepPattern, sensor_id, ts, value, quality=None) -> tuple[list, int, int]:
    """``(matches, dropped, overflow)``; a match is ``(sensor_id, start_ts, end_ts,
    n_events, values, event_ts, step_names)``."""
    ref = Reference(op)
    out = ref.run(sensor_id, ts, value, quality)
    return out, ref.dropped, ref.overflow
