"""Pattern conditions: strings -> typed expression trees -> numpy bits or match programs.

A condition is parsed by a small recursive-descent parser (never ``eval``) into
tuples: ``("num", x)``, ``("col", name)`` (``value``, ``quality``, ``sensor_id``,
``ts_ms``), ``("ts",)`` (the reading's ``ts``), ``("const", bool)``, ``("arith", op,
a, b)``, ``("neg", a)``, ``("cmp", op, a, b)``, ``("and", a, b)``, ``("or", a, b)``,
``("not", a)``, and references to the events of the match: ``("agg", kind, step,
field)`` (``kind``: first, last, last1 = the one before the last, sum, min, max,
count; ``step`` a step name, or None for ``previous(field)``: the match's last event
before this reading, of any step). ``resolve`` gives each reference its step's index
and whether the reading itself counts (``("agg", kind, j, field, with_row)``: a
reference to the condition's own step sees the reading as taken, MATCH_RECOGNIZE's
running semantics).

A tree without references (and without ``ts``) is evaluated on a block of rows with
numpy (``condition_bits``). A tree with them is split: its top-level conjuncts
without references become the condition's bit (a cheap filter), the rest a postfix
``Program`` that the NFA kernel runs per (partial match, reading)
(``_cond_kernels``), over the running aggregates each event node carries
(``AggSlots``).

Types: ``num`` (float64), ``bool``, ``time`` (a timestamp in ns: ``ts``, ``A.ts``,
``first(A.ts)``...). ``time - time`` is a ``num`` (exact nanoseconds), ``time +- num``
a ``time``; times compare with times exactly and with numbers as float64.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

COLUMNS = ("value", "quality", "sensor_id", "ts_ms")
FIELDS = ("value", "quality", "ts", "ts_ms")  # of an earlier event
_FUNCS = ("first", "last", "previous", "avg", "sum", "min", "max", "count")
_CMP = {"<", "<=", ">", ">=", "==", "!="}
_TOKEN = re.compile(
    r"\s*(?:(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)|(?P<name>[A-Za-z_]\w*)"
    r"|(?P<op><=|>=|==|!=|<|>|\(|\)|-|\+|\*|/|,|\.))"
)
_MAX_DEPTH = 256  # of a condition's tree: evaluation recurses once per level


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

    def peek(self, ahead: int = 0) -> str | None:
        i = self.i + ahead
        return self.toks[i] if i < len(self.toks) else None

    def take(self, want: str | None = None) -> str:
        tok = self.peek()
        if tok is None:
            raise ValueError("unexpected end of condition")
        if want is not None and tok != want:
            raise ValueError(f"expected {want!r}, got {tok!r}")
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
            node, kind = ("or", _bool(node, kind), _bool(rhs, rkind)), "bool"
        return node, kind

    def and_(self) -> tuple[tuple, str]:
        node, kind = self.not_()
        while self.peek() == "and":
            self.take()
            rhs, rkind = self.not_()
            node, kind = ("and", _bool(node, kind), _bool(rhs, rkind)), "bool"
        return node, kind

    def not_(self) -> tuple[tuple, str]:
        if self.peek() == "not":
            self.take()
            node, kind = self.not_()
            return ("not", _bool(node, kind)), "bool"
        return self.cmp()

    def cmp(self) -> tuple[tuple, str]:
        left, kind = self.sum_()
        parts = []
        while self.peek() in _CMP:
            op = self.take()
            right, rkind = self.sum_()
            parts.append(_compare(op, left, kind, right, rkind))
            left, kind = right, rkind
        if not parts:
            return left, kind
        node: tuple = parts[0]
        for part in parts[1:]:  # chained: 20 <= value < 80
            node = ("and", node, part)
        return node, "bool"

    def sum_(self) -> tuple[tuple, str]:
        node, kind = self.prod()
        while self.peek() in ("+", "-"):
            op = self.take()
            rhs, rkind = self.prod()
            node, kind = _arith(op, node, kind, rhs, rkind)
        return node, kind

    def prod(self) -> tuple[tuple, str]:
        node, kind = self.unary()
        while self.peek() in ("*", "/"):
            op = self.take()
            rhs, rkind = self.unary()
            node, kind = _arith(op, node, kind, rhs, rkind)
        return node, kind

    def unary(self) -> tuple[tuple, str]:
        if self.peek() == "-":
            self.take()
            node, kind = self.unary()
            if kind != "num":
                raise ValueError("'-' negates a number")
            return (("num", -node[1]) if node[0] == "num" else ("neg", node)), "num"
        return self.primary()

    def primary(self) -> tuple[tuple, str]:
        tok = self.take()
        if tok == "(":
            node, kind = self.or_()
            self.take(")")
            return node, kind
        if tok in ("true", "false"):
            return ("const", tok == "true"), "bool"
        if tok in ("nan", "inf"):
            return ("num", float(tok)), "num"
        if tok[0].isdigit() or tok[0] == ".":
            return ("num", float(tok)), "num"
        if not (tok[0].isalpha() or tok[0] == "_"):
            raise ValueError(f"unexpected {tok!r}")
        if tok in COLUMNS and self.peek() != "(":
            return ("col", tok), "num"
        if tok == "ts" and self.peek() != ".":
            return ("ts",), "time"
        if tok in _FUNCS and self.peek() == "(":
            return self.function(tok)
        if self.peek() == ".":  # A.value: the last A's value
            step, fld = self.reference(tok)
            return ("agg", "last", step, fld), _field_kind(fld)
        raise ValueError(
            f"unknown column {tok!r} (known: {', '.join(COLUMNS)}, ts; or STEP.field, "
            f"first/last/previous/avg/sum/min/max/count(...))"
        )

    def reference(self, step: str) -> tuple[str, str]:
        self.take(".")
        fld = self.take()
        if fld not in FIELDS:
            raise ValueError(f"{step}.{fld}: an event's field is one of {', '.join(FIELDS)}")
        return step, fld

    def function(self, name: str) -> tuple[tuple, str]:
        self.take("(")
        if name == "previous":
            fld = self.take()
            if fld not in FIELDS:
                raise ValueError(f"previous({fld}): the field is one of {', '.join(FIELDS)}")
            self.take(")")
            return ("agg", "last", None, fld), _field_kind(fld)
        step = self.take()
        if not (step[0].isalpha() or step[0] == "_"):
            raise ValueError(f"{name}(...) takes a step, e.g. {name}(A.value)")
        if name == "count":
            if self.peek() == ".":
                self.reference(step)
            self.take(")")
            return ("agg", "count", step, None), "num"
        _, fld = self.reference(step)
        kind = "last"
        if name == "last" and self.peek() == ",":
            self.take(",")
            back = self.take()
            if back not in ("0", "1"):
                raise ValueError("last(A.field, n): n is 0 (the last) or 1 (the one before)")
            kind = "last1" if back == "1" else "last"
        elif name != "last":
            kind = name
        self.take(")")
        if fld == "ts" and name in ("avg", "sum"):
            raise ValueError(f"{name}(...) of ts: sum and avg are of numbers")
        if name == "avg":
            total = ("agg", "sum", step, fld)
            return ("arith", "/", total, ("agg", "count", step, None)), "num"
        return ("agg", kind, step, fld), _field_kind(fld)


def _field_kind(fld: str) -> str:
    return "time" if fld == "ts" else "num"


def _bool(node: tuple, kind: str) -> tuple:
    if kind != "bool":
        raise ValueError("'and'/'or'/'not' need comparisons, not bare numbers or columns")
    return node


def _compare(op: str, a: tuple, ka: str, b: tuple, kb: str) -> tuple:
    if "bool" in (ka, kb):
        raise ValueError("a comparison needs numbers or columns on both sides")
    if ka != kb:  # a time against a number: as float64 nanoseconds since the epoch
        a = ("abs", a) if ka == "time" else a
        b = ("abs", b) if kb == "time" else b
    return ("cmp", op, a, b)


def _arith(op: str, a: tuple, ka: str, b: tuple, kb: str) -> tuple[tuple, str]:
    if "bool" in (ka, kb):
        raise ValueError(f"'{op}' needs numbers, not comparisons")
    if ka == kb == "num":
        return ("arith", op, a, b), "num"
    if op == "-" and ka == kb == "time":
        return ("arith", "-", a, b), "num"
    if op in "+-" and ka == "time" and kb == "num":
        return ("arith", op, a, b), "time"
    if op == "+" and ka == "num" and kb == "time":
        return ("arith", "+", b, a), "time"
    raise ValueError(
        f"'{op}' of a time and a {'time' if ka == kb else 'number'}: only ts - ts, ts +- n"
    )


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


def resolve(tree: tuple, owner: int, steps: dict[str, int], positive: set[int]) -> tuple:
    """``tree`` with each reference's step name replaced by its index and whether the
    reading counts (the reference is to ``owner``, the condition's own step).
    References are to positive steps up to ``owner``."""
    tag = tree[0]
    if tag == "agg":
        _, kind, name, fld = tree
        if name is None:
            return ("agg", kind, -1, fld, False)
        j = steps.get(name)
        if j is None:
            raise ValueError(
                f"no step named {name!r} at or before this one (a condition refers to its "
                "own step and earlier positive ones)"
            )
        if j > owner or j not in positive:
            raise ValueError(
                f"{name!r} is a later step or a negation: a condition refers to its own "
                "step and earlier positive ones"
            )
        return ("agg", kind, j, fld, j == owner)
    if tag in ("num", "col", "ts", "const"):
        return tree
    return (
        tag,
        *(resolve(c, owner, steps, positive) if isinstance(c, tuple) else c for c in tree[1:]),
    )


def to_text(node: tuple) -> str:
    """A canonical string of a tree (distinct conditions share one bit)."""
    tag = node[0]
    if tag == "num":
        return repr(node[1])
    if tag == "col":
        return node[1]
    if tag == "ts":
        return "ts"
    if tag == "const":
        return "true" if node[1] else "false"
    if tag == "agg":
        return "agg(" + ",".join(map(str, node[1:])) + ")"
    if tag in ("cmp", "arith"):
        return f"({to_text(node[2])} {node[1]} {to_text(node[3])})"
    if tag in ("not", "neg", "abs"):
        return f"({tag} {to_text(node[1])})"
    return f"({to_text(node[1])} {tag} {to_text(node[2])})"


def refers(node: tuple) -> bool:
    """Whether ``node`` needs the match (a reference to its events, or ``ts``)."""
    if node[0] in ("agg", "ts"):
        return True
    return any(refers(c) for c in node[1:] if isinstance(c, tuple))


def split(tree: tuple) -> tuple[tuple, tuple | None]:
    """``(row part, match part)``: the top-level conjuncts without references, and the
    rest (None: the whole tree is of the row)."""
    if not refers(tree):
        return tree, None
    parts: list[tuple] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if node[0] == "and":
            stack += [node[2], node[1]]
        else:
            parts.append(node)
    row = [p for p in parts if not refers(p)]
    rest = [p for p in parts if refers(p)]
    return _conj(row) if row else ("const", True), _conj(rest)


def _conj(parts: list[tuple]) -> tuple:
    node = parts[0]
    for p in parts[1:]:
        node = ("and", node, p)
    return node


_NP_CMP = {
    "<": np.less,
    "<=": np.less_equal,
    ">": np.greater,
    ">=": np.greater_equal,
    "==": np.equal,
    "!=": np.not_equal,
}
_NP_ARITH = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide}


def evaluate(node: tuple, cols: dict[str, np.ndarray], n: int):
    """Vectorised value of a tree without references over ``n`` rows."""
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
    if tag == "arith":
        with np.errstate(all="ignore"):
            return _NP_ARITH[node[1]](evaluate(node[2], cols, n), evaluate(node[3], cols, n))
    if tag == "neg":
        return -evaluate(node[1], cols, n)
    if tag == "not":
        return ~evaluate(node[1], cols, n)
    a, b = evaluate(node[1], cols, n), evaluate(node[2], cols, n)
    return (a & b) if tag == "and" else (a | b)


def condition_bits(trees: list[tuple], cols: dict[str, np.ndarray], n: int) -> np.ndarray:
    """Bit ``k`` of row ``i`` is (the row part of) condition ``k`` on row ``i`` (uint64
    viewed as int64)."""
    bits = np.zeros(n, np.uint64)
    for k, tree in enumerate(trees):
        bits |= evaluate(tree, cols, n).astype(np.uint64) << np.uint64(k)
    return bits.view(np.int64)


# ------------------------------------------------------------- match programs

# Aggregate kinds of an ``AggSlots`` slot; fields (``F_*``) of an event / reading.
A_COUNT, A_SUM, A_MIN, A_MAX, A_FIRST, A_LAST, A_LAST1 = range(7)
_KINDS = {"count": 0, "sum": 1, "min": 2, "max": 3, "first": 4, "last": 5, "last1": 6}
F_VALUE, F_QUALITY, F_SID, F_TS, F_TS_MS = range(5)
_FIELD = {"value": F_VALUE, "quality": F_QUALITY, "sensor_id": F_SID, "ts": F_TS, "ts_ms": F_TS_MS}
# Program opcodes (``code[i] = (op, arg)``).
(
    OP_CONST, OP_COL, OP_AGG, OP_AGG_ROW, OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_NEG, OP_ABS,
    OP_LT, OP_LE, OP_GT, OP_GE, OP_EQ, OP_NE, OP_AND, OP_OR, OP_NOT, OP_TRUE,
) = range(20)  # fmt: skip
_OPS = {"+": OP_ADD, "-": OP_SUB, "*": OP_MUL, "/": OP_DIV, "<": OP_LT, "<=": OP_LE}
_OPS |= {">": OP_GT, ">=": OP_GE, "==": OP_EQ, "!=": OP_NE, "and": OP_AND, "or": OP_OR}


@dataclass
class AggSlots:
    """The running aggregates an event node carries: one slot per (step, field, kind)
    referenced, plus each step's count (and last, for last1). ``spec`` rows: step (-1:
    any), field, kind, the slot of the step's count, of its last (for last1)."""

    keys: list[tuple[int, int, int]] = field(default_factory=list)

    def slot(self, step: int, fld: int, kind: int) -> int:
        if kind != A_COUNT:
            self.slot(step, -1, A_COUNT)
        if kind == A_LAST1:
            self.slot(step, fld, A_LAST)
        key = (step, -1 if kind == A_COUNT else fld, kind)
        if key not in self.keys:
            self.keys.append(key)
        return self.keys.index(key)

    def spec(self) -> np.ndarray:
        out = np.full((len(self.keys), 5), -1, np.int64)
        for j, (step, fld, kind) in enumerate(self.keys):
            out[j, :3] = step, fld, kind
            out[j, 3] = self.keys.index((step, -1, A_COUNT))
            if kind == A_LAST1:
                out[j, 4] = self.keys.index((step, fld, A_LAST))
        return out

    def empty(self) -> np.ndarray:
        """The aggregates of no event: counts and sums 0, the rest NaN."""
        return np.array([0.0 if k[2] in (A_COUNT, A_SUM) else np.nan for k in self.keys])


def program(tree: tuple, aggs: AggSlots, consts: list[float]) -> list[tuple[int, int]]:
    """The postfix code of a resolved tree (its slots added to ``aggs``)."""
    out: list[tuple[int, int]] = []

    def emit(node: tuple) -> None:
        tag = node[0]
        if tag == "num":
            consts.append(node[1])
            out.append((OP_CONST, len(consts) - 1))
        elif tag == "const":
            out.append((OP_TRUE, 0) if node[1] else (OP_CONST, _const(consts, 0.0)))
        elif tag == "col":
            out.append((OP_COL, _FIELD[node[1]]))
        elif tag == "ts":
            out.append((OP_COL, F_TS))
        elif tag == "agg":
            _, kind, step, fld, with_row = node
            j = aggs.slot(step, _FIELD[fld] if fld else -1, _KINDS[kind])
            out.append((OP_AGG_ROW if with_row else OP_AGG, j))
        elif tag in ("neg", "abs", "not"):
            emit(node[1])
            out.append(({"neg": OP_NEG, "abs": OP_ABS, "not": OP_NOT}[tag], 0))
        elif tag in ("cmp", "arith"):
            emit(node[2])
            emit(node[3])
            out.append((_OPS[node[1]], 0))
        else:  # and / or
            emit(node[1])
            emit(node[2])
            out.append((_OPS[tag], 0))

    emit(tree)
    return out


def _const(consts: list[float], x: float) -> int:
    consts.append(x)
    return len(consts) - 1
