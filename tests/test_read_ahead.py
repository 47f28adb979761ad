"""The direct path's read-ahead: a reader thread a bounded number of batches ahead, with the
same batches, in the same order, errors where they happened, and no thread left behind."""

from __future__ import annotations

import threading
import time

import numpy as np
import pyarrow as pa
import pytest
from helpers import write_columns

from jobs.errors import InputError
from jobs.parquet import Piece, _read_pieces, _scan_options, ahead, discover, read_pieces
from jobs.settings import S3Settings


def _threads() -> int:
    return sum(t.name == "read-ahead" for t in threading.enumerate())


def test_items_arrive_in_order_and_the_reader_stays_within_depth():
    produced = []

    def items():
        for i in range(50):
            produced.append(i)
            yield i

    got = []
    for item in ahead(items(), 3):
        time.sleep(0.002)  # a slow consumer: the producer would run away if unbounded
        got.append(item)
        assert len(produced) - len(got) <= 3 + 1  # the queue, and one item in hand
    assert got == list(range(50))
    assert _threads() == 0


def test_an_error_is_raised_where_it_happened():
    def items():
        yield 1
        yield 2
        raise InputError("cannot read Parquet file f.parquet: truncated")

    got = []
    with pytest.raises(InputError, match="f.parquet"):
        for item in ahead(items(), 2):
            got.append(item)
    assert got == [1, 2]
    assert _threads() == 0


def test_a_consumer_that_stops_early_stops_the_reader():
    closed = threading.Event()

    def items():
        try:
            yield from range(10_000)
        finally:
            closed.set()

    reader = ahead(items(), 2)
    assert next(reader) == 0
    reader.close()
    assert closed.wait(5)
    assert _threads() == 0


def test_read_ahead_and_small_ranges_read_the_same_batches(tmp_path):
    """What S3 inputs get (a reader thread, 1 MB ranges, 4 in flight) reads exactly what a
    plain inline read with pyarrow's defaults does."""
    rng = np.random.default_rng(3)
    x = rng.random((5000, 20), dtype=np.float32)
    src = write_columns(tmp_path / "in", x, rng.integers(0, 2, 5000), files=3,
                        row_group_size=700)  # fmt: skip
    inv = discover([src], S3Settings())
    pieces = [Piece(f) for f in inv.files] + [Piece(inv.files[0], (0, 2))]
    cols = [str(j) for j in range(20)] + ["target"]
    plain = list(_read_pieces(pieces, S3Settings(), inv.schema, cols, 512, _scan_options(1, 32)))
    early = list(ahead(
        _read_pieces(pieces, S3Settings(), inv.schema, cols, 512, _scan_options(4, 1)), 2
    ))  # fmt: skip
    assert len(plain) == len(early) > 9
    assert pa.Table.from_batches(plain).equals(pa.Table.from_batches(early))
    # local files are read inline whatever the settings (no latency to hide)
    local = read_pieces(pieces, S3Settings(), inv.schema, cols, 512, read_ahead=2)
    next(local)
    assert _threads() == 0
    local.close()
