"""The codec against the SageMaker Python SDK's reference writer and reader, byte for byte."""

import io
import struct

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sagemaker.amazon.common import (
    read_records,
    write_numpy_to_dense_tensor,
    write_spmatrix_to_sparse_tensor,
)

from jobs import codec
from jobs.errors import CodecError

# Every float32 bit pattern class the wire must carry unchanged: -0.0, NaN, ±inf, subnormals.
floats32 = st.floats(width=32, allow_nan=True, allow_infinity=True, allow_subnormal=True)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def sdk_dense(x, y=None) -> bytes:
    buf = io.BytesIO()
    write_numpy_to_dense_tensor(buf, x, y)
    return buf.getvalue()


def sdk_sparse(m, y=None) -> bytes:
    buf = io.BytesIO()
    write_spmatrix_to_sparse_tensor(buf, m, y)
    return buf.getvalue()


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.array_equal(
        np.ascontiguousarray(a, "<f4").view("<u4"), np.ascontiguousarray(b, "<f4").view("<u4")
    )


@st.composite
def dense_batches(draw, max_d=300):
    n = draw(st.integers(0, 12))
    d = draw(st.integers(1, max_d))
    x = draw(hnp.arrays(np.float32, (n, d), elements=floats32))
    y = draw(st.none() | hnp.arrays(np.float32, (n,), elements=floats32))
    return x, y


@st.composite
def sparse_batches(draw):
    n = draw(st.integers(0, 10))
    n_cols = draw(st.sampled_from([1, 2, 127, 128, 129, 784, 16384, 16385, 100_000, 2_100_000]))
    rows = []
    for _ in range(n):
        k = draw(st.integers(0, min(n_cols, 40)))  # 0: a row with no stored values
        cols = draw(st.lists(st.integers(0, n_cols - 1), min_size=k, max_size=k, unique=True))
        rows.append(sorted(cols))
    indptr = np.cumsum([0] + [len(r) for r in rows]).astype(np.int32)
    indices = np.array([c for r in rows for c in r], dtype=np.int32)
    values = draw(hnp.arrays(np.float32, (indices.size,), elements=floats32))
    y = draw(st.none() | hnp.arrays(np.float32, (n,), elements=floats32))
    return indptr, indices, values, n_cols, y


@SETTINGS
@given(dense_batches())
def test_dense_bytes_equal_the_sdk(batch):
    x, y = batch
    assert bytes(codec.encode_dense(x, y)) == sdk_dense(x, y)


@SETTINGS
@given(sparse_batches())
def test_sparse_bytes_equal_the_sdk(batch):
    indptr, indices, values, n_cols, y = batch
    m = sp.csr_matrix((values, indices, indptr), shape=(indptr.size - 1, n_cols))
    assert bytes(codec.encode_sparse(indptr, indices, values, n_cols, y)) == sdk_sparse(m, y)


@SETTINGS
@given(dense_batches())
def test_dense_round_trip_keeps_every_bit(batch):
    x, y = batch
    out = codec.decode(codec.encode_dense(x, y))
    if len(x) == 0:
        assert out is None
        return
    assert same_bits(out.features, x)
    assert (out.labels is None) == (y is None)
    if y is not None:
        assert same_bits(out.labels, y)


@SETTINGS
@given(sparse_batches())
def test_sparse_round_trip_keeps_every_bit(batch):
    indptr, indices, values, n_cols, y = batch
    out = codec.decode(codec.encode_sparse(indptr, indices, values, n_cols, y))
    if indptr.size == 1:
        assert out is None
        return
    assert np.array_equal(out.indptr, indptr)
    assert np.array_equal(out.indices, indices)
    assert same_bits(out.values, values)
    assert out.n_cols == n_cols
    if y is not None:
        assert same_bits(out.labels, y)


@SETTINGS
@given(dense_batches(max_d=50))
def test_our_decoder_reads_the_sdk_bytes_and_the_sdk_reads_ours(batch):
    x, y = batch
    if len(x) == 0:
        return
    ours = codec.decode(sdk_dense(x, y))
    assert same_bits(ours.features, x)
    records = read_records(io.BytesIO(bytes(codec.encode_dense(x, y))))
    assert len(records) == len(x)
    got = np.array([r.features["values"].float32_tensor.values for r in records], np.float32)
    assert same_bits(got, x)


def test_very_wide_sparse_rows_match_the_sdk():
    rng = np.random.default_rng(7)
    n_cols = 300_000
    m = sp.random(20, n_cols, density=0.01, format="csr", dtype=np.float32, random_state=rng)
    y = rng.integers(0, 2, 20).astype(np.float32)
    assert bytes(codec.encode_sparse(m.indptr, m.indices, m.data, n_cols, y)) == sdk_sparse(m, y)


@SETTINGS
@given(dense_batches(), st.integers(0, 255))
def test_dense_bytes_written_into_a_used_buffer_equal_the_sdk(batch, junk):
    """A task reuses one buffer for every batch's records: whatever an earlier batch left in
    it (every byte ``junk``, then records of the other labelling, so of another length), the
    bytes are the SDK's, padding included."""
    x, y = batch
    out = bytearray([junk]) * (len(sdk_dense(x, np.ones(len(x), np.float32))) + 64)
    got = codec.encode_dense(x, y, out=out)
    assert bytes(got) == sdk_dense(x, y)
    other = None if y is not None else np.ones(len(x), np.float32)
    assert bytes(codec.encode_dense(x, other, out=out)) == sdk_dense(x, other)


@pytest.mark.parametrize("d", [29, 31, 4093])
def test_padding_written_into_a_used_buffer_is_zero(d):
    """Dense records of these widths end in padding, which a reused buffer does not start as."""
    rng = np.random.default_rng(d)
    x = rng.standard_normal((50, d)).astype(np.float32)
    y = rng.integers(0, 2, 50).astype(np.float32)
    for labels in (y, None):
        out = bytearray([0xAB]) * (len(sdk_dense(x, y)) + 8)
        assert bytes(codec.encode_dense(x, labels, out=out)) == sdk_dense(x, labels)


def test_a_buffer_too_small_for_the_records_is_refused():
    with pytest.raises(CodecError, match="out holds 10 bytes"):
        codec.encode_dense(np.ones((2, 3), np.float32), out=bytearray(10))


def test_large_dense_batch_spans_several_chunks_and_matches_the_sdk():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((20_000, 13)).astype(np.float32)
    y = rng.integers(0, 2, 20_000).astype(np.float32)
    assert bytes(codec.encode_dense(x, y)) == sdk_dense(x, y)


def test_large_sparse_batch_spans_several_chunks_and_matches_the_sdk():
    rng = np.random.default_rng(4)
    m = sp.random(20_000, 300, density=0.05, format="csr", dtype=np.float32, random_state=rng)
    assert bytes(codec.encode_sparse(m.indptr, m.indices, m.data, 300)) == sdk_sparse(m)


@pytest.mark.parametrize("shape", ["one width", "widths part mid-record"])
def test_rows_written_column_by_column_match_the_sdk(shape):
    """While every row's header fields have one width the encoder writes them as columns; keys of
    1 and 3 bytes in alternate rows make the key-bytes length 1 or 2 bytes wide, so the rows
    part ways mid-record, after the uniform fields."""
    rng = np.random.default_rng(5)
    n, k, n_cols = 9_000, 50, 2_000_000
    rows = []
    for i in range(n):
        lo, hi = (0, 127) if shape != "one width" and i % 2 else (16_384, n_cols)
        rows.append(np.sort(rng.choice(np.arange(lo, hi), k, replace=False)))
    indices = np.concatenate(rows).astype(np.int32)
    indptr = np.arange(n + 1) * k
    values = rng.standard_normal(indices.size).astype(np.float32)
    y = rng.integers(0, 2, n).astype(np.float32)
    m = sp.csr_matrix((values, indices, indptr), shape=(n, n_cols))
    got = bytes(codec.encode_sparse(indptr, indices, values, n_cols, y))
    assert got == sdk_sparse(m, y)


def test_other_dtypes_are_written_as_float32():
    x = np.arange(12, dtype=np.float64).reshape(3, 4)
    assert bytes(codec.encode_dense(x)) == sdk_dense(x.astype(np.float32))


@pytest.mark.parametrize("read_size", [1, 7, 64, 1 << 20])
def test_streamed_decoding_in_small_reads_gives_the_same_rows(read_size):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((300, 9)).astype(np.float32)
    data = bytes(codec.encode_dense(x, np.ones(300, np.float32)))
    batches = list(codec.iter_batches(io.BytesIO(data), read_size=read_size))
    assert np.array_equal(codec.concat_batches(batches).features, x)


def test_streamed_sparse_decoding_in_small_reads_gives_the_same_rows():
    m = sp.random(200, 50, density=0.1, format="csr", dtype=np.float32, random_state=1)
    data = bytes(codec.encode_sparse(m.indptr, m.indices, m.data, 50))
    batches = list(codec.iter_batches(io.BytesIO(data), read_size=33, batch_rows=17))
    assert np.array_equal(codec.concat_batches(batches).to_dense(), m.toarray())


# ----------------------------------------------------------------------------- errors


def three_records() -> bytearray:
    return codec.encode_dense(np.ones((3, 4), np.float32), np.zeros(3, np.float32))


def test_wrong_magic_names_its_byte_offset():
    data = three_records()
    rec = len(data) // 3
    data[rec : rec + 4] = b"\0\0\0\0"
    with pytest.raises(CodecError, match=rf"byte offset {rec}: expected magic 0xCED7230A"):
        codec.decode(data)


def test_truncated_record_is_reported():
    data = bytes(three_records())[:-5]
    rec = (len(data) + 5) // 3
    with pytest.raises(CodecError, match=rf"byte offset {2 * rec}: truncated record"):
        codec.decode(data)


def test_truncated_record_in_a_stream_is_reported():
    data = bytes(three_records())[:-5]
    with pytest.raises(CodecError, match="truncated record"):
        list(codec.iter_batches(io.BytesIO(data), read_size=10))


def test_split_record_flag_is_refused_on_read():
    data = three_records()
    (lrec,) = struct.unpack_from("<I", data, 4)
    struct.pack_into("<I", data, 4, lrec | (1 << 29))
    with pytest.raises(CodecError, match=r"byte offset 0: cflag 1 marks a split record"):
        codec.decode(data)


def test_a_row_too_big_for_one_record_is_refused():
    # the size rule on per-row counts (2^27 + 1 stored values of 4-byte keys need > 2^29
    # bytes), without building the 1.5 GB of arrays a real row that size takes
    from jobs.codec.encode import _sparse_lengths

    k = np.array([3, (1 << 27) + 1])
    with pytest.raises(
        CodecError, match=r"row 1 would be a 1,\d{3},\d{3},\d{3}-byte record.*2\^29"
    ):
        _sparse_lengths(k, 4 * k, 1 << 28, labelled=False)
    fits = np.array([3, 1 << 25])  # 2^25 values and keys: 2^28 bytes
    assert int(_sparse_lengths(fits, 4 * fits, 1 << 28, labelled=False)[-1][1]) < 1 << 29


def test_dense_layout_refuses_rows_too_big_for_one_record():
    with pytest.raises(CodecError, match=r"2\^29"):
        codec.DenseLayout.of(1 << 27, labelled=True)


def test_label_count_must_match_rows():
    with pytest.raises(CodecError, match="labels has 2 values but there are 3 rows"):
        codec.encode_dense(np.ones((3, 2)), np.ones(2))
    with pytest.raises(CodecError, match="labels has 4 values but there are 1 rows"):
        codec.encode_sparse([0, 1], [0], [1.0], 3, labels=np.ones(4))


def test_features_must_be_two_dimensional():
    with pytest.raises(CodecError, match=r"2-D .* got shape \(4,\)"):
        codec.encode_dense(np.ones(4))
    with pytest.raises(CodecError, match="labels must be a 1-D array"):
        codec.encode_dense(np.ones((2, 2)), np.ones((2, 1)))


def test_sparse_column_index_must_fit_n_cols():
    with pytest.raises(CodecError, match=r"column index 5 is outside 0..4"):
        codec.encode_sparse([0, 1], [5], [1.0], 5)


def test_mixed_dense_and_sparse_records_are_refused():
    data = bytes(codec.encode_dense(np.ones((1, 3)))) + bytes(
        codec.encode_sparse([0, 1], [0], [1.0], 3)
    )
    rec = len(codec.encode_dense(np.ones((1, 3))))
    with pytest.raises(CodecError, match=rf"byte offset {rec}: a sparse record among dense ones"):
        codec.decode(data)
