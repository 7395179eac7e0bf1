"""Pattern compilation: condition strings -> expression trees, steps -> NFA tables.

Conditions are parsed by a small recursive-descent parser (never ``eval``) into
tuples: ``("num", x)``, ``("col", name)``, ``("const", bool)``, ``("cmp", op, a, b)``,
``("and", a, b)``, ``("or", a, b)``, ``("not", a)``. ``condition_bits`` evaluates
every distinct condition of a pattern on a block of rows with numpy and packs the
results as one ``uint64`` bit mask per row, the input of the NFA kernel.

The NFA (see ``docs/operators/patterns.md`` for the semantics) has one state per
(positive step ``j``, events taken so far ``c``), one "not next" check state per
``not_next`` guard and one trailing state for a trailing negation. ``Nfa.table``
holds one row of ``T_*`` columns per state; ``FINAL`` (-1) is the accepting state.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

import numpy as np

from telepipe.errors import ConfigError

COLUMNS = ("value", "quality", "sensor_id")
_CMP = {"<", "<=", ">", ">=", "==", "!="}
_TOKEN = re.compile(
    r"\s*(?:(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)|(?P<name>[A-Za-z_]\w*)"
    r"|(?P<op><=|>=|==|!=|<|>|\(|\)|-))"
)

# ------------------------------------------------------------- conditions


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"unexpected {text[pos:].strip()[:12]!r}")
        out.append(m.group(m.lastgroup))  # type: ignore[arg-type]
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> str | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> str:
        tok = self.peek()
        if tok is None:
            raise ValueError("unexpected end of condition")
        self.i += 1
        return tok

    def parse(self) -> tuple:
        node, kind = self.or_()
        if self.peek() is not None:
            raise ValueError(f"unexpected {self.peek()!r}")
        if kind != "bool":
            raise ValueError("a condition must compare, e.g. 'value > 80'")
        return node

    def or_(self) -> tuple[tuple, str]:
        node, kind = self.and_()
        while self.peek() == "or":
            self.take()
            rhs, rkind = self.and_()
            node = ("or", _bool(node, kind), _bool(rhs, rkind))
            kind = "bool"
        return node, kind

    def and_(self) -> tuple[tuple, str]:
        node, kind = self.not_()
        while self.peek() == "and":
            self.take()
            rhs, rkind = self.not_()
            node = ("and", _bool(node, kind), _bool(rhs, rkind))
            kind = "bool"
        return node, kind

    def not_(self) -> tuple[tuple, str]:
        if self.peek() == "not":
            self.take()
            node, kind = self.not_()
            return ("not", _bool(node, kind)), "bool"
        return self.cmp()

    def cmp(self) -> tuple[tuple, str]:
        left, kind = self.primary()
        parts = []
        while self.peek() in _CMP:
            op = self.take()
            right, rkind = self.primary()
            parts.append(("cmp", op, _num(left, kind), _num(right, rkind)))
            left, kind = right, rkind
        if not parts:
            return left, kind
        node: tuple = parts[0]
        for part in parts[1:]:  # chained: 20 <= value < 80
            node = ("and", node, part)
        return node, "bool"

    def primary(self) -> tuple[tuple, str]:
        tok = self.take()
        if tok == "(":
            node, kind = self.or_()
            if self.take() != ")":
                raise ValueError("expected ')'")
            return node, kind
        if tok == "-":
            node, kind = self.primary()
            if node[0] != "num":
                raise ValueError("'-' only negates a number")
            return ("num", -node[1]), "num"
        if tok in ("true", "false"):
            return ("const", tok == "true"), "bool"
        if tok in ("nan", "inf"):
            return ("num", float(tok)), "num"
        if tok in COLUMNS:
            return ("col", tok), "num"
        if tok[0].isdigit() or tok[0] == ".":
            return ("num", float(tok)), "num"
        if tok[0].isalpha() or tok[0] == "_":
            raise ValueError(f"unknown column {tok!r} (known: {', '.join(COLUMNS)})")
        raise ValueError(f"unexpected {tok!r}")


def _bool(node: tuple, kind: str) -> tuple:
    if kind != "bool":
        raise ValueError("'and'/'or'/'not' need comparisons, not bare numbers or columns")
    return node


def _num(node: tuple, kind: str) -> tuple:
    if kind != "num":
        raise ValueError("a comparison needs numbers or columns on both sides")
    return node


_MAX_DEPTH = 256  # of a condition's tree: evaluation recurses once per level
_MAX_TIMES = 1024  # n and m of times(n, m): each repetition is NFA states


def parse_condition(text: str) -> tuple:
    """The expression tree of a condition string; ``ValueError`` saying what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("a condition must be a non-empty string")
    deep = f"it is nested too deeply (at most {_MAX_DEPTH} levels)"
    try:
        tree = _Parser(text).parse()
    except RecursionError:
        raise ValueError(deep) from None
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > _MAX_DEPTH:
            raise ValueError(deep)
        stack.extend((child, depth + 1) for child in node[1:] if isinstance(child, tuple))
    return tree


def to_text(node: tuple) -> str:
    """A canonical string of a tree (distinct conditions share one bit)."""
    tag = node[0]
    if tag == "num":
        return repr(node[1])
    if tag in ("col",):
        return node[1]
    if tag == "const":
        return "true" if node[1] else "false"
    if tag == "cmp":
        return f"({to_text(node[2])} {node[1]} {to_text(node[3])})"
    if tag == "not":
        return f"(not {to_text(node[1])})"
    return f"({to_text(node[1])} {tag} {to_text(node[2])})"


_NP_CMP = {
    "<": np.less,
    "<=": np.less_equal,
    ">": np.greater,
    ">=": np.greater_equal,
    "==": np.equal,
    "!=": np.not_equal,
}


def evaluate(node: tuple, cols: dict[str, np.ndarray], n: int):
    """Vectorised value of a tree over ``n`` rows (a bool array, or a scalar/array number)."""
    tag = node[0]
    if tag == "num":
        return node[1]
    if tag == "col":
        return cols[node[1]]
    if tag == "const":
        return np.full(n, node[1])
    if tag == "cmp":
        a, b = evaluate(node[2], cols, n), evaluate(node[3], cols, n)
        return np.broadcast_to(_NP_CMP[node[1]](a, b), (n,))
    if tag == "not":
        return ~evaluate(node[1], cols, n)
    a, b = evaluate(node[1], cols, n), evaluate(node[2], cols, n)
    return (a & b) if tag == "and" else (a | b)


def condition_bits(trees: list[tuple], cols: dict[str, np.ndarray], n: int) -> np.ndarray:
    """Bit ``k`` of row ``i`` is condition ``k`` on row ``i`` (uint64 view as int64)."""
    bits = np.zeros(n, np.uint64)
    for k, tree in enumerate(trees):
        bits |= evaluate(tree, cols, n).astype(np.uint64) << np.uint64(k)
    return bits.view(np.int64)


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
class Compiled:
    nfa: Nfa
    trees: list[tuple]
    names: list[str] = field(default_factory=list)


def compile_steps(steps: tuple, within_ms: int | None) -> Compiled:
    """Validate ``PatternStep`` s (one-line ``ConfigError`` naming the step) and compile them."""
    texts: dict[str, int] = {}
    trees: list[tuple] = []
    elements: list[Element] = []
    guard: tuple[str, int] | None = None
    seen: set[str] = set()
    for i, st in enumerate(steps):
        owner = f"CepPattern.steps[{i}] ({st.name!r})"
        if not isinstance(st.name, str) or not st.name or st.name in seen:
            raise ConfigError(f"{owner}.name must be a unique non-empty string")
        seen.add(st.name)
        try:
            tree = parse_condition(st.condition)
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
    return Compiled(nfa, trees, [st.name for st in steps])


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
