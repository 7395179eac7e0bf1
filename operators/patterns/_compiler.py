"""Pattern compilation: steps -> NFA tables (conditions: ``_conditions``).

The NFA (see ``docs/operators/patterns.md`` for the semantics) has one state per
(positive step ``j``, events taken so far ``c``), one "not next" check state per
``not_next`` guard and one trailing state for a trailing negation. ``Nfa.table``
holds one row of ``T_*`` columns per state; ``FINAL`` (-1) is the accepting state.
Each condition is a bit of the rows' condition mask (``condition_bits``) and, when it
refers to earlier events of the match, a program (``Conditions``) the kernel runs
once that bit is set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

import numpy as np

from telepipe.errors import ConfigError
from telepipe.operators.patterns._conditions import (
    COLUMNS,
    AggSlots,
    condition_bits,
    evaluate,
    parse_condition,
    program,
    resolve,
    split,
    to_text,
)

__all__ = ["COLUMNS", "condition_bits", "evaluate", "parse_condition", "to_text"]
_MAX_TIMES = 1024  # n and m of times(n, m): each repetition is NFA states

# ------------------------------------------------------------------ steps

CONTIGUITIES = ("begin", "next", "followed_by", "followed_by_any", "not_next", "not_followed_by")
NEGATIONS = ("not_next", "not_followed_by")
_QUANT = re.compile(
    r"^\s*(?:(?P<once>once)|(?P<oom>one_or_more)|times\s*\(\s*(?P<n>\d+)\s*(?:,\s*(?P<m>\d+)\s*)?\)"
    r"|times_or_more\s*\(\s*(?P<k>\d+)\s*\))\s*$"
)
INF = -1


def parse_quantifier(text: str) -> tuple[int, int]:
    """``(min, max)`` of ``once | times(n) | times(n, m) | one_or_more | times_or_more(n)``;
    ``max == INF`` (-1) for unbounded."""
    m = _QUANT.match(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(
            f"quantifier {text!r} is not once, times(n), times(n, m), one_or_more "
            "or times_or_more(n)"
        )
    if m.group("once"):
        return 1, 1
    if m.group("oom"):
        return 1, INF
    if m.group("k") is not None:
        lo = int(m.group("k"))
        if not 1 <= lo <= _MAX_TIMES:
            raise ValueError(f"times_or_more(n) needs 1 <= n <= {_MAX_TIMES}")
        return lo, INF
    lo = int(m.group("n"))
    hi = int(m.group("m")) if m.group("m") is not None else lo
    if lo < 1 or hi < lo:
        raise ValueError(f"times(n, m) needs 1 <= n <= m, got {text!r}")
    if hi > _MAX_TIMES:
        raise ValueError(f"times(n, m) needs n, m <= {_MAX_TIMES}, got {text!r}")
    return lo, hi


@dataclass(frozen=True)
class Element:
    """A positive step: condition bit, occurrences, contiguity before / between events."""

    step: int  # index in the user's steps (names the events it takes)
    cond: int
    lo: int
    hi: int  # INF for unbounded
    strict_before: bool
    strict_inner: bool
    guard: str = ""  # "", "not_next" or "not_followed_by" (into this element)
    guard_cond: int = -1
    greedy: bool = False
    # After a greedy element (FlinkCEP's updateWithGreedyCondition): the first event of
    # this element is taken on ``first_cond`` (its condition and not the greedy one's)
    # and a relaxed wait for it is not kept on a reading meeting ``no_ignore`` (the
    # greedy condition). -1: as ``cond`` / always kept.
    first_cond: int = -1
    no_ignore: int = -1
    any_before: bool = False  # followed_by_any: a reading taken is also skipped


# Columns of Nfa.table.
T_KIND, T_TAKE, T_TO, T_FIN, T_STRICT, T_PROCEED, T_NEXT, T_KILL, T_STEP, T_NOIGN, T_ANY = range(11)
K_NORMAL, K_NOTNEXT, K_TRAIL_NN, K_TRAIL_NFB = range(4)
FINAL = -1


@dataclass
class Nfa:
    elements: list[Element]
    trailing: str  # "", "not_next", "not_followed_by"
    trailing_cond: int
    table: np.ndarray  # int64 [n_states, 11]
    names: list[str]  # state names, for debugging and docs


def compile_nfa(elements: list[Element], trailing: str, trailing_cond: int) -> Nfa:
    """The transition table of the pattern (validated by the caller)."""
    index: dict[tuple, int] = {}
    names: list[str] = []

    def add(key: tuple) -> None:
        index[key] = len(names)
        names.append("/".join(map(str, key)))

    tops = []
    for j, el in enumerate(elements):
        if el.guard == "not_next":
            add(("N", j))
        top = el.hi - 1 if el.hi != INF else max(el.lo, 1)
        tops.append(top)
        for c in range(top + 1):
            add(("S", j, c))
    if trailing:
        add(("T",))

    def entry(j: int) -> int:
        if j == len(elements):
            return index[("T",)] if trailing else FINAL
        return index[("N", j)] if elements[j].guard == "not_next" else index[("S", j, 0)]

    def reaches_final(state: int) -> bool:
        if state == FINAL:
            return True
        key = next(k for k, v in index.items() if v == state)
        if key[0] != "S":
            return False
        j, c = key[1], key[2]
        return c >= elements[j].lo and reaches_final(entry(j + 1))

    table = np.full((len(names), 11), -1, np.int64)
    for key, s in index.items():
        row = table[s]
        row[T_FIN] = row[T_STRICT] = row[T_PROCEED] = 0
        if key[0] == "N":
            j = key[1]
            row[T_KIND] = K_NOTNEXT
            row[T_KILL] = elements[j].guard_cond
            row[T_NEXT] = index[("S", j, 0)]
            continue
        if key[0] == "T":
            row[T_KIND] = K_TRAIL_NN if trailing == "not_next" else K_TRAIL_NFB
            row[T_KILL] = trailing_cond
            continue
        j, c = key[1], key[2]
        el = elements[j]
        row[T_KIND] = K_NORMAL
        row[T_TAKE] = el.first_cond if c == 0 and el.first_cond >= 0 else el.cond
        row[T_ANY] = int(c == 0 and el.any_before)
        if c == 0:
            row[T_NOIGN] = el.no_ignore
        row[T_STEP] = el.step
        if el.hi == INF:
            row[T_TO] = index[("S", j, min(c + 1, tops[j]))]
        else:
            row[T_TO] = index[("S", j, c + 1)] if c + 1 < el.hi else entry(j + 1)
        row[T_FIN] = int(row[T_TO] != FINAL and reaches_final(int(row[T_TO])))
        row[T_STRICT] = int(el.strict_before if c == 0 else el.strict_inner)
        if c >= el.lo:
            row[T_PROCEED] = 1
            row[T_NEXT] = entry(j + 1)
        if c == 0 and el.guard == "not_followed_by":
            row[T_KILL] = el.guard_cond
    return Nfa(elements, trailing, trailing_cond, table, names)


def max_events(elements: list[Element], cap: int) -> int:
    """Most events a match can hold: the pattern's bound, or ``cap`` if unbounded/larger."""
    if any(el.hi == INF for el in elements):
        return cap
    return min(cap, sum(el.hi for el in elements))


@dataclass
class Conditions:
    """What the kernel needs to decide a condition that refers to the match: per
    condition ``k`` its program's ``(start, length)`` in ``code`` (length 0: its bit
    decides), the constants, the aggregate slots (``AggSlots.spec``) and their empty
    values; ``mask``: the bits of conditions with a program."""

    progs: np.ndarray  # int64 [n_conditions, 2]
    code: np.ndarray  # int64 [n, 2]: (op, arg)
    consts: np.ndarray  # float64
    spec: np.ndarray  # int64 [n_aggs, 5]
    empty: np.ndarray  # float64 [n_aggs]
    mask: int

    @property
    def any(self) -> bool:
        return self.mask != 0

    def kernel_args(self) -> tuple[np.ndarray, np.ndarray]:
        """What the kernels take (``_cond_kernels``): ``P``, all of it in one float64
        array (header, progs, code, consts, spec, empty, a stack for the longest
        program), and the mask (uint64[1])."""
        depth = max(1, len(self.code))
        header = [len(self.progs), len(self.code), len(self.consts), len(self.spec), depth]
        parts = [
            np.array(header, np.float64),
            self.progs.ravel().astype(np.float64),
            self.code.ravel().astype(np.float64),
            self.consts,
            self.spec.ravel().astype(np.float64),
            self.empty,
            np.zeros(depth),
        ]
        return np.concatenate(parts), np.array([self.mask], np.uint64)


@dataclass
class Compiled:
    nfa: Nfa
    trees: list[tuple]  # per condition, its part of the row alone (its bit)
    names: list[str] = field(default_factory=list)
    conditions: Conditions | None = None
    uses: frozenset[str] = frozenset()  # columns the row parts read


def _conditions(full: list[tuple]) -> tuple[list[tuple], Conditions]:
    aggs = AggSlots()
    consts: list[float] = []
    code: list[tuple[int, int]] = []
    progs = np.zeros((len(full), 2), np.int64)
    rows, mask = [], 0
    for k, tree in enumerate(full):
        row, rest = split(tree)
        rows.append(row)
        if rest is not None:
            part = program(rest, aggs, consts)
            progs[k] = len(code), len(part)
            code += part
            mask |= 1 << k
    cond = Conditions(
        progs,
        np.array(code, np.int64).reshape(-1, 2),
        np.array(consts, np.float64),
        aggs.spec(),
        aggs.empty(),
        mask,
    )
    return rows, cond


def _columns(node: tuple) -> set[str]:
    out = {node[1]} if node[0] == "col" else set()
    for c in node[1:]:
        if isinstance(c, tuple):
            out |= _columns(c)
    return out


def compile_steps(steps: tuple, within_ms: int | None) -> Compiled:
    """Validate ``PatternStep`` s (one-line ``ConfigError`` naming the step) and compile them."""
    texts: dict[str, int] = {}
    trees: list[tuple] = []
    elements: list[Element] = []
    guard: tuple[str, int] | None = None
    seen: dict[str, int] = {}
    positive: set[int] = set()
    for i, st in enumerate(steps):
        owner = f"CepPattern.steps[{i}] ({st.name!r})"
        if not isinstance(st.name, str) or not st.name or st.name in seen:
            raise ConfigError(f"{owner}.name must be a unique non-empty string")
        seen[st.name] = i
        if st.contiguity not in NEGATIONS:
            positive.add(i)
        try:
            tree = resolve(parse_condition(st.condition), i, seen, positive)
        except ValueError as error:
            shown = repr(st.condition)
            shown = shown if len(shown) <= 80 else shown[:60] + f"... ({len(shown)} chars)"
            raise ConfigError(f"{owner}.condition {shown}: {error}") from None
        try:
            lo, hi = parse_quantifier(st.quantifier)
        except ValueError as error:
            raise ConfigError(f"{owner}.quantifier: {error}") from None
        for flag in ("optional", "consecutive", "greedy"):
            if not isinstance(getattr(st, flag), bool):
                raise ConfigError(f"{owner}.{flag} must be true or false")
        if st.contiguity not in CONTIGUITIES:
            raise ConfigError(
                f"{owner}.contiguity must be one of {', '.join(CONTIGUITIES)}, "
                f"got {st.contiguity!r}"
            )
        if (i == 0) != (st.contiguity == "begin"):
            raise ConfigError(f"{owner}.contiguity: the first step and only it is 'begin'")
        key = to_text(tree)
        if key not in texts:
            if len(texts) == 64:
                raise ConfigError(f"{owner}: at most 64 distinct conditions per pattern")
            texts[key] = len(trees)
            trees.append(tree)
        cond = texts[key]
        if st.contiguity in NEGATIONS:
            if (lo, hi) != (1, 1) or st.optional or st.consecutive or st.greedy:
                raise ConfigError(f"{owner}: a {st.contiguity} step takes no quantifier")
            if guard is not None:
                raise ConfigError(f"{owner}: two negations in a row")
            prev = elements[-1]
            if prev.lo != prev.hi:
                raise ConfigError(
                    f"{owner}: a negation must follow a step with a fixed count "
                    "(not optional, times(n, m), one_or_more)"
                )
            guard = (st.contiguity, cond)
            continue
        # FlinkCEP: greedy changes a loop or times(n, m) (n < m), never a fixed count,
        # optional or not (``B?`` written greedy stays as B? reluctant)
        greedy = st.greedy and lo != hi
        if st.optional:
            lo = 0
        if guard is not None and lo == 0:
            raise ConfigError(f"{owner}: the step after a negation cannot be optional")
        elements.append(
            Element(
                step=i,
                cond=cond,
                lo=lo,
                hi=hi,
                strict_before=st.contiguity == "next",
                any_before=st.contiguity == "followed_by_any",
                strict_inner=st.consecutive,
                guard=guard[0] if guard else "",
                guard_cond=guard[1] if guard else -1,
                greedy=greedy,
            )
        )
        guard = None
    for i, st in enumerate(steps):
        if not st.greedy:
            continue
        after = steps[i + 1] if i + 1 < len(steps) else None
        if after is None or after.contiguity in NEGATIONS:
            raise ConfigError(
                f"CepPattern.steps[{i}] ({st.name!r}): a greedy step needs a following "
                "positive step (it decides when the loop may stop)"
            )
    for k in range(1, len(elements)):
        prev = elements[k - 1]
        if not prev.greedy:
            continue
        tree = ("and", trees[elements[k].cond], ("not", trees[prev.cond]))
        key = to_text(tree)
        if key not in texts:
            if len(texts) == 64:
                raise ConfigError("CepPattern: at most 64 distinct conditions per pattern")
            texts[key] = len(trees)
            trees.append(tree)
        elements[k] = replace(elements[k], first_cond=texts[key], no_ignore=prev.cond)
    if guard is not None and guard[0] == "not_followed_by" and within_ms is None:
        raise ConfigError(
            f"CepPattern.steps[{len(steps) - 1}] ({steps[-1].name!r}): a pattern ending "
            "in not_followed_by needs within_ms"
        )
    trailing, trailing_cond = guard if guard is not None else ("", -1)
    nfa = compile_nfa(elements, trailing, trailing_cond)
    rows, conditions = _conditions(trees)
    uses = frozenset(set().union(*(_columns(t) for t in rows)))
    return Compiled(nfa, rows, [st.name for st in steps], conditions, uses)


def idle_rows_do_nothing(tab: np.ndarray) -> bool:
    """Whether a row meeting no condition leaves a sensor with no partial match as it
    is: the start state's walk (as ``_pattern_kernels._walk``) takes nothing and
    reaches no trailing negation."""
    cur = 0
    while cur >= 0:
        kind = tab[cur, T_KIND]
        if kind == K_NOTNEXT:
            cur = int(tab[cur, T_NEXT])
            continue
        if kind in (K_TRAIL_NN, K_TRAIL_NFB):
            return False
        if tab[cur, T_PROCEED] != 1:
            return True
        cur = int(tab[cur, T_NEXT])
    return True
