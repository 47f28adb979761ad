"""The direct path's SQL against Spark itself: hypothesis writes expressions from the grammar
the direct path claims to evaluate, over a small table full of edge values (NULLs, NaN, ±0,
±inf, integer bounds, float32 rounding edges, mixed-case names); Spark's ``selectExpr`` /
``where`` on the same Parquet file is the oracle — label values bit for bit (as CAST(… AS
FLOAT)), the rows a filter keeps, and, in ANSI mode, which expressions fail. Expressions the
direct path declines are Spark's alone (the Spark path) and are only counted."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import sql_conf
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from jobs.expressions import ExpressionError, Untranslatable, compile_expression

pytestmark = pytest.mark.spark

I32, I64 = np.iinfo(np.int32), np.iinfo(np.int64)
COLUMNS = {
    "t": pa.array([1, -128, 127, 0, None, 5, -3, 2], pa.int8()),
    "s": pa.array([300, -32768, 32767, 0, 7, None, -1, 2], pa.int16()),
    "i": pa.array([16777217, I32.min, I32.max, 0, -5, 3, None, 1], pa.int32()),
    "L": pa.array([2**53 + 1, I64.min, I64.max, 0, 16777219, None, -7, 3], pa.int64()),
    "u": pa.array([255, 0, 128, None, 1, 2, 3, 4], pa.uint8()),
    "f": pa.array([0.1, -0.0, np.inf, np.nan, None, 1e38, 16777216.0, 3.4e38], pa.float32()),
    "d": pa.array(
        [1.0000000596046448, -0.0, -np.inf, np.nan, 1e300, None, 2.5, 0.5], pa.float64()
    ),  # fmt: skip
    "b": pa.array([True, False, None, True, False, True, None, False]),
    "str": pa.array(["a", "B", None, "", "a", "yes", "no", "b"]),
    "dec": pa.array(
        [
            None,
            *[
                __import__("decimal").Decimal(v)
                for v in (
                    "0.10",
                    "16777217.50",
                    "-0.01",
                    "99999999.99",
                    "0.00",
                    "1.25",
                    "-16777218.50",
                )
            ],
        ],
        pa.decimal128(10, 2),
    ),  # fmt: skip
}
NUMERIC_COLS = ["t", "s", "i", "L", "u", "f", "d", "dec"]


@pytest.fixture(scope="module")
def table(spark, tmp_path_factory):
    path = tmp_path_factory.mktemp("sql") / "t.parquet"
    data = pa.table(COLUMNS)
    n = data.num_rows
    pq.write_table(data.append_column("row_", pa.array(range(n), pa.int32())), path)
    df = spark.read.parquet(str(path)).cache()
    df.count()
    return data, df


def _name(draw, names):  # noqa: D401
    """A column reference in random case, sometimes in backticks."""
    name = draw(st.sampled_from(names))
    cased = "".join(c.upper() if draw(st.booleans()) else c.lower() for c in name)
    return f"`{cased}`" if draw(st.booleans()) else cased


NUM_LITERALS = ["0", "1", "-1", "2", "127", "2147483647", "2147483648", "9223372036854775807",
                "0.5", "1.25", "0.1", "16777217.5", "1e3", "2.5e-1", "NULL", "1L", "2S", "3Y",
                "1.5D", "16777217", "9007199254740993", "5E-1"]  # fmt: skip
NUM_TYPES = ["TINYINT", "SMALLINT", "INT", "BIGINT", "FLOAT", "DOUBLE"]


@st.composite
def numbers(draw, depth=3):
    """A numeric expression of the grammar."""
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        if draw(st.booleans()):
            return _name(draw, ["t", "s", "i", "L", "u", "f", "d"])
        return draw(st.sampled_from(NUM_LITERALS))
    num, cond = numbers(depth=depth - 1), conditions(depth=depth - 1)
    form = draw(st.integers(0, 7))
    if form <= 1:
        op = draw(st.sampled_from(["+", "-", "*", "/"]))
        return f"({draw(num)} {op} {draw(num)})"
    if form == 2:
        return f"-({draw(num)})"
    if form == 3:
        inner = draw(st.sampled_from([num, cond, st.just("dec")]))
        return f"CAST({draw(inner)} AS {draw(st.sampled_from(NUM_TYPES))})"
    if form == 4:
        return f"IF({draw(cond)}, {draw(num)}, {draw(num)})"
    if form == 5:
        return f"CASE WHEN {draw(cond)} THEN {draw(num)} ELSE {draw(num)} END"
    if form == 6:
        return f"COALESCE({draw(num)}, {draw(num)})"
    return f"CAST({draw(cond)} AS {draw(st.sampled_from(['INT', 'FLOAT', 'DOUBLE']))})"


@st.composite
def conditions(draw, depth=3):
    """A boolean expression of the grammar."""
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        return draw(st.sampled_from([_name(draw, ["b"]), "TRUE", "FALSE", "NULL"]))
    num, cond = numbers(depth=depth - 1), conditions(depth=depth - 1)
    form = draw(st.integers(0, 8))
    if form <= 2:
        op = draw(st.sampled_from(["=", "==", "!=", "<>", "<", "<=", ">", ">=", "<=>"]))
        return f"({draw(num)} {op} {draw(num)})"
    if form == 3:
        return f"({draw(cond)} {draw(st.sampled_from(['AND', 'OR']))} {draw(cond)})"
    if form == 4:
        return f"(NOT {draw(cond)})"
    if form == 5:
        inner = draw(st.sampled_from([num, cond, st.just("dec")]))
        return f"({draw(inner)} IS {draw(st.sampled_from(['', 'NOT ']))}NULL)"
    if form == 6:
        values = draw(st.lists(st.sampled_from(NUM_LITERALS), min_size=1, max_size=3))
        return f"({draw(num)} IN ({', '.join(values)}))"
    if form == 7:
        return f"({draw(num)} BETWEEN {draw(num)} AND {draw(num)})"
    lit = draw(st.sampled_from(["'a'", "'B'", "''", "'yes'"]))
    return f"({_name(draw, ['str'])} {draw(st.sampled_from(['=', '<', '>=', '!=']))} {lit})"


expressions = st.one_of(numbers(), conditions())


def _bits(values) -> list:
    """Python floats (or None) → float32 bit patterns, NaN canonical, so -0.0 ≠ 0.0."""
    out = []
    for v in values:
        if v is None:
            out.append(None)
        elif v != v:
            out.append("nan")
        else:
            out.append(np.float32(v).tobytes())
    return out


def _spark(df, sql: str, kind: str) -> list:
    if kind == "label":
        rows = df.selectExpr("row_", f"CAST(({sql}) AS FLOAT) AS v").collect()
        return _bits([r["v"] for r in sorted(rows, key=lambda r: r["row_"])])
    kept = {r["row_"] for r in df.where(sql).select("row_").collect()}
    return [i in kept for i in range(df.count())]


def _ours(compiled, batch, kind: str) -> list:
    if kind == "label":
        return _bits(compiled.as_float32(batch).to_pylist())
    return compiled.keep(batch).to_pylist()


# what stays declined by design: decimal arithmetic and decimal casts to integers (the Spark
# path evaluates them), and in ANSI mode what Spark's optimizer may skip (see expressions.py).
# The share varies with what hypothesis draws: ANSI gave 57-72 % over six runs on 3.5 and 4.0
# (a CI run failed the earlier 60 %), so its floor is "most": half. The default mode drew
# 84 % in one run of 2026-12-06 against a floor of 85 %: its floor is 75 %, which still fails
# a direct path that declines one expression in four.
@pytest.mark.parametrize("ansi, share", [(False, 0.75), (True, 0.5)], ids=["default", "ansi"])
def test_labels_and_filters_match_spark(spark, table, ansi, share):
    """Every generated expression: the direct path's value or row set equals Spark's, or both
    fail, or the direct path declines it (the Spark path then runs it). Then, in the same test:
    the grammar is the direct path's, so most Spark-valid expressions must have been evaluated
    and compared, not declined. ANSI mode declines more: where Spark's optimizer or row-by-row
    evaluation decides whether an operation that can fail runs at all, the Spark path does."""
    stats = {"compared": 0, "declined": 0, "both_failed": 0, "invalid": 0}
    with sql_conf(spark, {"spark.sql.ansi.enabled": str(ansi).lower()}):
        _compare(spark, table, ansi, stats)
    evaluated = stats["compared"] + stats["both_failed"]
    assert evaluated >= 100, stats
    assert evaluated >= share * (evaluated + stats["declined"]), stats


@settings(
    max_examples=int(os.environ.get("SQL_EXAMPLES", 150)),
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
@given(sql=expressions)
@example(sql="(f IN (16777217, 5E-1))")  # Spark types the column and all values together
@example(sql="(L IN (9007199254740993, 5E-1))")
@example(sql="(CAST(COALESCE(2147483647, t) AS TINYINT) IS NULL)")  # never evaluated by Spark
def _compare(spark, table, ansi, stats, sql):
    data, df = table
    try:
        compiled = compile_expression(sql, data.schema, ansi)
    except Untranslatable:
        try:  # a decline only counts when Spark accepts the expression
            df.selectExpr(f"CAST(({sql}) AS FLOAT)")
            stats["declined"] += 1
        except Exception:
            stats["invalid"] += 1
        return
    batch = data.to_batches()[0]
    for kind in ("filter", "label"):
        try:
            compiled.checked_as(kind)  # what the planner asks before the direct path runs it
        except Untranslatable:
            continue
        try:
            ours, ours_failed = _ours(compiled, batch, kind), None
        except ExpressionError as exc:
            ours, ours_failed = None, exc
        try:
            theirs, spark_failed = _spark(df, sql, kind), None
        except Exception as exc:  # Spark's analysis or (ANSI) runtime error
            theirs, spark_failed = None, exc
        if spark_failed is not None or ours_failed is not None:
            assert spark_failed is not None and ours_failed is not None, (
                f"{kind} {sql!r} (ansi={ansi}): Spark "
                f"{'failed: ' + str(spark_failed)[:400] if spark_failed else 'ran'}; ours "
                f"{'failed: ' + str(ours_failed) if ours_failed else 'ran'}"
            )
            stats["both_failed"] += 1
            continue
        assert ours == theirs, f"{kind} {sql!r} (ansi={ansi}): ours {ours} vs Spark {theirs}"
        stats["compared"] += 1
