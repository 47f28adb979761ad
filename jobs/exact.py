"""Numbers to float32 (and float64) exactly as Spark's CAST does, for every numeric Parquet type.
numpy only; no Spark, no I/O.

- integers (signed and unsigned, any width): the nearest float, ties to even — Java's
  ``(float) long`` and Spark's UINT64-as-DECIMAL(20,0) both round the exact integer once.
  numpy converts integers to float32 directly (never through float64, which would round twice).
- float64 → float32: IEEE round-to-nearest-even (overflow to ±inf); float16 → float32: exact.
- decimals: the nearest float of the exact decimal value, as ``java.math.BigDecimal.floatValue``
  / ``doubleValue`` give (Spark's ``Decimal.toFloat`` / ``toDouble``). Arrow's own decimal cast
  divides in floating point and is off by one unit in the last place on some values.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pyarrow as pa

_FORMATS = {  # significand bits, smallest normal exponent, largest finite value
    np.dtype(np.float32): (24, -126, float(np.finfo(np.float32).max)),
    np.dtype(np.float64): (53, -1022, float(np.finfo(np.float64).max)),
}


def fraction_to_float(value: Fraction, to: str | np.dtype = "double") -> float:
    """The nearest float32/float64 of an exact rational (ties to even)."""
    dtype = np.dtype({"float": np.float32, "double": np.float64}.get(to, to))
    bits, emin, largest = _FORMATS[dtype]
    if value == 0:
        return 0.0
    sign = -1.0 if value < 0 else 1.0
    n, d = abs(value.numerator), value.denominator
    e = n.bit_length() - d.bit_length()  # 2^(e-1) < |value| < 2^(e+1)
    if (n << max(0, -e)) < (d << max(0, e)):
        e -= 1  # now 2^e <= |value| < 2^(e+1)
    shift = max(e, emin) - (bits - 1)  # the exponent of one unit in the last place
    if shift < 0:
        q, r = divmod(n << -shift, d)
        den = d
    else:
        den = d << shift
        q, r = divmod(n, den)
    if 2 * r > den or (2 * r == den and q & 1):
        q += 1
    result = math.ldexp(q, shift) if shift < 1024 else math.inf
    return sign * (math.inf if result > largest else result)


def _unscaled(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(low 64 bits as int64, high 64 bits) of each decimal128's unscaled integer."""
    raw = np.frombuffer(arr.buffers()[1], dtype="<u8")
    raw = raw[arr.offset * 2 : (arr.offset + len(arr)) * 2].reshape(-1, 2)
    return raw[:, 0].view(np.int64), raw[:, 1].view(np.int64)


def decimal_to_float(arr: pa.Array, dtype=np.float32) -> np.ndarray:
    """The nearest float of each exact decimal (nulls become 0; the caller keeps the mask)."""
    dtype = np.dtype(dtype)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not pa.types.is_decimal128(arr.type):  # decimal32/64/256: the layout read below
        arr = arr.cast(pa.decimal128(arr.type.precision, arr.type.scale))
    scale = arr.type.scale
    lo, hi = _unscaled(arr)
    valid = ~arr.is_null().to_numpy(zero_copy_only=False)
    fits = ((hi == 0) & (lo >= 0)) | ((hi == -1) & (lo < 0))
    exact_in_double = fits & (lo > -(2**53)) & (lo < 2**53) & (scale <= 22)
    out = np.zeros(len(arr), dtype)
    # one correctly rounded float64 division of two exact operands …
    q = lo[exact_in_double].astype(np.float64) / (10.0**scale)
    if dtype == np.float64:
        out[exact_in_double] = q
        slow = valid & ~exact_in_double
    else:
        # … and rounding it to float32 is right unless it fell exactly on a float32 midpoint
        # (or into float32's subnormal range): those few go the exact way
        bits = q.view(np.uint64)
        midpoint = (bits & np.uint64((1 << 29) - 1)) == np.uint64(1 << 28)
        tiny = np.abs(q) < 2.0**-125
        out[exact_in_double] = q.astype(np.float32)
        risky = np.zeros(len(arr), bool)
        risky[exact_in_double] = midpoint | tiny
        slow = valid & (~exact_in_double | risky)
    for i in np.flatnonzero(slow):
        unscaled = (int(hi[i]) << 64) + (int(lo[i]) & ((1 << 64) - 1))  # two's complement
        out[i] = fraction_to_float(Fraction(unscaled, 10**scale), dtype)
    return out


def column_to_float32(arr) -> tuple[np.ndarray, np.ndarray | None]:
    """A numeric column as float32, as Spark's CAST(column AS FLOAT) gives it, and its null
    mask (None when there are no nulls; null slots hold NaN)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    t = arr.type
    if pa.types.is_dictionary(t):
        arr = arr.dictionary_decode()
        t = arr.type
    nulls = arr.is_null().to_numpy(zero_copy_only=False) if arr.null_count else None
    if pa.types.is_null(t):
        return np.full(len(arr), np.nan, np.float32), np.ones(len(arr), bool)
    if pa.types.is_decimal(t):
        values = decimal_to_float(arr, np.float32)
    elif pa.types.is_float32(t):
        values = arr.to_numpy(zero_copy_only=False)
        return values, nulls  # nulls are NaN already
    else:
        if arr.null_count:
            arr = arr.fill_null(False if pa.types.is_boolean(t) else 0)
        with np.errstate(over="ignore"):
            values = arr.to_numpy(zero_copy_only=False).astype(np.float32)
    if nulls is not None:
        values = values.copy() if not values.flags.writeable else values
        values[nulls] = np.nan
    return values, nulls
