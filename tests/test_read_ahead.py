"""The direct path's read-ahead: a reader thread a bounded number of batches ahead, with the
same batches, in the same order, errors where they happened, and no thread left behind."""

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
    _RangedFile,
    _Ranges,
    _read_pieces,
    ahead,
    chunk_runs,
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
    split into ranged reads on the range threads, at most ``in_flight`` at once, and
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
    assert sorted(o for o, _, _ in seen) == list(range(1000, 91_000, 8192))
    assert most[0] == 3
    seen.clear()
    assert f.read(5000) == data[91_000:96_000]  # small: one read, in the caller's thread
    assert [(o, n) for o, n, _ in seen] == [(91_000, 5000)]
    f.seek(-10, 2)
    assert f.read(100) == data[-10:]

    class Short(Counting):
        def get_stream(self, offset, n):
            return pa.BufferReader(self.native.read_at(n - 1, offset))

    g = _RangedFile(Short(pafs.LocalFileSystem().open_input_file(str(path))), _Ranges(3, 8192))
    with pytest.raises(OSError, match="short read"):
        g.read(50_000)


def test_the_next_row_group_is_fetched_while_this_one_is_read(tmp_path):
    """With the row groups' chunk runs planned, row group k + 1's GETs go out when pyarrow
    starts on k, each planned byte is fetched once, no chunk of a column not asked for is
    fetched, at most two row groups are held, and the batches are pyarrow's own."""
    rng = np.random.default_rng(5)
    x = rng.random((9000, 20), dtype=np.float32)  # chunks of 12 KB: gaps beyond HOLE_BYTES
    src = write_columns(tmp_path / "in", x, rng.integers(0, 2, 9000), files=1,
                        row_group_size=2000)  # fmt: skip
    path = discover([src], S3Settings()).files[0].path
    cols = ["3", "4", "10", "target"]
    gets, asked, held = [], [], []
    lock = threading.Lock()

    class Recording:
        def __init__(self, native):
            self.native = native

        def size(self):
            return self.native.size()

        def get_stream(self, offset, n):
            with lock:
                gets.append((offset, n))
            return pa.BufferReader(self.native.read_at(n, offset))

        def close(self):
            self.native.close()

    class Watched(_RangedFile):
        def read(self, n=-1):
            start = self.pos
            for k, runs in enumerate(self.groups):
                if any(s <= start < s + length for s, length in runs):
                    asked.append((k, k in self.fetched))
            out = super().read(n)
            held.append(len(self.fetched))
            return out

    native = pafs.LocalFileSystem().open_input_file(path)
    ranged = Watched(Recording(native), _Ranges(3, 4096))
    parquet = pq.ParquetFile(pa.PythonFile(ranged, mode="r"), pre_buffer=False)
    ranged.plan(chunk_runs(parquet.metadata, None, cols))
    groups, footer = ranged.groups, len(gets)
    assert footer > 0
    assert len(groups) == 5
    got = pa.Table.from_batches(list(parquet.iter_batches(batch_size=300, columns=cols)))
    assert got.equals(pq.read_table(path, columns=cols))
    firsts = {}
    for k, ready in asked:
        firsts.setdefault(k, ready)
    assert firsts == {0: False, **{k: True for k in range(1, 5)}}  # each after the first: early
    assert max(held) <= 2
    planned = sorted((s, length) for runs in groups for s, length in runs)
    gets = gets[footer:]  # the footer's were read before the plan
    inside = [(o, n) for o, n in gets if any(s <= o < s + length for s, length in planned)]
    assert sum(n for _, n in inside) == sum(length for _, length in planned)  # each byte once
    assert len(set(inside)) == len(inside)
    meta = parquet.metadata
    chunks = [meta.row_group(g).column(c) for g in range(5) for c in range(meta.num_columns)]
    unasked = [
        (min(c.data_page_offset, c.dictionary_page_offset or c.data_page_offset),
         c.total_compressed_size)
        for c in chunks if c.path_in_schema not in cols
    ]  # fmt: skip
    over = [max(0, min(o + n, s + length) - max(o, s)) for o, n in inside for s, length in unasked]
    assert sum(over) <= 100 * len(planned)  # at most pyarrow's padding past a chunk we read
    assert not [(o, n) for o, n in gets if o not in {s for s, _ in planned} and (o, n) not in
                inside and any(s <= o < s + length for s, length in unasked)]  # fmt: skip


def test_the_next_file_is_opened_and_fetched_while_this_one_is_read(tmp_path, monkeypatch):
    """From S3, a task's next file is opened (footer read, runs planned) and its first row
    group's GETs go out once this file is on its last row group; the batches are the same
    as read one file after another, and no file is left open."""
    from jobs import parquet as jp

    rng = np.random.default_rng(7)
    x = rng.random((4000, 20), dtype=np.float32)
    src = write_columns(tmp_path / "in", x, rng.integers(0, 2, 4000), files=4,
                        row_group_size=500)  # fmt: skip
    inv = discover([src], S3Settings())
    cols = [str(j) for j in range(20)] + ["target"]
    firsts, files = [], []

    class Watched(_RangedFile):
        def __init__(self, *args):
            super().__init__(*args)
            files.append(self)
            self.first = None

        def read(self, n=-1):
            if self.groups and self.first is None and self.pos >= self.index[0][0]:
                self.first = 0 in self.fetched
                firsts.append((len(files), files.index(self), self.first))
            return super().read(n)

    monkeypatch.setattr(jp, "_RangedFile", Watched)
    pieces = [Piece(f) for f in inv.files]
    assert [f.rows for f in inv.files] == [1000] * 4
    early, seen, rows = [], [], 0
    for batch in _read_pieces(pieces, S3Settings(), inv.schema, cols, 300, _Ranges(4, 4096)):
        seen.append((rows // 1000, len(files)))  # the file it came from, files opened by then
        early.append(batch)
        rows += batch.num_rows
    plain = list(_read_pieces(pieces, S3Settings(), inv.schema, cols, 300, _Ranges(1, 4096)))
    assert pa.Table.from_batches(early).equals(pa.Table.from_batches(plain))
    # while file k is read, file k + 1 is opened (not when k is done), and no further
    for k in range(3):
        assert max(opened for f, opened in seen if f == k) == k + 2
    assert all(ready for _, _, ready in firsts)  # pyarrow found each first run on its way
    assert all(f.closed for f in files)
