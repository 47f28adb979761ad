"""The Spark job: plan the read, run one task per partition, commit.

Two read paths feed the same task (:func:`jobs.task.write_partition`):

- direct: the driver lists Parquet files (or row groups), Spark runs one task per piece, and
  each task reads its piece with pyarrow. Spark still schedules, retries and speculates, but no
  row crosses the JVM → Python boundary.
- spark: ``mapInArrow`` over a DataFrame, for what only Spark evaluates (arbitrary SQL, ML
  Vector columns, a caller's DataFrame). Numeric columns are assembled into one array column
  in the JVM first, which Arrow hands over far faster than hundreds of separate columns.

The plan itself (path, features, feature_dim, encoding) is decided by :mod:`jobs.planning`;
this module wires it to Spark, runs it, and commits through :mod:`jobs.runinfo`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import re
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import pyarrow as pa

from . import __version__, parquet
from .contract import Report, RunMetadata, report_from_json, report_to_json, summarize_run
from .errors import InputError, JobError, StorageError
from .expressions import referenced_columns
from .handoff import DriverCompletions
from .interrupts import INTERRUPTS
from .lease import Lease, take
from .planning import (
    Column,
    Plan,
    ReadChoice,
    arrow_columns,
    choose_read_path,
    decide,
    declared_size,
    needs_sample,
    resolve_features,
    selector,
)
from .preflight import check_paths
from .progress import Progress
from .runinfo import RunLayout
from .selection import FEATURES, LABEL
from .settings import JobConfig
from .storage import Location, Store, require_credentials
from .task import (
    SHUFFLE_DDL,
    ShufflePlan,
    TaskPlan,
    encode_partition,
    filtered,
    write_partition,
    write_shuffled,
)
from .worker import settle

log = logging.getLogger(__name__)

SAMPLE_ROWS = 10_000
SAMPLE_BYTES = 8 << 20  # the Spark path ships its sample to the driver
PROBE_ROWS = 16  # the Spark path: rows that give a vector's or an array's size
KILL_MARGIN_S = 1.0  # beyond spark.python.task.killTimeout, for a killed worker to be gone
_TIME_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "": 0.001}


def killed_attempt_grace(spark) -> float:
    """How long an attempt Spark cancelled may still write: its Python worker gets
    spark.python.task.killTimeout (Spark's default 2s; a bare number is milliseconds, as
    Spark reads it) to stop, and a margin."""
    raw = str(spark.conf.get("spark.python.task.killTimeout", "2s")).strip().lower()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ms|s|min|m|h|)", raw)
    timeout = float(m.group(1)) * _TIME_UNITS[m.group(2)] if m else 2.0
    return timeout + KILL_MARGIN_S


def convert(
    config: JobConfig, spark=None, dataframe=None, lease: Lease | None = None,
    release_spark: bool = False,
) -> RunMetadata:  # fmt: skip
    """Run the conversion; returns the committed run's metadata. Raises JobError subclasses,
    or Interrupted on SIGINT/SIGTERM (with the run's files removed).

    Before Spark starts: the paths, credentials, the lease (``lease``, when the caller holds
    one for more than this conversion) and what is at the output already. ``release_spark``:
    a session this call started is stopped once the run has committed, so what follows
    (training, which needs no Spark) holds no executors; a session that was running before
    (a notebook's, a test's) is left as it is."""
    check_paths(config, inputs=dataframe is None)
    inputs = [] if dataframe is not None else sum(config.channels().values(), [])
    require_credentials([config.output.path, *inputs], "the conversion reads or writes it")
    if spark is None:
        from .session import check_master

        check_master(config.spark.master)
    # listing the inputs and reading their footers (seconds for many files on S3) overlaps
    # taking the lease, surveying the output and starting Spark
    with _discovery(config, dataframe) as discovery:
        store = Store(config.s3)
        own_lease = lease is None
        if own_lease:
            out = config.output
            lease = take(store, out.path, out.mode, out.take_over_lease, out.lease_timeout_s)
        try:
            layout = RunLayout.at(config.output.path, lease.run_id)
            done = layout.committed(store, config) if config.output.mode == "resume" else None
            if done is not None:
                log.info(
                    "output.mode=resume: %s holds run %s, committed %s by an earlier attempt: "
                    "kept, not converted again",
                    layout.root.uri,
                    done.run_id,
                    done.committed,
                )
                return done
            taken_over = lease.previous.run_id if lease.previous else None
            replaced = layout.prepare(store, config.output.mode, marker=taken_over)
            started = None
            if spark is None:
                if discovery is not None and discovery.done():
                    discovery.result()  # an input that failed fails before the JVM starts
                from .session import active_session, spark_session

                fresh = active_session() is None
                spark = spark_session(config.spark, config.s3, config.read.batch_rows)
                started = spark if fresh else None
            meta = Conversion(config, spark, dataframe, store, lease, replaced, discovery).run()
            if release_spark and started is not None:
                started.stop()
                log.info("committed: Spark stopped, its executors released")
            return meta
        except (JobError, KeyboardInterrupt):
            raise
        except Exception as exc:  # Py4J/Spark errors: what failed and why, in one line
            from .session import jvm_failure, spark_failure

            memory = config.spark.conf.get("spark.driver.memory", "1g")
            why = jvm_failure(spark, exc, memory) or spark_failure(str(exc))
            raise StorageError(f"the conversion failed: {why}") from exc
        finally:
            if own_lease:
                lease.release()


def inventories(config: JobConfig, stop: threading.Event | None = None) -> dict:
    """Channel (None for a split input) → its Parquet files and schema."""
    out = {}
    for channel, uris in config.channels().items():
        out[None if config.input.split else channel] = parquet.discover(uris, config.s3, stop)
        if config.input.split:
            break  # one input, routed in the tasks
    return out


@contextlib.contextmanager
def _discovery(config: JobConfig, dataframe):
    """The inputs' inventories as a future, read on a thread of their own from now on (None
    for a DataFrame). However the conversion ends, ``stop`` is set (the result is no longer
    needed) and the calls in flight are waited for, so none outlives the run (pyarrow's S3 is
    finalized at exit)."""
    if dataframe is not None:
        yield None
        return
    stop = threading.Event()
    with ThreadPoolExecutor(1, thread_name_prefix="input-discovery") as pool:
        try:
            yield pool.submit(inventories, config, stop)
        finally:
            stop.set()


class Conversion:
    """One run of the job on a session: plan, run the tasks, commit (or clean up)."""

    def __init__(
        self,
        config: JobConfig,
        spark,
        dataframe,
        store: Store,
        lease: Lease,
        replaced,
        discovery: Future | None = None,
    ):
        self.config = config
        self.discovery = discovery
        self.spark = spark
        self.dataframe = dataframe
        self.store = store
        self.lease = lease
        self.layout = RunLayout.at(config.output.path, lease.run_id)
        self.replaced: list[Location] = replaced
        self.sizing: dict = {}  # how the tasks were cut, for run.json
        self.shuffle_info: dict = {"mode": config.output.shuffle}

    def run(self) -> RunMetadata:
        t0 = time.perf_counter()
        plan, run_tasks = self._plan()
        log.info("read path: %s (%s)", plan.read.path, plan.read.reason)
        task_plan = self._task_plan(plan)
        sc = self.spark.sparkContext
        ran = False
        completions = DriverCompletions(
            self.store, int(sc.getConf().get("spark.task.maxFailures", "4"))
        )
        try:
            self.lease.on_lost(sc.cancelAllJobs)
            progress = Progress(sc, self.layout.run_id, self.config.spark.progress_s)
            task_plan = dataclasses.replace(
                task_plan,
                progress=(progress.rows, progress.bytes),
                handoff=completions.accumulator(sc),
            )
            with INTERRUPTS.deferred(cancel=sc.cancelAllJobs), progress:
                ran = True
                reports = run_tasks(task_plan)
                completions.wait()
            completions.close()
            self.lease.check()
            INTERRUPTS.raise_if_interrupted()
            meta = summarize_run(
                reports, plan, self.config, self._channels(), self._inputs(), __version__
            )
            meta = dataclasses.replace(
                meta,
                seconds=round(time.perf_counter() - t0, 3),
                task_sizing=self.sizing,
                shuffle=self.shuffle_info,
            )
            self._check_counts(meta)
            with INTERRUPTS.deferred():  # a commit is never left half-done
                meta = self.layout.commit(self.store, meta, before_commit=self.lease.renew)
        except BaseException as exc:
            completions.close()  # before the cleanup: nothing it removes is completed after it
            self._fail(after_spark_job=ran and not isinstance(exc, JobError))
            raise
        self._after_commit(meta)
        return meta

    def _check_counts(self, meta: RunMetadata) -> None:
        """Say so when output.shards could not be met, and when the label looks sorted in an
        unshuffled run (SGD on label-sorted data can fail to train)."""
        cfg = self.config
        want = cfg.output.shards
        for channel, info in meta.channels.items():
            if want and len(info.shards) < want:
                log.warning(
                    "channel %s: %d shards instead of output.shards=%d: only %d rows were left "
                    "to spread",
                    channel, len(info.shards), want, info.rows,
                )  # fmt: skip
        changes = meta.label_changes
        rows = sum(c.rows for c in meta.channels.values())
        classes = max((len(c.labels) for c in meta.channels.values()), default=0)
        if (
            cfg.output.shuffle == "none"
            and classes > 1
            and rows >= 1000
            and changes is not None
            and changes <= 2 * classes * max(meta.tasks, 1)
        ):
            log.warning(
                "the label looks sorted: %d changes of label over %d rows in input order; "
                "linear-learner expects shuffled data: set output.shuffle: rows",
                changes, rows,
            )  # fmt: skip

    def _channels(self) -> list[str]:
        cfg = self.config
        if cfg.input.split:
            return list(cfg.input.split)
        return ["train"] if self.dataframe is not None else list(cfg.channels())

    def _inputs(self) -> dict:
        return {"train": ["<DataFrame>"]} if self.dataframe is not None else self.config.channels()

    def _task_plan(self, plan: Plan) -> TaskPlan:
        cfg = self.config
        return TaskPlan(
            out=cfg.output.path,
            run_id=self.layout.run_id,
            s3=cfg.s3,
            selector=selector(
                cfg,
                plan.read,
                plan.layout,
                plan.columns,
                plan.feature_dim,
                plan.encoding,
                size_from=" (the size its ml_attr metadata declares)" if plan.declared else "",
            ),
            filter=plan.read.filter,
            encoding=plan.encoding,
            feature_dim=plan.feature_dim,
            max_shard_bytes=None if cfg.output.shards else cfg.output.max_shard_mb << 20,
            split=dict(cfg.input.split),
            seed=cfg.input.seed,
        )

    def _fail(self, after_spark_job: bool) -> None:
        """Remove this run's own objects; after a Spark job, once more when the attempts it
        cancelled are gone (their Python workers get spark.python.task.killTimeout). Then say
        why, when a signal or a lost lease was the cause."""
        with INTERRUPTS.deferred():
            try:
                self.layout.discard(self.store)
                if after_spark_job:
                    time.sleep(killed_attempt_grace(self.spark))
                    self.layout.discard(self.store)
            except Exception as exc:  # the cause stays the error; this is said beside it
                log.error(
                    "could not remove this run's files (%s); nothing was committed, and what "
                    "is left carries run id %s: the next output.mode: overwrite at %s removes it",
                    exc,
                    self.layout.run_id,
                    self.layout.root.uri,
                )
        why = "the conversion was cancelled and its files removed; nothing was committed"
        INTERRUPTS.raise_if_interrupted(why)
        self.lease.check()

    def _after_commit(self, meta: RunMetadata) -> None:
        self.layout.remove_replaced(self.store, self.replaced)
        if self.spark.conf.get("spark.speculation", "false") == "true":
            time.sleep(killed_attempt_grace(self.spark))  # losing speculative attempts may write
            self.store.abort_pending(self.layout.shards, owned=self.layout.owns)
        for channel, info in meta.channels.items():
            log.info(
                "channel %s: %d rows, %d shards, %.1f MB",
                channel,
                info.rows,
                len(info.shards),
                info.bytes / 1e6,
            )
        log.info("committed %s (run %s)", self.layout.metadata.uri, self.layout.run_id)
        INTERRUPTS.raise_if_interrupted(f"the run was committed at {self.layout.root.uri}")

    # -- planning --------------------------------------------------------------------------
    def _plan(self):
        """The plan, and how to run its tasks (a callable of the TaskPlan)."""
        cfg = self.config
        inventories = self._inventories()
        first = next(iter(inventories.values()), None)
        # no default of ours: unset, the session's own default holds (false on 3.5, true on 4.0)
        ansi = (self.spark.conf.get("spark.sql.ansi.enabled") or "false").lower() == "true"
        read = choose_read_path(cfg, first, ansi)
        if read.path == "direct":
            tasks = self._direct_tasks(inventories)
            if tasks is not None:
                return self._plan_direct(read, inventories, tasks)
            read = ReadChoice(
                "spark",
                f"output.shards={cfg.output.shards} needs at least that many Parquet row groups "
                "per channel",
            )
        return self._plan_spark(read, inventories)

    def _inventories(self) -> dict:
        """Channel (None for a split input) → its Parquet files and schema; {} for a DataFrame."""
        if self.dataframe is not None:
            return {}
        if self.discovery is not None:
            return self.discovery.result()
        return inventories(self.config)

    def _direct_tasks(self, inventories):
        """(channel or None for a split, index, pieces) per task, packed as Spark's file scan
        packs them; None when output.shards asks for more tasks than there are row groups."""
        cfg = self.config
        tasks = []
        parallelism = self.spark.sparkContext.defaultParallelism
        for channel, inventory in inventories.items():
            if cfg.output.shards:
                if inventory.rows < cfg.output.shards:
                    raise InputError(
                        f"output.shards={cfg.output.shards}, but "
                        f"{'the input' if channel is None else f'channel {channel}'} has "
                        f"{inventory.rows:,} rows: set output.shards to at most that"
                    )
                groups = parquet.split_row_groups(inventory.files, cfg.output.shards)
                if groups is None:
                    return None
                self.sizing = {"by": "output.shards", "shards": cfg.output.shards}
            else:
                groups, max_split = parquet.pack_tasks(
                    inventory.files,
                    cfg.read.max_task_mb << 20,
                    cfg.read.open_cost_mb << 20,
                    parallelism,
                )
                self.sizing = {
                    "by": "bytes",
                    "max_split_bytes": max_split,
                    "open_cost_bytes": cfg.read.open_cost_mb << 20,
                    "parallelism": parallelism,
                }
            tasks += [(channel, i, g) for i, g in enumerate(groups)]
        self.sizing["tasks"] = len(tasks)
        self.sizing["files"] = sum(len(inv.files) for inv in inventories.values())
        return tasks

    def _plan_direct(self, read: ReadChoice, inventories, tasks):
        cfg = self.config
        first = next(iter(inventories.values()))
        columns = arrow_columns(first.schema)
        layout, names = resolve_features(
            cfg.select.features, columns, read.label_columns, _index_columns(inventories)
        )
        needed = [*names, *read.label_columns, *(read.filter.columns if read.filter else [])]
        needed = list(dict.fromkeys(needed))
        _same_columns(inventories, needed)
        schemas = {c: inv.schema for c, inv in inventories.items()}
        sample = (
            self._direct_sample(tasks, schemas, needed, read.filter)
            if needs_sample(cfg, layout)
            else None
        )
        plan = decide(cfg, read, layout, names, sample)
        run = functools.partial(self._run_direct, tasks=tasks, schemas=schemas, columns=needed)
        return plan, run

    def _plan_spark(self, read: ReadChoice, inventories):
        cfg = self.config
        for inventory in inventories.values():
            bad = [f for f in inventory.schema if _spark_cannot_read(f.type)]
            if bad:
                where = inventory.files[0].uri if inventory.files else "the input"
                half = pa.types.is_float16(bad[0].type)
                raise InputError(
                    f"column {bad[0].name!r} is {'float16' if half else bad[0].type} (in "
                    f"{where}), which Spark cannot read, and the Spark path was chosen "
                    f"({read.reason})" + ("; the direct path reads float16" if half else "")
                )
        frames = self._spark_frames(inventories)
        schema = next(iter(frames.values())).schema
        columns = _spark_columns(schema)
        label_cols = referenced_columns(cfg.select.label or "", [c.name for c in columns])
        if cfg.select.label:
            for df in frames.values():
                self._check_text_label(df)
        layout, names = resolve_features(
            cfg.select.features, columns, label_cols, _index_columns(inventories)
        )
        declared = declared_size(schema[names[0]].metadata) if layout == "vector" else None
        frames = {c: self._select(df, layout, names) for c, df in frames.items()}
        first = next(iter(frames.values()))
        auto = cfg.output.encoding == "auto"  # the density needs rows, the size only a few
        sample = (
            self._spark_sample(first, rows_needed=auto)
            if needs_sample(cfg, layout, declared)
            else None
        )
        plan = decide(cfg, read, layout, names, sample, declared)
        return plan, functools.partial(self._run_spark, frames=frames)

    def _spark_frames(self, inventories):
        """Channel (None for a split input) → DataFrame of the raw input, filter applied."""
        cfg = self.config
        if self.dataframe is not None:
            frames = {None if cfg.input.split else "train": self.dataframe}
        else:
            frames = {}
            for channel, uris in cfg.channels().items():
                key = None if cfg.input.split else channel
                merge = "true" if inventories[key].merged else "false"
                frames[key] = self.spark.read.option("mergeSchema", merge).parquet(*uris)
                if cfg.input.split:
                    break
        if cfg.input.filter:
            frames = {c: df.where(cfg.input.filter) for c, df in frames.items()}
        return frames

    def _check_text_label(self, df) -> None:
        """A label that is text casts to FLOAT as Spark casts it: 'yes' and 'no' become null,
        which would read as "null labels". Say what they are instead, before anything is
        written (one pass over the label's columns, only for a text label)."""
        from pyspark.sql import functions as F
        from pyspark.sql.types import StringType
        from pyspark.sql.utils import AnalysisException

        text = self.config.select.label
        try:
            label = F.expr(text)
            if not isinstance(df.select(label).schema[0].dataType, StringType):
                return
            # try_cast: under ANSI a plain CAST of 'yes' fails the scan instead of returning it
            cast = F.expr(f"try_cast(({text}) AS FLOAT)")
            bad = df.where(label.isNotNull() & cast.isNull()).select(label).limit(3).collect()
        except AnalysisException:
            return  # _select names the problem
        if bad:
            seen = ", ".join(repr(v) for v in dict.fromkeys(r[0] for r in bad))
            raise InputError(
                f"select.label {text!r} is text, and some of it is not a number ({seen}): a "
                f"label is a number or a condition, e.g. CAST(({text}) = 'yes' AS FLOAT)"
            )

    def _select(self, df, layout: str, names: list[str]):
        """The DataFrame the Spark path encodes: LABEL, then FEATURES as one column."""
        from pyspark.sql import functions as F
        from pyspark.sql.utils import AnalysisException

        cols = []
        if self.config.select.label:
            cols.append(F.expr(self.config.select.label).cast("float").alias(LABEL))
        if layout == "columns":
            cols.append(F.array(*[F.col(_quoted(n)).cast("float") for n in names]).alias(FEATURES))
        else:
            cols.append(F.col(_quoted(names[0])).alias(FEATURES))
        try:
            return df.select(*cols)
        except AnalysisException as exc:
            msg = str(exc).splitlines()[0]
            raise InputError(f"select.label {self.config.select.label!r}: {msg}") from None

    def _direct_sample(self, tasks, schemas, columns, filter_) -> pa.RecordBatch | None:
        for channel, _, pieces in tasks:
            batches = parquet.read_pieces(
                pieces, self.config.s3, schemas[channel], columns, SAMPLE_ROWS
            )
            for batch in filtered(batches, filter_, pieces[0].uri):
                if batch.num_rows:
                    return batch
        return None

    def _spark_sample(self, df, rows_needed: bool) -> pa.RecordBatch | None:
        """The first rows of the selected FEATURES column as Arrow: PROBE_ROWS non-null ones
        when only the size is needed, else up to SAMPLE_ROWS and about SAMPLE_BYTES. Taken by
        the JVM alone: ``limit(n).collect()`` reads partitions one after another until it has
        n rows (for VectorAssembler output: n rows assembled). A sample taken in Python would
        stop reading its partition early, and Spark discards a Python worker that does: the
        run's next task would pay for a new one."""
        from pyspark.sql import functions as F

        column = df.select(FEATURES)
        spark_type = column.schema[FEATURES].dataType
        probe = column.where(F.col(FEATURES).isNotNull()).limit(PROBE_ROWS)
        got = [row[0] for row in probe.collect()]
        if not got:  # no rows, or every one null (then the whole input was read to know)
            got = [row[0] for row in column.limit(1).collect()]
            if not got:
                return None
        elif rows_needed:
            per_row = max(sum(map(_sample_bytes, got)) // len(got), 1)
            n = max(1, min(SAMPLE_ROWS, SAMPLE_BYTES // per_row))
            got = [row[0] for row in column.limit(n).collect()]
        return pa.RecordBatch.from_arrays([_to_arrow(got, spark_type)], [FEATURES])

    # -- running ---------------------------------------------------------------------------
    def _run_direct(self, plan: TaskPlan, tasks, schemas, columns) -> list[Report]:
        if self.config.output.shuffle == "rows":
            return self._run_direct_shuffled(plan, tasks, schemas, columns)
        batch_rows = self.config.read.batch_rows
        r = self.config.read
        ahead = r.read_ahead, r.ranges_in_flight, r.range_mb
        plans = {c: dataclasses.replace(plan, channel=c) for c in {t[0] for t in tasks}}

        def run_task(index, items):
            _task_start()
            for channel, partition, pieces in items:
                more = f" (+{len(pieces) - 1} more)" if len(pieces) > 1 else ""
                where = f"{pieces[0].uri}{more}"
                batches = parquet.read_pieces(
                    pieces, plan.s3, schemas[channel], columns, batch_rows, *ahead
                )
                for report in write_partition(plans[channel], partition, batches, where):
                    yield report_to_json(report)

        sc = self.spark.sparkContext
        sc.setJobDescription(f"convert {len(tasks)} Parquet pieces (direct)")
        rdd = sc.parallelize(tasks, max(len(tasks), 1))
        return [report_from_json(s) for s in rdd.mapPartitionsWithIndex(run_task).collect()]

    # -- output.shuffle: rows ------------------------------------------------------------
    def _reducers(self, map_tasks: dict) -> dict[str, tuple[int, int]]:
        """Reducers per channel: output.shards, else as many as the channel had map tasks
        (split channels: their fraction of the tasks), so shards keep the unshuffled size."""
        cfg = self.config
        out, offset = {}, 0
        for channel in self._channels():
            if cfg.output.shards:
                n = cfg.output.shards
            elif cfg.input.split:
                n = max(1, round(map_tasks[None] * cfg.input.split[channel]))
            else:
                n = max(1, map_tasks.get(channel, 1))
            out[channel] = (offset, n)
            offset += n
        return out

    def _partition_keys(self, n: int) -> tuple[int, ...]:
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

    def _shuffled(self, plan: TaskPlan, mapped, reducers) -> list[Report]:
        """Spark's shuffle moves the encoded records to their reducers, sorted there by the
        seeded key; the reducers write the shards."""
        total = sum(n for _, n in reducers.values())
        shuffle = ShufflePlan(self.config.output.seed, reducers, self._partition_keys(total))
        plan = dataclasses.replace(plan, shuffle=shuffle)
        self.shuffle_info = {
            "mode": "rows",
            "seed": shuffle.seed,
            "reducers": {c: n for c, (_, n) in reducers.items()},
        }

        def reduce_task(batches):
            from pyspark import TaskContext

            _task_start()
            reducer = TaskContext.get().partitionId()
            for report in write_shuffled(plan, reducer, batches):
                yield pa.RecordBatch.from_pydict({"report": [report_to_json(report)]})

        conf = self.spark.conf
        saved = conf.get("spark.sql.adaptive.coalescePartitions.enabled", None)
        conf.set("spark.sql.adaptive.coalescePartitions.enabled", "false")
        try:
            shuffled = mapped(plan).repartition(total, "pkey").sortWithinPartitions("key")
            rows = shuffled.mapInArrow(reduce_task, "report string").collect()
        finally:
            if saved is None:
                conf.unset("spark.sql.adaptive.coalescePartitions.enabled")
            else:
                conf.set("spark.sql.adaptive.coalescePartitions.enabled", saved)
        return [report_from_json(r["report"]) for r in rows]

    def _run_direct_shuffled(self, plan: TaskPlan, tasks, schemas, columns) -> list[Report]:
        batch_rows = self.config.read.batch_rows
        r = self.config.read
        ahead = r.read_ahead, r.ranges_in_flight, r.range_mb
        counts: dict = {}
        for channel, _, _ in tasks:
            counts[channel] = counts.get(channel, 0) + 1

        def mapped(plan):
            plans = {c: dataclasses.replace(plan, channel=c) for c in counts}

            def map_task(ids):
                _task_start()
                for batch in ids:
                    for i in batch.column(0).to_pylist():
                        channel, _, pieces = tasks[i]
                        more = f" (+{len(pieces) - 1} more)" if len(pieces) > 1 else ""
                        batches = parquet.read_pieces(
                            pieces,
                            plan.s3,
                            schemas[channel],
                            columns,
                            batch_rows,
                            *ahead,
                        )
                        yield from encode_partition(
                            plans[channel], i, batches, f"{pieces[0].uri}{more}"
                        )

            n = max(len(tasks), 1)
            return self.spark.range(0, len(tasks), 1, n).mapInArrow(map_task, SHUFFLE_DDL)

        self.spark.sparkContext.setJobDescription(
            f"convert {len(tasks)} Parquet pieces (direct, shuffled)"
        )
        return self._shuffled(plan, mapped, self._reducers(counts))

    def _run_spark_shuffled(self, plan: TaskPlan, frames) -> list[Report]:
        counts = {c: df.rdd.getNumPartitions() for c, df in frames.items()}
        offsets, start = {}, 0
        for channel, n in counts.items():
            offsets[channel] = start
            start += n

        def mapped(plan):
            out = None
            for channel, df in frames.items():
                task_plan = dataclasses.replace(plan, channel=channel)

                def map_task(batches, task_plan=task_plan, base=offsets[channel]):
                    from pyspark import TaskContext

                    _task_start()
                    pid = TaskContext.get().partitionId()
                    yield from encode_partition(task_plan, base + pid, batches, f"partition {pid}")

                one = df.mapInArrow(map_task, SHUFFLE_DDL)
                out = one if out is None else out.unionByName(one)
            return out

        return self._shuffled(plan, mapped, self._reducers(counts))

    def _run_spark(self, plan: TaskPlan, frames) -> list[Report]:
        if self.config.output.shuffle == "rows":
            return self._run_spark_shuffled(plan, frames)
        shards = self.config.output.shards
        reports = []
        for channel, df in frames.items():
            task_plan = dataclasses.replace(plan, channel=channel)
            if shards:
                df = df.repartition(shards)

            def run_task(batches, task_plan=task_plan, channel=channel):
                from pyspark import TaskContext

                _task_start()
                pid = TaskContext.get().partitionId()
                where = f"partition {pid}" + (f" of channel {channel}" if channel else "")
                for report in write_partition(task_plan, pid, batches, where):
                    yield pa.RecordBatch.from_pydict({"report": [report_to_json(report)]})

            rows = df.mapInArrow(run_task, "report string").collect()
            reports += [report_from_json(r["report"]) for r in rows]
        return reports


def _quoted(name: str) -> str:
    """A column name for Spark SQL, whatever it holds (backticks, dots, spaces)."""
    return "`" + name.replace("`", "``") + "`"


def _same_columns(inventories: dict, columns: list[str]) -> None:
    """Every channel has the columns the plan reads, of the same types as the first."""
    (first_channel, first), *others = inventories.items()
    for channel, inventory in others:
        for name in columns:
            want = first.schema.field(name).type
            if name not in inventory.schema.names:
                raise InputError(
                    f"channel {channel} has no column {name!r} (channel {first_channel} has)"
                )
            got = inventory.schema.field(name).type
            if parquet.spark_equivalent(got) != parquet.spark_equivalent(want):
                raise InputError(
                    f"column {name!r} is {got} in channel {channel} but {want} in channel "
                    f"{first_channel}"
                )


def _spark_cannot_read(t: pa.DataType) -> bool:
    """Parquet columns pyarrow writes that make Spark's read fail, whichever columns are used."""
    return (
        pa.types.is_float16(t)
        or (pa.types.is_decimal(t) and t.precision > 38)
        or pa.types.is_time(t)
    )


def _index_columns(inventories) -> tuple[str, ...]:
    """pandas' row-index columns in any input's files (both paths leave them out alike)."""
    return tuple(dict.fromkeys(c for inv in inventories.values() for c in inv.index_columns))


def _spark_columns(schema) -> list[Column]:
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql.types import ArrayType, BooleanType, NumericType

    numeric = (NumericType, BooleanType)
    out = []
    for f in schema.fields:
        t = f.dataType
        category = (
            "numeric" if isinstance(t, numeric)
            else "array" if isinstance(t, ArrayType) and isinstance(t.elementType, numeric)
            else "vector" if isinstance(t, VectorUDT)
            else "other"
        )  # fmt: skip
        out.append(Column(f.name, category, t.simpleString()))
    return out


def _sample_bytes(value) -> int:
    """About what one collected vector or array takes, to size the sample by."""
    if value is None:
        return 0
    if hasattr(value, "indices"):  # SparseVector
        return 12 * len(value.indices)
    return 8 * len(value)


def _to_arrow(values: list, spark_type) -> pa.Array:
    """Collected vectors or numeric arrays as the Arrow ``mapInArrow`` hands the tasks
    (a Vector as its struct<type, size, indices, values>)."""
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql.pandas.types import to_arrow_type

    if isinstance(spark_type, VectorUDT):
        values = [None if v is None else spark_type.serialize(v) for v in values]
        spark_type = spark_type.sqlType()
    return pa.array(values, type=to_arrow_type(spark_type))


def _task_start() -> None:
    """Executors start without logging handlers: send ours to stderr (the executor's log).
    And the worker process, reused task after task, stops paying for its imports each time."""
    settle()
    root = logging.getLogger("jobs")
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(os.environ.get("JOBS_TASK_LOG_LEVEL", "INFO"))
