"""Spark ML users' data on the Spark path: Vector columns (sparse, dense, as VectorAssembler
builds them) → local RecordIO-protobuf shards, ours vs sagemaker-spark's JVM writer vs the
drained floor (Spark scan → Arrow → Python of the same columns, nothing done), one warm session.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .e2e_bench import CACHE, FEATURES, RUNS
from .e2e_bench import _dataset as mnist_dataset
from .timing import interleaved_medians, print_table

SPARSE_ROWS = int(os.environ.get("BENCH_SPARSE_ROWS", 200_000))
SPARSE_DIM, SPARSE_NNZ, SPARSE_FILES = 100_000, 40, 8

_VECTOR = pa.struct(
    [
        pa.field("type", pa.int8(), nullable=False),
        pa.field("size", pa.int32()),
        pa.field("indices", pa.list_(pa.field("element", pa.int32(), nullable=False))),
        pa.field("values", pa.list_(pa.field("element", pa.float64(), nullable=False))),
    ]
)


def _spark_schema_metadata(declared: int | None) -> bytes:
    """What Spark writes into a Parquet footer so that it reads the struct back as VectorUDT,
    with the ``ml_attr`` size Spark ML's transformers declare (HashingTF: numFeatures)."""
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql.types import DoubleType, StructField, StructType

    meta = {"ml_attr": {"num_attrs": declared}} if declared else {}
    schema = StructType(
        [StructField("label", DoubleType()), StructField("features", VectorUDT(), metadata=meta)]
    )
    return schema.json().encode()


def _write_vectors(path: Path, label, kind, size, offsets, indices, values, declared=None) -> None:
    """One Parquet file of (label double, features VectorUDT), as Spark itself lays it out."""
    n = len(label)
    offsets = pa.array(offsets, pa.int32())

    def lists(name, flat, arrow_type):
        return pa.ListArray.from_arrays(
            offsets, pa.array(flat, arrow_type), type=_VECTOR.field(name).type
        )

    vectors = pa.StructArray.from_arrays(
        [
            pa.array(kind, pa.int8()),
            pa.array(size, pa.int32()) if indices is not None else pa.nulls(n, pa.int32()),
            # dense vectors store no size and no indices: nulls
            lists("indices", indices, pa.int32())
            if indices is not None
            else pa.nulls(n, _VECTOR.field("indices").type),
            lists("values", values, pa.float64()),
        ],
        fields=list(_VECTOR),
    )
    table = pa.table({"label": pa.array(label, pa.float64()), "features": vectors})
    meta = {b"org.apache.spark.sql.parquet.row.metadata": _spark_schema_metadata(declared)}
    pq.write_table(table.replace_schema_metadata(meta), path, row_group_size=65536)


def sparse_dataset() -> Path:
    """SparseVector(100,000) rows with 40 stored entries each, the factorization-machines kind,
    with the size declared in the column's metadata as HashingTF declares it."""
    path = CACHE / f"sparse-{SPARSE_ROWS}x{SPARSE_DIM}-{SPARSE_NNZ}-declared"
    if (path / "_done").exists():
        return path
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    rng = np.random.default_rng(5)
    k = SPARSE_NNZ
    for i, n in enumerate(np.diff(np.linspace(0, SPARSE_ROWS, SPARSE_FILES + 1).astype(int))):
        # sorted distinct indices: sorted draws from [0, d - k) plus 0..k-1
        idx = np.sort(rng.integers(0, SPARSE_DIM - k, (n, k)), axis=1) + np.arange(k)
        _write_vectors(
            path / f"part-{i:05d}.parquet",
            rng.integers(0, 2, n).astype(np.float64),
            np.zeros(n, np.int8),
            np.full(n, SPARSE_DIM, np.int32),
            np.arange(n + 1) * k,
            idx.ravel(),
            rng.standard_normal(n * k),
            declared=SPARSE_DIM,
        )
    (path / "_done").touch()
    return path


def dense_dataset() -> Path:
    """The MNIST-shaped rows as DenseVector(784) (float64 values, as Spark stores them)."""
    src = mnist_dataset()
    path = CACHE / f"dense-vectors-{src.name}"
    if (path / "_done").exists():
        return path
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    cols = [str(j) for j in range(FEATURES)]
    for f in sorted(src.glob("*.parquet")):
        t = pq.read_table(f)
        x = np.column_stack([t.column(c).to_numpy() for c in cols]).astype(np.float64)
        n = len(x)
        label = (t.column("target").to_numpy() == 0).astype(np.float64)
        _write_vectors(
            path / f.name,
            label,
            np.ones(n, np.int8),
            np.zeros(n, np.int32),
            np.arange(n + 1) * FEATURES,
            None,
            x.ravel(),
        )
    (path / "_done").touch()
    return path


def run() -> list[tuple[str, float]]:
    import logging

    from pyspark.ml.feature import VectorAssembler
    from pyspark.sql import functions as F

    from jobs.config import load_config
    from jobs.spark_job import convert

    from .e2e_bench import protobuf_jar, session

    logging.getLogger("jobs").setLevel(logging.WARNING)
    os.environ["JOBS_TASK_LOG_LEVEL"] = "WARNING"
    spark = session()
    if protobuf_jar() is None:
        print("protobuf-java unavailable (make setup installs it): Spark-ML table skipped")
        return []
    tmp = Path(tempfile.mkdtemp(prefix="bench-ml-", dir=CACHE))
    mnist = mnist_dataset()
    cols = [str(j) for j in range(FEATURES)]

    def assembled():
        df = spark.read.parquet(str(mnist))
        df = df.select((F.col("target") == 0).cast("double").alias("label"), *cols)
        return (
            VectorAssembler(inputCols=cols, outputCol="features")
            .transform(df)
            .select("label", "features")
        )

    # name → (the DataFrame, its Parquet path when it is stored vectors, the encoding the JVM
    # writer gives its rows: SparseVectors sparse records, DenseVectors dense ones)
    sparse, dense = sparse_dataset(), dense_dataset()
    inputs = {
        f"sparse vectors ({SPARSE_ROWS:,} x SparseVector({SPARSE_DIM:,}), {SPARSE_NNZ} stored)": (
            lambda: spark.read.parquet(str(sparse)),
            sparse,
            "sparse",
        ),
        f"dense vectors ({mnist_rows():,} x DenseVector({FEATURES}))": (
            lambda: spark.read.parquet(str(dense)),
            dense,
            "dense",
        ),
        f"VectorAssembler over the {FEATURES} columns": (assembled, None, "sparse"),
    }

    def ours(frame, path, encoding, out, read_path):
        def go():
            sets = {
                "output.path": str(out),
                "output.mode": "overwrite",
                "output.encoding": encoding,
                "select.label": "label",
                "select.features.vector": "features",
                "read.path": read_path,
            }
            if read_path == "auto":
                sets["input.paths.train"] = str(path)
            cfg = load_config(None, [f"{k}={v}" for k, v in sets.items()])
            meta = convert(cfg, spark, dataframe=None if read_path == "auto" else frame())
            assert meta.read_path == ("direct" if read_path == "auto" else "spark")

        return go

    def jvm(frame, out):
        def go():
            frame().write.format("sagemaker").mode("overwrite").option(
                "labelColumnName", "label"
            ).option("featuresColumnName", "features").save(str(out))

        return go

    def drained(frame):
        def drain(batches):
            for _ in batches:
                pass
            yield from ()

        def go():
            frame().mapInArrow(drain, "x int").write.format("noop").mode("overwrite").save()

        return go

    rows, summary = [], []
    for name, (frame, path, encoding) in inputs.items():
        jobs = {
            "spark": ours(frame, path, encoding, tmp / "ours", "spark"),
            "jvm": jvm(frame, tmp / "jvm"),
            "floor": drained(frame),
        }
        if path is not None:  # stored vectors: what read.path auto does with them (direct)
            jobs["direct"] = ours(frame, path, encoding, tmp / "ours", "auto")
        t = interleaved_medians(jobs, RUNS)
        direct = t.get("direct")
        rows.append(
            [
                name,
                encoding,
                f"{t['spark']:.2f} s",
                f"{direct:.2f} s" if direct else "-",
                f"{t['jvm']:.2f} s",
                f"{t['floor']:.2f} s",
                f"{t['jvm'] / t['spark']:.2f}x",
                f"{t['spark'] / t['floor']:.2f}x",
                f"{t['jvm'] / direct:.2f}x" if direct else "-",
            ]
        )
        short = name.split(" (")[0]
        summary += [
            (f"{short}, Spark path vs JVM writer", t["jvm"] / t["spark"]),
            (f"{short}, Spark path / drained floor", t["spark"] / t["floor"]),
        ]
        if direct:
            summary.append((f"{short}, direct path vs JVM writer", t["jvm"] / direct))
    print_table(
        "Spark ML vectors → local shards; local[2], warm median of "
        f"{RUNS} rounds (each job once per round). 'floor': Spark scan → Arrow → Python of the "
        "same columns, drained",
        ["input", "encoding", "ours: Spark path", "ours: direct", "JVM writer", "floor",
         "Spark path vs JVM", "Spark path / floor", "direct vs JVM"],
        rows,
    )  # fmt: skip
    shutil.rmtree(tmp, ignore_errors=True)
    spark.stop()
    return summary


def mnist_rows() -> int:
    from .e2e_bench import ROWS

    return ROWS
