"""The Spark job: plan the read, validate the selection, run one task per partition, commit.

Two read paths feed the same task (``convert.write_partition``):

- direct: the driver lists Parquet files (or row groups), Spark runs one task per piece, and
  each task reads its piece with pyarrow. Spark still schedules, retries and speculates, but no
  row crosses the JVM → Python boundary.
- spark: ``mapInArrow`` over a DataFrame, for what only Spark evaluates (arbitrary SQL, ML
  Vector columns, a caller's DataFrame). Numeric columns are assembled into one array column
  in the JVM first, which Arrow hands over far faster than hundreds of separate columns.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass

import pyarrow as pa

from . import __version__, codec, parquet
from .config import JobConfig
from .convert import TaskPlan, write_partition
from .errors import CodecError, ConfigError, InputError, JobError, StorageError
from .interrupts import INTERRUPTS
from .lease import Lease, take
from .preflight import check_paths
from .runinfo import FORMAT, RunLayout
from .select import FEATURES, LABEL, Selector, Untranslatable, arrow_expression, referenced_columns
from .storage import Location, Store, require_credentials

log = logging.getLogger(__name__)

SAMPLE_ROWS = 10_000
KILLED_ATTEMPT_GRACE_S = 3.0  # spark.python.task.killTimeout (2 s) and a margin
SPARSE_IF_SMALLER = 0.5  # auto picks sparse when it is estimated at most half the dense bytes


@dataclass
class Column:
    name: str
    kind: str  # numeric | array | vector | other
    type: str


def _arrow_columns(schema: pa.Schema) -> list[Column]:
    from .select import is_numeric, is_numeric_list, is_vector

    out = []
    for f in schema:
        kind = (
            "numeric"
            if is_numeric(f.type)
            else "array"
            if is_numeric_list(f.type)
            else "vector"
            if is_vector(f.type)
            else "other"
        )
        out.append(Column(f.name, kind, str(f.type)))
    return out


def _spark_columns(schema) -> list[Column]:
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql.types import ArrayType, BooleanType, NumericType

    out = []
    for f in schema.fields:
        t = f.dataType
        numeric = (NumericType, BooleanType)
        kind = (
            "numeric"
            if isinstance(t, numeric)
            else "array"
            if isinstance(t, ArrayType) and isinstance(t.elementType, numeric)
            else "vector"
            if isinstance(t, VectorUDT)
            else "other"
        )
        out.append(Column(f.name, kind, t.simpleString()))
    return out


def resolve_features(config: JobConfig, columns: list[Column], label_columns: list[str]):
    """(form, names): form is columns | array | vector; names are the columns read."""
    spec = config.select.features
    by_name = {c.name: c for c in columns}
    kind = spec.kind
    if kind in ("array", "vector"):
        name = getattr(spec, kind)
        col = by_name.get(name)
        if col is None:
            raise InputError(f"select.features.{kind}: no column {name!r} in the input")
        if col.kind != kind:
            what = "an array of numbers" if kind == "array" else "a Spark ML Vector"
            raise InputError(f"select.features.{kind}: column {name!r} is {col.type}, not {what}")
        return kind, [name]
    if kind == "columns":
        missing = [c for c in spec.columns if c not in by_name]
        if missing:
            raise InputError(
                f"select.features.columns: {_columns(len(missing))} not in the input: "
                f"{', '.join(map(repr, missing[:10]))}"
            )
        names = list(spec.columns)
    elif kind == "pattern":
        import re

        try:
            pattern = re.compile(spec.pattern)
        except re.error as exc:
            raise ConfigError(f"select.features.pattern {spec.pattern!r}: {exc}") from None
        names = [c.name for c in columns if pattern.fullmatch(c.name)]
        if not names:
            raise InputError(f"select.features.pattern {spec.pattern!r} matches no column")
    else:
        names = [c.name for c in columns if c.kind == "numeric" and c.name not in label_columns]
        if not names:
            raise InputError("no numeric feature columns besides the label's")
    unknown = [c for c in spec.exclude if c not in by_name]
    if unknown:
        raise InputError(
            f"select.features.exclude: {_columns(len(unknown))} not in the input: "
            f"{', '.join(map(repr, unknown[:10]))}"
        )
    if kind == "numeric":
        left_out = [c for c in columns if c.kind != "numeric" and c.name not in label_columns]
        if left_out:
            log.info(
                "features: %d numeric columns; left out as not numeric: %s",
                len(names),
                ", ".join(f"{c.name!r} ({c.type})" for c in left_out[:20])
                + (f" and {len(left_out) - 20} more" if len(left_out) > 20 else ""),
            )
    names = [n for n in names if n not in spec.exclude]
    if kind != "numeric":
        clash = [n for n in names if n in label_columns]
        if clash:
            raise InputError(f"feature columns {clash} are also used by the label")
    wrong = [by_name[n] for n in names if by_name[n].kind != "numeric"]
    if wrong:
        listed = ", ".join(f"{c.name!r} ({c.type})" for c in wrong[:10])
        raise InputError(f"{_columns(len(wrong), 'feature column')} not numeric: {listed}")
    if not names:
        raise InputError("every feature column was excluded")
    return "columns", names


def _columns(n: int, what: str = "column") -> str:
    return f"1 {what} is" if n == 1 else f"{n:,} {what}s are"


@dataclass
class ReadPlan:
    path: str  # direct | spark
    reason: str
    label_expr: object = None
    filter_expr: object = None
    label_columns: tuple[str, ...] = ()


def choose_path(config: JobConfig, have_dataframe: bool) -> ReadPlan:
    """Direct when pyarrow can evaluate the whole selection; the reason either way."""
    wanted = config.read.path
    select = config.select
    blockers = []
    if have_dataframe:
        blockers.append("the input is a DataFrame")
    if select.features.kind == "vector":
        blockers.append("Spark ML Vector features are read through Spark")
    label_expr = filter_expr = None
    label_columns: list[str] = []
    for what, text in (("label", select.label), ("filter", config.input.filter)):
        if not text:
            continue
        try:
            expr, cols = arrow_expression(text)
        except Untranslatable as exc:
            blockers.append(f"the {what} {text!r} uses {exc}, which only Spark evaluates")
            continue
        if what == "label":
            label_expr, label_columns = expr.cast(pa.float32()), cols
        else:
            filter_expr = expr
    if wanted == "spark":
        return ReadPlan("spark", "read.path is spark")
    if blockers:
        if wanted == "direct":
            raise ConfigError(f"read.path is direct, but {'; '.join(blockers)}")
        return ReadPlan("spark", "; ".join(blockers))
    return ReadPlan(
        "direct",
        "plain Parquet and a selection pyarrow evaluates",
        label_expr,
        filter_expr,
        tuple(label_columns),
    )


class Conversion:
    """One run of the job: holds the plan, the session and what tasks reported."""

    def __init__(
        self,
        config: JobConfig,
        spark,
        dataframe,
        store: Store,
        lease: Lease,
        replaced: list[Location],
    ):
        self.config = config
        self.spark = spark
        self.dataframe = dataframe
        self.store = store
        self.lease = lease
        self.layout = RunLayout.at(config.output.path, lease.run_id)
        self.replaced = replaced
        self.plan = choose_path(config, dataframe is not None)

    # -- planning ------------------------------------------------------------------------
    def _direct_tasks(self):
        cfg = self.config
        channels = cfg.channels()
        schema = None
        tasks = []  # (channel or None, index, pieces)
        for channel, uris in channels.items():
            if cfg.input.split and tasks:
                break  # one input, routed in the tasks
            schema_c, pieces = parquet.inspect(uris, cfg.s3)
            schema = schema or schema_c
            name = None if cfg.input.split else channel
            if cfg.output.shards:
                groups = parquet.split_row_groups(pieces, cfg.output.shards, cfg.s3)
                if groups is None:
                    return schema, None
            else:
                groups = [[p] for p in pieces]
            tasks += [(name, i, g) for i, g in enumerate(groups)]
        return schema, tasks

    def _columns_projection(self, names, form):
        import pyarrow.compute as pc

        cols = {}
        if self.plan.label_expr is not None:
            cols[LABEL] = self.plan.label_expr
        if form == "array":
            cols[FEATURES] = pc.field(names[0])
        else:
            cols |= {n: pc.field(n) for n in names}
        return cols

    def _spark_frames(self):
        """Channel (None for a split input) → DataFrame of the raw input, filter applied."""
        cfg = self.config
        if self.dataframe is not None:
            frames = {None if cfg.input.split else "train": self.dataframe}
        else:
            frames = {}
            for channel, uris in cfg.channels().items():
                parquet.check_exists(uris, cfg.s3)
                frames[None if cfg.input.split else channel] = self.spark.read.parquet(*uris)
                if cfg.input.split:
                    break
        if cfg.input.filter:
            frames = {c: df.where(cfg.input.filter) for c, df in frames.items()}
        return frames

    # -- running -------------------------------------------------------------------------
    def run(self) -> dict:
        cfg = self.config
        t0 = time.perf_counter()
        if self.plan.path == "direct":
            schema, tasks = self._direct_tasks()
            if tasks is None:
                self.plan = ReadPlan(
                    "spark",
                    f"output.shards={cfg.output.shards} needs at least that many Parquet row "
                    "groups per channel",
                )
        if self.plan.path == "direct":
            columns = _arrow_columns(schema)
            self._check_label_columns(columns, self.plan.label_columns)
            form, names = resolve_features(cfg, columns, list(self.plan.label_columns))
            projection = self._columns_projection(names, form)
            sample = self._direct_sample(tasks, projection)
        else:
            frames = self._spark_frames()
            first = next(iter(frames.values()))
            columns = _spark_columns(first.schema)
            label_cols = referenced_columns(cfg.select.label or "", [c.name for c in columns])
            form, names = resolve_features(cfg, columns, label_cols)
            frames = {c: self._select(df, form, names) for c, df in frames.items()}
            # numeric columns give d without data: sample only when auto needs the density
            needed = form != "columns" or cfg.output.encoding == "auto"
            sample = self._spark_sample(next(iter(frames.values()))) if needed else None
        log.info("read path: %s (%s)", self.plan.path, self.plan.reason)
        d, encoding, density = self._decide(form, names, sample)
        selector = self._selector(form, names, d)
        plan = TaskPlan(
            out=cfg.output.path,
            run_id=self.layout.run_id,
            s3=cfg.s3,
            selector=selector,
            encoding=encoding,
            feature_dim=d,
            max_shard_bytes=None if cfg.output.shards else cfg.output.max_shard_mb << 20,
            split=dict(cfg.input.split),
            seed=cfg.input.seed,
        )
        sc = self.spark.sparkContext
        ran = False
        try:
            self.lease.on_lost(sc.cancelAllJobs)
            with INTERRUPTS.deferred(cancel=sc.cancelAllJobs):
                ran = True
                if self.plan.path == "direct":
                    infos = self._run_direct(plan, tasks, projection)
                else:
                    infos = self._run_spark(plan, frames)
            self.lease.check()
            INTERRUPTS.raise_if_interrupted()
            metadata = self._metadata(infos, d, encoding, density, form, names)
            metadata["seconds"] = round(time.perf_counter() - t0, 3)
            with INTERRUPTS.deferred():  # a commit is never left half-done
                self.layout.commit(self.store, metadata, before_commit=self.lease.renew)
        except BaseException as exc:
            with INTERRUPTS.deferred():
                self._clean_up(ran and not isinstance(exc, JobError))
            why = "the conversion was cancelled and its files removed; nothing was committed"
            INTERRUPTS.raise_if_interrupted(why)
            self.lease.check()
            raise
        self.layout.remove_replaced(self.store, self.replaced)
        if self.spark.conf.get("spark.speculation", "false") == "true":
            time.sleep(KILLED_ATTEMPT_GRACE_S)  # speculative attempts that lost may still write
            self.store.abort_pending(self.layout.shards, owned=self.layout.owns)
        for channel, info in metadata["channels"].items():
            log.info(
                "channel %s: %d rows, %d shards, %.1f MB",
                channel,
                info["rows"],
                len(info["shards"]),
                info["bytes"] / 1e6,
            )
        log.info("committed %s (run %s)", self.layout.metadata.uri, self.layout.run_id)
        INTERRUPTS.raise_if_interrupted(f"the run was committed at {self.layout.root.uri}")
        return metadata

    def _clean_up(self, after_spark_job: bool) -> None:
        """Remove this run's own objects; after a Spark job, once more when the attempts it
        cancelled are gone (their Python workers get spark.python.task.killTimeout)."""
        self.layout.discard(self.store)
        if after_spark_job:
            time.sleep(KILLED_ATTEMPT_GRACE_S)
            self.layout.discard(self.store)

    def _check_label_columns(self, columns, label_columns):
        names = {c.name for c in columns}
        missing = [c for c in label_columns if c not in names]
        if missing:
            raise InputError(
                f"select.label {self.config.select.label!r} reads {missing[0]!r}, "
                "which is not a column of the input"
            )

    def _select(self, df, form, names):
        """The DataFrame the Spark path encodes: LABEL, then FEATURES as one column."""
        from pyspark.sql import functions as F
        from pyspark.sql.utils import AnalysisException

        cols = []
        if self.config.select.label:
            cols.append(F.expr(self.config.select.label).cast("float").alias(LABEL))
        if form == "columns":
            cols.append(F.array(*[F.col(f"`{n}`").cast("float") for n in names]).alias(FEATURES))
        else:
            cols.append(F.col(f"`{names[0]}`").alias(FEATURES))
        try:
            return df.select(*cols)
        except AnalysisException as exc:
            msg = str(exc).splitlines()[0]
            raise InputError(f"select.label {self.config.select.label!r}: {msg}") from None

    def _direct_sample(self, tasks, projection) -> pa.RecordBatch | None:
        cfg = self.config
        for _, _, pieces in tasks:
            for batch in parquet.read_pieces(
                pieces, cfg.s3, projection, self.plan.filter_expr, SAMPLE_ROWS
            ):
                if batch.num_rows:
                    return batch
        return None

    def _spark_sample(self, df) -> pa.RecordBatch | None:
        """Up to SAMPLE_ROWS rows of the selected FEATURES column, fetched through Arrow."""
        rows = df.select(FEATURES).limit(SAMPLE_ROWS)

        def grab(batches):
            for b in batches:
                if b.num_rows:
                    yield pa.RecordBatch.from_pydict(
                        {
                            "ipc": [b.serialize().to_pybytes()],
                            "schema": [b.schema.serialize().to_pybytes()],
                        }
                    )

        got = rows.mapInArrow(grab, "ipc binary, schema binary").limit(1).collect()
        if not got:
            return None
        schema = pa.ipc.read_schema(pa.py_buffer(got[0]["schema"]))
        return pa.ipc.read_record_batch(pa.py_buffer(got[0]["ipc"]), schema)

    def _decide(self, form, names, sample):
        """feature_dim, encoding and the measured density, before any task runs."""
        cfg = self.config
        if form == "columns":
            d = len(names)
        elif sample is None:
            raise InputError("the input has no rows, so the feature dimension is unknown")
        else:
            d = _dim_of(sample.column(FEATURES), names[0])
        density = None
        if cfg.output.encoding == "auto":
            density = self._density(form, names, sample, d)
            dense_bytes = 4 * d
            sparse_bytes = density * d * (4 + (1 if d <= 128 else 2 if d <= 16384 else 3))
            encoding = "sparse" if sparse_bytes <= SPARSE_IF_SMALLER * dense_bytes else "dense"
            log.info(
                "encoding: %s (measured density %.3f; sparse ≈ %.2f× the dense bytes)",
                encoding,
                density,
                sparse_bytes / max(dense_bytes, 1),
            )
        else:
            encoding = cfg.output.encoding
        if encoding == "dense":
            try:  # every dense record is the same size: too big is known before any task runs
                codec.DenseLayout.of(d, bool(cfg.select.label))
            except CodecError:
                raise InputError(
                    f"output.encoding dense: records of {d:,} features would exceed RecordIO's "
                    f"2^29-byte record limit; use output.encoding: sparse"
                ) from None
        return d, encoding, density

    def _density(self, form, names, sample, d) -> float:
        if sample is None or sample.num_rows == 0:
            return 1.0
        # the run's own selector, minus the checks a density estimate does not need
        sel = self._selector(form, names, d, labelled=False, invalid="zero")
        rows = sel.rows(sample.select([c for c in sample.schema.names if c != LABEL]), "the sample")
        return rows.nnz() / max(len(rows) * d, 1)

    def _selector(self, form, names, d, **overrides) -> Selector:
        t = self.config.training
        settings = {
            "labelled": bool(self.config.select.label),
            "invalid": self.config.select.invalid,
            "predictor_type": t.predictor_type,
            "num_classes": t.num_classes,
            "assembled": self.plan.path == "spark",
        }
        return Selector(names if form == "columns" else None, d, **(settings | overrides))

    def _run_direct(self, plan: TaskPlan, tasks, projection) -> list[dict]:
        sc = self.spark.sparkContext
        filter_expr = self.plan.filter_expr
        batch_rows = self.config.read.batch_rows
        plans = {c: _with_channel(plan, c) for c in {t[0] for t in tasks}}

        def run_task(index, items):
            _task_logging()
            for channel, partition, pieces in items:
                where = f"{pieces[0].uri}" + (
                    f" (+{len(pieces) - 1} more)" if len(pieces) > 1 else ""
                )
                batches = parquet.read_pieces(pieces, plan.s3, projection, filter_expr, batch_rows)
                for info in write_partition(plans[channel], partition, batches, where):
                    yield json.dumps(info)

        rdd = sc.parallelize(tasks, max(len(tasks), 1))
        self.spark.sparkContext.setJobDescription(f"convert {len(tasks)} Parquet pieces (direct)")
        return [json.loads(s) for s in rdd.mapPartitionsWithIndex(run_task).collect()]

    def _run_spark(self, plan: TaskPlan, frames) -> list[dict]:
        shards = self.config.output.shards
        infos = []
        for channel, df in frames.items():
            task_plan = _with_channel(plan, channel)
            if shards:
                df = df.repartition(shards)

            def run_task(batches, task_plan=task_plan, channel=channel):
                from pyspark import TaskContext

                _task_logging()
                pid = TaskContext.get().partitionId()
                where = f"partition {pid}" + (f" of channel {channel}" if channel else "")
                for info in write_partition(task_plan, pid, batches, where):
                    yield pa.RecordBatch.from_pydict({"info": [json.dumps(info)]})

            rows = df.mapInArrow(run_task, "info string").collect()
            infos += [json.loads(r["info"]) for r in rows]
        return infos

    def _why_empty(self, channel: str, tasks: list[dict]) -> str:
        cfg = self.config
        mine = [t for t in tasks if t.get("channel") in (channel, None)]
        read = sum(t["rows_in"] for t in mine)
        dropped = sum(t["dropped"] for t in mine)
        if read == 0:
            if cfg.input.filter:
                return f"input.filter {cfg.input.filter!r} keeps none of the input's rows"
            return f"the input has no rows ({len(mine)} partitions, all empty)"
        if dropped == read:
            return f"all {read:,} rows read were invalid and dropped (select.invalid: drop)"
        return f"input.split sent it none of the {read:,} rows read"

    def _metadata(self, infos, d, encoding, density, form, names) -> dict:
        errors = [i for i in infos if "error" in i]
        if errors:
            first = errors[0]["error"]
            more = (
                f" (and {len(errors) - 1} more tasks failed the same checks)"
                if len(errors) > 1
                else ""
            )
            raise InputError(first + more)
        cfg = self.config
        tasks = [i for i in infos if "task" in i]
        shards = [i for i in infos if "key" in i]
        channels = {}
        expected = list(cfg.channels()) if self.dataframe is None else ["train"]
        if cfg.input.split:
            expected = list(cfg.input.split)
        for channel in expected:
            mine = sorted((s for s in shards if s["channel"] == channel), key=lambda s: s["key"])
            rows = sum(s["rows"] for s in mine)
            if rows == 0:
                raise InputError(
                    f"channel {channel}: no rows to write: {self._why_empty(channel, tasks)}; "
                    "an empty channel would fail training"
                )
            labels = Counter()
            for s in mine:
                labels.update(s["labels"])
            channels[channel] = {
                "rows": rows,
                "bytes": sum(s["bytes"] for s in mine),
                "labels": dict(sorted(labels.items(), key=lambda kv: float(kv[0]))),
                "shards": [{k: s[k] for k in ("key", "rows", "bytes", "sha256")} for s in mine],
            }
        totals = Counter()
        for t in tasks:
            totals.update({k: t[k] for k in ("rows_in", "dropped", "fixed", "nnz", "cells")})
        if totals["dropped"] or totals["fixed"]:
            log.warning(
                "invalid rows (select.invalid=%s): %d dropped, %d zeroed",
                cfg.select.invalid,
                totals["dropped"],
                totals["fixed"],
            )
        return {
            "format": FORMAT,
            "code_version": __version__,
            "feature_dim": d,
            "encoding": encoding,
            "labelled": bool(cfg.select.label),
            "predictor_type": cfg.training.predictor_type,
            "read_path": self.plan.path,
            "read_path_reason": self.plan.reason,
            "features": {"form": form, "columns": names if len(names) <= 10_000 else len(names)},
            "label": cfg.select.label,
            "sampled_density": density,
            "density": totals["nnz"] / totals["cells"] if totals["cells"] else None,
            "rows_read": totals["rows_in"],
            "rows_dropped": totals["dropped"],
            "rows_zeroed": totals["fixed"],
            "tasks": len(tasks),
            "task_seconds": round(sum(t["seconds"] for t in tasks), 3),
            "peak_worker_rss_mb": round(max((t["peak_rss_mb"] for t in tasks), default=0), 1),
            "inputs": cfg.channels() if self.dataframe is None else {"train": ["<DataFrame>"]},
            "channels": channels,
            "config": cfg.to_dict(),
        }


def _dim_of(col, name: str) -> int:
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_struct(col.type):  # a Vector: dense rows carry values, sparse ones a size
        t = col.field("type").to_numpy(zero_copy_only=False)
        i = 0
        return int(col.field("size")[i].as_py() if t[i] == 0 else len(col.field("values")[i]))
    valid = col.drop_null()
    if len(valid) == 0:
        raise InputError(f"column {name!r}: every sampled row is null")
    return len(valid[0])


def _with_channel(plan: TaskPlan, channel: str | None) -> TaskPlan:
    from dataclasses import replace

    return replace(plan, channel=channel)


def _task_logging() -> None:
    """Executors start without logging handlers: send ours to stderr (the executor's log)."""
    root = logging.getLogger("jobs")
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(os.environ.get("JOBS_TASK_LOG_LEVEL", "INFO"))


def convert(config: JobConfig, spark=None, dataframe=None, lease: Lease | None = None) -> dict:
    """Run the conversion; returns the committed run's metadata. Raises JobError subclasses,
    or Interrupted on SIGINT/SIGTERM (with the run's files removed).

    Before Spark starts: the paths, credentials, the lease (``lease``, when the caller holds
    one for more than this conversion) and what is at the output already."""
    check_paths(config, inputs=dataframe is None)
    inputs = [] if dataframe is not None else sum(config.channels().values(), [])
    require_credentials([config.output.path, *inputs], "the conversion reads or writes it")
    store = Store(config.s3)
    own_lease = lease is None
    if own_lease:
        out = config.output
        lease = take(store, out.path, out.mode, out.take_over_lease, out.lease_timeout_s)
    try:
        layout = RunLayout.at(config.output.path, lease.run_id)
        taken_over = lease.previous.run_id if lease.previous else None
        replaced = layout.prepare(store, config.output.mode, marker=taken_over)
        if spark is None:
            from .session import spark_session

            spark = spark_session(config.spark, config.s3, config.read.batch_rows)
        return Conversion(config, spark, dataframe, store, lease, replaced).run()
    except (JobError, KeyboardInterrupt):
        raise
    except Exception as exc:  # Py4J/Spark errors: what failed and why, in one line
        raise StorageError(f"the conversion failed: {spark_failure(str(exc))}") from exc
    finally:
        if own_lease:
            lease.release()


def spark_failure(text: str) -> str:
    """One line from a Spark job failure: how often the task failed, and its last Python error
    (what our task raised) or else the first Java exception line."""
    import re

    attempts = re.search(r"Task (\d+) in stage \S+ failed (\d+) times", text)
    lines = [ln.strip() for ln in text.splitlines()]
    python = [
        ln
        for ln in lines
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception): ", ln)
        and not ln.startswith(("org.apache.", "java.", "py4j.", "scala."))
    ]
    java = [ln for ln in lines if "Exception:" in ln or "Error:" in ln]
    cause = python[-1] if python else java[0] if java else lines[0] if lines else text
    cause = re.sub(r"^jobs\.errors\.\w+: ", "", cause)
    if attempts:
        task, times = attempts.groups()
        cause = f"task {task} failed {times} times; last error: {cause}"
    return cause[:2000]
