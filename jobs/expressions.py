"""Spark SQL labels and filters on the direct path: parsed by sqlglot (Spark dialect), typed by
Spark 3.5's rules, evaluated on Arrow batches — or declined with the reason, so that the Spark
path evaluates them instead. No Spark, no I/O.

What is evaluated here, with Spark's semantics (ANSI or not, as the session says):
column references (resolved case-insensitively, as spark.sql.caseSensitive=false does),
integer, decimal, double, boolean, string and NULL literals, ``+ - *`` and unary minus (integers
wrap, or fail in ANSI mode), ``/`` (always double; NULL for a zero divisor, or a failure in ANSI
mode), comparisons ``= == != <> < <= > >= <=>`` (NaN equals NaN and is above every number),
AND OR NOT (three-valued), IS [NOT] NULL, IN (a list of literals), BETWEEN, IF, CASE WHEN,
COALESCE, and CAST to BOOLEAN, TINYINT, SMALLINT, INT, BIGINT, FLOAT and DOUBLE (Java's
truncating, saturating casts; ANSI overflow failures). Decimal columns may be CAST to FLOAT or
DOUBLE (exactly rounded, as Spark's ``BigDecimal.floatValue``) or tested for NULL; decimal
literals where Spark turns them into doubles (with a float or double) or compares them with
an integer column. Everything else — functions, string casts, decimal arithmetic, ``%``,
``div`` — is declined.

The typed tree is built on the driver and pickled into the tasks, which need no sqlglot.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import InputError
from .exact import decimal_to_float, fraction_to_float

INTEGRAL = ("tinyint", "smallint", "int", "bigint")
NUMERIC = (*INTEGRAL, "float", "double")  # Spark's numeric precedence, narrowest first
ARROW = {
    "boolean": pa.bool_(),
    "tinyint": pa.int8(),
    "smallint": pa.int16(),
    "int": pa.int32(),
    "bigint": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "string": pa.string(),
    "null": pa.null(),
}
_BOUNDS = {t: np.iinfo(ARROW[t].to_pandas_dtype()) for t in INTEGRAL}


class Untranslatable(Exception):
    """The expression needs Spark; the message says which part."""


class ExpressionError(InputError):
    """Spark (ANSI mode) would fail on these rows; so does the direct path."""


def spark_type(t: pa.DataType) -> str | None:
    """The Spark type of a Parquet column as Spark 3.5 reads it (unsigned integers widen,
    UINT64 is DECIMAL(20,0)); None when Spark cannot read it or it is not a scalar."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    simple = {
        pa.bool_(): "boolean", pa.int8(): "tinyint", pa.int16(): "smallint",
        pa.int32(): "int", pa.int64(): "bigint", pa.uint8(): "smallint",
        pa.uint16(): "int", pa.uint32(): "bigint", pa.float32(): "float",
        pa.float64(): "double", pa.string(): "string", pa.large_string(): "string",
        pa.uint64(): "decimal(20,0)",
    }  # fmt: skip
    if t in simple:
        return simple[t]
    if pa.types.is_decimal(t) and t.precision <= 38:
        return f"decimal({t.precision},{t.scale})"
    return None


def _is_decimal(t: str) -> bool:
    return t.startswith("decimal")


def _precision_scale(t: str) -> tuple[int, int]:
    p, s = t[len("decimal(") : -1].split(",")
    return int(p), int(s)


def _as_decimal(value: Fraction, scale: int):
    """A decimal literal's exact value at ``scale`` digits (its scale is never larger)."""
    from decimal import Context, Decimal

    units = value * 10**scale
    assert units.denominator == 1
    return Decimal(units.numerator).scaleb(-scale, Context(prec=80))


def _wider(a: str, b: str, ansi: bool = False) -> str | None:
    """Spark's tightest common type of two types, for what is evaluated here. ANSI mode's
    coercion widens an integer and a float to double (to lose no integer precision)."""
    if a == b:
        return a
    if a == "null":
        return b
    if b == "null":
        return a
    if a in NUMERIC and b in NUMERIC:
        wider = max(a, b, key=NUMERIC.index)
        if ansi and wider == "float" and {a, b} & set(INTEGRAL):
            return "double"
        return wider
    return None


# -- the typed tree ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    type: str
    sql: str  # the part of the expression this node stands for (for messages)

    def columns(self) -> list[str]:
        return []

    def eval(self, ctx: Context) -> pa.Array:
        raise NotImplementedError


@dataclass
class Context:
    batch: pa.RecordBatch
    ansi: bool

    @property
    def n(self) -> int:
        return self.batch.num_rows


@dataclass(frozen=True)
class Col(Node):
    name: str = ""

    def columns(self):
        return [self.name]

    def eval(self, ctx):
        arr = ctx.batch.column(self.name)
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        if pa.types.is_dictionary(arr.type):
            arr = arr.dictionary_decode()
        if self.type in ARROW and arr.type != ARROW[self.type]:
            arr = arr.cast(ARROW[self.type])  # unsigned → the wider signed type Spark reads
        return arr


@dataclass(frozen=True)
class Lit(Node):
    value: object = None  # int, float, bool, str, Fraction (decimal) or None

    def eval(self, ctx):
        if _is_decimal(self.type):  # exact: a decimal branch of IF / CASE / COALESCE
            p, s = _precision_scale(self.type)
            value = None if self.value is None else _as_decimal(self.value, s)
            return pa.array([value] * ctx.n, pa.decimal128(p, s))
        return pa.array(np.full(ctx.n, self.value) if self.value is not None else [None] * ctx.n,
                        ARROW[self.type])  # fmt: skip


@dataclass(frozen=True)
class Cast(Node):
    child: Node = None

    def columns(self):
        return self.child.columns()

    def eval(self, ctx):
        return cast(self.child.eval(ctx), self.child.type, self.type, ctx.ansi, self)


@dataclass(frozen=True)
class Arith(Node):
    op: str = "+"
    left: Node = None
    right: Node = None

    def columns(self):
        return self.left.columns() + self.right.columns()

    def eval(self, ctx):
        a, b = self.left.eval(ctx), self.right.eval(ctx)
        if self.op == "/":
            zero = pc.equal(b, 0.0)
            # Spark evaluates the divisor only for a non-NULL dividend
            if ctx.ansi and pc.any(pc.and_(zero, pc.is_valid(a))).as_py():
                raise _failure(self, "division by zero")
            return pc.if_else(zero, pa.scalar(None, pa.float64()), pc.divide(a, b))
        name = {"+": "add", "-": "subtract", "*": "multiply"}[self.op]
        checked = ctx.ansi and self.type in INTEGRAL
        try:
            return getattr(pc, name + ("_checked" if checked else ""))(a, b)
        except pa.ArrowInvalid:
            raise _failure(self, f"{self.type} overflow") from None


@dataclass(frozen=True)
class Neg(Node):
    child: Node = None

    def columns(self):
        return self.child.columns()

    def eval(self, ctx):
        arr = self.child.eval(ctx)
        if ctx.ansi and self.type in INTEGRAL:
            try:
                return pc.negate_checked(arr)
            except pa.ArrowInvalid:
                raise _failure(self, f"{self.type} overflow") from None
        return pc.negate(arr)


@dataclass(frozen=True)
class Compare(Node):
    op: str = "="  # = != < <= > >= <=>
    left: Node = None
    right: Node = None

    def columns(self):
        return self.left.columns() + self.right.columns()

    def eval(self, ctx):
        a, b = self.left.eval(ctx), self.right.eval(ctx)
        floating = self.left.type in ("float", "double")
        if self.op == "<=>":
            both_null = pc.and_(pc.is_null(a), pc.is_null(b))
            eq = pc.fill_null(_equal(a, b, floating), False)
            return pc.or_(both_null, eq)
        if self.op in ("=", "!="):
            eq = _equal(a, b, floating)
            return eq if self.op == "=" else pc.invert(eq)
        if self.op in (">", ">="):
            a, b = b, a
        return _less(a, b, floating, self.op in ("<=", ">="))


def _equal(a, b, floating):
    eq = pc.equal(a, b)
    if floating:  # Spark: NaN = NaN
        eq = pc.or_kleene(eq, pc.and_kleene(pc.is_nan(a), pc.is_nan(b)))
    return eq


def _less(a, b, floating, or_equal):
    less = pc.less_equal(a, b) if or_equal else pc.less(a, b)
    if floating:  # Spark: NaN is above every number, and equal to NaN
        nan_b = pc.is_nan(b)
        extra = pc.and_kleene(pc.is_valid(a) if or_equal else pc.invert(pc.is_nan(a)), nan_b)
        less = pc.or_kleene(less, extra)
    return less


@dataclass(frozen=True)
class IntVsFraction(Node):
    """An integer column against a decimal literal, exactly: ``a > 1.5`` is ``a > 1``."""

    op: str = "="
    child: Node = None
    value: Fraction = Fraction(0)

    def columns(self):
        return self.child.columns()

    def eval(self, ctx):
        arr = self.child.eval(ctx).cast(pa.int64())
        v, op = self.value, self.op
        if op in ("=", "!=", "<=>") and v.denominator != 1:  # no integer equals it
            const = pa.array(np.full(ctx.n, op == "!="), pa.bool_())
            return const if op == "<=>" else pc.if_else(pc.is_null(arr), None, const)
        floor, ceil = v.numerator // v.denominator, -(-v.numerator // v.denominator)
        k = {"=": floor, "!=": floor, "<=>": floor, "<": ceil, "<=": floor, ">": floor,
             ">=": ceil}[op]  # fmt: skip
        lo, hi = _BOUNDS["bigint"].min, _BOUNDS["bigint"].max
        if k < lo or k > hi:  # beyond every bigint: the answer does not depend on the row
            above = k > hi
            truth = {"=": False, "!=": True, "<=>": False, "<": above, "<=": above,
                     ">": not above, ">=": not above}[op]  # fmt: skip
            const = pa.array(np.full(ctx.n, truth), pa.bool_())
            return const if op == "<=>" else pc.if_else(pc.is_null(arr), None, const)
        fn = {"=": pc.equal, "!=": pc.not_equal, "<": pc.less, "<=": pc.less_equal,
              ">": pc.greater, ">=": pc.greater_equal}  # fmt: skip
        if op == "<=>":
            return pc.fill_null(pc.equal(arr, k), False)
        return fn[op](arr, pa.scalar(k, pa.int64()))


@dataclass(frozen=True)
class Logic(Node):
    op: str = "and"  # and | or | not | isnull | notnull
    args: tuple = ()

    def columns(self):
        return [c for a in self.args for c in a.columns()]

    def eval(self, ctx):
        vals = [a.eval(ctx) for a in self.args]
        if self.op in ("and", "or"):
            fn = pc.and_kleene if self.op == "and" else pc.or_kleene
            return functools.reduce(fn, vals)
        if self.op == "not":
            return pc.invert(vals[0])
        nulls = pc.is_null(vals[0])
        return nulls if self.op == "isnull" else pc.invert(nulls)


@dataclass(frozen=True)
class Case(Node):
    """CASE WHEN / IF: a NULL condition counts as false, as in Spark."""

    conds: tuple = ()
    values: tuple = ()
    default: Node = None
    is_if: bool = False  # IF (keeps THEN when its branches merge) or CASE WHEN (keeps ELSE)

    def columns(self):
        parts = (*self.conds, *self.values, self.default)
        return [c for p in parts for c in p.columns()]

    def eval(self, ctx):
        conds = [c.eval(ctx) for c in self.conds]
        names = [f"c{i}" for i in range(len(conds))]
        values = [v.eval(ctx) for v in self.values]
        return pc.case_when(pc.make_struct(*conds, field_names=names), *values,
                            self.default.eval(ctx))  # fmt: skip


@dataclass(frozen=True)
class Coalesce(Node):
    args: tuple = ()

    def columns(self):
        return [c for a in self.args for c in a.columns()]

    def eval(self, ctx):
        return pc.coalesce(*[a.eval(ctx) for a in self.args])


def _failure(node: Node, what: str) -> ExpressionError:
    cols = ", ".join(dict.fromkeys(node.columns())) or "no column"
    return ExpressionError(
        f"{what} in `{node.sql}` (reads {cols}); Spark fails the same way with "
        "spark.sql.ansi.enabled=true"
    )


# -- casts ---------------------------------------------------------------------------------------


def cast(arr: pa.Array, src: str, dst: str, ansi: bool, node: Node | None = None) -> pa.Array:
    """Spark's CAST between boolean, integral, floating (and decimal to floating) types."""
    if src == dst:
        return arr
    if src == "null":
        return pa.nulls(len(arr), ARROW[dst])
    if dst == "boolean":
        return pc.not_equal(arr, pa.scalar(0, arr.type))  # NaN is true, as Java's d != 0
    if src == "boolean":
        return arr.cast(ARROW[dst])
    if _is_decimal(src):
        return pa.array(decimal_to_float(arr, np.float32 if dst == "float" else np.float64),
                        ARROW[dst], mask=arr.is_null().to_numpy(zero_copy_only=False))  # fmt: skip
    if dst in ("float", "double"):
        values = arr.to_numpy(zero_copy_only=False)
        mask = arr.is_null().to_numpy(zero_copy_only=False)
        if arr.null_count:
            values = arr.fill_null(0).to_numpy(zero_copy_only=False)
        with np.errstate(over="ignore"):
            return pa.array(values.astype(ARROW[dst].to_pandas_dtype()), mask=mask)
    if src in INTEGRAL:  # integral narrowing: wraps (ANSI: fails), widening: exact
        try:
            return arr.cast(ARROW[dst], safe=ansi)
        except pa.ArrowInvalid:
            raise _failure(node, f"{dst} overflow casting {src}") from None
    return _float_to_integral(arr, dst, ansi, node)


def _float_to_integral(arr: pa.Array, dst: str, ansi: bool, node) -> pa.Array:
    """Java's d2i/d2l: truncate toward zero, NaN → 0, saturate at int (tinyint and smallint
    then wrap, as Scala's ``d.toInt.toByte``) or at bigint. ANSI: out of range fails."""
    mask = arr.is_null().to_numpy(zero_copy_only=False)
    x = arr.fill_null(0).to_numpy(zero_copy_only=False).astype(np.float64)
    bounds = _BOUNDS[dst]
    if ansi:
        bad = ~mask & (np.isnan(x) | (np.floor(x) > bounds.max) | (np.ceil(x) < bounds.min))
        if bad.any():
            raise _failure(node, f"{dst} overflow casting {x[bad][0]!r}")
    wide = _BOUNDS["bigint" if dst == "bigint" else "int"]
    x = np.where(np.isnan(x), 0.0, np.trunc(x))
    out = np.empty(len(x), np.int64)
    out[:] = np.clip(x, -(2.0**63), 2.0**63 - 1024).astype(np.int64)  # stay in range first
    out[x >= 2.0**63] = np.iinfo(np.int64).max
    out = np.clip(out, wide.min, wide.max)
    return pa.array(out.astype(ARROW[dst].to_pandas_dtype()), mask=mask)


# -- compiling from sqlglot ----------------------------------------------------------------------


@dataclass(frozen=True)
class Compiled:
    """A translated expression: evaluate it on a batch holding ``columns``."""

    text: str
    root: Node
    ansi: bool

    @property
    def columns(self) -> list[str]:
        return list(dict.fromkeys(self.root.columns()))

    @property
    def type(self) -> str:
        return self.root.type

    def evaluate(self, batch: pa.RecordBatch) -> pa.Array:
        return self.root.eval(Context(batch, self.ansi))

    def checked_as(self, role: str) -> Compiled:
        """This expression as a ``filter`` (a condition) or a ``label`` (a number or a
        condition); Untranslatable when Spark decides it differently in that role."""
        t = self.type
        if role == "filter":
            if t != "boolean":
                raise Untranslatable(f"a {t} condition")
            if self.ansi and _fails_somewhere(self.root):
                # Spark evaluates a WHERE after the IS NOT NULL conditions it infers from it
                raise Untranslatable("an operation that can fail in an ANSI-mode filter")
        elif t not in ("boolean", "null", *NUMERIC) and not _is_decimal(t):
            raise Untranslatable(f"a {t} label")
        return self

    def keep(self, batch: pa.RecordBatch) -> pa.Array:
        """The rows a WHERE with this condition keeps (NULL is not kept)."""
        result = self.evaluate(batch)
        if self.type == "null":
            return pa.array(np.zeros(batch.num_rows, bool))
        return pc.fill_null(result, False)

    def as_float32(self, batch: pa.RecordBatch) -> pa.Array:
        """CAST(expression AS FLOAT), as the label is."""
        return cast(self.evaluate(batch), self.type, "float", self.ansi, self.root)


def compile_expression(text: str, schema: pa.Schema, ansi: bool = False) -> Compiled:
    """Translate ``text`` for ``schema``; Untranslatable (with the reason) when the direct path
    cannot evaluate it exactly as Spark would."""
    import sqlglot
    from sqlglot import exp

    if re.search(r"\btry_cast\b", text, re.IGNORECASE):
        raise Untranslatable("TRY_CAST")
    try:
        tree = sqlglot.parse_one(text, read="spark")
    except sqlglot.errors.ParseError as exc:
        raise Untranslatable(f"syntax ({str(exc).splitlines()[0]})") from None
    root = _Compiler(schema, exp, ansi).node(tree)
    if ansi:
        _check_ansi(root, lazy=False)
    return Compiled(text, root, ansi)


def _may_fail(node: Node) -> bool:
    """The operations Spark's ANSI mode can fail on for some rows."""
    if isinstance(node, Arith):
        return node.op == "/" or node.type in INTEGRAL
    if isinstance(node, Neg):
        return node.type in INTEGRAL
    if isinstance(node, Cast):
        src, dst = node.child.type, node.type
        return dst in INTEGRAL and (
            src in ("float", "double") or INTEGRAL.index(dst) < INTEGRAL.index(src)
            if src in INTEGRAL else src in ("float", "double")
        )  # fmt: skip
    return False


def _operands(node: Node, op: str, t: str) -> list[Node]:
    """An integral + or * chain flattened, as Spark's ReorderAssociativeOperator sees it."""
    if isinstance(node, Arith) and node.op == op and node.type == t:
        return _operands(node.left, op, t) + _operands(node.right, op, t)
    return [node]


def _fails_somewhere(node: Node) -> bool:
    return _may_fail(node) or any(_fails_somewhere(c) for c in _children(node))


def _unwrapped(node: Compare) -> bool:
    """Spark's UnwrapCastInBinaryComparison: ``CAST(x AS wider) <op> constant`` with the
    constant outside x's own range becomes a constant (in a WHERE, never evaluating x)."""
    for a, b in ((node.left, node.right), (node.right, node.left)):
        if isinstance(a, Cast) and a.child.type in INTEGRAL and not b.columns():
            value = _constant(b)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            bounds = _BOUNDS[a.child.type]
            out_of_range = not (bounds.min <= value <= bounds.max)  # NaN too
            fraction = value != value or (isinstance(value, float) and not value.is_integer())
            constant = out_of_range or (fraction and node.op in ("=", "!=", "<=>"))
            if constant and _fails_somewhere(a.child):
                return True
    return False


def _check_ansi(node: Node, lazy: bool) -> None:
    """In ANSI mode Spark fails a query on the rows it evaluates; it evaluates AND, OR, IF,
    CASE and COALESCE operands only for some rows, and its optimizer reorders integer + and *
    around constants. Where those decide whether a failing operation runs, the direct path
    leaves the expression to Spark."""
    if lazy and _may_fail(node):
        raise Untranslatable(
            f"an operation that can fail in ANSI mode (`{node.sql}`) where Spark evaluates it "
            "only for some rows"
        )
    if isinstance(node, Arith) and node.op in ("+", "*") and node.type in INTEGRAL:
        constants = [o for o in _operands(node, node.op, node.type) if not o.columns()]
        if len(constants) > 1:
            raise Untranslatable(f"constants Spark regroups in ANSI mode (`{node.sql}`)")
    if (isinstance(node, Compare) and _unwrapped(node)) or (
        isinstance(node, IntVsFraction) and _fails_somewhere(node.child)
    ):
        raise Untranslatable(
            f"a comparison Spark decides without evaluating its operand in ANSI mode (`{node.sql}`)"
        )
    if isinstance(node, Logic) and node.op in ("isnull", "notnull") and _fails_somewhere(node):
        # Spark's SimplifyIsNullConditions: IS NULL of what cannot be NULL (a COALESCE with a
        # constant) is FALSE without evaluating it
        raise Untranslatable(f"a NULL test Spark may decide without evaluating (`{node.sql}`)")
    inner = (
        lazy
        or isinstance(node, (Case, Coalesce))
        or (isinstance(node, Logic) and node.op in ("and", "or"))
    )
    if isinstance(node, (Arith, Compare)) and not (isinstance(node, Compare) and node.op == "<=>"):
        # Spark evaluates the right operand only where the left one is not NULL
        _check_ansi(node.left, inner)
        left_always = isinstance(node.left, Lit) and node.left.value is not None
        _check_ansi(node.right, inner or not left_always)
        return
    for child in _children(node):
        _check_ansi(child, inner)


def _children(node: Node) -> list[Node]:
    if isinstance(node, (Arith, Compare)):
        return [node.left, node.right]
    if isinstance(node, (Cast, Neg, IntVsFraction)):
        return [node.child]
    if isinstance(node, (Logic, Coalesce)):
        return list(node.args)
    if isinstance(node, Case):
        return [*node.conds, *node.values, node.default]
    return []


_CAST_TYPES = {
    "BOOLEAN": "boolean", "TINYINT": "tinyint", "SMALLINT": "smallint", "INT": "int",
    "BIGINT": "bigint", "FLOAT": "float", "DOUBLE": "double",
}  # fmt: skip
_COMPARE = {"EQ": "=", "NEQ": "!=", "LT": "<", "LTE": "<=", "GT": ">", "GTE": ">=",
            "NullSafeEQ": "<=>"}  # fmt: skip
_ARITH = {"Add": "+", "Sub": "-", "Mul": "*", "Div": "/"}


class _Compiler:
    def __init__(self, schema: pa.Schema, exp, ansi: bool = False):
        self.exp = exp
        self.ansi = ansi
        self.by_lower: dict[str, list[pa.Field]] = {}
        for f in schema:
            self.by_lower.setdefault(f.name.lower(), []).append(f)

    def node(self, e) -> Node:
        node = self._node(e)
        if self.ansi and not node.columns() and _may_fail(node):
            # Spark folds constants while optimizing, and whether a constant that fails there
            # fails the query depends on where its optimizer finds it: Spark decides
            try:
                node.eval(Context(pa.RecordBatch.from_arrays([pa.array([0])], ["_"]), True))
            except ExpressionError:
                raise Untranslatable(f"a constant that fails in ANSI mode (`{node.sql}`)") from None
        return node

    def _node(self, e) -> Node:
        exp = self.exp
        sql = e.sql(dialect="spark")
        if isinstance(e, exp.Paren):
            return self.node(e.this)
        if isinstance(e, exp.Column):
            return self.column(e, sql)
        if isinstance(e, (exp.Literal, exp.Boolean, exp.Null)):
            return self.literal(e, sql)
        if isinstance(e, (exp.Cast, exp.TryCast)):
            return self.cast(e, sql)
        kind = type(e).__name__
        if kind in _ARITH:
            return self.arith(_ARITH[kind], self.node(e.this), self.node(e.expression), sql)
        if isinstance(e, exp.Neg):
            return self.negate(self.node(e.this), sql)
        if kind in _COMPARE:
            return self.compare(_COMPARE[kind], self.node(e.this), self.node(e.expression), sql)
        if isinstance(e, (exp.And, exp.Or)):
            args = (self.boolean(e.this), self.boolean(e.expression))
            return Logic("boolean", sql, "and" if isinstance(e, exp.And) else "or", args)
        if isinstance(e, exp.Not):
            if isinstance(e.this, exp.Is):
                return self.null_test("notnull", self.is_null_arg(e.this), sql)
            return Logic("boolean", sql, "not", (self.boolean(e.this),))
        if isinstance(e, exp.Is):
            return self.null_test("isnull", self.is_null_arg(e), sql)
        if isinstance(e, exp.In):
            return self.in_list(e, sql)
        if isinstance(e, exp.Between):
            x, lo, hi = self.node(e.this), self.node(e.args["low"]), self.node(e.args["high"])
            args = (self.compare(">=", x, lo, sql), self.compare("<=", x, hi, sql))
            return Logic("boolean", sql, "and", args)
        if isinstance(e, exp.If):
            false = e.args.get("false")
            default = self.node(false) if false is not None else Lit("null", "NULL", None)
            return self.case([e.this], [self.node(e.args["true"])], default, sql)
        if isinstance(e, exp.Case):
            return self.case_when(e, sql)
        if isinstance(e, exp.Coalesce):
            args = [self.node(a) for a in [e.this, *e.expressions]]
            t = self.common([a.type for a in args], sql)
            return Coalesce(t, sql, tuple(self.coerce(a, t) for a in args))
        if isinstance(e, (exp.Anonymous, exp.Func)):
            name = e.name if isinstance(e, exp.Anonymous) else e.sql_name()
            raise Untranslatable(f"the function {name.upper()}()")
        raise Untranslatable(f"{kind} ({sql})")

    # -- leaves ------------------------------------------------------------------------------
    def column(self, e, sql: str) -> Node:
        if e.table:
            raise Untranslatable(f"the qualified name {sql}")
        fields = self.by_lower.get(e.name.lower(), [])
        if not fields:
            raise InputError(f"{e.name!r} is not a column of the input")
        if len(fields) > 1:
            raise Untranslatable(f"the ambiguous column name {e.name!r}")
        t = spark_type(fields[0].type)
        if t is None:
            raise Untranslatable(f"column {fields[0].name!r} of type {fields[0].type}")
        return Col(t, sql, fields[0].name)

    def literal(self, e, sql: str) -> Node:
        exp = self.exp
        if isinstance(e, exp.Null):
            return Lit("null", sql, None)
        if isinstance(e, exp.Boolean):
            return Lit("boolean", sql, bool(e.this))
        if e.is_string:
            return Lit("string", sql, e.this)
        text = e.this
        if re.fullmatch(r"\d+", text):
            v = int(text)
            if v <= _BOUNDS["int"].max:
                return Lit("int", sql, v)
            if v <= _BOUNDS["bigint"].max:
                return Lit("bigint", sql, v)
            return Lit(f"decimal({len(text)},0)", sql, Fraction(v))
        m = re.fullmatch(r"(\d*)\.(\d*)", text)
        if m:
            digits = (m.group(1) + m.group(2)).lstrip("0") or "0"
            scale = len(m.group(2))
            return Lit(f"decimal({max(len(digits), scale)},{scale})", sql, Fraction(text))
        try:
            return Lit("double", sql, float(text))
        except ValueError:
            raise Untranslatable(f"the literal {text}") from None

    # -- typing ------------------------------------------------------------------------------
    def common(self, types: list[str], sql: str) -> str:
        if any(_is_decimal(t) for t in types):  # decimal literals (and integers beside them)
            scale = max(_precision_scale(t)[1] for t in types if _is_decimal(t))
            if any(t not in ("null", *INTEGRAL) and not _is_decimal(t) for t in types):
                raise Untranslatable(f"mixing decimals with {sorted(set(types))} in {sql}")
            return f"decimal(38,{scale})"
        out = "null"
        for t in types:
            w = _wider(out, t, self.ansi)
            if w is None:
                raise Untranslatable(f"mixing {out} and {t} in {sql}")
            out = w
        return out

    def coerce(self, node: Node, to: str) -> Node:
        if node.type == to:
            return node
        if isinstance(node, Lit) and node.value is None:
            return Lit(to, node.sql, None)
        if isinstance(node, Lit) and _is_decimal(node.type) and to in ("float", "double"):
            return Lit(to, node.sql, fraction_to_float(node.value, to))
        if _is_decimal(to):
            if isinstance(node, Lit) and (_is_decimal(node.type) or node.type in INTEGRAL):
                return Lit(to, node.sql, None if node.value is None else Fraction(node.value))
            if isinstance(node, Lit) and node.value is None:
                return Lit(to, node.sql, None)
            raise Untranslatable(f"decimal values from {node.sql}")
        if _is_decimal(node.type):
            raise Untranslatable(f"decimal arithmetic ({node.sql})")
        if isinstance(node, Lit) and node.value is None:
            return Lit(to, node.sql, None)
        pushed = _pushed(lambda x: _cast(to, node.sql, x), node)  # implicit casts too
        return pushed or _cast(to, node.sql, node)

    def decimal_literal_to_double(self, a: Node, b: Node) -> tuple[Node, Node]:
        """Spark turns a decimal literal next to a float or double into a double."""
        for x, y in ((a, b), (b, a)):
            if isinstance(x, Lit) and _is_decimal(x.type) and y.type in ("float", "double"):
                value = None if x.value is None else fraction_to_float(x.value, "double")
                x2 = Lit("double", x.sql, value)
                return (x2, y) if x is a else (y, x2)
        return a, b

    # -- operators ---------------------------------------------------------------------------
    def arith(self, op: str, a: Node, b: Node, sql: str) -> Node:
        a, b = self.decimal_literal_to_double(a, b)
        if _is_decimal(a.type) or _is_decimal(b.type):
            raise Untranslatable(f"decimal arithmetic ({sql})")
        for x in (a, b):
            if x.type not in (*NUMERIC, "null"):
                raise Untranslatable(f"{op} on {x.type} ({sql})")
        if op == "/":
            if _null_literal(a) or _null_literal(b):
                return Lit("double", sql, None)  # Spark's NullPropagation
            a, b = self.coerce(a, "double"), self.coerce(b, "double")
            pushed = _pushed(lambda x, y: Arith("double", sql, "/", x, y), a, b)
            return pushed or Arith("double", sql, "/", a, b)
        t = self.common([a.type, b.type], sql)
        if t == "null":
            t = "int"
        if _null_literal(a) or _null_literal(b):
            return Lit(t, sql, None)  # Spark's NullPropagation: the other side is not evaluated
        a, b = self.coerce(a, t), self.coerce(b, t)
        pushed = _pushed(lambda x, y: Arith(t, sql, op, x, y), a, b)
        return pushed or Arith(t, sql, op, a, b)

    def negate(self, child: Node, sql: str) -> Node:
        if isinstance(child, Lit) and child.value is not None and child.type in NUMERIC:
            if child.type in ("int", "bigint") and -child.value < _BOUNDS[child.type].min:
                return Lit("bigint", sql, -child.value)
            return Lit(child.type, sql, -child.value)
        if child.type not in NUMERIC:
            raise Untranslatable(f"unary minus on {child.type} ({sql})")
        if _null_literal(child):
            return Lit(child.type, sql, None)
        return Neg(child.type, sql, child)

    def compare(self, op: str, a: Node, b: Node, sql: str) -> Node:
        a, b = self.decimal_literal_to_double(a, b)
        for x, y, flip in ((a, b, False), (b, a, True)):
            if isinstance(y, Lit) and _is_decimal(y.type) and x.type in INTEGRAL:
                o = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}.get(op, op) if flip else op
                return IntVsFraction("boolean", sql, o, x, y.value)
        if _is_decimal(a.type) or _is_decimal(b.type):
            raise Untranslatable(f"a decimal comparison ({sql})")
        if a.type == "string" and b.type == "string" or a.type == b.type == "boolean":
            return Compare("boolean", sql, op, a, b)
        t = self.common([a.type, b.type], sql)
        if t not in (*NUMERIC, "null"):
            raise Untranslatable(f"comparing {a.type} with {b.type} ({sql})")
        t = "int" if t == "null" else t
        if op != "<=>" and (_null_literal(a) or _null_literal(b)):
            return Lit("boolean", sql, None)  # Spark's NullPropagation
        a, b = self.coerce(a, t), self.coerce(b, t)
        if op == "<=>" and _same(a, b):
            return Lit("boolean", sql, True)  # Spark's SimplifyBinaryComparison: a <=> a
        pushed = _pushed(lambda x, y: Compare("boolean", sql, op, x, y), a, b)
        return pushed or Compare("boolean", sql, op, a, b)

    def boolean(self, e, void_ok: bool = True) -> Node:
        node = self.node(e)
        if node.type == "null":
            if not void_ok:
                raise Untranslatable(f"a NULL condition ({node.sql})")
            return Lit("boolean", node.sql, None)
        if node.type != "boolean":
            raise Untranslatable(f"{node.type} where a condition is expected ({node.sql})")
        return node

    def null_test(self, op: str, arg: Node, sql: str) -> Node:
        pushed = _pushed(lambda x: Logic("boolean", sql, op, (x,)), arg)
        return pushed or Logic("boolean", sql, op, (arg,))

    def is_null_arg(self, e) -> Node:
        if not isinstance(e.expression, self.exp.Null):
            raise Untranslatable(f"IS {e.expression.sql()}")
        return self.node(e.this)

    def in_list(self, e, sql: str) -> Node:
        if e.args.get("query") or e.args.get("unnest") or e.args.get("field"):
            raise Untranslatable(f"IN with a subquery ({sql})")
        x = self.node(e.this)
        values = [self.node(v) for v in e.expressions]
        if any(v.columns() for v in values):
            raise Untranslatable(f"IN with values that read columns ({sql})")
        types = [x.type, *(v.type for v in values)]
        if all(t in (*NUMERIC, "null") or _is_decimal(t) for t in types):
            # Spark's InConversion: the column and every value take one common type, so
            # `f IN (16777217, 0.5E0)` compares as double, not each pair alone as float
            if {"float", "double"} & set(types):
                values = [_decimal_as_double(v) for v in values]
                types = [x.type, *(v.type for v in values)]
            if not any(_is_decimal(t) for t in types):  # with decimals, pairs are exact
                t = self.common(types, sql)
                t = "int" if t == "null" else t
                x, values = self.coerce(x, t), [self.coerce(v, t) for v in values]
        args = tuple(self.compare("=", x, v, sql) for v in values)
        return args[0] if len(args) == 1 else Logic("boolean", sql, "or", args)

    def case(self, conds, values, default: Node, sql: str, void_ok: bool = True) -> Node:
        t = self.common([v.type for v in (*values, default)], sql)
        if t == "null":
            t = "int"
        conds = tuple(self.boolean(c, void_ok) for c in conds)
        values = tuple(self.coerce(v, t) for v in values)
        return _case(Case(t, sql, conds, values, self.coerce(default, t), is_if=void_ok))

    def case_when(self, e, sql: str) -> Node:
        subject = e.this
        conds, values = [], []
        for branch in e.args["ifs"]:
            cond = branch.this
            if subject is not None:  # CASE x WHEN v THEN …
                cond = self.exp.EQ(this=subject.copy(), expression=cond.copy())
            conds.append(cond)
            values.append(self.node(branch.args["true"]))
        default = e.args.get("default")
        default = self.node(default) if default is not None else Lit("null", "NULL", None)
        return self.case(conds, values, default, sql, void_ok=False)  # Spark: WHEN NULL fails

    def cast(self, e, sql: str) -> Node:
        target = e.to.this.name if hasattr(e.to.this, "name") else str(e.to.this)
        dst = _CAST_TYPES.get(target.upper())
        if dst is None or e.to.expressions:
            raise Untranslatable(f"CAST to {e.to.sql(dialect='spark')}")
        child = self.node(e.this)
        if _null_literal(child):
            return Lit(dst, sql, None)
        if isinstance(child, Lit) and _is_decimal(child.type):
            if dst in ("float", "double"):
                return Lit(dst, sql, fraction_to_float(child.value, dst))
            raise Untranslatable(f"CAST of a decimal literal to {dst}")
        if _is_decimal(child.type) and dst not in ("float", "double"):
            raise Untranslatable(f"CAST of a decimal to {dst} ({sql})")
        if child.type not in (*NUMERIC, "boolean", "null") and not _is_decimal(child.type):
            raise Untranslatable(f"CAST of {child.type} ({sql})")
        if _null_literal(child):
            return Lit(dst, sql, None)
        pushed = _pushed(lambda x: _cast(dst, sql, x), child)
        return pushed or _cast(dst, sql, child)


def _decimal_as_double(node: Node) -> Node:
    if isinstance(node, Lit) and _is_decimal(node.type):
        value = None if node.value is None else fraction_to_float(node.value, "double")
        return Lit("double", node.sql, value)
    return node


_NOT_CONSTANT = object()


def _case(node: Case) -> Node:
    """Spark's SimplifyConditionals: a constant FALSE or NULL condition drops its branch, a
    constant TRUE first condition is the answer; branches that are equal constants (its
    Literal equality: 0.0 equals -0.0, NaN equals NaN) become one of them — IF keeps its THEN
    value, CASE WHEN its ELSE value."""
    kept = [(c, v) for c, v in zip(node.conds, node.values) if _constant(c) not in (False, None)]
    if kept and _constant(kept[0][0]) is True:
        return kept[0][1]
    if not kept:
        return node.default
    if len(kept) != len(node.conds):
        conds, values = zip(*kept)
        node = dataclasses.replace(node, conds=tuple(conds), values=tuple(values))
    branches = [*node.values, node.default]
    constants = [_constant(b) for b in branches]
    equal_constants = all(c is not _NOT_CONSTANT for c in constants) and all(
        _literal_equal(constants[0], c) for c in constants[1:]
    )
    if equal_constants or all(_same(branches[0], b) for b in branches[1:]):
        return branches[0] if node.is_if else branches[-1]
    return node


def _pushed(build, a: Node, b: Node | None = None) -> Node | None:
    """Spark's PushFoldableIntoBranches: an operator whose other operand is constant moves
    into the branches of an IF / CASE WHEN with at most one non-constant branch (and equal
    constant branches then merge). ``build(x, y)`` makes the operator's node; None when
    Spark would not push."""
    for case, other, first in ((a, b, True), (b, a, False)):
        if not isinstance(case, Case) or (other is not None and other.columns()):
            continue
        if sum(bool(v.columns()) for v in (*case.values, case.default)) > 1:
            continue

        def op(v, other=other, first=first):
            return build(v) if other is None else build(v, other) if first else build(other, v)

        values = tuple(op(v) for v in case.values)
        default = op(case.default)
        return _case(Case(default.type, case.sql, case.conds, values, default, case.is_if))
    return None


def _constant(node: Node):
    """The value of a node that reads no column (as Spark's constant folding sees it)."""
    if node.columns():
        return _NOT_CONSTANT
    try:
        one = pa.RecordBatch.from_arrays([pa.array([0])], ["_"])
        return node.eval(Context(one, False))[0].as_py()
    except Exception:
        return _NOT_CONSTANT


def _literal_equal(a, b) -> bool:
    """Spark's Literal equality: nulls equal, NaNs equal, otherwise Scala's ``==``."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    return a == b


def _cast(dst: str, sql: str, child: Node) -> Node:
    """A Cast node, as Spark's SimplifyCasts leaves it: none to the same type, and a chain of
    numeric up-casts (in Spark's precedence, which counts bigint → float as one) is one."""
    if child.type == dst:
        return child
    if (
        isinstance(child, Cast)
        and dst in NUMERIC
        and child.type in NUMERIC
        and child.child.type in NUMERIC
        and NUMERIC.index(child.child.type) < NUMERIC.index(child.type) < NUMERIC.index(dst)
    ):
        return Cast(dst, sql, child.child)
    return Cast(dst, sql, child)


def _same(a: Node, b: Node) -> bool:
    """The same expression, however it was spelled (Spark's semanticEquals, without its
    reordering of commutative operands)."""
    if type(a) is not type(b):
        return False
    for f in dataclasses.fields(a):
        if f.name == "sql":
            continue
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, tuple):
            if len(x) != len(y) or not all(_same(p, q) for p, q in zip(x, y)):
                return False
        elif isinstance(x, Node):
            if not _same(x, y):
                return False
        elif x != y:
            return False
    return True


def _null_literal(node: Node) -> bool:
    return isinstance(node, Lit) and node.value is None


def referenced_columns(text: str, names: list[str]) -> list[str]:
    """Columns of ``names`` a Spark SQL expression mentions (by token, for any expression)."""
    words = set()
    for m in re.finditer(r"`((?:[^`]|``)+)`|([A-Za-z_][A-Za-z_0-9]*)", text):
        words.add((m.group(1) or m.group(2)).replace("``", "`"))
    lower = {w.lower() for w in words}
    return [n for n in names if n in words or n.lower() in lower]
