"""Decoding: RecordIO-protobuf bytes or a stream → numpy batches, streaming, with errors that
name the byte offset of the first bad record. No I/O of its own beyond the stream handed in.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from ..errors import CodecError
from .wire import LABEL_PREFIX, MAGIC, MAX_RECORD_BYTES, DenseLayout


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
        prefix = np.frombuffer(LABEL_PREFIX, np.uint8)
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
