"""The wire format both halves share: RecordIO framing, protobuf varints, and the fixed
layout of a dense record (MXNet/dmlc RecordIO around SageMaker's ``aialgs.data.Record``
protobuf, as the SageMaker Python SDK writes it). numpy only; no I/O.

Each record is ``magic, length, payload, zero padding to 4 bytes``; the payload is an
``aialgs.data.Record`` whose ``features["values"]`` and ``label["values"]`` are Float32Tensors
(sparse rows add ``keys`` and ``shape``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from ..errors import CodecError

MAGIC = 0xCED7230A
MAX_RECORD_BYTES = 1 << 29  # lrec keeps 29 bits for the length; the top 3 are the cflag
MAGIC_LE = struct.pack("<I", MAGIC)
VALUES_KEY = b"\x0a\x06values"  # map entry: field 1 (key), 6 bytes, "values"
# label["values"] = Float32Tensor{values: [label]}: 20 bytes, the last 4 being the float32.
LABEL_PREFIX = b"\x12\x12" + VALUES_KEY + b"\x12\x08\x12\x06\x0a\x04"
LABEL_BYTES = len(LABEL_PREFIX) + 4
CHUNK_ROWS = 8192  # rows laid out per pass: keeps the working set in cache


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
        len_e = len(VALUES_KEY) + 1 + _vl(len_v) + len_v
        lrec = 1 + _vl(len_e) + len_e + (LABEL_BYTES if labelled else 0)
        _check_record_size(lrec)
        header = (
            MAGIC_LE
            + struct.pack("<I", lrec)
            + b"\x0a" + _varint(len_e) + VALUES_KEY
            + b"\x12" + _varint(len_v)
            + b"\x12" + _varint(len_f)
            + b"\x0a" + _varint(4 * d)
        )  # fmt: skip
        return cls(d, labelled, header, lrec, 8 + ((lrec + 3) & ~3))

    @property
    def label_offset(self) -> int:
        return len(self.header) + 4 * self.d + len(LABEL_PREFIX)


def record_ends(buf, n: int | None = None) -> np.ndarray:
    """The end offset of each whole record in a RecordIO stream (for cutting it at record
    boundaries). ``n`` records of one size (dense rows) are found without a scan."""
    size = len(buf)
    if n and size % n == 0 and size:
        (lrec,) = struct.unpack_from("<I", buf, 4)
        lrec &= MAX_RECORD_BYTES - 1
        if (8 + lrec + (-lrec % 4)) * n == size:
            step = size // n
            ends = np.arange(step, size + 1, step, dtype=np.int64)
            # equal sizes are certain for dense rows, a coincidence for sparse ones: check
            if _all_framed(buf, ends):
                return ends
    ends, pos = [], 0
    view = memoryview(buf)
    while pos < size:
        magic, lrec = struct.unpack_from("<II", view, pos)
        if magic != MAGIC:
            raise CodecError(f"bad RecordIO magic at byte {pos}")
        lrec &= MAX_RECORD_BYTES - 1
        pos += 8 + lrec + (-lrec % 4)
        ends.append(pos)
    if pos != size:
        raise CodecError(f"a record runs past the end of the stream ({pos} > {size})")
    return np.array(ends, dtype=np.int64)


def _all_framed(buf, ends: np.ndarray) -> bool:
    starts = np.concatenate(([0], ends[:-1]))
    words = np.frombuffer(buf, dtype="<u4", count=len(buf) // 4)
    return bool((words[starts // 4] == MAGIC).all())
