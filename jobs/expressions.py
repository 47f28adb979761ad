"""Spark SQL label and filter expressions, translated for the direct path. No Spark, no I/O.

The direct path evaluates the common expressions (column references, numeric literals,
comparisons, AND/OR/NOT, arithmetic, CAST) with pyarrow.compute after translating them here;
anything else sends the job down the Spark path, where Spark itself evaluates the expression.
"""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.compute as pc

_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+\.\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|\d+(?:[eE][-+]?\d+)?)"
    r"|`(?P<quoted>(?:[^`]|``)+)`|(?P<word>[A-Za-z_][A-Za-z_0-9]*)"
    r"|(?P<op><=>|==|!=|<>|<=|>=|[-+*/()<>=,])|(?P<other>\S))"
)
_CASTS = {
    "FLOAT": pa.float32(),
    "REAL": pa.float32(),
    "DOUBLE": pa.float64(),
    "INT": pa.int32(),
    "INTEGER": pa.int32(),
    "BIGINT": pa.int64(),
    "LONG": pa.int64(),
    "SMALLINT": pa.int16(),
    "TINYINT": pa.int8(),
    "BOOLEAN": pa.bool_(),
}
_COMPARE = {
    "=": pc.equal,
    "==": pc.equal,
    "!=": pc.not_equal,
    "<>": pc.not_equal,
    "<": pc.less,
    "<=": pc.less_equal,
    ">": pc.greater,
    ">=": pc.greater_equal,
}


class Untranslatable(Exception):
    """The expression needs Spark; the message says which part."""


def _tokens(text: str) -> list[tuple[str, str]]:
    out = []
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup
        if kind is None:
            continue
        value = m.group(kind)
        if kind == "other":
            raise Untranslatable(f"character {value!r}")
        if kind == "quoted":
            kind, value = "name", value.replace("``", "`")
        elif kind == "word":
            kind = "name"
        out.append((kind, value))
    return out


class _Parser:
    """Recursive descent over the small Spark SQL subset the direct path evaluates."""

    def __init__(self, text: str):
        self.toks = _tokens(text)
        self.i = 0
        self.columns: list[str] = []

    def peek(self, *values: str) -> bool:
        if self.i < len(self.toks):
            kind, v = self.toks[self.i]
            return (v.upper() if kind == "name" else v) in values
        return False

    def take(self):
        if self.i >= len(self.toks):
            raise Untranslatable("an incomplete expression")
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def expect(self, value: str) -> None:
        kind, v = self.take()
        if (v.upper() if kind == "name" else v) != value:
            raise Untranslatable(f"{v!r} where {value!r} was expected")

    def parse(self):
        expr = self.or_()
        if self.i != len(self.toks):
            raise Untranslatable(f"{self.toks[self.i][1]!r}")
        return expr

    def or_(self):
        e = self.and_()
        while self.peek("OR"):
            self.take()
            e = pc.or_kleene(e, self.and_())
        return e

    def and_(self):
        e = self.not_()
        while self.peek("AND"):
            self.take()
            e = pc.and_kleene(e, self.not_())
        return e

    def not_(self):
        if self.peek("NOT"):
            self.take()
            return pc.invert(self.not_())
        return self.cmp()

    def cmp(self):
        e = self.add()
        if self.peek(*_COMPARE):
            op = self.take()[1]
            e = _COMPARE[op](e, self.add())
        return e

    def add(self):
        e = self.mul()
        while self.peek("+", "-"):
            op = self.take()[1]
            e = (pc.add_checked if op == "+" else pc.subtract_checked)(e, self.mul())
        return e

    def mul(self):
        e = self.unary()
        while self.peek("*", "/"):
            op = self.take()[1]
            rhs = self.unary()
            if op == "*":
                e = pc.multiply_checked(e, rhs)
            else:  # Spark's / is always fractional
                e = pc.divide(e.cast(pa.float64()), rhs.cast(pa.float64()))
        return e

    def unary(self):
        if self.peek("-"):
            self.take()
            return pc.negate_checked(self.unary())
        return self.primary()

    def primary(self):
        kind, v = self.take()
        if kind == "num":
            is_int = re.fullmatch(r"\d+", v) is not None
            return pc.scalar(int(v) if is_int else float(v))
        if v == "(":
            e = self.or_()
            self.expect(")")
            return e
        if kind == "name":
            upper = v.upper()
            if upper in ("TRUE", "FALSE"):
                return pc.scalar(upper == "TRUE")
            if upper == "CAST" and self.peek("("):
                self.take()
                e = self.or_()
                self.expect("AS")
                _, t = self.take()
                if t.upper() not in _CASTS:
                    raise Untranslatable(f"CAST to {t}")
                self.expect(")")
                return e.cast(_CASTS[t.upper()])
            if self.peek("("):
                raise Untranslatable(f"the function {v}()")
            self.columns.append(v)
            return pc.field(v)
        raise Untranslatable(repr(v))


def arrow_expression(text: str) -> tuple[pc.Expression, list[str]]:
    """A pyarrow expression equal to the Spark SQL ``text``, and the columns it reads.

    Raises Untranslatable (with the reason) when the direct path cannot evaluate it.
    """
    parser = _Parser(text)
    return parser.parse(), list(dict.fromkeys(parser.columns))


def referenced_columns(text: str, names: list[str]) -> list[str]:
    """Columns of ``names`` a Spark SQL expression mentions (by token, for any expression)."""
    words = set()
    for m in re.finditer(r"`((?:[^`]|``)+)`|([A-Za-z_][A-Za-z_0-9]*)", text):
        words.add((m.group(1) or m.group(2)).replace("``", "`"))
    lower = {w.lower() for w in words}
    return [n for n in names if n in words or n.lower() in lower]
