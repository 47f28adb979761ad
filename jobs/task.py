"""What one task does, on either read path: Arrow batches → Rows → RecordIO shards. No Spark.

A task owns one partition (a Parquet fragment on the direct path, a Spark partition on the Spark
path) and writes it as shards named by (channel, partition, roll), so a retried or speculative
attempt rewrites the same names with the same bytes. It reports what it wrote as typed reports
(:mod:`jobs.contract`); a data error is reported, not raised, so Spark does not retry what
cannot succeed.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from . import codec
from .contract import (
    THIS_PYTHON,
    Report,
    ShardReport,
    TaskFailure,
    TaskReport,
    label_key,
    report_from_json,
    report_to_json,
)
from .errors import CodecError, InputError, StorageError
from .expressions import Compiled, ExpressionError
from .runinfo import RunLayout, shard_name
from .selection import Rows, Selector, to_csr, to_dense
from .settings import S3Settings
from .storage import ShardWriter, open_shard, task_uploads

log = logging.getLogger(__name__)


@dataclass
class TaskPlan:
    """Everything a task needs, pickled into its closure (settings only, never credentials)."""

    out: str
    run_id: str  # in every shard's name: a run's cleanup removes exactly its own
    s3: S3Settings
    selector: Selector
    encoding: str  # dense | sparse
    feature_dim: int
    max_shard_bytes: int | None  # None: one shard per partition (output.shards)
    checksum: str = "crc64nvme"  # output.checksum: S3's, verified by S3 on upload
    sha256: bool = False  # output.sha256
    channel: str | None = None  # None: rows are routed by ``split``
    split: dict[str, float] = field(default_factory=dict)
    seed: int = 42
    filter: Compiled | None = None  # the direct path's input.filter (the Spark path's is in Spark)
    shuffle: ShufflePlan | None = None  # output.shuffle: rows
    progress: tuple | None = None  # (rows, bytes) Spark accumulators the driver reports
    # a Spark accumulator: a task hands its last S3 shards' uploads to the driver through it,
    # to be completed there while the task's slot starts the next task (jobs/handoff.py)
    handoff: object | None = None

    def route(self, partition: int) -> _Router:
        return _Router(self, partition)


@dataclass(frozen=True)
class ShufflePlan:
    """Where each encoded record goes in ``output.shuffle: rows``: reducer ``offset[c] + h % n[c]``
    of its channel, ordered there by the seeded hash ``h`` of (task, channel, row) — unique,
    since the hash is a bijection of 64 bits, so the order is total and the same on every
    run. ``pkeys[r]`` is a value Spark's hash partitioning sends to partition ``r`` (asked of
    Spark itself)."""

    seed: int
    reducers: dict[str, tuple[int, int]]  # channel → (first reducer, reducer count)
    pkeys: tuple[int, ...]

    def route(self, channel: str, task: int, first_row: int, n: int):
        """(pkey, key) arrays for ``n`` rows of ``channel`` from task ``task``."""
        offset, count = self.reducers[channel]
        which = list(self.reducers).index(channel)
        seq = (np.uint64(task) << np.uint64(40)) | (np.uint64(which) << np.uint64(32))
        seq = seq + np.arange(first_row, first_row + n, dtype=np.uint64)
        h = _mix(_mix(np.uint64(self.seed) + np.uint64(0x9E3779B97F4A7C15)) ^ seq)
        reducer = offset + (h % np.uint64(count)).astype(np.int64)
        pkeys = np.asarray(self.pkeys, dtype=np.int32)[reducer]
        return pkeys, h.view(np.int64)

    def channel_of(self, reducer: int) -> str:
        for channel, (offset, count) in self.reducers.items():
            if offset <= reducer < offset + count:
                return channel
        raise ValueError(f"no channel has reducer {reducer}")


def _mix(x):
    """splitmix64's finaliser: a well-mixed bijection of 64-bit values, vectorised."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


SHUFFLE_SCHEMA = pa.schema(
    [
        ("pkey", pa.int32()),
        ("key", pa.int64()),
        ("label", pa.float32()),
        ("record", pa.binary()),
        ("report", pa.string()),
    ]
)
SHUFFLE_DDL = "pkey int, key bigint, label float, record binary, report string"


class _Router:
    """Assigns each input row to a channel: all to one, or by seeded fractions.

    The draws depend only on (seed, partition) and row order, never on batch sizes, so both
    read paths and every retry split a partition the same way.
    """

    def __init__(self, plan: TaskPlan, partition: int):
        self.channel = plan.channel
        if plan.channel is None:
            self.names = list(plan.split)
            self.edges = np.cumsum([plan.split[c] for c in self.names])[:-1]
            self.rng = np.random.default_rng([plan.seed, partition])

    def __call__(self, n: int) -> list[tuple[str, np.ndarray | None]]:
        if self.channel is not None:
            return [(self.channel, None)]
        which = np.searchsorted(self.edges, self.rng.random(n), side="right")
        return [(name, which == i) for i, name in enumerate(self.names)]


def _take(batch: pa.RecordBatch, mask: np.ndarray | None) -> pa.RecordBatch:
    return batch if mask is None else batch.filter(pa.array(mask))


class _ChannelSink:
    """The shards of one channel in one task, rolled over at the size cap."""

    def __init__(self, plan: TaskPlan, channel: str, partition: int, uploads=None, reuse=None):
        self.plan, self.channel, self.partition = plan, channel, partition
        self.uploads, self.reuse = uploads, reuse
        self.layout = RunLayout.at(plan.out, plan.run_id)
        self.writer: ShardWriter | None = None
        self.roll = 0
        self.rows = 0
        self.labels: Counter = Counter()
        self.done: list[ShardReport] = []
        self.bytes_out, self.store_seconds = 0, 0.0

    def write(self, rows: Rows) -> None:
        if len(rows):
            self.write_encoded(encode(self.plan, rows, self.reuse), rows.labels, len(rows))

    def write_encoded(self, data, labels, n: int, ends: np.ndarray | None = None) -> None:
        """Append ``n`` encoded records; a shard closes before it would pass
        ``max_shard_bytes`` (a record larger than that goes alone into its shard)."""
        p, cap = self.plan, self.plan.max_shard_bytes
        view = memoryview(data)
        row, base = 0, 0
        while row < n:
            if self.writer is None:
                self.key = shard_name(self.partition, self.roll, p.run_id)
                dest = self.layout.shard(self.channel, self.key)
                self.writer = open_shard(
                    dest, p.s3, uploads=self.uploads, checksum=p.checksum, sha256=p.sha256
                )
            room = cap - self.writer.bytes if cap else None
            if room is None or len(view) - base <= room:
                self.writer.write(view[base:])
                self._count(labels, row, n)
                return
            if ends is None:
                ends = codec.record_ends(data, n)
            k = int(np.searchsorted(ends[row:] - base, room, side="right"))
            if k == 0 and self.rows == 0:
                k = 1
            if k:
                end = int(ends[row + k - 1])
                self.writer.write(view[base:end])
                self._count(labels, row, row + k)
                row, base = row + k, end
            self.close()
            self.roll += 1

    def _count(self, labels, lo: int, hi: int) -> None:
        self.rows += hi - lo
        if labels is not None and self.plan.selector.predictor_type != "regressor":
            values, counts = np.unique(labels[lo:hi], return_counts=True)
            self.labels.update({label_key(v): int(c) for v, c in zip(values, counts)})

    def close(self, last: bool = False) -> None:
        """Close the open shard; the task's ``last`` one goes to the driver to complete when
        the plan says so and the writer can."""
        w, self.writer = self.writer, None
        if w is None:
            return
        if last and self.plan.handoff is not None and hasattr(w, "hand_off"):
            w.hand_off()
        w.close()
        self.bytes_out += w.bytes
        self.store_seconds += w.wait_seconds
        self.done.append(
            ShardReport(
                self.channel, self.key, self.partition, self.rows, w.bytes, w.checksum,
                dict(self.labels), w.sha256,
            )
        )  # fmt: skip
        log.info("shard %s/%s: %d rows, %.1f MB", self.channel, self.key, self.rows, w.bytes / 1e6)
        if self.plan.progress is not None:
            rows, nbytes = self.plan.progress
            rows.add(self.rows)
            nbytes.add(w.bytes)
        self.rows = 0
        self.labels = Counter()

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()
            self.writer = None


class _Sinks(dict):
    """A task's open shards, one per channel, and the S3 uploads they share (created with the
    first S3 shard): closing them waits until every shard is complete."""

    def __init__(self, plan: TaskPlan, partition: int):
        super().__init__()
        self.plan, self.partition = plan, partition
        self.uploads = None
        self.records = _Reused()  # every channel's records, one batch at a time
        self.finish_seconds = 0.0

    def sink(self, channel: str) -> _ChannelSink:
        if channel not in self:
            if self.uploads is None:
                self.uploads = task_uploads(self.plan.out, self.plan.s3)
            self[channel] = _ChannelSink(
                self.plan, channel, self.partition, self.uploads, self.records
            )
        return self[channel]

    def close(self) -> None:
        for sink in self.values():
            sink.close(last=True)
        if self.uploads is not None:
            t = time.perf_counter()
            self.uploads.finish()
            self.finish_seconds += time.perf_counter() - t
            if self.uploads.handed:  # reaches the driver with the task's end, if it succeeds
                self.plan.handoff.add(list(self.uploads.handed))

    def abort(self) -> None:
        for sink in self.values():
            sink.abort()
        if self.uploads is not None:
            self.uploads.abort()


def encode(plan: TaskPlan, rows: Rows, reuse: _Reused | None = None):
    """The rows' records: in ``reuse``'s buffer when given (dense records only; the caller
    writes them out before it encodes again), else in a new bytearray."""
    if plan.encoding == "dense":
        out = None
        if reuse is not None:
            layout = codec.DenseLayout.of(plan.feature_dim, rows.labels is not None)
            out = reuse.buffer(len(rows) * layout.record_len)
        return codec.encode_dense(to_dense(rows, plan.feature_dim), rows.labels, out=out)
    return codec.encode_sparse(*to_csr(rows), plan.feature_dim, rows.labels)


class _Reused:
    """A buffer a task fills again for every batch: a new one per batch would be fresh pages
    for the kernel to fault in and zero (a batch's records are tens of MB), and, in a heap,
    holes of batch size that the next, larger batch does not fit."""

    def __init__(self):
        self._buf = bytearray()

    def buffer(self, nbytes: int) -> bytearray:
        if len(self._buf) < nbytes:
            self._buf = bytearray()  # the old one goes first
            self._buf = bytearray(nbytes)
        return self._buf


def _rss_mb() -> float:
    """This process's resident memory now (Linux), for the flat-memory promise; 0 elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") / 1e6)
    except (OSError, ValueError):
        return 0.0


class _TaskMemory:
    """What one task's work held in memory: its worker's resident memory at the task's start,
    and the peak since. A Python worker runs task after task, so its lifetime peak says
    nothing of this one; Linux lets a process reset its peak (VmHWM) to now, and keeps it
    between samples too (encoder and reader-thread buffers come and go within a batch).
    Elsewhere the peak is sampled once per batch."""

    def __init__(self):
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.exact = _high_water_mb() > 0
        except OSError:
            self.exact = False
        self.start = _rss_mb()
        self._sampled = self.start

    def sample(self) -> None:
        if not self.exact:
            self._sampled = max(self._sampled, _rss_mb())

    def peak(self) -> float:
        return _high_water_mb() if self.exact else max(self._sampled, _rss_mb())


def _high_water_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except (OSError, ValueError):
        pass
    return 0.0


def filtered(batches, filter_: Compiled | None, where: str):
    """The rows ``input.filter`` keeps (a NULL condition drops the row, as Spark's WHERE)."""
    if filter_ is None:
        yield from batches
        return
    for batch in batches:
        try:
            keep = filter_.keep(batch)
        except ExpressionError as exc:
            raise InputError(f"input.filter {filter_.text!r}: {exc}, in {where}") from None
        yield batch.filter(keep)


class _Selected:
    """One task's rows, selected and routed to channels, with the task's counts."""

    def __init__(self, plan: TaskPlan, partition: int, batches, where: str):
        self.plan, self.partition, self.where = plan, partition, where
        self.batches = filtered(batches, plan.filter, where)
        self.stats = Counter(rows_in=0, dropped=0, fixed=0, nnz=0, cells=0, label_changes=0)
        self.memory = _TaskMemory()
        self.start = time.perf_counter()
        self._last_label: dict[str, float] = {}

    def __iter__(self) -> Iterator[tuple[str, Rows]]:
        plan, stats = self.plan, self.stats
        route = plan.route(self.partition)
        for batch in self.batches:
            stats["rows_in"] += batch.num_rows
            for channel, mask in route(batch.num_rows):
                part = _take(batch, mask)
                if part.num_rows == 0:
                    continue
                rows = plan.selector.rows(part, self.where)
                stats["dropped"] += rows.dropped
                stats["fixed"] += rows.fixed
                stats["nnz"] += rows.nnz()
                stats["cells"] += len(rows) * plan.feature_dim
                self._label_order(channel, rows.labels)
                yield channel, rows
            self.memory.sample()

    def _label_order(self, channel: str, labels) -> None:
        """Count label changes in input order: few changes over many rows = sorted input."""
        if labels is None or not len(labels):
            return
        last = self._last_label.get(channel)
        changes = np.count_nonzero(labels[1:] != labels[:-1])
        self.stats["label_changes"] += int(changes) + int(last is not None and labels[0] != last)
        self._last_label[channel] = labels[-1]

    def report(self, sinks: _Sinks) -> TaskReport:
        return TaskReport(
            self.partition, self.plan.channel, self.where, time.perf_counter() - self.start,
            self.memory.peak(), **self.stats, **_io(sinks), python=THIS_PYTHON,
            start_rss_mb=self.memory.start,
        )  # fmt: skip


def _io(sinks: _Sinks) -> dict:
    waited = sum(s.store_seconds for s in sinks.values()) + sinks.finish_seconds
    return {
        "bytes_out": sum(s.bytes_out for s in sinks.values()),
        "store_seconds": round(waited, 3),
    }


def _guarded(where: str, sinks: _Sinks | None, body):
    """Run ``body`` (yielding reports); a data error becomes a TaskFailure, anything else
    aborts every shard not yet complete and is raised for Spark to retry."""
    try:
        yield from body()
    except (InputError, CodecError) as exc:  # the data, not the attempt: a retry cannot help
        if sinks is not None:
            sinks.abort()
        text = str(exc) if isinstance(exc, InputError) else f"{where}: {exc}"
        yield _Failure(text)
    except Exception as exc:  # S3, network, disk: Spark retries the attempt
        if sinks is not None:
            sinks.abort()
        raise StorageError(f"{where}: {type(exc).__name__}: {exc}") from exc
    except BaseException:
        if sinks is not None:
            sinks.abort()
        raise


@dataclass(frozen=True)
class _Failure:
    text: str


def write_partition(
    plan: TaskPlan, partition: int, batches: Iterable[pa.RecordBatch], where: str
) -> Iterator[Report]:
    """Encode and write one partition; yields a ShardReport per shard, then a TaskReport (or
    a TaskFailure for a data error)."""
    selected = _Selected(plan, partition, batches, where)
    sinks = _Sinks(plan, partition)

    def body():
        for channel, rows in selected:
            sinks.sink(channel).write(rows)
        sinks.close()
        for sink in sinks.values():
            yield from sink.done
        yield selected.report(sinks)

    for out in _guarded(where, sinks, body):
        if isinstance(out, _Failure):
            yield TaskFailure(partition, where, out.text)
            return
        yield out


def encode_partition(
    plan: TaskPlan, task: int, batches: Iterable[pa.RecordBatch], where: str
) -> Iterator[pa.RecordBatch]:
    """The map side of ``output.shuffle: rows``: each selected row as its encoded record with
    its reducer and sort key (SHUFFLE_SCHEMA), then one row carrying the task's report."""
    selected = _Selected(plan, task, batches, where)
    shuffle = plan.shuffle
    done: Counter = Counter()

    def body():
        for channel, rows in selected:
            n = len(rows)
            data = encode(plan, rows)
            ends = codec.record_ends(data, n)
            pkey, key = shuffle.route(channel, task, done[channel], n)
            done[channel] += n
            yield from _shuffle_batches(data, ends, pkey, key, rows.labels)
        yield selected.report(_Sinks(plan, task))

    for out in _guarded(where, None, body):
        if isinstance(out, pa.RecordBatch):
            yield out
            continue
        report = TaskFailure(task, where, out.text) if isinstance(out, _Failure) else out
        yield _report_batch(shuffle, report)
        if isinstance(out, _Failure):
            return


_BATCH_BYTES = 1 << 30  # Arrow binary offsets are int32: keep each batch's bytes well below


def _shuffle_batches(data, ends, pkey, key, labels) -> Iterator[pa.RecordBatch]:
    """Encoded records as SHUFFLE_SCHEMA batches, zero-copy, each under _BATCH_BYTES."""
    n, start = len(ends), 0
    buf = pa.py_buffer(data)
    while start < n:
        base = int(ends[start - 1]) if start else 0
        stop = max(int(np.searchsorted(ends, base + _BATCH_BYTES, side="right")), start + 1)
        offsets = np.concatenate(([base], ends[start:stop])) - base
        records = pa.Array.from_buffers(
            pa.binary(),
            stop - start,
            [
                None,
                pa.py_buffer(offsets.astype(np.int32)),
                buf.slice(base, int(ends[stop - 1]) - base),
            ],
        )
        label = (
            pa.nulls(stop - start, pa.float32())
            if labels is None
            else pa.array(labels[start:stop], pa.float32())
        )
        yield pa.RecordBatch.from_arrays(
            [pa.array(pkey[start:stop]), pa.array(key[start:stop]), label, records,
             pa.nulls(stop - start, pa.string())],
            schema=SHUFFLE_SCHEMA,
        )  # fmt: skip
        start = stop


def _report_batch(shuffle: ShufflePlan, report: Report) -> pa.RecordBatch:
    """A report travels through the shuffle like a record, first in reducer 0."""
    return pa.RecordBatch.from_arrays(
        [pa.array([shuffle.pkeys[0]], pa.int32()), pa.array([np.iinfo(np.int64).min]),
         pa.nulls(1, pa.float32()),
         pa.nulls(1, pa.binary()), pa.array([report_to_json(report)])],
        schema=SHUFFLE_SCHEMA,
    )  # fmt: skip


def write_shuffled(
    plan: TaskPlan, reducer: int, batches: Iterable[pa.RecordBatch]
) -> Iterator[Report | str]:
    """The reduce side: records in their shuffled order into this reducer's shards (one
    channel per reducer); the map tasks' reports pass through as JSON text."""
    where = f"shuffle partition {reducer}"
    start, sinks, memory = time.perf_counter(), _Sinks(plan, reducer), _TaskMemory()
    expected = plan.shuffle.pkeys[reducer]
    channel = plan.shuffle.channel_of(reducer)

    def body():
        for batch in batches:
            reports = batch.column("report")
            if reports.null_count < len(batch):
                for text in reports.drop_null().to_pylist():
                    yield report_from_json(text)
                batch = batch.filter(reports.is_null())
            if not batch.num_rows:
                continue
            pkeys = batch.column("pkey").to_numpy()
            if (pkeys != expected).any():
                raise StorageError(
                    f"{where}: Spark routed rows of partition key {int(pkeys[0])} here "
                    "(adaptive execution must not coalesce this shuffle)"
                )
            records = batch.column("record")
            offsets = np.frombuffer(records.buffers()[1], np.int32)[
                records.offset : records.offset + len(records) + 1
            ]
            data = memoryview(records.buffers()[2])[offsets[0] : offsets[-1]]
            labels = batch.column("label")
            labels = None if labels.null_count else labels.to_numpy(zero_copy_only=False)
            sinks.sink(channel).write_encoded(
                data, labels, len(batch), (offsets[1:] - offsets[0]).astype(np.int64)
            )
        sinks.close()
        for sink in sinks.values():
            yield from sink.done
        yield TaskReport(
            reducer, None, where, time.perf_counter() - start, memory.peak(),
            rows_in=0, dropped=0, fixed=0, nnz=0, cells=0, **_io(sinks), python=THIS_PYTHON,
            start_rss_mb=memory.start,
        )  # fmt: skip

    for out in _guarded(where, sinks, body):
        if isinstance(out, _Failure):
            yield TaskFailure(reducer, where, out.text)
            return
        yield out
