"""Encoding: numpy batches → RecordIO-protobuf bytes, byte-identical to the SageMaker SDK's
``write_numpy_to_dense_tensor`` / ``write_spmatrix_to_sparse_tensor`` for float32 data, but
whole batches are laid out at once instead of one protobuf message per row. No I/O.
"""

from __future__ import annotations

import numpy as np

from ..errors import CodecError
from .wire import (
    CHUNK_ROWS,
    LABEL_BYTES,
    LABEL_PREFIX,
    MAGIC_LE,
    MAX_RECORD_BYTES,
    VALUES_KEY,
    DenseLayout,
    _varint,
    _varint_len,
    _vl,
)


def _varint_bytes(values: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """The varints of ``values`` (with their ``lens``) concatenated in order: a byte stream."""
    if values.size == 0:
        return np.empty(0, dtype=np.uint8)
    width = int(lens.max())
    if width == 1:
        return values.astype(np.uint8)
    work = values.astype(np.uint32 if width <= 4 else np.uint64)
    mat = np.empty((values.size, width), dtype=np.uint8)
    used = np.empty((values.size, width), dtype=bool)  # built column by column: broadcasting
    used[:, 0] = True  # a (n, 1) comparison costs 10x more here
    for j in range(width):
        col = mat[:, j]
        np.bitwise_and(work, 0x7F, out=col, casting="unsafe")
        if j + 1 < width:
            more = lens > j + 1
            col |= more.view(np.uint8) << 7
            used[:, j + 1] = more
            work >>= 7
    return mat[used]


class _RowWriter:
    """Writes per-row fields of varying width side by side into a (rows, width) byte matrix.

    While every row's cursor is at the same column (``at``), fields of one width are written as
    column slices; once widths differ, per-row positions take over."""

    def __init__(self, n: int, width: int):
        self.mat = np.zeros((n, width), dtype=np.uint8)
        self.cursor = np.zeros(n, dtype=np.int64)
        self._rows = np.arange(n)
        self.at: int | None = 0

    def const(self, data: bytes, where: np.ndarray | None = None) -> None:
        if where is not None and where.all():
            where = None
        if where is None and self.at is not None:
            self.mat[:, self.at : self.at + len(data)] = np.frombuffer(data, dtype=np.uint8)
            self.at += len(data)
            self.cursor += len(data)
            return
        if where is not None:
            self.at = None
        rows = self._rows if where is None else self._rows[where]
        start = self.cursor[rows]
        for j, byte in enumerate(data):  # a loop over the constant's bytes, not over rows
            self.mat[rows, start + j] = byte
        self.cursor[rows] += len(data)

    def used(self, lengths: np.ndarray) -> np.ndarray:
        """The first ``lengths[i]`` bytes of each row, concatenated."""
        width = self.mat.shape[1]
        keep = np.repeat(
            np.tile(np.array([True, False]), lengths.size),
            np.stack([lengths, width - lengths], axis=1).ravel(),
        )
        return self.mat.ravel()[keep]

    def uint32(self, values: np.ndarray) -> None:
        self.const_rows(values.astype("<u4").view(np.uint8).reshape(-1, 4))

    def const_rows(self, data: np.ndarray) -> None:
        if self.at is not None:
            self.mat[:, self.at : self.at + data.shape[1]] = data
            self.at += data.shape[1]
        else:
            for j in range(data.shape[1]):
                self.mat[self._rows, self.cursor + j] = data[:, j]
        self.cursor += data.shape[1]

    def varint(self, values: np.ndarray, where: np.ndarray | None = None) -> None:
        if where is not None and where.all():
            where = None
        rows = self._rows if where is None else self._rows[where]
        values = values.astype(np.uint64)
        if where is not None:
            values = values[where]
        lens = _varint_len(values)
        if not lens.size:
            return
        top = int(lens.max())
        if where is None and self.at is not None and int(lens.min()) == top:
            for j in range(top):
                byte = ((values >> np.uint64(7 * j)) & np.uint64(0x7F)).astype(np.uint8)
                if j + 1 < top:
                    byte |= 0x80
                self.mat[:, self.at + j] = byte
            self.at += top
            self.cursor += top
            return
        self.at = None
        start = self.cursor[rows]
        for j in range(top):
            sel = lens > j
            byte = ((values[sel] >> np.uint64(7 * j)) & np.uint64(0x7F)).astype(np.uint8)
            byte[lens[sel] > j + 1] |= 0x80
            self.mat[rows[sel], start[sel] + j] = byte
        self.cursor[rows] += lens


def _as_labels(labels, n: int) -> np.ndarray | None:
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise CodecError(f"labels must be a 1-D array, got shape {labels.shape}")
    if labels.shape[0] != n:
        raise CodecError(f"labels has {labels.shape[0]} values but there are {n} rows")
    return np.ascontiguousarray(labels, dtype="<f4")


def encode_dense(features, labels=None, out=None):
    """RecordIO-protobuf bytes for a dense ``(n, d)`` batch, one record per row.

    Values are written as float32 (other dtypes are cast); ``labels``, when given, one per row.
    ``out``, a writable buffer of at least the records' size, is written (and a memoryview of
    the records in it returned) instead of a new bytearray: a caller that writes a batch's
    records out before it encodes the next reuses memory already paged in.
    """
    features = np.asarray(features)
    if features.ndim != 2:
        raise CodecError(
            f"features must be a 2-D (rows, features) array, got shape {features.shape}"
        )
    n, d = features.shape
    labels = _as_labels(labels, n)
    layout = DenseLayout.of(d, labels is not None)
    features = np.ascontiguousarray(features, dtype="<f4")
    rec = layout.record_len
    if out is None:
        buf = bytearray(n * rec)  # starts zeroed, so the padding already is
    else:
        buf = memoryview(out).cast("B")[: n * rec]
        if len(buf) < n * rec:
            raise CodecError(f"out holds {len(buf):,} bytes; {n:,} records need {n * rec:,}")
    mat = np.frombuffer(buf, dtype=np.uint8).reshape(n, rec)
    h = len(layout.header)
    header = np.frombuffer(layout.header, dtype=np.uint8)
    label_prefix = np.frombuffer(LABEL_PREFIX, dtype=np.uint8)
    feature_bytes = features.view(np.uint8).reshape(n, 4 * d)
    end = h + 4 * d
    written = layout.label_offset + 4 if labels is not None else end
    for s in range(0, n, CHUNK_ROWS):
        e = min(n, s + CHUNK_ROWS)
        mat[s:e, :h] = header
        mat[s:e, h:end] = feature_bytes[s:e]
        if labels is not None:
            mat[s:e, end : end + len(LABEL_PREFIX)] = label_prefix
            lo = layout.label_offset
            mat[s:e, lo : lo + 4] = labels[s:e].view(np.uint8).reshape(-1, 4)
        if out is not None:
            mat[s:e, written:] = 0  # the padding: ``out`` may hold an earlier batch's bytes
    return buf


def _check_csr(indptr, indices, values, n_cols: int):
    indptr = np.asarray(indptr)
    indices = np.asarray(indices)
    values = np.asarray(values)
    if indptr.ndim != 1 or indices.ndim != 1 or values.ndim != 1:
        raise CodecError("a sparse batch needs 1-D indptr, indices and values (CSR)")
    if indptr.size == 0 or indptr[0] != 0:
        raise CodecError("indptr must start at 0 and hold one entry per row plus one")
    if indices.size != values.size or int(indptr[-1]) != values.size:
        raise CodecError(
            f"indptr ends at {int(indptr[-1])} but there are {indices.size} indices and "
            f"{values.size} values"
        )
    indptr = indptr.astype(np.int64)
    if np.any(np.diff(indptr) < 0):
        raise CodecError("indptr must not decrease")
    if n_cols < 1:
        raise CodecError(f"n_cols must be at least 1, got {n_cols}")
    if indices.size:
        lo, hi = int(indices.min()), int(indices.max())
        if lo < 0 or hi >= n_cols:
            bad = lo if lo < 0 else hi
            raise CodecError(f"column index {bad} is outside 0..{n_cols - 1} (n_cols={n_cols})")
    return indptr, indices, np.ascontiguousarray(values, dtype="<f4")


def encode_sparse(indptr, indices, values, n_cols: int, labels=None) -> bytearray:
    """RecordIO-protobuf bytes for a CSR batch: per row its values, keys and ``shape=[n_cols]``.

    Rows with no stored values still get a record (shape only), as the SDK writes them.
    """
    indptr, keys, values = _check_csr(indptr, indices, values, n_cols)
    n = indptr.size - 1
    labels = _as_labels(labels, n)
    key_lens = _varint_len(keys)
    csum = np.zeros(keys.size + 1, dtype=np.int64)
    np.cumsum(key_lens, out=csum[1:])
    kb = csum[indptr[1:]] - csum[indptr[:-1]]  # key bytes per row
    lengths = _sparse_lengths(np.diff(indptr), kb, n_cols, labels is not None)
    ends = np.cumsum(8 + ((lengths[-1] + 3) & ~3))
    buf = bytearray(int(ends[-1]) if n else 0)
    out = np.frombuffer(buf, dtype=np.uint8)
    for s in range(0, n, CHUNK_ROWS):
        e = min(n, s + CHUNK_ROWS)
        lo, hi = int(indptr[s]), int(indptr[e])
        _encode_sparse_chunk(
            out[(int(ends[s - 1]) if s else 0) : int(ends[e - 1])],
            indptr[s : e + 1] - lo,
            keys[lo:hi],
            key_lens[lo:hi],
            kb[s:e],
            [x[s:e] for x in lengths],
            values[lo:hi],
            n_cols,
            None if labels is None else labels[s:e],
        )
    return buf


def _sparse_lengths(k, kb, n_cols: int, labelled: bool) -> list[np.ndarray]:
    """Per row, the Float32Tensor, Value, map entry and Record (lrec) lengths; checks 2^29."""
    vb = 4 * k
    len_f = np.where(k > 0, 1 + _varint_len(vb) + vb + 1 + _varint_len(kb) + kb, 0)
    len_f += 2 + _vl(n_cols)  # shape: tag, length, varint(n_cols)
    len_v = 1 + _varint_len(len_f) + len_f
    len_e = len(VALUES_KEY) + 1 + _varint_len(len_v) + len_v
    lrec = 1 + _varint_len(len_e) + len_e + (LABEL_BYTES if labelled else 0)
    if lrec.size and int(lrec.max()) >= MAX_RECORD_BYTES:
        row = int(np.argmax(lrec))
        raise CodecError(
            f"row {row} would be a {int(lrec[row]):,}-byte record; RecordIO records must be "
            f"smaller than 2^29 = {MAX_RECORD_BYTES:,} bytes (too many features in one row)"
        )
    return [len_f, len_v, len_e, lrec]


def _encode_sparse_chunk(out, indptr, keys, key_lens, kb, lengths, values, n_cols, labels):
    """Lay out a run of sparse rows into ``out``, which is exactly their size."""
    n = indptr.size - 1
    k = np.diff(indptr)
    has = k > 0
    vb = 4 * k  # value bytes per row
    shape_field = b"\x1a" + _varint(_vl(n_cols)) + _varint(n_cols)
    len_f, len_v, len_e, lrec = lengths
    padded = (lrec + 3) & ~3

    # Per row, everything but the values and keys, written side by side: A (framing and
    # headers up to the first value byte), B (the keys header), C (shape, label, padding).
    w = _RowWriter(n, 64 + len(shape_field) + LABEL_BYTES)
    w.const(MAGIC_LE)
    w.uint32(lrec)
    w.const(b"\x0a")
    w.varint(len_e)
    w.const(VALUES_KEY + b"\x12")
    w.varint(len_v)
    w.const(b"\x12")
    w.varint(len_f)
    w.const(b"\x0a", where=has)
    w.varint(vb, where=has)
    len_a = w.cursor.copy()
    w.const(b"\x12", where=has)
    w.varint(kb, where=has)
    len_ab = w.cursor.copy()
    w.const(shape_field)
    if labels is not None:
        w.const(LABEL_PREFIX)
        w.const_rows(labels.view(np.uint8).reshape(-1, 4))
    len_c = 8 + padded - vb - kb - len_ab  # ends with the padding: zeros the writer left
    small = w.used(len_ab + len_c)

    # Row by row the record is A, values, B, keys, C. First the non-value stream (A B keys C),
    # then the values slotted in after each A: two masked copies, no per-row loop.
    picks = np.tile(np.array([False, True, False]), n)
    rest = np.empty(int((len_ab + kb + len_c).sum()), dtype=np.uint8)
    is_key = np.repeat(picks, np.stack([len_ab, kb, len_c], axis=1).ravel())
    rest[is_key] = _varint_bytes(keys, key_lens)
    rest[~is_key] = small
    is_value = np.repeat(picks, np.stack([len_a, vb, len_ab - len_a + kb + len_c], axis=1).ravel())
    out[is_value] = values.view(np.uint8)
    out[~is_value] = rest
