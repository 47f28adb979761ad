"""Numbers to float32/float64 as Spark's CAST gives them, judged by oracles we did not write:
CPython's correctly rounded int/int division (float64) and mpmath at 24-bit precision
(float32). The Spark-level conformance tests compare the same conversions with Spark itself."""

from __future__ import annotations

from decimal import Context, Decimal
from fractions import Fraction

import mpmath
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.exact import column_to_float32, decimal_to_float, fraction_to_float


def mp_float32(value: Fraction) -> np.float32:
    """The nearest float32 of an exact rational, by mpmath (24-bit significand, nearest-even);
    only used where the result is a normal float32."""
    x = mpmath.fdiv(value.numerator, value.denominator, prec=24, rounding="n")  # rounded once
    return np.float32(float(x))


@settings(max_examples=3000, deadline=None)
@given(
    st.integers(min_value=-(10**40), max_value=10**40),
    st.integers(min_value=0, max_value=40),
)
def test_rationals_round_like_cpython_and_mpmath(unscaled, scale):
    value = Fraction(unscaled, 10**scale)
    assert fraction_to_float(value, "double") == unscaled / 10**scale  # CPython: exact rounding
    f = np.float32(fraction_to_float(value, "float"))
    if value != 0 and 2.0**-126 <= abs(value) <= np.finfo(np.float32).max:
        assert f.tobytes() == mp_float32(value).tobytes()


def test_float32_edges_by_hand():
    top = float(np.finfo(np.float32).max)
    assert fraction_to_float(Fraction(2**24 + 1), "float") == 2**24  # tie → even
    assert fraction_to_float(Fraction(2**24 + 3), "float") == 2**24 + 4
    assert fraction_to_float(Fraction(top) * 2, "float") == np.inf
    # a subnormal float32: 2^-149 is the smallest; half of it rounds to zero (tie → even)
    assert fraction_to_float(Fraction(1, 2**149), "float") == 2.0**-149
    assert fraction_to_float(Fraction(1, 2**150), "float") == 0.0
    assert fraction_to_float(Fraction(3, 2**150), "float") == 2.0**-148


def _decimals(values: list[str], precision: int, scale: int) -> pa.Array:
    return pa.array([None if v is None else Decimal(v) for v in values],
                    pa.decimal128(precision, scale))  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(min_value=-(10**38) + 1, max_value=10**38 - 1), min_size=1,
             max_size=40),
    st.integers(min_value=0, max_value=38),
)  # fmt: skip
def test_decimal_columns_round_each_exact_value_once(unscaled, scale):
    exact = Context(prec=60)  # the default 28 digits would round 38-digit values
    arr = pa.array([Decimal(u).scaleb(-scale, exact) for u in unscaled], pa.decimal128(38, scale))
    got32 = decimal_to_float(arr, np.float32)
    got64 = decimal_to_float(arr, np.float64)
    for u, f32, f64 in zip(unscaled, got32, got64):
        value = Fraction(u, 10**scale)
        assert f64 == u / 10**scale
        if value != 0 and abs(value) >= 2.0**-126:
            assert f32.tobytes() == mp_float32(value).tobytes(), (u, scale)


def test_decimal_ties_that_float64_would_round_twice():
    # 0.5000000298023223876953125 = 1/2 + 2^-25 is exactly a float32 midpoint: the tie goes to
    # even (0.5); one digit more lies just above it and must round up, although a float64
    # division lands on the midpoint first
    arr = _decimals(["0.5000000298023223876953125", "0.50000002980232238769531251", None], 38, 38)
    got = decimal_to_float(arr, np.float32)
    assert got[0] == np.float32(0.5)
    assert got[1] == np.nextafter(np.float32(0.5), np.float32(1))
    # the fast path too: 16 digits whose float64 quotient is that midpoint, the value above it
    fast = decimal_to_float(_decimals(["0.5000000298023224", "-0.5000000298023224"], 16, 16))
    assert 5000000298023224 / 10**16 == 0.5 + 2**-25  # (the float64 division lands on it)
    assert fast.tolist() == [np.nextafter(np.float32(0.5), np.float32(1)),
                             -np.nextafter(np.float32(0.5), np.float32(1))]  # fmt: skip


@pytest.mark.parametrize(
    "arr",
    [
        pa.array([2**24 + 1, 2**53 + 1, -(2**63), 2**63 - 1, None], pa.int64()),
        pa.array([2**64 - 1, 2**63 + 2**39 + 1, 3], pa.uint64()),
        pa.array([2**32 - 1, 16777217], pa.uint32()),
        pa.array([1.0000000596046448, 3.5e38, -0.0, None], pa.float64()),
        pa.array([np.float16(0.1), np.float16(-0.0), None], pa.float16()),
        pa.array([True, False, None]),
    ],
    ids=["int64", "uint64", "uint32", "float64", "float16", "bool"],
)
def test_every_numeric_type_rounds_its_exact_value_once(arr):
    values, nulls = column_to_float32(arr)
    for v, got in zip(arr.to_pylist(), values):
        if v is None:
            assert np.isnan(got)
            continue
        exact = Fraction(v) if not isinstance(v, bool) else Fraction(int(v))
        if abs(exact) > np.finfo(np.float32).max * (1 + 2**-25):
            assert np.isinf(got)
        elif exact == 0:
            assert got.tobytes() == np.float32(v).tobytes()  # -0.0 stays -0.0
        else:
            assert got.tobytes() == mp_float32(exact).tobytes(), v
    assert (nulls is not None) == (arr.null_count > 0)
