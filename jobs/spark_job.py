"""The Spark job: plan the read, run one task per partition, commit.

Two read paths feed the same task (:func:`jobs.task.write_partition`):

- direct: the driver lists Parquet files (or row groups), Spark runs one task per piece, and
  each task reads its piece with pyarrow. Spark still schedules, retries and speculates, but no
  row crosses the JVM → Python boundary.
- spark: ``mapInArrow`` over a DataFrame, for what only Spark evaluates (arbitrary SQL, ML
  Vector columns, a caller's DataFrame). Numeric columns are assembled into one array column
  in the JVM first, which Arrow hands over far faster than hundreds of separate columns.

The plan itself (path, features, feature_dim, encoding) is decided by :mod:`jobs.planning`,
from what :mod:`jobs.spark_planning` reads; :mod:`jobs.runners` runs it. This module is the
conversion around them: paths, lease, Spark, plan → run → commit through :mod:`jobs.runinfo`,
or clean up.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from . import __version__
from .contract import RunMetadata, summarize_run
from .errors import JobError, StorageError
from .handoff import DriverCompletions
from .interrupts import INTERRUPTS
from .lease import Lease, take
from .planning import Plan, selector
from .preflight import check_paths
from .progress import Progress
from .runinfo import RunLayout
from .runners import Shuffled
from .settings import JobConfig
from .spark_planning import Planner, inventories
from .storage import Location, Store, require_credentials
from .task import TaskPlan

log = logging.getLogger(__name__)

KILL_MARGIN_S = 1.0  # beyond spark.python.task.killTimeout, for a killed worker to be gone
_TIME_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "": 0.001}


def killed_attempt_grace(spark) -> float:
    """How long an attempt Spark cancelled may still write: its Python worker gets
    spark.python.task.killTimeout (Spark's default 2s; a bare number is milliseconds, as
    Spark reads it) to stop, and a margin."""
    try:
        raw = str(spark.conf.get("spark.python.task.killTimeout", "2s")).strip().lower()
    except Exception:  # a JVM that is gone (out of heap) has no conf to ask: Spark's default
        raw = "2s"
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
        self.planner = Planner(config, spark, dataframe, discovery)

    def run(self) -> RunMetadata:
        t0 = time.perf_counter()
        plan, runner = self.planner.plan()
        log.info("read path: %s (%s)", plan.read.path, plan.read.reason)
        if self.config.output.shuffle == "rows":
            runner = Shuffled(self.spark, self.config, self._channels(), runner)
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
                reports = runner.run(task_plan)
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
                task_sizing=self.planner.sizing,
                shuffle=getattr(runner, "info", {"mode": self.config.output.shuffle}),
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
            checksum=cfg.output.checksum,
            sha256=cfg.output.sha256,
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
