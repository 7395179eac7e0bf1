"""numba kernels of ``CepPattern``'s conditions on earlier events of the match.

A condition that refers to the match (``_conditions``) is its bit (the conjuncts of
the reading alone, from ``condition_bits``) and a postfix program run here for one
partial match and one reading. The program reads the reading (``v``, and row ``ri`` of ``rowf`` =
quality, sensor id, ts in whole ms), its ``ts`` relative to the match's first event
(``t - start_ts``: exact in float64 for spans up to 2**53 ns, 104 days), and the
match's running aggregates: ``base``, the aggregates carried by the match's last
event node (``nd_agg[head]``; ``empty`` for a match with no event yet), or with the
reading counted as taken by the condition's own step (``OP_AGG_ROW``). A taken
reading's node carries ``_agg_update``: the aggregates one event later.

All of it is one float64 array ``P`` (``Conditions.kernel_args()``): a header (numbers of
conditions, code rows, constants, aggregate slots, stack depth) then progs (start,
length per condition), code (op, arg), constants, spec (5 per slot), the empty
aggregates and the stack. One array: every array an inlined function binds costs
reference counting at each call, which the benchmark pattern measured (a third of
its speed with seven arrays).
"""

from __future__ import annotations

import math

import numpy as np

from telepipe.operators.patterns._conditions import (
    A_COUNT,
    A_LAST,
    A_LAST1,
    A_MAX,
    A_MIN,
    A_SUM,
    F_QUALITY,
    F_SID,
    F_TS,
    F_TS_MS,
    F_VALUE,
    OP_ABS,
    OP_ADD,
    OP_AGG,
    OP_AGG_ROW,
    OP_AND,
    OP_COL,
    OP_CONST,
    OP_DIV,
    OP_EQ,
    OP_GE,
    OP_GT,
    OP_LE,
    OP_LT,
    OP_MUL,
    OP_NE,
    OP_NEG,
    OP_NOT,
    OP_OR,
    OP_SUB,
    OP_TRUE,
)
from telepipe.operators.runtime._key_kernels import _inline, _jit


@_inline
def _parts(P):
    """Views of ``P``: progs, code, consts, spec, empty, stack (flat)."""
    n_cond = int(P[0])
    n_code = int(P[1])
    n_consts = int(P[2])
    n_aggs = int(P[3])
    o = 5
    progs = P[o : o + 2 * n_cond]
    o += 2 * n_cond
    code = P[o : o + 2 * n_code]
    o += 2 * n_code
    consts = P[o : o + n_consts]
    o += n_consts
    spec = P[o : o + 5 * n_aggs]
    o += 5 * n_aggs
    empty = P[o : o + n_aggs]
    o += n_aggs
    return progs, code, consts, spec, empty, P[o : o + int(P[4])]


@_inline
def _field(f, t, start_ts, v, rowf, ri):
    if f == F_VALUE:
        return v
    if f == F_TS:
        return float(t - start_ts)
    if f == F_QUALITY:
        return rowf[ri, 0]
    if f == F_SID:
        return rowf[ri, 1]
    if f == F_TS_MS:
        return rowf[ri, 2]
    return np.nan


@_inline
def _with_row(j, base, spec, t, start_ts, v, rowf, ri):
    """Slot ``j`` of ``base`` once the reading is one more event of its step."""
    kind = int(spec[5 * j + 2])
    if kind == A_COUNT:
        return base[j] + 1.0
    if kind == A_LAST1:
        return base[int(spec[5 * j + 4])]
    f = _field(int(spec[5 * j + 1]), t, start_ts, v, rowf, ri)
    first = base[int(spec[5 * j + 3])] == 0.0
    if kind == A_SUM:
        return base[j] + f
    if kind == A_LAST or first:
        return f
    if kind == A_MIN:
        return f if f < base[j] else base[j]
    if kind == A_MAX:
        return f if f > base[j] else base[j]
    return base[j]  # A_FIRST, not the first


@_jit
def _agg_update(P, nd_agg, node, head, step, t, start_ts, v, rowf, ri):
    """``nd_agg[node]``: the aggregates of the match ending at ``head`` (none: the empty
    ones) after one more event, of ``step``."""
    _, _, _, spec, empty, _ = _parts(P)
    base = nd_agg[head] if head >= 0 else empty
    for j in range(nd_agg.shape[1]):
        s = spec[5 * j]
        if s == step or s == -1:
            nd_agg[node, j] = _with_row(j, base, spec, t, start_ts, v, rowf, ri)
        else:
            nd_agg[node, j] = base[j]


@_inline
def _run_program(start, n, code, consts, spec, stack, base, start_ts, t, v, rowf, ri):
    """A condition's program on one (partial match, reading): true or false."""
    sp = 0
    for i in range(start, start + n):
        op = int(code[2 * i])
        arg = int(code[2 * i + 1])
        if op == OP_CONST:
            stack[sp] = consts[arg]
            sp += 1
        elif op == OP_TRUE:
            stack[sp] = 1.0
            sp += 1
        elif op == OP_COL:
            stack[sp] = _field(arg, t, start_ts, v, rowf, ri)
            sp += 1
        elif op == OP_AGG:
            stack[sp] = base[arg]
            sp += 1
        elif op == OP_AGG_ROW:
            stack[sp] = _with_row(arg, base, spec, t, start_ts, v, rowf, ri)
            sp += 1
        elif op == OP_NEG:
            stack[sp - 1] = -stack[sp - 1]
        elif op == OP_ABS:
            stack[sp - 1] += float(start_ts)
        elif op == OP_NOT:
            stack[sp - 1] = 1.0 if stack[sp - 1] == 0.0 else 0.0
        else:
            b = stack[sp - 1]
            a = stack[sp - 2]
            sp -= 1
            if op == OP_ADD:
                r = a + b
            elif op == OP_SUB:
                r = a - b
            elif op == OP_MUL:
                r = a * b
            elif op == OP_DIV:
                if b != 0.0:
                    r = a / b
                elif a == 0.0 or a != a:  # IEEE 754, where Python raises
                    r = np.nan
                else:
                    r = math.copysign(np.inf, a) * math.copysign(1.0, b)
            elif op == OP_LT:
                r = 1.0 if a < b else 0.0
            elif op == OP_LE:
                r = 1.0 if a <= b else 0.0
            elif op == OP_GT:
                r = 1.0 if a > b else 0.0
            elif op == OP_GE:
                r = 1.0 if a >= b else 0.0
            elif op == OP_EQ:
                r = 1.0 if a == b else 0.0
            elif op == OP_NE:
                r = 1.0 if a != b else 0.0
            elif op == OP_AND:
                r = 1.0 if (a != 0.0 and b != 0.0) else 0.0
            elif op == OP_OR:
                r = 1.0 if (a != 0.0 or b != 0.0) else 0.0
            else:
                r = np.nan
            stack[sp - 1] = r
    return stack[0] != 0.0


@_jit
def _holds(k, P, nd_agg, head, start_ts, t, v, rowf, ri):
    """Condition ``k``, whose bit the reading (row ``ri`` of ``rowf``) sets, for a partial
    match (its last event ``head``): its program decides (none: true)."""
    progs, code, consts, spec, empty, stack = _parts(P)
    n = int(progs[2 * k + 1])
    if n == 0:
        return True
    base = nd_agg[head] if head >= 0 else empty
    start = int(progs[2 * k])
    return _run_program(start, n, code, consts, spec, stack, base, start_ts, t, v, rowf, ri)
