"""The Spark side of planning: which read path, which tasks, which features, from the
inputs' inventories (direct) or the DataFrames Spark reads (Spark path), and the runner that
runs the plan. What the plan *is* is decided by :mod:`jobs.planning`, without Spark."""

from __future__ import annotations

import logging

import pyarrow as pa

from . import parquet
from .errors import InputError
from .expressions import referenced_columns
from .planning import (
    Column,
    ReadChoice,
    arrow_columns,
    choose_read_path,
    decide,
    declared_size,
    needs_sample,
    resolve_features,
)
from .runners import DirectRunner, SparkRunner, read_task_pieces
from .selection import FEATURES, LABEL
from .settings import JobConfig
from .task import filtered

log = logging.getLogger(__name__)

SAMPLE_ROWS = 10_000
SAMPLE_BYTES = 8 << 20  # the Spark path ships its sample to the driver
PROBE_ROWS = 16  # the Spark path: rows that give a vector's or an array's size


def inventories(config: JobConfig, stop=None) -> dict:
    """Channel (None for a split input) → its Parquet files and schema, or, for an input of
    more than ``read.driver_footers`` files, its :class:`parquet.Listing`, whose footers a
    Spark job reads (:func:`spark_footers`). Runs before Spark is up."""
    out = {}
    for channel, uris in config.channels().items():
        listing = parquet.list_inputs(uris, config.s3, stop)
        if len(listing.found) <= config.read.driver_footers:
            footers = parquet.read_footers(listing.items(), config.s3, stop=stop)
            listing = parquet.inventory(listing, footers)
        out[None if config.input.split else channel] = listing
        if config.input.split:
            break  # one input, routed in the tasks
    return out


def spark_footers(spark, listing: parquet.Listing, s3) -> parquet.Footers:
    """The listed files' footers, read by a Spark job as Spark's ``mergeSchema`` reads them
    (``mergeSchemasInParallel``): the driver holds the listing and the small answers, never
    a footer. One task per core, each reading ``FOOTER_THREADS`` footers at a time; a file
    that cannot be read is an InputError naming it, as on the driver."""
    items = listing.items()
    slices = max(1, min(len(items), spark.sparkContext.defaultParallelism))
    threads = parquet.FOOTER_THREADS

    def read(part):
        try:
            yield parquet.read_footers(list(part), s3, threads)
        except InputError as exc:
            yield str(exc)

    answers = spark.sparkContext.parallelize(items, slices).mapPartitions(read).collect()
    failed = [a for a in answers if isinstance(a, str)]
    if failed:
        raise InputError(failed[0])
    log.info("input: %d footers read by a Spark job of %d tasks", len(items), slices)
    return parquet.Footers.joined(answers)


class Planner:
    """Plans one conversion on a session: ``plan()`` gives the Plan and its runner, and
    ``sizing`` how the direct path cut its tasks (for run.json)."""

    def __init__(self, config: JobConfig, spark, dataframe=None, discovery=None):
        self.config, self.spark = config, spark
        self.dataframe, self.discovery = dataframe, discovery
        self.sizing: dict = {}

    def plan(self):
        """The plan, and the runner of its tasks."""
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
        found = self.discovery.result() if self.discovery is not None else inventories(self.config)
        return {
            channel: parquet.inventory(got, spark_footers(self.spark, got, self.config.s3))
            if isinstance(got, parquet.Listing)
            else got
            for channel, got in found.items()
        }

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
        return plan, DirectRunner(self.spark, cfg, tasks, schemas, needed)

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
        return plan, SparkRunner(self.spark, cfg, frames)

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
            batches, _ = read_task_pieces(
                pieces, self.config.s3, schemas[channel], columns, self.config.read, SAMPLE_ROWS
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
