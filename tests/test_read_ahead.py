"""The direct path's read-ahead: a reader thread a bounded number of batches ahead, with the
same batches, in the same order, errors where they happened, and no thread left behind; and
the driver's discovery of the inputs, which runs ahead of the lease and Spark's start."""

from __future__ import annotations

import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from helpers import write_columns

from jobs.errors import InputError
from jobs.parquet import (
    Piece,
    Stopped,
    _RangedFile,
    _Ranges,
    _read_pieces,
    ahead,
    discover,
    read_pieces,
)
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
        assert len(produced) - len(got) <= 3  # queued, and the one being produced
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
    """What S3 inputs get (a reader thread, reads split into ranges, 4 in flight) reads exactly
    what a plain inline read does, and what pyarrow's dataset scanner reads."""
    rng = np.random.default_rng(3)
    x = rng.random((5000, 20), dtype=np.float32)
    src = write_columns(tmp_path / "in", x, rng.integers(0, 2, 5000), files=3,
                        row_group_size=700)  # fmt: skip
    inv = discover([src], S3Settings())
    pieces = [Piece(f) for f in inv.files] + [Piece(inv.files[0], (0, 2))]
    cols = [str(j) for j in range(20)] + ["target"]
    plain = list(_read_pieces(pieces, S3Settings(), inv.schema, cols, 512, _Ranges(1, 32 << 20)))
    early = list(ahead(
        _read_pieces(pieces, S3Settings(), inv.schema, cols, 512, _Ranges(4, 4096)), 2
    ))  # fmt: skip
    assert len(plain) == len(early) > 9
    assert all(len(b) <= 512 for b in plain)
    assert pa.Table.from_batches(plain).equals(pa.Table.from_batches(early))
    # pyarrow's own readers as the oracle: the dataset scanner, and the row groups read whole
    whole = pa.Table.from_batches(plain)
    scanned = ds.dataset([f.path for f in inv.files], format="parquet").to_table(columns=cols)
    assert whole.slice(0, scanned.num_rows).equals(scanned)
    some = pq.ParquetFile(inv.files[0].path).read_row_groups([0, 2], columns=cols)
    assert whole.slice(scanned.num_rows).equals(some)
    # local files are read inline whatever the settings (no latency to hide)
    local = read_pieces(pieces, S3Settings(), inv.schema, cols, 512, read_ahead=2)
    next(local)
    assert _threads() == 0
    local.close()


def test_a_large_read_goes_out_in_ranges_in_flight_and_comes_back_whole(tmp_path):
    """The reads pyarrow's pre-buffering makes (one per coalesced run of column chunks) are
    split into equal ranged reads on the range threads, at most ``in_flight`` at once, and
    reassembled in order; a short read is an error, not a truncated file."""
    data = np.random.default_rng(0).bytes(100_000)
    path = tmp_path / "blob"
    path.write_bytes(data)
    seen, lock, at_once, most = [], threading.Lock(), [0], [0]

    class Counting:
        def __init__(self, native):
            self.native = native

        def size(self):
            return self.native.size()

        def get_stream(self, offset, n):
            with lock:
                seen.append((offset, n, threading.current_thread().name))
                at_once[0] += 1
                most[0] = max(most[0], at_once[0])
            time.sleep(0.01)
            try:
                return pa.BufferReader(self.native.read_at(n, offset))
            finally:
                with lock:
                    at_once[0] -= 1

        def close(self):
            self.native.close()

    f = _RangedFile(Counting(pafs.LocalFileSystem().open_input_file(str(path))), _Ranges(3, 8192))
    f.seek(1000)
    assert f.read(90_000) == data[1000:91_000]
    assert len(seen) == 11 and all(n <= 8192 for _, n, _ in seen)
    assert all(name.startswith("s3-range") for _, _, name in seen)
    assert sorted(o for o, _, _ in seen) == list(range(1000, 91_000, 8182))  # 90,000 / 11
    assert most[0] == 3
    seen.clear()
    assert f.read(5000) == data[91_000:96_000]  # small: one read, in the caller's thread
    assert [(o, n) for o, n, _ in seen] == [(91_000, 5000)]
    f.seek(-10, 2)
    assert f.read(100) == data[-10:]

    # a read of a few ranges' size uses every connection it may, in ranges of at least 1 MB
    mb = 1 << 20
    big = np.random.default_rng(1).bytes(24 * mb)
    (tmp_path / "big").write_bytes(big)
    f = _RangedFile(Counting(pafs.LocalFileSystem().open_input_file(str(tmp_path / "big"))),
                    _Ranges(4, 8 * mb))  # fmt: skip
    for at, n, sizes in [
        (0, 24 * mb, [6 * mb] * 4),  # not 8 + 8 + 8 on three connections
        (5, 3 * mb, [mb] * 3),
        (7, 2 * mb + 10, [mb + 5] * 2),
        (9, mb - 1, [mb - 1]),  # in the caller's thread
    ]:
        seen.clear()
        f.seek(at)
        assert f.read(n) == big[at : at + n]
        assert sorted(k for _, k, _ in seen) == sizes

    class Short(Counting):
        def get_stream(self, offset, n):
            return pa.BufferReader(self.native.read_at(n - 1, offset))

    g = _RangedFile(Short(pafs.LocalFileSystem().open_input_file(str(path))), _Ranges(3, 8192))
    with pytest.raises(OSError, match="short read"):
        g.read(50_000)


def test_discovery_asked_to_stop_reads_no_more_footers(tmp_path, monkeypatch):
    """A run that fails before it needs its inputs (its lease refused, say) stops the discovery
    running in the background: no footer is read once ``stop`` is set."""
    import jobs.parquet as parquet

    x = np.zeros((400, 3), dtype=np.float32)
    src = write_columns(tmp_path / "in", x, np.zeros(400), files=8)
    stop, read = threading.Event(), []

    def footer(uri, path, size, s3):
        read.append(path)
        stop.set()  # as if the run failed while the first footer was read
        return real(uri, path, size, s3)

    real = parquet._footer
    monkeypatch.setattr(parquet, "FOOTER_THREADS", 1)
    monkeypatch.setattr(parquet, "_footer", footer)
    with pytest.raises(Stopped):
        discover([src], S3Settings(), stop)
    assert len(read) == 1
    monkeypatch.setattr(parquet, "_footer", real)
    stop.clear()
    assert len(discover([src], S3Settings(), stop).files) == 8
