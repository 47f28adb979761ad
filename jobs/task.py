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
from .contract import Report, ShardReport, TaskFailure, TaskReport, label_key
from .errors import CodecError, InputError, StorageError
from .expressions import Compiled, ExpressionError
from .runinfo import RunLayout, shard_name
from .selection import Rows, Selector, to_csr, to_dense
from .settings import S3Settings
from .storage import ShardWriter, open_shard

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
    channel: str | None = None  # None: rows are routed by ``split``
    split: dict[str, float] = field(default_factory=dict)
    seed: int = 42
    filter: Compiled | None = None  # the direct path's input.filter (the Spark path's is in Spark)

    def route(self, partition: int) -> _Router:
        return _Router(self, partition)


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

    def __init__(self, plan: TaskPlan, channel: str, partition: int):
        self.plan, self.channel, self.partition = plan, channel, partition
        self.layout = RunLayout.at(plan.out, plan.run_id)
        self.writer: ShardWriter | None = None
        self.roll = 0
        self.rows = 0
        self.labels: Counter = Counter()
        self.done: list[ShardReport] = []

    def write(self, rows: Rows) -> None:
        n = len(rows)
        if n == 0:
            return
        p = self.plan
        if p.encoding == "dense":
            data = codec.encode_dense(to_dense(rows, p.feature_dim), rows.labels)
        else:
            data = codec.encode_sparse(*to_csr(rows), p.feature_dim, rows.labels)
        w = self.writer
        if w is not None and p.max_shard_bytes and w.bytes + len(data) > p.max_shard_bytes:
            self.close()
            self.roll += 1
            w = None
        if w is None:
            self.key = shard_name(self.partition, self.roll, p.run_id)
            w = self.writer = open_shard(self.layout.shard(self.channel, self.key), p.s3)
        w.write(data)
        self.rows += n
        if rows.labels is not None and p.selector.predictor_type != "regressor":
            values, counts = np.unique(rows.labels, return_counts=True)
            self.labels.update({label_key(v): int(c) for v, c in zip(values, counts)})

    def close(self) -> None:
        w, self.writer = self.writer, None
        if w is None:
            return
        w.close()
        self.done.append(
            ShardReport(
                self.channel, self.key, self.partition, self.rows, w.bytes, w.sha256,
                dict(self.labels),
            )
        )  # fmt: skip
        log.info("shard %s/%s: %d rows, %.1f MB", self.channel, self.key, self.rows, w.bytes / 1e6)
        self.rows = 0
        self.labels = Counter()

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()
            self.writer = None


def _rss_mb() -> float:
    """This process's resident memory now (Linux), for the flat-memory promise; 0 elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") / 1e6)
    except (OSError, ValueError):
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


def write_partition(
    plan: TaskPlan, partition: int, batches: Iterable[pa.RecordBatch], where: str
) -> Iterator[Report]:
    """Encode and write one partition; yields a ShardReport per shard, then a TaskReport (or
    a TaskFailure for a data error)."""
    start = time.perf_counter()
    route = plan.route(partition)
    batches = filtered(batches, plan.filter, where)
    sinks: dict[str, _ChannelSink] = {}
    stats = Counter(rows_in=0, dropped=0, fixed=0, nnz=0, cells=0)  # all reported, even if 0
    peak = _rss_mb()
    try:
        for batch in batches:
            stats["rows_in"] += batch.num_rows
            for channel, mask in route(batch.num_rows):
                part = _take(batch, mask)
                if part.num_rows == 0:
                    continue
                rows = plan.selector.rows(part, where)
                stats["dropped"] += rows.dropped
                stats["fixed"] += rows.fixed
                stats["nnz"] += rows.nnz()
                stats["cells"] += len(rows) * plan.feature_dim
                if channel not in sinks:
                    sinks[channel] = _ChannelSink(plan, channel, partition)
                sinks[channel].write(rows)
            peak = max(peak, _rss_mb())
        for sink in sinks.values():
            sink.close()
    except (InputError, CodecError) as exc:  # the data, not the attempt: a retry cannot help
        for sink in sinks.values():
            sink.abort()
        text = str(exc) if isinstance(exc, InputError) else f"{where}: {exc}"
        yield TaskFailure(partition, where, text)
        return
    except Exception as exc:  # S3, network, disk: Spark retries the attempt
        for sink in sinks.values():
            sink.abort()
        raise StorageError(f"{where}: {type(exc).__name__}: {exc}") from exc
    except BaseException:
        for sink in sinks.values():
            sink.abort()
        raise
    for sink in sinks.values():
        yield from sink.done
    yield TaskReport(partition, plan.channel, where, time.perf_counter() - start, peak, **stats)
