"""How a planned conversion runs on Spark: one runner per read path, one piece reader.

- :class:`DirectRunner`: one Spark task per group of Parquet pieces, read by pyarrow in the task;
- :class:`SparkRunner`: ``mapInArrow`` over the planned DataFrames (the Spark path);
- :class:`Shuffled`: either runner's encoded records through Spark's shuffle, sorted by a seeded
  key, written by the reducers (``output.shuffle: rows``).

Every task function is a closure over plain values (plans, piece lists, settings), never over a
runner: Spark pickles it for the executors.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import pyarrow as pa

from . import parquet
from .contract import Report, report_from_json, report_to_json
from .settings import JobConfig, ReadConfig
from .task import (
    SHUFFLE_DDL,
    ShufflePlan,
    TaskPlan,
    encode_partition,
    write_partition,
    write_shuffled,
)
from .worker import settle

log = logging.getLogger(__name__)


def read_task_pieces(pieces, s3, schema, columns, read: ReadConfig, rows: int | None = None):
    """The batches of one task's pieces and a name for them in messages: the direct path's one
    reader, for its tasks, its shuffled map tasks and the driver's sample alike."""
    more = f" (+{len(pieces) - 1} more)" if len(pieces) > 1 else ""
    ahead = (read.read_ahead, read.ranges_in_flight, read.range_mb) if rows is None else ()
    batches = parquet.read_pieces(pieces, s3, schema, columns, rows or read.batch_rows, *ahead)
    return batches, f"{pieces[0].uri}{more}"


def task_start() -> None:
    """Executors start without logging handlers: send ours to stderr (the executor's log).
    And the worker process, reused task after task, stops paying for its imports each time."""
    settle()
    root = logging.getLogger("jobs")
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(os.environ.get("JOBS_TASK_LOG_LEVEL", "INFO"))


class DirectRunner:
    """Tasks of Parquet pieces: (channel or None for a split input, index, pieces) each."""

    def __init__(self, spark, config: JobConfig, tasks, schemas: dict, columns: list[str]):
        self.spark, self.config = spark, config
        self.tasks, self.schemas, self.columns = tasks, schemas, columns

    def counts(self) -> dict:
        """Channel → its number of tasks."""
        counts: dict = {}
        for channel, _, _ in self.tasks:
            counts[channel] = counts.get(channel, 0) + 1
        return counts

    def run(self, plan: TaskPlan) -> list[Report]:
        tasks, schemas, columns, read = self.tasks, self.schemas, self.columns, self.config.read
        plans = {c: dataclasses.replace(plan, channel=c) for c in self.counts()}

        def run_task(index, items):
            task_start()
            for channel, partition, pieces in items:
                batches, where = read_task_pieces(pieces, plan.s3, schemas[channel], columns, read)
                for report in write_partition(plans[channel], partition, batches, where):
                    yield report_to_json(report)

        sc = self.spark.sparkContext
        sc.setJobDescription(f"convert {len(tasks)} Parquet pieces (direct)")
        rdd = sc.parallelize(tasks, max(len(tasks), 1))
        return [report_from_json(s) for s in rdd.mapPartitionsWithIndex(run_task).collect()]

    def mapped(self, plan: TaskPlan):
        """A DataFrame of every task's encoded records (SHUFFLE_DDL), for the shuffle."""
        tasks, schemas, columns, read = self.tasks, self.schemas, self.columns, self.config.read
        plans = {c: dataclasses.replace(plan, channel=c) for c in self.counts()}

        def map_task(ids):
            task_start()
            for batch in ids:
                for i in batch.column(0).to_pylist():
                    channel, _, pieces = tasks[i]
                    batches, where = read_task_pieces(
                        pieces, plan.s3, schemas[channel], columns, read
                    )
                    yield from encode_partition(plans[channel], i, batches, where)

        self.spark.sparkContext.setJobDescription(
            f"convert {len(tasks)} Parquet pieces (direct, shuffled)"
        )
        n = max(len(tasks), 1)
        return self.spark.range(0, len(tasks), 1, n).mapInArrow(map_task, SHUFFLE_DDL)


class SparkRunner:
    """The planned DataFrames, channel (None for a split input) → LABEL, FEATURES."""

    def __init__(self, spark, config: JobConfig, frames: dict):
        self.spark, self.config, self.frames = spark, config, frames

    def counts(self) -> dict:
        return {c: df.rdd.getNumPartitions() for c, df in self.frames.items()}

    def run(self, plan: TaskPlan) -> list[Report]:
        shards = self.config.output.shards
        reports = []
        for channel, df in self.frames.items():
            task_plan = dataclasses.replace(plan, channel=channel)
            if shards:
                df = df.repartition(shards)

            def run_task(batches, task_plan=task_plan, channel=channel):
                from pyspark import TaskContext

                task_start()
                pid = TaskContext.get().partitionId()
                where = f"partition {pid}" + (f" of channel {channel}" if channel else "")
                for report in write_partition(task_plan, pid, batches, where):
                    yield pa.RecordBatch.from_pydict({"report": [report_to_json(report)]})

            rows = df.mapInArrow(run_task, "report string").collect()
            reports += [report_from_json(r["report"]) for r in rows]
        return reports

    def mapped(self, plan: TaskPlan):
        out, base = None, 0
        for channel, n in self.counts().items():
            task_plan = dataclasses.replace(plan, channel=channel)

            def map_task(batches, task_plan=task_plan, base=base):
                from pyspark import TaskContext

                task_start()
                pid = TaskContext.get().partitionId()
                yield from encode_partition(task_plan, base + pid, batches, f"partition {pid}")

            one = self.frames[channel].mapInArrow(map_task, SHUFFLE_DDL)
            out = one if out is None else out.unionByName(one)
            base += n
        return out


class Shuffled:
    """A runner's encoded records moved by Spark's shuffle to their reducers, sorted there by
    the seeded key; the reducers write the shards. ``info`` records how, for run.json."""

    def __init__(self, spark, config: JobConfig, channels: list[str], runner):
        self.spark, self.config, self.channels, self.runner = spark, config, channels, runner
        self.info: dict = {"mode": "rows"}

    def reducers(self, map_tasks: dict) -> dict[str, tuple[int, int]]:
        """Reducers per channel: output.shards, else as many as the channel had map tasks
        (split channels: their fraction of the tasks), so shards keep the unshuffled size."""
        cfg = self.config
        out, offset = {}, 0
        for channel in self.channels:
            if cfg.output.shards:
                n = cfg.output.shards
            elif cfg.input.split:
                n = max(1, round(map_tasks[None] * cfg.input.split[channel]))
            else:
                n = max(1, map_tasks.get(channel, 1))
            out[channel] = (offset, n)
            offset += n
        return out

    def partition_keys(self, n: int) -> tuple[int, ...]:
        """For each partition r < n, an int that Spark's own hash partitioning (Murmur3, as
        SQL's hash()) sends to r: asked of Spark, not re-implemented."""
        keys: dict[int, int] = {}
        span = 64 * n + 64
        while len(keys) < n:
            rows = (
                self.spark.range(0, span)
                .selectExpr("CAST(id AS INT) AS v", f"pmod(hash(CAST(id AS INT)), {n}) AS p")
                .groupBy("p")
                .min("v")
                .collect()
            )
            keys = {int(r[0]): int(r[1]) for r in rows}
            span *= 4
        return tuple(keys[r] for r in range(n))

    def run(self, plan: TaskPlan) -> list[Report]:
        reducers = self.reducers(self.runner.counts())
        total = sum(n for _, n in reducers.values())
        shuffle = ShufflePlan(self.config.output.seed, reducers, self.partition_keys(total))
        plan = dataclasses.replace(plan, shuffle=shuffle)
        self.info = {
            "mode": "rows",
            "seed": shuffle.seed,
            "reducers": {c: n for c, (_, n) in reducers.items()},
        }

        def reduce_task(batches):
            from pyspark import TaskContext

            task_start()
            reducer = TaskContext.get().partitionId()
            for report in write_shuffled(plan, reducer, batches):
                yield pa.RecordBatch.from_pydict({"report": [report_to_json(report)]})

        conf = self.spark.conf
        saved = conf.get("spark.sql.adaptive.coalescePartitions.enabled", None)
        conf.set("spark.sql.adaptive.coalescePartitions.enabled", "false")
        try:
            shuffled = (
                self.runner.mapped(plan).repartition(total, "pkey").sortWithinPartitions("key")
            )
            rows = shuffled.mapInArrow(reduce_task, "report string").collect()
        finally:
            if saved is None:
                conf.unset("spark.sql.adaptive.coalescePartitions.enabled")
            else:
                conf.set("spark.sql.adaptive.coalescePartitions.enabled", saved)
        return [report_from_json(r["report"]) for r in rows]
