"""RecordIO-wrapped protobuf (``aialgs.data.Record``), encoded and decoded with numpy.

The bytes are identical to what the SageMaker Python SDK's ``write_numpy_to_dense_tensor`` and
``write_spmatrix_to_sparse_tensor`` write for float32 data, but whole batches are laid out at
once instead of one protobuf message per row. This module does no I/O of its own beyond reading
the file object handed to ``iter_batches``; Spark and S3 live elsewhere.

Wire layout (``../shared/RECORDIO.md``): each record is ``magic, length, payload, zero padding
to 4 bytes``; the payload is a Record whose ``features["values"]`` and ``label["values"]`` are
Float32Tensors (sparse rows add ``keys`` and ``shape``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from jobs.errors import CodecError

MAGIC = 0xCED7230A
MAX_RECORD_BYTES = 1 << 29  # lrec keeps 29 bits for the length; the top 3 are the cflag
_MAGIC_LE = struct.pack("<I", MAGIC)
_VALUES_KEY = b"\x0a\x06values"  # map entry: field 1 (key), 6 bytes, "values"
# label["values"] = Float32Tensor{values: [label]}: 20 bytes, the last 4 being the float32.
_LABEL_PREFIX = b"\x12\x12" + _VALUES_KEY + b"\x12\x08\x12\x06\x0a\x04"
_LABEL_BYTES = len(_LABEL_PREFIX) + 4
_CHUNK_ROWS = 8192  # rows laid out per pass: keeps the working set in cache


# ----------------------------------------------------------------------------- varints


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _varint_len(values: np.ndarray) -> np.ndarray:
    """Bytes each non-negative value takes as a protobuf varint (1..10), as uint8."""
    n = np.ones(values.shape, dtype=np.uint8)
    if values.size == 0:
        return n
    top = int(values.max())
    shift = 7
    while shift < 64 and top >= (1 << shift):  # only the widths that occur
        n += values >= (1 << shift)
        shift += 7
    return n


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
    """Writes per-row fields of varying width side by side into a (rows, width) byte matrix."""

    def __init__(self, n: int, width: int):
        self.mat = np.zeros((n, width), dtype=np.uint8)
        self.cursor = np.zeros(n, dtype=np.int64)
        self._rows = np.arange(n)

    def const(self, data: bytes, where: np.ndarray | None = None) -> None:
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
        for j in range(data.shape[1]):
            self.mat[self._rows, self.cursor + j] = data[:, j]
        self.cursor += data.shape[1]

    def varint(self, values: np.ndarray, where: np.ndarray | None = None) -> None:
        rows = self._rows if where is None else self._rows[where]
        values = values.astype(np.uint64)
        if where is not None:
            values = values[where]
        lens = _varint_len(values)
        start = self.cursor[rows]
        for j in range(int(lens.max()) if lens.size else 0):
            sel = lens > j
            byte = ((values[sel] >> np.uint64(7 * j)) & np.uint64(0x7F)).astype(np.uint8)
            byte[lens[sel] > j + 1] |= 0x80
            self.mat[rows[sel], start[sel] + j] = byte
        self.cursor[rows] += lens


# ----------------------------------------------------------------------------- checks


def _as_labels(labels, n: int) -> np.ndarray | None:
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise CodecError(f"labels must be a 1-D array, got shape {labels.shape}")
    if labels.shape[0] != n:
        raise CodecError(f"labels has {labels.shape[0]} values but there are {n} rows")
    return np.ascontiguousarray(labels, dtype="<f4")


def _check_record_size(lrec: np.ndarray | int) -> None:
    biggest = int(np.max(lrec)) if np.size(lrec) else 0
    if biggest >= MAX_RECORD_BYTES:
        row = int(np.argmax(lrec)) if np.ndim(lrec) else 0
        raise CodecError(
            f"row {row} would be a {biggest:,}-byte record; RecordIO records must be smaller "
            f"than 2^29 = {MAX_RECORD_BYTES:,} bytes (too many features in one row)"
        )


def _vl(x: int) -> int:
    return len(_varint(x))


# ----------------------------------------------------------------------------- dense


@dataclass(frozen=True)
class DenseLayout:
    """Where everything sits in a dense record of ``d`` features: every record is alike."""

    d: int
    labelled: bool
    header: bytes  # magic, length, protobuf headers up to the first feature byte
    payload_len: int  # lrec
    record_len: int  # with framing and padding

    @classmethod
    def of(cls, d: int, labelled: bool) -> DenseLayout:
        if d < 1:
            raise CodecError(f"a record needs at least one feature, got {d}")
        len_f = 1 + _vl(4 * d) + 4 * d
        len_v = 1 + _vl(len_f) + len_f
        len_e = len(_VALUES_KEY) + 1 + _vl(len_v) + len_v
        lrec = 1 + _vl(len_e) + len_e + (_LABEL_BYTES if labelled else 0)
        _check_record_size(lrec)
        header = (
            _MAGIC_LE
            + struct.pack("<I", lrec)
            + b"\x0a" + _varint(len_e) + _VALUES_KEY
            + b"\x12" + _varint(len_v)
            + b"\x12" + _varint(len_f)
            + b"\x0a" + _varint(4 * d)
        )  # fmt: skip
        return cls(d, labelled, header, lrec, 8 + ((lrec + 3) & ~3))

    @property
    def label_offset(self) -> int:
        return len(self.header) + 4 * self.d + len(_LABEL_PREFIX)


def encode_dense(features, labels=None) -> bytearray:
    """RecordIO-protobuf bytes for a dense ``(n, d)`` batch, one record per row.

    Values are written as float32 (other dtypes are cast); ``labels``, when given, one per row.
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
    buf = bytearray(n * rec)
    out = np.frombuffer(buf, dtype=np.uint8).reshape(n, rec)
    h = len(layout.header)
    header = np.frombuffer(layout.header, dtype=np.uint8)
    label_prefix = np.frombuffer(_LABEL_PREFIX, dtype=np.uint8)
    feature_bytes = features.view(np.uint8).reshape(n, 4 * d)
    end = h + 4 * d
    for s in range(0, n, _CHUNK_ROWS):
        e = min(n, s + _CHUNK_ROWS)
        out[s:e, :h] = header
        out[s:e, h:end] = feature_bytes[s:e]
        if labels is not None:
            out[s:e, end : end + len(_LABEL_PREFIX)] = label_prefix
            lo = layout.label_offset
            out[s:e, lo : lo + 4] = labels[s:e].view(np.uint8).reshape(-1, 4)
        # bytearray starts zeroed, so the padding already is.
    return buf


# ----------------------------------------------------------------------------- sparse


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
    for s in range(0, n, _CHUNK_ROWS):
        e = min(n, s + _CHUNK_ROWS)
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
    len_e = len(_VALUES_KEY) + 1 + _varint_len(len_v) + len_v
    lrec = 1 + _varint_len(len_e) + len_e + (_LABEL_BYTES if labelled else 0)
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
    w = _RowWriter(n, 64 + len(shape_field) + _LABEL_BYTES)
    w.const(_MAGIC_LE)
    w.uint32(lrec)
    w.const(b"\x0a")
    w.varint(len_e)
    w.const(_VALUES_KEY + b"\x12")
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
        w.const(_LABEL_PREFIX)
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


# ----------------------------------------------------------------------------- decode


@dataclass
class DenseBatch:
    """Decoded dense records: ``features`` is ``(n, d)``; ``labels`` ``(n,)`` or None."""

    features: np.ndarray
    labels: np.ndarray | None

    def __len__(self) -> int:
        return self.features.shape[0]


@dataclass
class SparseBatch:
    """Decoded sparse records in CSR form."""

    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    n_cols: int
    labels: np.ndarray | None

    def __len__(self) -> int:
        return self.indptr.size - 1

    def to_dense(self) -> np.ndarray:
        out = np.zeros((len(self), self.n_cols), dtype=self.values.dtype)
        rows = np.repeat(np.arange(len(self)), np.diff(self.indptr))
        out[rows, self.indices.astype(np.int64)] = self.values
        return out


@dataclass
class _Tensor:
    values: np.ndarray
    keys: np.ndarray | None
    shape: list[int] | None


def _read_varint(buf, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise IndexError("varint runs past the end")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _decode_varints(data: np.ndarray) -> np.ndarray:
    """A packed run of varints → uint64 values, vectorised."""
    if data.size == 0:
        return np.empty(0, dtype=np.uint64)
    ends = np.flatnonzero(data < 0x80)
    if ends.size == 0 or ends[-1] != data.size - 1:
        raise IndexError("packed varints end mid-value")
    starts = np.concatenate(([0], ends[:-1] + 1))
    pos = np.arange(data.size) - np.repeat(starts, ends - starts + 1)
    parts = (data & 0x7F).astype(np.uint64) << (7 * pos).astype(np.uint64)
    return np.add.reduceat(parts, starts)


def _fields(buf, pos: int, end: int):
    """(field number, wire type, value or (start, end)) for each field of a message."""
    while pos < end:
        tag, pos = _read_varint(buf, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
            yield field, wire, value
        elif wire == 2:
            size, pos = _read_varint(buf, pos)
            if pos + size > end:
                raise IndexError("field runs past its message")
            yield field, wire, (pos, pos + size)
            pos += size
        elif wire == 5:
            yield field, wire, (pos, pos + 4)
            pos += 4
        elif wire == 1:
            yield field, wire, (pos, pos + 8)
            pos += 8
        else:
            raise IndexError(f"unsupported wire type {wire}")
    if pos != end:
        raise IndexError("message runs past its end")


_TENSOR_DTYPES = {2: "<f4", 3: "<f8", 7: None}  # Value oneof field -> packed dtype (7: varints)


def _parse_tensor(buf, start: int, end: int) -> _Tensor:
    """A Value message holding one Float32/Float64/Int32 tensor."""
    for field, wire, span in _fields(buf, start, end):
        if field in _TENSOR_DTYPES and wire == 2:
            dtype = _TENSOR_DTYPES[field]
            values, keys, shape = [], [], []
            for f, w, v in _fields(buf, *span):
                if f == 1 and w == 2:
                    chunk = np.frombuffer(buf, np.uint8, v[1] - v[0], v[0])
                    if dtype is None:
                        values.append(_decode_varints(chunk).astype(np.int64).astype(np.int32))
                    else:
                        values.append(chunk.view(dtype))
                elif f == 1:  # unpacked scalar
                    if w == 0:
                        values.append(np.array([v], dtype=np.int64).astype(np.int32))
                    else:
                        values.append(np.frombuffer(buf, dtype, 1, v[0]))
                elif f == 2 and w == 2:
                    keys.append(_decode_varints(np.frombuffer(buf, np.uint8, v[1] - v[0], v[0])))
                elif f == 2 and w == 0:
                    keys.append(np.array([v], dtype=np.uint64))
                elif f == 3 and w == 2:
                    shape.extend(_decode_varints(np.frombuffer(buf, np.uint8, v[1] - v[0], v[0])))
                elif f == 3 and w == 0:
                    shape.append(v)
            vals = np.concatenate(values) if values else np.empty(0, dtype=dtype or np.int32)
            return _Tensor(
                vals,
                np.concatenate(keys) if keys else None,
                [int(s) for s in shape] if shape else None,
            )
        if field == 9:
            raise IndexError("Bytes values are not tensors this job reads")
    raise IndexError("value holds no tensor")


def _parse_record(buf, start: int, end: int) -> tuple[_Tensor | None, _Tensor | None]:
    features = label = None
    for field, wire, span in _fields(buf, start, end):
        if field in (1, 2) and wire == 2:
            key = None
            value = None
            for f, w, v in _fields(buf, *span):
                if f == 1 and w == 2:
                    key = bytes(buf[v[0] : v[1]])
                elif f == 2 and w == 2:
                    value = v
            if key == b"values" and value is not None:
                tensor = _parse_tensor(buf, *value)
                if field == 1:
                    features = tensor
                else:
                    label = tensor
    return features, label


def _frame_error(offset: int, what: str) -> CodecError:
    return CodecError(f"corrupt RecordIO at byte offset {offset}: {what}")


def _scan(buf, pos: int, base: int, final: bool, limit: int) -> tuple[list[tuple[int, int]], int]:
    """Up to ``limit`` record payload spans from ``pos``, and where the next record starts."""
    spans = []
    size = len(buf)
    while pos + 8 <= size and len(spans) < limit:
        magic, lrec = struct.unpack_from("<II", buf, pos)
        if magic != MAGIC:
            raise _frame_error(base + pos, f"expected magic 0x{MAGIC:08X}, found 0x{magic:08X}")
        cflag, length = lrec >> 29, lrec & (MAX_RECORD_BYTES - 1)
        if cflag != 0:
            raise _frame_error(
                base + pos, f"cflag {cflag} marks a split record, which SageMaker writers never use"
            )
        total = 8 + ((length + 3) & ~3)
        if pos + total > size:
            if final:
                raise _frame_error(
                    base + pos,
                    f"truncated record: it needs {total} bytes, only {size - pos} remain",
                )
            break
        spans.append((pos + 8, pos + 8 + length))
        pos += total
    if final and len(spans) < limit and pos != size:
        raise _frame_error(base + pos, f"truncated record header ({size - pos} bytes)")
    return spans, pos


def _dense_run(buf, pos: int, layout: DenseLayout) -> DenseBatch | None:
    """The longest run of whole records from ``pos`` that all have ``layout``, decoded at once."""
    rec = layout.record_len
    n = (len(buf) - pos) // rec
    if n == 0:
        return None
    mat = np.frombuffer(buf, np.uint8, n * rec, pos).reshape(n, rec)
    h = len(layout.header)
    ok = (mat[:, :h] == np.frombuffer(layout.header, np.uint8)).all(axis=1)
    end = h + 4 * layout.d
    if layout.labelled:
        prefix = np.frombuffer(_LABEL_PREFIX, np.uint8)
        ok &= (mat[:, end : end + len(prefix)] == prefix).all(axis=1)
    if not ok.all():
        n = int(np.argmin(ok))  # every record before the first odd one is fine
        if n == 0:
            return None
        mat = mat[:n]
    labels = None
    if layout.labelled:
        lo = layout.label_offset
        labels = mat[:, lo : lo + 4].copy().view("<f4").ravel()
    return DenseBatch(mat[:, h:end].copy().view("<f4"), labels)


def _batch_from_records(buf, spans, base: int):
    dense_rows, labels = [], []
    sparse = None
    kind = None
    for start, end in spans:
        try:
            features, label = _parse_record(buf, start, end)
        except (IndexError, ValueError) as exc:
            raise _frame_error(base + start - 8, f"bad protobuf payload ({exc})") from None
        if features is None:
            raise _frame_error(base + start - 8, 'record has no features["values"] tensor')
        this = "sparse" if features.keys is not None or features.shape else "dense"
        if kind is None:
            kind = this
            if this == "sparse":
                sparse = ([0], [], [], features.shape[0] if features.shape else 0)
        elif this != kind:
            raise _frame_error(base + start - 8, f"a {this} record among {kind} ones")
        labels.append(None if label is None else label.values)
        if kind == "dense":
            dense_rows.append(features.values)
        else:
            keys = features.keys if features.keys is not None else np.empty(0, np.uint64)
            if keys.size != features.values.size:
                raise _frame_error(
                    base + start - 8, "sparse record with keys and values of different lengths"
                )
            sparse[0].append(sparse[0][-1] + keys.size)
            sparse[1].append(keys)
            sparse[2].append(features.values)
    has_labels = [x is not None for x in labels]
    if any(has_labels) and not all(has_labels):
        raise CodecError(f"records near byte offset {base} mix labelled and unlabelled rows")
    lab = np.concatenate(labels) if labels and all(has_labels) else None
    if kind == "dense":
        widths = {r.size for r in dense_rows}
        if len(widths) > 1:
            raise CodecError(
                f"dense records near byte offset {base} have different widths: {sorted(widths)}"
            )
        return DenseBatch(np.stack(dense_rows), lab)
    indptr, keys, values, n_cols = sparse
    return SparseBatch(
        np.asarray(indptr, dtype=np.int64),
        np.concatenate(keys) if keys else np.empty(0, np.uint64),
        np.concatenate(values) if values else np.empty(0, np.float32),
        n_cols,
        lab,
    )


def _dense_layout_of(buf, span) -> DenseLayout | None:
    """The fixed layout of a dense float32 record, or None when the record is anything else."""
    try:
        features, label = _parse_record(buf, *span)
    except (IndexError, ValueError):
        return None
    if features is None or features.keys is not None or features.shape:
        return None
    if features.values.dtype != np.dtype("<f4") or features.values.size == 0:
        return None
    layout = DenseLayout.of(features.values.size, label is not None)
    return layout if layout.payload_len == span[1] - span[0] else None


def _chunks(source, read_size: int) -> Iterator[tuple[bytes, bool]]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        yield source, True
        return
    chunk = source.read(read_size)
    while True:
        following = source.read(read_size) if chunk else b""
        yield chunk, not following
        if not following:
            return
        chunk = following


def iter_batches(
    source: bytes | bytearray | memoryview | BinaryIO,
    read_size: int = 16 << 20,
    batch_rows: int = 65536,
) -> Iterator[DenseBatch | SparseBatch]:
    """Decode records in batches from bytes or a binary stream, never holding the whole input.

    Dense float32 records of one width are decoded a run at a time as one matrix; anything
    else record by record. Raises CodecError naming the byte offset of the first bad record.
    """
    layout: DenseLayout | None | bool = False  # False: not looked yet; None: not fixed-layout
    pending, base = b"", 0
    seen_sparse = False
    for chunk, final in _chunks(source, read_size):
        buf = chunk if not pending else pending + bytes(chunk)
        pos = 0
        while pos < len(buf):
            if layout is False:
                first, _ = _scan(buf, pos, base, final, 1)
                if not first:
                    break
                layout = _dense_layout_of(buf, first[0])
            if layout is not None:
                batch = _dense_run(buf, pos, layout)
                if batch is not None:
                    yield batch
                    pos += len(batch) * layout.record_len
                    continue
            spans, nxt = _scan(buf, pos, base, final, batch_rows)
            if not spans:
                break
            batch = _batch_from_records(buf, spans, base)
            if layout is not None and isinstance(batch, SparseBatch):
                raise _frame_error(base + pos, "a sparse record among dense ones")
            if layout is None and isinstance(batch, DenseBatch) and seen_sparse:
                raise _frame_error(base + pos, "a dense record among sparse ones")
            seen_sparse = seen_sparse or isinstance(batch, SparseBatch)
            yield batch
            pos = nxt
        pending = bytes(buf[pos:])
        base += pos
    if pending:
        _scan(pending, 0, base, True, 1)  # raises: what is left is not a whole record
        raise _frame_error(base, f"{len(pending)} trailing bytes")


def decode(source) -> DenseBatch | SparseBatch | None:
    """All records of ``source`` as one batch (None when it holds no records)."""
    batches = list(iter_batches(source))
    if not batches:
        return None
    return concat_batches(batches)


def concat_batches(batches: list[DenseBatch | SparseBatch]) -> DenseBatch | SparseBatch:
    first = batches[0]
    if any(type(b) is not type(first) for b in batches):
        raise CodecError("cannot join dense and sparse records")
    labels = None
    if all(b.labels is not None for b in batches):
        labels = np.concatenate([b.labels for b in batches])
    if isinstance(first, DenseBatch):
        return DenseBatch(np.concatenate([b.features for b in batches]), labels)
    offsets = np.cumsum([0] + [b.indptr[-1] for b in batches[:-1]])
    indptr = np.concatenate(
        [first.indptr[:1]] + [b.indptr[1:] + o for b, o in zip(batches, offsets)]
    )
    return SparseBatch(
        indptr,
        np.concatenate([b.indices for b in batches]),
        np.concatenate([b.values for b in batches]),
        max(b.n_cols for b in batches),
        labels,
    )
