"""End to end: Parquet → local RecordIO-protobuf shards, our two paths vs sagemaker-spark's
JVM writer vs a plain Spark scan, on the same generated MNIST-shaped data in one warm session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from .timing import median_seconds, print_table

CACHE = Path(".bench-cache")
ROWS = int(os.environ.get("BENCH_ROWS", 300_000))
FEATURES, FILES, DENSITY = 784, 16, 0.2
RUNS = int(os.environ.get("BENCH_RUNS", 3))


def _dataset() -> Path:
    from jobs.sample import write_synthetic

    path = CACHE / f"mnist-{ROWS}x{FEATURES}-{FILES}"
    if not (path / "_done").exists():
        shutil.rmtree(path, ignore_errors=True)
        t = time.perf_counter()
        write_synthetic(path, ROWS, FEATURES, FILES, DENSITY, seed=0)
        (path / "_done").touch()
        print(f"generated {ROWS:,} x {FEATURES} in {FILES} files ({time.perf_counter() - t:.0f} s)")
    return path


def protobuf_jar() -> str | None:
    """protobuf-java for the JVM writer: Debian's libprotobuf-java (`make setup` installs it;
    same bytes as 2.5.0), else protobuf-java-2.5.0.jar from pyspark 3.3.0's sdist."""
    system = Path(os.environ.get("PROTOBUF_JAR", "/usr/share/java/protobuf.jar"))
    if system.is_file():
        return str(system)
    jar = CACHE / "protobuf-java-2.5.0.jar"
    if jar.exists():
        return str(jar)
    sdist = CACHE / "wheels" / "pyspark-3.3.0.tar.gz"
    if not sdist.exists():
        cmd = [sys.executable, "-m", "pip", "download", "pyspark==3.3.0", "--no-deps",
               "--no-binary", ":all:", "-d", str(sdist.parent)]  # fmt: skip
        if subprocess.run(cmd, capture_output=True).returncode != 0 or not sdist.exists():
            return None
    with tarfile.open(sdist) as tar:
        member = tar.getmember("pyspark-3.3.0/deps/jars/protobuf-java-2.5.0.jar")
        jar.write_bytes(tar.extractfile(member).read())
    return str(jar)


def session():
    """The warm local[2] session of the e2e and ml suites, with the JVM writer's jars (they load
    only with the process's first SparkContext)."""
    from jobs.session import S3A_JARS, sagemaker_jars, spark_session
    from jobs.settings import SparkConfig
    from jobs.storage import S3Settings

    jar = protobuf_jar()
    extra = sagemaker_jars((*S3A_JARS, "sagemaker-spark_2.12-spark_3.3.0-1.4.5.jar"))
    conf = {"spark.driver.memory": "3g", "spark.sql.shuffle.partitions": "16"}
    if jar:
        conf["spark.jars"] = ",".join([*extra, jar])
    return spark_session(SparkConfig(master="local[2]", conf=conf), S3Settings())


def run() -> dict[str, float]:
    import logging

    from jobs.config import load_config
    from jobs.spark_job import convert

    logging.getLogger("jobs").setLevel(logging.WARNING)
    os.environ["JOBS_TASK_LOG_LEVEL"] = "WARNING"  # executors inherit it: no per-shard lines
    data = _dataset()
    jar = protobuf_jar()
    spark = session()
    files = [str(data / f) for f in sorted(os.listdir(data)) if f.endswith(".parquet")]
    cols = [str(j) for j in range(FEATURES)]
    tmp = Path(tempfile.mkdtemp(prefix="bench-e2e-", dir=CACHE))
    metas = {}

    def ours(path: str, **extra_sets):
        def go():
            sets = {
                "input.paths.train": str(data),
                "select.label": "CAST(target = 0 AS FLOAT)",
                "output.path": str(tmp / f"ours-{path}"),
                "output.mode": "overwrite",
                "output.encoding": "dense",
                "read.path": path,
                **extra_sets,
            }
            cfg = load_config(None, [f"{k}={v}" for k, v in sets.items()])
            metas[path + str(extra_sets)] = convert(cfg, spark)

        return go

    def plain_scan():
        spark.read.parquet(*files).select(*cols).write.format("noop").mode("overwrite").save()

    def jvm_writer(route: str):
        from pyspark.ml.feature import VectorAssembler
        from pyspark.ml.functions import array_to_vector, vector_to_array
        from pyspark.sql import functions as F

        def go():
            df = spark.read.parquet(*files)
            label = (F.col("target") == 0).cast("double").alias("label")
            if route == "array":  # no VectorAssembler: one array column made a DenseVector
                df = df.select(label, array_to_vector(F.array(*cols)).alias("features"))
            else:
                df = df.select(label, *cols)
                df = VectorAssembler(inputCols=cols, outputCol="features").transform(df)
                df = df.select("label", "features")
            if route == "dense":
                df = df.select(
                    "label", array_to_vector(vector_to_array("features")).alias("features")
                )
            out = tmp / f"jvm-{route}"
            df.write.format("sagemaker").mode("overwrite").option(
                "labelColumnName", "label"
            ).option("featuresColumnName", "features").save(str(out))

        return go

    cases = [
        ("ours: direct path (pyarrow in Spark tasks)", ours("direct")),
        ("ours: Spark path (mapInArrow)", ours("spark")),
        ("ours: direct path, output.shuffle: rows", ours("direct", **{"output.shuffle": "rows"})),
        ("plain Spark scan of the 784 columns (noop sink)", plain_scan),
    ]
    if jar:
        cases += [
            ("sagemaker-spark JVM writer, VectorAssembler → dense vectors", jvm_writer("dense")),
            ("sagemaker-spark JVM writer, VectorAssembler as assembled", jvm_writer("assembled")),
            ("sagemaker-spark JVM writer, array_to_vector(array(cols))", jvm_writer("array")),
        ]
    else:
        print("protobuf-java unavailable (make setup installs it): JVM writer not measured")
    results = {}
    for name, fn in cases:
        t = time.perf_counter()
        fn()  # cold, reported separately
        cold = time.perf_counter() - t
        results[name] = (cold, median_seconds(fn, RUNS))
    # every ratio is against the fastest JVM route measured in this run
    jvm = {n: w for n, (_, w) in results.items() if n.startswith("sagemaker-spark")}
    spark_ref = min(jvm, key=jvm.get) if jvm else None
    ref = jvm.get(spark_ref)
    rows = []
    for name, (cold, warm) in results.items():
        ratio = f"{ref / warm:.2f}x" if ref else "-"
        rows.append([name, f"{cold:.1f} s", f"{warm:.1f} s", f"{ROWS / warm:,.0f}", ratio])
    print_table(
        f"End to end: {ROWS:,} x {FEATURES} float32 Parquet ({FILES} files, "
        f"{DENSITY:.0%} non-zero) "
        f"→ local dense shards; local[2], warm median of {RUNS} (first run 'cold')",
        ["job", "cold", "warm", "rows/s", "speed vs fastest JVM route"],
        rows,
    )
    if spark_ref:
        print(f"fastest JVM route this run: {spark_ref.split(', ', 1)[1]}")
    # memory: the same rows in tasks packed by bytes (the default), then in 2 larger tasks
    mem_rows = []
    for label, sets in (
        ("packed by bytes (default)", {}),
        ("output.shards: 2", {"output.shards": 2}),
    ):
        ours("direct", **sets)()
        meta = metas["direct" + str(sets)]
        mem_rows.append(
            [label, meta.tasks, f"{ROWS // meta.tasks:,}", f"{meta.peak_worker_rss_mb:.0f} MB"]
        )
    print_table(
        "Peak Python worker memory, direct path (resident, sampled per batch)",
        ["partitioning", "tasks", "rows per task", "peak RSS"],
        mem_rows,
    )
    shutil.rmtree(tmp, ignore_errors=True)  # the session stays for the ml suite
    out = {}
    if ref:
        out["direct path vs fastest JVM route"] = ref / results[cases[0][0]][1]
        out["Spark path vs fastest JVM route"] = ref / results[cases[1][0]][1]
    out["shuffle rows: time vs none (goal <= 2)"] = (
        results[cases[2][0]][1] / results[cases[0][0]][1]
    )
    return out
